package reconcile

import (
	"bytes"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/control/reconcile/reconciletest"
	"github.com/xdplb/xdplb/loader"
)

// addNATVIP adds VIP id in mode with backends at port (0: the VIP's).
func (f *recFixture) addNATVIP(t *testing.T, id model.VIPID, mode model.Mode, snat string, port uint16, addrs ...string) {
	t.Helper()
	v := model.VIP{Address: id.Addr, Port: id.Port, Protocol: id.Protocol, Mode: mode}
	if snat != "" {
		v.SNATAddr = netip.MustParseAddr(snat)
	}
	for _, a := range addrs {
		v.Backends = append(v.Backends, model.Backend{Address: netip.MustParseAddr(a), Port: port, Weight: 100})
	}
	if err := f.store.AddVIP(v); err != nil {
		t.Fatal(err)
	}
}

// A NAT backend needs a route, not a MAC: its entry carries the VIP's mode
// and the backend's own port, and no MAC nor interface.
func TestReconcileNATBackendsByRoute(t *testing.T) {
	f := newRecFixture(t, nil)
	f.addNATVIP(t, vip1, model.ModeNAT, "", 8080, "10.0.1.1", "10.0.1.2", "10.0.1.3")
	f.nw.SetRouted("10.0.1.3", false)

	if w, want := f.reconcile(t), []string{"put-backend 1", "put-backend 2", "put-table 1", "put-vip 1"}; !slices.Equal(w, want) {
		t.Fatalf("writes %v, want %v", w, want)
	}
	if meta := dpVIPs(t, f.dp)[VIPKeyOf(vip1)]; meta.Mode != loader.ModeNAT || meta.SNATAddr.IsValid() {
		t.Fatalf("vip entry %+v", meta)
	}
	for id, b := range dpBackends(t, f.dp) {
		if b.Mode != loader.ModeNAT || b.Port != 8080 || b.MAC != nil || b.SrcMAC != nil || b.Ifindex != 0 {
			t.Fatalf("backend %d = %+v", id, b)
		}
	}
	if got := tableIDs(t, f.dp, 1); !slices.Equal(got, []uint32{1, 2}) {
		t.Fatalf("table points at %v", got)
	}
	bi, _ := f.rec.Backend(vip1, netip.MustParseAddr("10.0.1.1"), 8080)
	if bi.State != model.BackendUp || bi.Iface != "eth0" || bi.MAC != nil || bi.Reason != "" {
		t.Fatalf("routed backend %+v", bi)
	}
	bi, _ = f.rec.Backend(vip1, netip.MustParseAddr("10.0.1.3"), 8080)
	if bi.State != model.BackendUnresolved || !strings.Contains(bi.Reason, "not routed through an attached interface") {
		t.Fatalf("unrouted backend %+v", bi)
	}
	if w := f.reconcile(t); len(w) != 0 {
		t.Fatalf("second pass writes %v", w)
	}
	// The route comes: the next full pass brings the backend in.
	f.nw.SetRouted("10.0.1.3", true)
	if w := f.reconcile(t); !slices.Equal(w, []string{"put-backend 3", "put-table 1"}) {
		t.Fatalf("route found: writes %v", w)
	}
	// It goes: the entry stays for open flows, out of the table.
	f.nw.SetRouted("10.0.1.3", false)
	if w := f.reconcile(t); !slices.Equal(w, []string{"put-table 1"}) {
		t.Fatalf("route lost: writes %v", w)
	}
	if _, ok := dpBackends(t, f.dp)[3]; !ok {
		t.Fatal("unrouted backend's entry deleted; its open flows would break")
	}
}

