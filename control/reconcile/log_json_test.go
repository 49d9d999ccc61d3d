package reconcile

import (
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/control/reconcile/reconciletest"
)

// With --log-format json, every line about a VIP or backend carries them
// as plain attributes (vip as ADDR:PORT/PROTO, the metrics' label), and a
// state change is one line, not one per pass.
func TestLogJSONStateChanges(t *testing.T) {
	f := newRecFixture(t, reconciletest.NewDatapath(testTableSize, 16, 64))
	h := newFakeHealth()
	buf := &syncBuffer{}
	f.rec = NewReconciler(f.store, f.dp, f.nw, h, slog.New(slog.NewJSONHandler(buf, nil)))
	f.nw.setMAC("10.0.0.1", mac(1))
	f.nw.setMAC("10.0.0.2", mac(2))
	addVIP(t, f.store, vip1, be("10.0.0.1", 100), be("10.0.0.2", 100))
	f.reconcile(t)

	h.set(vip1, "10.0.0.2", false, "connect refused")
	for range 3 {
		f.reconcile(t)
	}
	h.set(vip1, "10.0.0.1", false, "timeout")
	for range 3 {
		f.reconcile(t)
	}
	h.set(vip1, "10.0.0.2", true, "")
	f.reconcile(t)
	f.reconcile(t)

	count := map[string]int{}
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("not a JSON line: %q: %v", l, err)
		}
		msg, _ := rec["msg"].(string)
		if strings.Contains(msg, "vip") || strings.Contains(msg, "backend") {
			if v, ok := rec["vip"].(string); !ok || v != vip1.String() {
				t.Errorf("line %q: vip attribute %#v, want %q", msg, rec["vip"], vip1.String())
			}
		}
		if strings.HasPrefix(msg, "backend ") {
			if _, ok := rec["backend"].(string); !ok {
				t.Errorf("line %q: backend attribute %#v, want a string", msg, rec["backend"])
			}
		}
		count[msg+" "+str(rec["backend"])]++
	}
	want := map[string]int{
		"backend down 10.0.0.2":                              1,
		"backend down 10.0.0.1":                              1,
		"vip has no healthy backend: new flows are dropped ": 1,
		"backend up 10.0.0.2":                                1,
		"vip has a healthy backend again ":                   1,
	}
	for k, n := range want {
		if count[k] != n {
			t.Errorf("%d lines %q, want %d; log:\n%s", count[k], k, n, buf.String())
		}
	}
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func TestVIPIDLogValue(t *testing.T) {
	var b strings.Builder
	slog.New(slog.NewJSONHandler(&b, nil)).Info("x", "vip", vip1)
	if !strings.Contains(b.String(), `"vip":"10.0.0.100:80/tcp"`) {
		t.Errorf("json: %s", b.String())
	}
	b.Reset()
	slog.New(slog.NewTextHandler(&b, nil)).Info("x", "vip", model.VIPID(vip1))
	if !strings.Contains(b.String(), `vip=10.0.0.100:80/tcp`) {
		t.Errorf("text: %s", b.String())
	}
}
