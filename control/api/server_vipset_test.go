package api

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/loader"
)

// PATCH /v1/vips/{vip} changes a VIP's options; a mode change under open
// flows is a 409 unless forced; GET /v1/vips carries the backends' and
// the fallback's status.
func TestAPISetVIP(t *testing.T) {
	f := newAPIFixture(t)
	ctx := context.Background()
	f.nw.setMAC("10.0.0.1", mac(1))
	f.nw.setMAC("10.0.0.99", mac(99))
	v := model.VIP{Address: vip1.Addr, Port: 80, Protocol: model.TCP, Backends: []model.Backend{be("10.0.0.1", 100)}}
	if err := f.client.AddVIP(ctx, v, false); err != nil {
		t.Fatal(err)
	}
	sh := model.SchedSH
	p := model.VIPPatch{Scheduler: &sh, Fallback: &model.Fallback{Address: netip.MustParseAddr("10.0.0.99")}}
	if err := f.client.SetVIP(ctx, vip1, p, false); err != nil {
		t.Fatal(err)
	}
	vips, err := f.client.VIPs(ctx)
	if err != nil || len(vips) != 1 {
		t.Fatalf("vips %+v %v", vips, err)
	}
	got := vips[0]
	if got.Scheduler != model.SchedSH || len(got.Backends) != 1 || got.Backends[0].State != model.BackendUp ||
		got.Fallback == nil || !got.Fallback.Fallback || got.Fallback.State != model.FallbackStandby || got.Fallback.MAC != mac(99).String() {
		t.Fatalf("vip %+v, fallback %+v", got, got.Fallback)
	}

	f.dp.SetFlows(1, 2)
	nat := model.ModeNAT
	err = f.client.SetVIP(ctx, vip1, model.VIPPatch{Mode: &nat}, false)
	if err == nil || !strings.Contains(err.Error(), "changing its mode from dr to nat breaks its 2 open flows") {
		t.Fatalf("mode change with flows: %v", err)
	}
	code, body := f.raw(t, "PATCH", "/v1/vips/10.0.0.100:80%2Ftcp", `{"mode":"nat"}`)
	if code != http.StatusConflict || !strings.Contains(body, "use --force") {
		t.Fatalf("raw mode change: %d %s", code, body)
	}
	if err := f.client.SetVIP(ctx, vip1, model.VIPPatch{Mode: &nat}, true); err != nil {
		t.Fatal(err)
	}
	if st, _ := f.store.VIP(vip1); st.Mode != model.ModeNAT {
		t.Fatalf("mode %s after a forced set", st.Mode)
	}

	for _, tc := range []struct {
		name, path, body string
		code             int
	}{
		{"unknown field", "/v1/vips/10.0.0.100:80%2Ftcp", `{"colour":"red"}`, 400},
		{"bad force", "/v1/vips/10.0.0.100:80%2Ftcp?force=maybe", `{"scheduler":"maglev"}`, 400},
		{"invalid value", "/v1/vips/10.0.0.100:80%2Ftcp", `{"scheduler":"best"}`, 400},
		{"unknown vip", "/v1/vips/10.9.9.9:80%2Ftcp", `{"scheduler":"maglev"}`, 404},
		{"bad vip", "/v1/vips/nonsense", `{}`, 400},
	} {
		if code, body := f.raw(t, "PATCH", tc.path, tc.body); code != tc.code {
			t.Errorf("%s: %d %s, want %d", tc.name, code, body, tc.code)
		}
	}
	if !errors.Is(&hasFlowsError{"x"}, ErrHasFlows) {
		t.Fatal("hasFlowsError does not match ErrHasFlows")
	}
}

// A fallback's counters are exported as a backend's, under its address;
// it has no weight nor up gauge (it is not one of the VIP's backends).
func TestCollectorFallback(t *testing.T) {
	f := newRecFixture(t, nil)
	f.nw.setMAC("10.0.0.99", mac(99))
	if err := f.store.AddVIP(model.VIP{Address: vip1.Addr, Port: vip1.Port, Protocol: vip1.Protocol,
		Fallback: &model.Fallback{Address: netip.MustParseAddr("10.0.0.99")}}); err != nil {
		t.Fatal(err)
	}
	f.reconcile(t)
	f.dp.SetBackendCounters(1, loader.Counters{Packets: 4, Bytes: 400, Flows: 1})
	c := NewCollector(f.dp, f.store, f.rec, "v1", nil)
	want := `
# HELP xdplb_backend_packets_total Packets forwarded to a backend.
# TYPE xdplb_backend_packets_total counter
xdplb_backend_packets_total{backend="10.0.0.99",vip="10.0.0.100:80/tcp"} 4
# HELP xdplb_backend_up 1 if the backend takes new flows.
# TYPE xdplb_backend_up gauge
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "xdplb_backend_packets_total", "xdplb_backend_up"); err != nil {
		t.Fatal(err)
	}
	st, err := snapshot(f.dp, f.store.State(), func(int) string { return "" })
	if err != nil || len(st.VIPs) != 1 || len(st.VIPs[0].Backends) != 1 || !st.VIPs[0].Backends[0].Fallback || st.VIPs[0].Backends[0].Packets != 4 {
		t.Fatalf("stats %+v %v", st, err)
	}
}