// A fullnat VIP translates sources to its own SNAT address, else to the
// egress interface's primary address; without either it is held out of
// the maps. A lost address keeps the last one for open flows.
func TestReconcileFullNATSNATAddress(t *testing.T) {
	f := newRecFixture(t, nil)
	var logs bytes.Buffer
	f.rec = NewReconciler(f.store, f.dp, f.nw, nil, slog.New(slog.NewTextHandler(&logs, nil)))
	vipOwn := model.VIPID{Addr: netip.MustParseAddr("10.0.0.101"), Port: 80, Protocol: model.TCP}
	vip6 := model.VIPID{Addr: netip.MustParseAddr("2001:db8::100"), Port: 53, Protocol: model.UDP}
	f.addNATVIP(t, vip1, model.ModeFullNAT, "", 8080, "10.0.1.1")
	f.addNATVIP(t, vipOwn, model.ModeFullNAT, "10.0.9.9", 0, "10.0.1.1")
	f.addNATVIP(t, vip6, model.ModeFullNAT, "", 5353)
	f.reconcile(t)
	vips := dpVIPs(t, f.dp)
	if got := vips[VIPKeyOf(vip1)]; got.Mode != loader.ModeFullNAT || got.SNATAddr != reconciletest.Primary4 {
		t.Fatalf("default snat: %+v", got)
	}
	if got := vips[VIPKeyOf(vipOwn)].SNATAddr; got != netip.MustParseAddr("10.0.9.9") {
		t.Fatalf("own snat: %s", got)
	}
	if a, ok := f.rec.SNATAddr(vip1); !ok || a != reconciletest.Primary4 {
		t.Fatalf("SNATAddr %s %v", a, ok)
	}
	// No backend, no address of its own: nothing to take an address from.
	if _, ok := vips[VIPKeyOf(vip6)]; ok {
		t.Fatalf("fullnat vip without a snat address written: %+v", vips)
	}
	if _, ok := f.nw.Announced()[vip6.Addr]; ok {
		t.Fatal("held vip announced")
	}
	if !strings.Contains(logs.String(), "fullnat vip left out of the data plane") {
		t.Fatalf("held vip not logged:\n%s", logs.String())
	}
	if err := f.store.AddBackend(vip6, model.Backend{Address: netip.MustParseAddr("2001:db8:1::5"), Port: 5353, Weight: 1}); err != nil {
		t.Fatal(err)
	}
	f.reconcileChanged(t)
	if got := dpVIPs(t, f.dp)[VIPKeyOf(vip6)]; got.SNATAddr != reconciletest.Primary6 {
		t.Fatalf("v6 default snat after a backend came: %+v", got)
	}
	if _, ok := f.nw.Announced()[vip6.Addr]; !ok {
		t.Fatal("a held vip entering the maps is not announced until the next full pass")
	}

	// The interface loses its address: the VIP keeps the last one for
	// its open flows, takes no new ones, and says why.
	f.nw.SetNoPrimary(true)
	if w := f.reconcile(t); !slices.Equal(w, []string{"del-table 1"}) {
		t.Fatalf("address lost: writes %v", w)
	}
	if got := dpVIPs(t, f.dp)[VIPKeyOf(vip1)].SNATAddr; got != reconciletest.Primary4 {
		t.Fatalf("address lost: snat %s, want the last one kept", got)
	}
	bi, _ := f.rec.Backend(vip1, netip.MustParseAddr("10.0.1.1"), 8080)
	if bi.State != model.BackendUnresolved || !strings.Contains(bi.Reason, "no SNAT address") {
		t.Fatalf("backend of a vip without address %+v", bi)
	}
	if bi, _ := f.rec.Backend(vipOwn, netip.MustParseAddr("10.0.1.1"), 0); bi.State != model.BackendUp {
		t.Fatalf("a vip with its own address needs none of the interface: %+v", bi)
	}
	// Another address: the VIP entry changes, nothing else.
	f.nw.SetPrimary("192.0.2.77")
	w := f.reconcile(t)
	if len(w) != 2 || w[0] != "put-table 1" || w[1] != "put-vip 1" {
		t.Fatalf("new address: writes %v", w)
	}
	if got := dpVIPs(t, f.dp)[VIPKeyOf(vip1)].SNATAddr; got != netip.MustParseAddr("192.0.2.77") {
		t.Fatalf("new address: snat %s", got)
	}
	if !strings.Contains(logs.String(), "fullnat vip SNAT address changed: its open connections are reset") {
		t.Fatalf("snat change not logged:\n%s", logs.String())
	}
}

// A mode change rewrites every backend entry of the VIP in the new mode,
// resolved or not; the table, whose backends stay, is not rewritten.
func TestReconcileModeChangeRewritesBackends(t *testing.T) {
	f := newRecFixture(t, nil)
	f.nw.setMAC("10.0.0.1", mac(1))
	f.nw.setMAC("10.0.0.2", mac(2))
	addVIP(t, f.store, vip1, be("10.0.0.1", 100), be("10.0.0.2", 100))
	f.reconcile(t)
	f.nw.setMAC("10.0.0.2", nil) // unresolved, keeps its entry
	f.reconcile(t)

	setMode(t, f.store, vip1, model.ModeNAT, 0)
	f.nw.SetRouted("10.0.0.2", false) // unresolved in nat too
	w := f.reconcileChanged(t)
	if want := []string{"put-backend 1", "put-backend 2", "put-vip 1"}; !slices.Equal(w, want) {
		t.Fatalf("dr to nat writes %v, want %v", w, want)
	}
	for id, b := range dpBackends(t, f.dp) {
		if b.Mode != loader.ModeNAT || b.MAC != nil {
			t.Fatalf("backend %d after dr to nat: %+v", id, b)
		}
	}
	if w := f.reconcile(t); len(w) != 0 {
		t.Fatalf("full pass after the change writes %v", w)
	}
	// Back to DR: a NAT entry has no MAC, so the unresolved backend's is
	// deleted once the table no longer names it.
	setMode(t, f.store, vip1, model.ModeDR, 0)
	w = f.reconcileChanged(t)
	if want := []string{"put-backend 1", "put-vip 1", "del-backend 2"}; !slices.Equal(w, want) {
		t.Fatalf("nat to dr writes %v, want %v", w, want)
	}
	if b := dpBackends(t, f.dp)[1]; b.Mode != loader.ModeDR || b.MAC.String() != mac(1).String() || b.Ifindex != 2 {
		t.Fatalf("backend 1 after nat to dr: %+v", b)
	}
}
