package main

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/xdplb/xdplb/control/api"
	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/loader"
)

// backendID is the data plane's id of backend addr (of any VIP).
func (l *testDaemon) backendID(addr string) uint32 {
	l.t.Helper()
	bs, err := l.dp.Backends()
	if err != nil {
		l.t.Fatal(err)
	}
	for id, b := range bs {
		if b.Addr == netip.MustParseAddr(addr) {
			return id
		}
	}
	l.t.Fatalf("backend %s not in the data plane", addr)
	return 0
}

// The limits an operator sets: vip add and set --max-new-flows, backend
// add and set --max-conns, with their defaults; a change of either keeps
// the table and the open flows. vip list and backend list show them, and
// a backend at its cap as full; export and apply keep them.
func TestLimits(t *testing.T) {
	l := startLab(t)
	const vip = "10.0.0.100:80/tcp"
	l.ok("vip", "add", vip, "--max-new-flows", "1000")
	l.ok("backend", "add", vip, "10.0.0.11", "--max-conns", "100")
	l.ok("backend", "add", vip, "10.0.0.12", "--max-conns", "10,min=2")
	l.ok("backend", "add", vip, "10.0.0.13")
	v := l.vipJSON(vip)
	if v.MaxNewFlows != 1000 || v.MaxNewFlowsBurst != 1000 {
		t.Fatalf("vip limit %d burst %d", v.MaxNewFlows, v.MaxNewFlowsBurst)
	}
	caps := [][2]uint32{}
	for _, b := range v.Backends {
		caps = append(caps, [2]uint32{b.MaxConns, b.MaxConnsMin})
	}
	if !slices.Equal(caps, [][2]uint32{{100, 75}, {10, 2}, {0, 0}}) {
		t.Fatalf("backend caps %v", caps)
	}
	vips, err := l.dp.VIPs()
	if err != nil {
		t.Fatal(err)
	}
	if m := vips[loader.VIPKey{Addr: netip.MustParseAddr("10.0.0.100"), Port: 80, Proto: loader.ProtoTCP}]; m.RateLimit != (loader.RateLimit{Rate: 1000, Burst: 1000}) {
		t.Fatalf("data plane vip %+v", m)
	}

	l.dp.TakeWrites()
	l.ok("vip", "set", vip, "--max-new-flows", "50,burst=500")
	l.ok("backend", "set", vip, "10.0.0.11", "--max-conns", "40")
	if w := l.dp.TakeWrites(); !slices.Equal(w, []string{"put-vip 1"}) {
		t.Fatalf("limits changed: writes %v, want the vip entry only", w)
	}
	wantLines(t, "vip list", l.ok("vip", "list"),
		`^VIP\s+MODE\s+SCHEDULER\s+CHECK\s+ANNOUNCE\s+FLOWS\s+HALF-OPEN\s+LIMIT$`,
		`^10\.0\.0\.100:80/tcp\s+dr\s+maglev\s+-\s+auto\s+0\s+0\s+50/s burst 500$`,
		`^  -> 10\.0\.0\.11\s+weight 100\s+up\s+-\s+0\s+0\s+max conns 40 min 30$`,
		`^  -> 10\.0\.0\.12\s+weight 100\s+up\s+-\s+0\s+0\s+max conns 10 min 2$`,
		`^  -> 10\.0\.0\.13\s+weight 100\s+up\s+-\s+0\s+0\s+-$`)

	// At its cap (established flows; half-open ones do not count) the
	// backend is full until it is back at its lower mark.
	id := l.backendID("10.0.0.12")
	l.dp.SetHalfOpen(id, 50)
	l.dp.SetFlows(id, 10)
	state := func() string {
		var bs []api.BackendStatus
		if err := json.Unmarshal([]byte(l.ok("backend", "list", vip, "-o", "json")), &bs); err != nil {
			t.Fatal(err)
		}
		return bs[1].State
	}
	waitFor(t, func() bool { return state() == model.BackendFull }, "backend at its cap shown as full")
	wantLines(t, "backend list", l.ok("backend", "list", vip),
		`^BACKEND\s+WEIGHT\s+STATE\s+FLOWS\s+HALF-OPEN\s+CHECK\s+MAC\s+MAX-CONNS$`,
		`^10\.0\.0\.11\s+100\s+up\s+0\s+0\s+-\s+\S+\s+40 min 30$`,
		`^10\.0\.0\.12\s+100\s+full\s+10\s+50\s+-\s+\S+\s+10 min 2$`,
		`^10\.0\.0\.13\s+100\s+up\s+0\s+0\s+-\s+\S+\s+-$`)
	l.dp.SetFlows(id, 2)
	waitFor(t, func() bool { return state() == model.BackendUp }, "backend at its lower mark shown as up")

	// export and apply keep the limits.
	exported := l.exported()
	for _, s := range []string{"max_new_flows: 50", "max_new_flows_burst: 500", "max_conns: 40", "max_conns_min: 30", "max_conns: 10", "max_conns_min: 2"} {
		if !strings.Contains(exported, s) {
			t.Errorf("export lacks %q:\n%s", s, exported)
		}
	}
	file := filepath.Join(t.TempDir(), "lb.yaml")
	if err := os.WriteFile(file, []byte(exported), 0o644); err != nil {
		t.Fatal(err)
	}
	l2 := startLab(t)
	l2.ok("apply", "-f", file)
	if again := l2.exported(); again != exported {
		t.Errorf("export after apply of export:\n%s\nwant\n%s", again, exported)
	}

	// 0 and none remove them; the columns go with the last one.
	l.ok("vip", "set", vip, "--max-new-flows", "0")
	l.ok("backend", "set", vip, "10.0.0.11", "--max-conns", "none")
	l.ok("backend", "set", vip, "10.0.0.12", "--max-conns", "0")
	if v := l.vipJSON(vip); v.MaxNewFlows != 0 || v.MaxNewFlowsBurst != 0 || v.Backends[0].MaxConns != 0 || v.Backends[1].MaxConnsMin != 0 {
		t.Fatalf("limits removed: %+v", v)
	}
	if out := l.ok("vip", "list"); strings.Contains(out, "LIMIT") {
		t.Fatalf("vip list without limits:\n%s", out)
	}
	if out := l.ok("backend", "list", vip); strings.Contains(out, "MAX-CONNS") {
		t.Fatalf("backend list without caps:\n%s", out)
	}

	before := l.exported()
	for _, tc := range []struct {
		args []string
		code int
		re   string
	}{
		{[]string{"vip", "set", vip, "--max-new-flows", "fast"}, exitUsage, `^xdplb: vip set: --max-new-flows "fast": not a number; want RATE\[,burst=N\]`},
		{[]string{"vip", "set", vip, "--max-new-flows", "10,bust=3"}, exitUsage, `--max-new-flows "10,bust=3": after the comma, want burst=N`},
		{[]string{"vip", "set", vip, "--max-new-flows", "0,burst=3"}, exitUsage, `burst without a limit`},
		{[]string{"vip", "set", vip, "--max-new-flows", "20000000"}, exitError, `^xdplb: vip set: vip 10\.0\.0\.100:80/tcp: max_new_flows 20000000: want 1-10000000`},
		{[]string{"vip", "add", "10.0.0.101:80/tcp", "--max-new-flows", "20000000"}, exitUsage, `^xdplb: vip add: vip 10\.0\.0\.101:80/tcp: max_new_flows 20000000`},
		{[]string{"backend", "add", vip, "10.0.0.14", "--max-conns", "10,min=10"}, exitError, `^xdplb: backend add: .*max_conns_min 10: want below max_conns 10`},
		{[]string{"backend", "set", vip, "10.0.0.11", "--max-conns", "10,min=0"}, exitUsage, `min=0: want 1 or more`},
		{[]string{"backend", "set", vip, "10.0.0.11", "--max-conns", "5", "--weight", "3"}, exitUsage, `want exactly one of --weight N, --drain, --enable, --priority N, --max-conns N\[,min=M\]`},
	} {
		wantOneLineError(t, l.run(tc.args...), tc.code, tc.re)
	}
	if after := l.exported(); after != before {
		t.Errorf("refused commands changed the state:\n%s\nwant\n%s", after, before)
	}
}
