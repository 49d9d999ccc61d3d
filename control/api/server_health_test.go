package api

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/xdplb/xdplb/control/model"
)

func TestAPIBackendListHealthAndFlows(t *testing.T) {
	h := newFakeHealth()
	f := newAPIFixtureWithHealth(t, h)
	ctx := context.Background()
	for i, a := range []string{"10.0.0.1", "10.0.0.2", "10.0.0.3"} {
		f.nw.setMAC(a, mac(byte(i+1)))
	}
	if err := f.client.AddVIP(ctx, model.VIP{Address: vip1.Addr, Port: 80, Protocol: model.TCP, HealthCheck: &model.HealthCheck{Type: model.CheckTCP}}, false); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"10.0.0.1", "10.0.0.2", "10.0.0.3"} {
		if err := f.client.AddBackend(ctx, vip1, be(a, 100)); err != nil {
			t.Fatal(err)
		}
	}
	h.set(vip1, "10.0.0.2", false, "connect refused")
	drain := true
	if err := f.client.SetBackend(ctx, vip1, netip.MustParseAddr("10.0.0.3"), 0, model.BackendPatch{Drain: &drain}); err != nil {
		t.Fatal(err) // reconciles, so the health change is in too
	}
	f.dp.SetFlows(1, 4)
	f.dp.SetFlows(3, 2)
	bs, err := f.client.Backends(ctx, vip1)
	if err != nil {
		t.Fatal(err)
	}
	since := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	want := []struct {
		state, check string
		flows        int
	}{{model.BackendUp, "ok", 4}, {model.BackendDown, "connect refused", 0}, {model.BackendDraining, "ok", 2}}
	if len(bs) != len(want) {
		t.Fatalf("backends %+v", bs)
	}
	for i, w := range want {
		b := bs[i]
		if b.State != w.state || b.Check != w.check || b.Flows != w.flows || !b.CheckSince.Equal(since) || b.MAC == "" {
			t.Errorf("backend %s: %+v, want state %s check %q flows %d", b.Address, b, w.state, w.check, w.flows)
		}
	}
}

func TestAPIDeleteBackendWithFlows(t *testing.T) {
	f := newAPIFixture(t)
	ctx := context.Background()
	f.nw.setMAC("10.0.0.1", mac(1))
	f.nw.setMAC("10.0.0.2", mac(2))
	if err := f.client.AddVIP(ctx, model.VIP{Address: vip1.Addr, Port: 80, Protocol: model.TCP,
		Backends: []model.Backend{be("10.0.0.1", 100), be("10.0.0.2", 100)}}, false); err != nil {
		t.Fatal(err)
	}
	f.dp.SetFlows(2, 3)
	path := "/v1/vips/10.0.0.100:80%2Ftcp/backends/10.0.0.2"

	code, body := f.raw(t, http.MethodDelete, path, "")
	wantMsg := "vip 10.0.0.100:80/tcp: backend 10.0.0.2 still has 3 open flows (3 established, 0 half-open): drain it and wait, or use --force"
	if code != http.StatusConflict || !strings.Contains(body, wantMsg) {
		t.Fatalf("delete with flows: %d %s", code, body)
	}
	// The VIP's own port names the same backend.
	if code, body := f.raw(t, http.MethodDelete, path+":80", ""); code != http.StatusConflict {
		t.Fatalf("delete ADDR:VIPPORT with flows: %d %s", code, body)
	}
	err := f.client.DeleteBackend(ctx, vip1, netip.MustParseAddr("10.0.0.2"), 0, false)
	if err == nil || err.Error() != wantMsg {
		t.Fatalf("client error %v, want %q", err, wantMsg)
	}
	if code, body := f.raw(t, http.MethodDelete, path+"?force=maybe", ""); code != http.StatusBadRequest || !strings.Contains(body, "force") {
		t.Fatalf("bad force: %d %s", code, body)
	}
	if v, _ := f.store.VIP(vip1); len(v.Backends) != 2 {
		t.Fatal("refused delete changed the state")
	}

	// Forced: gone, and out of the data plane.
	if err := f.client.DeleteBackend(ctx, vip1, netip.MustParseAddr("10.0.0.2"), 0, true); err != nil {
		t.Fatalf("forced delete: %v", err)
	}
	if _, ok := dpBackends(t, f.dp)[2]; ok {
		t.Fatal("forced delete left the entry")
	}
	// No flows: no force needed.
	f.dp.SetFlows(1, 0)
	if err := f.client.DeleteBackend(ctx, vip1, netip.MustParseAddr("10.0.0.1"), 0, false); err != nil {
		t.Fatalf("delete without flows: %v", err)
	}
	// Unknown backend: 404 whatever the flows.
	code, _ = f.raw(t, http.MethodDelete, path, "")
	if code != http.StatusNotFound {
		t.Fatalf("delete unknown: %d", code)
	}
	if !errors.Is(&hasFlowsError{"x"}, ErrHasFlows) || errorStatus(&hasFlowsError{"x"}) != http.StatusConflict {
		t.Fatal("hasFlowsError does not map to 409")
	}
}

