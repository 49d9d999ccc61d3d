package api

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/xdplb/xdplb/control/model"
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
	if err := f.client.AddVIP(ctx, v); err != nil {
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
