package reconcile

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/control/reconcile/reconciletest"
)

// routesFixture is a health fixture whose reconciler announces routes.
func routesFixture(t *testing.T, backends ...string) (*healthFixture, *reconciletest.Routes) {
	t.Helper()
	f := newHealthFixture(t, testTableSize, backends...)
	routes := &reconciletest.Routes{}
	f.rec.SetRouteAnnouncer(routes)
	f.reconcile(t)
	return f, routes
}

func wantRoutes(t *testing.T, r *reconciletest.Routes, want ...string) {
	t.Helper()
	if got := r.Announced(); !slices.Equal(got, want) {
		t.Fatalf("routes %v, want %v", got, want)
	}
}

// A VIP's address is routed while it has a healthy backend, not once
// its last one is down, again when one is back; a pass that changes
// nothing announces nothing.
func TestRoutesFollowHealth(t *testing.T) {
	f, routes := routesFixture(t, "10.0.0.1", "10.0.0.2")
	wantRoutes(t, routes, "10.0.0.100")
	calls := routes.Calls()
	f.reconcile(t)
	if routes.Calls() != calls {
		t.Error("a pass that changed nothing announced again")
	}
	f.health.set(vip1, "10.0.0.1", false, "timeout")
	f.reconcile(t)
	wantRoutes(t, routes, "10.0.0.100")
	f.health.set(vip1, "10.0.0.2", false, "timeout")
	f.reconcile(t)
	wantRoutes(t, routes)
	f.health.set(vip1, "10.0.0.2", true, "")
	f.reconcile(t)
	wantRoutes(t, routes, "10.0.0.100")
}

// An address with several VIPs (ports) is routed while any of them is;
// vip del withdraws it once none is left, in the pass after the change.
func TestRoutesAddressOfSeveralVIPs(t *testing.T) {
	f, routes := routesFixture(t, "10.0.0.1")
	vip443 := model.VIPID{Addr: vip1.Addr, Port: 443, Protocol: model.TCP}
	addVIP(t, f.store, vip443, be("10.0.0.1", 100))
	f.reconcileChanged(t)
	f.health.set(vip1, "10.0.0.1", false, "timeout")
	f.reconcile(t)
	wantRoutes(t, routes, "10.0.0.100")

	vip2 := model.VIPID{Addr: netip.MustParseAddr("2001:db8::100"), Port: 80, Protocol: model.TCP}
	f.nw.setMAC("2001:db8::1", mac(7))
	addVIP(t, f.store, vip2, be("2001:db8::1", 100))
	f.reconcileChanged(t)
	wantRoutes(t, routes, "10.0.0.100", "2001:db8::100")

	if err := f.store.DeleteVIP(vip443); err != nil {
		t.Fatal(err)
	}
	f.reconcileChanged(t)
	wantRoutes(t, routes, "2001:db8::100")
	if err := f.store.DeleteVIP(vip2); err != nil {
		t.Fatal(err)
	}
	f.reconcileChanged(t)
	wantRoutes(t, routes)
}

// A VIP whose new flows go to its fallback is routed; one with every
// backend drained too (their open flows go on); one without backends, or
// whose only healthy backend is not resolved, is not.
func TestRoutesFallbackDrainedEmptyUnresolved(t *testing.T) {
	f, routes := routesFixture(t, "10.0.0.1")
	f.nw.setMAC("10.0.0.99", mac(99))
	f.setFallback(t, "10.0.0.99")
	f.health.set(vip1, "10.0.0.1", false, "timeout")
	f.reconcile(t)
	wantRoutes(t, routes, "10.0.0.100")
	f.setFallback(t, "")
	wantRoutes(t, routes)

	f.health.set(vip1, "10.0.0.1", true, "")
	drain := true
	if err := f.store.SetBackend(vip1, netip.MustParseAddr("10.0.0.1"), 0, model.BackendPatch{Drain: &drain}); err != nil {
		t.Fatal(err)
	}
	f.reconcile(t)
	wantRoutes(t, routes, "10.0.0.100")

	if err := f.store.DeleteBackend(vip1, netip.MustParseAddr("10.0.0.1"), 0); err != nil {
		t.Fatal(err)
	}
	f.reconcileChanged(t)
	wantRoutes(t, routes)

	if err := f.store.AddBackend(vip1, be("10.0.0.3", 100)); err != nil {
		t.Fatal(err)
	}
	f.reconcileChanged(t)
	wantRoutes(t, routes)
	f.nw.setMAC("10.0.0.3", mac(3))
	f.reconcile(t)
	wantRoutes(t, routes, "10.0.0.100")
}

// A VIP whose backends are all at their connection cap stays routed: a
// passing load, not a failure.
func TestRoutesFullBackends(t *testing.T) {
	f, routes := routesFixture(t, "10.0.0.1")
	f.setCap(t, "10.0.0.1", 10, 5)
	f.dp.SetFlows(1, 10)
	f.checkCaps(t, true)
	if st := f.state(t, "10.0.0.1"); st != model.BackendFull {
		t.Fatalf("state %q, want %q", st, model.BackendFull)
	}
	wantRoutes(t, routes, "10.0.0.100")
	f.health.set(vip1, "10.0.0.1", false, "timeout")
	f.reconcile(t)
	wantRoutes(t, routes)
}

// A failed announce is tried again by the next pass, and fails the pass.
func TestRoutesRetried(t *testing.T) {
	f, routes := routesFixture(t, "10.0.0.1")
	routes.SetErr(errors.New("speaker down"))
	f.health.set(vip1, "10.0.0.1", false, "timeout")
	if err := f.rec.Reconcile(context.Background()); err == nil {
		t.Fatal("pass with a failed announce succeeded")
	}
	wantRoutes(t, routes, "10.0.0.100")
	routes.SetErr(nil)
	f.reconcile(t)
	wantRoutes(t, routes)
}