// A VIP whose backends have open flows is not deleted without force, as a
// backend is not: its clients would be reset. Half-open flows count too.
func TestAPIDeleteVIPWithFlows(t *testing.T) {
	f := newAPIFixture(t)
	ctx := context.Background()
	f.nw.setMAC("10.0.0.1", mac(1))
	f.nw.setMAC("10.0.0.2", mac(2))
	if err := f.client.AddVIP(ctx, model.VIP{Address: vip1.Addr, Port: 80, Protocol: model.TCP,
		Backends: []model.Backend{be("10.0.0.1", 100), be("10.0.0.2", 100)}}, false); err != nil {
		t.Fatal(err)
	}
	f.dp.SetFlows(1, 2)
	f.dp.SetHalfOpen(2, 1)
	f.dp.SetFlows(9, 50) // another VIP's backend: not counted
	before := f.store.State()

	wantMsg := "vip 10.0.0.100:80/tcp still has 3 open flows (2 established, 1 half-open): drain its backends and wait, or use --force"
	err := f.client.DeleteVIP(ctx, vip1, false)
	if err == nil || err.Error() != wantMsg {
		t.Fatalf("delete with flows: %v, want %q", err, wantMsg)
	}
	if code, body := f.raw(t, http.MethodDelete, "/v1/vips/10.0.0.100:80%2Ftcp", ""); code != http.StatusConflict {
		t.Fatalf("delete with flows: %d %s, want 409", code, body)
	}
	if code, body := f.raw(t, http.MethodDelete, "/v1/vips/10.0.0.100:80%2Ftcp?force=perhaps", ""); code != http.StatusBadRequest {
		t.Fatalf("bad force: %d %s, want 400", code, body)
	}
	if !reflect.DeepEqual(f.store.State(), before) {
		t.Fatalf("refused delete changed the state: %+v", f.store.State())
	}

	// The flows end: no force needed.
	f.dp.SetFlows(1, 0)
	f.dp.SetHalfOpen(2, 0)
	if err := f.client.DeleteVIP(ctx, vip1, false); err != nil {
		t.Fatalf("delete without flows: %v", err)
	}

	// Forced: gone with its flows.
	if err := f.client.AddVIP(ctx, model.VIP{Address: vip1.Addr, Port: 80, Protocol: model.TCP,
		Backends: []model.Backend{be("10.0.0.1", 100)}}, false); err != nil {
		t.Fatal(err)
	}
	waitBackendID := func() uint32 {
		for range 200 {
			if bi, ok := f.rec.Backend(vip1, netip.MustParseAddr("10.0.0.1"), 0); ok && bi.ID != 0 {
				return bi.ID
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatal("backend never written")
		return 0
	}
	f.dp.SetFlows(waitBackendID(), 4)
	if err := f.client.DeleteVIP(ctx, vip1, false); err == nil {
		t.Fatal("delete with flows of the re-added VIP succeeded")
	}
	if err := f.client.DeleteVIP(ctx, vip1, true); err != nil {
		t.Fatalf("forced delete: %v", err)
	}
	if _, err := f.store.VIP(vip1); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("forced delete left the VIP: %v", err)
	}
}
