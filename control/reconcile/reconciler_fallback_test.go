package reconcile

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/loader"
)

// setFallback gives vip1 the fallback addr ("": none) and reconciles
// the change as the API's pass after a change does.
func (f *healthFixture) setFallback(t *testing.T, addr string) []string {
	t.Helper()
	fb := &model.Fallback{}
	if addr != "" {
		fb.Address = netip.MustParseAddr(addr)
	}
	if err := f.store.SetVIP(vip1, model.VIPPatch{Fallback: fb}); err != nil {
		t.Fatal(err)
	}
	if err := f.rec.ReconcileChanged(context.Background()); err != nil {
		t.Fatal(err)
	}
	return f.dp.TakeWrites()
}

func (f *healthFixture) fallback(t *testing.T) BackendInfo {
	t.Helper()
	fb, ok := f.rec.Fallback(vip1)
	if !ok {
		t.Fatal("no fallback known to the reconciler")
	}
	return fb
}

// onlyID reports whether every slot of table is id.
func onlyID(table []uint32, id uint32) bool {
	return len(table) > 0 && !slices.ContainsFunc(table, func(x uint32) bool { return x != id })
}

// A fallback has an entry (standby) while a backend is up, and is the
// whole table while none is; when a backend is up again the table goes
// back to the backends and the fallback keeps its entry, not down, for
// the flows it took.
func TestReconcileFallbackTakesOverAndHandsBack(t *testing.T) {
	f := newHealthFixture(t, testTableSize, "10.0.0.1", "10.0.0.2")
	before := f.table(t)
	f.nw.setMAC("10.0.0.99", mac(99))

	w := f.setFallback(t, "10.0.0.99")
	if want := []string{"put-backend 3"}; !slices.Equal(w, want) {
		t.Fatalf("fallback added: writes %v, want %v (its entry only)", w, want)
	}
	if !slices.Equal(f.table(t), before) {
		t.Fatal("a standby fallback changed the table")
	}
	fb := f.fallback(t)
	if fb.ID != 3 || fb.State != model.FallbackStandby || fb.MAC.String() != mac(99).String() {
		t.Fatalf("standby fallback %+v", fb)
	}
	e := dpBackends(t, f.dp)[3]
	if e.VIPID != 1 || e.Addr != netip.MustParseAddr("10.0.0.99") || e.Down || e.MAC.String() != mac(99).String() {
		t.Fatalf("fallback entry %+v", e)
	}

	// All down: the table is the fallback's, the VIP is not NoHealthy
	// (its new flows are placed), the backends' entries are kept, down.
	f.health.set(vip1, "10.0.0.1", false, "connect refused")
	f.health.set(vip1, "10.0.0.2", false, "timeout")
	w = f.reconcile(t)
	if want := []string{"put-table 1", "put-backend 1", "put-backend 2"}; !slices.Equal(w, want) {
		t.Fatalf("all down: writes %v, want %v", w, want)
	}
	if !onlyID(f.table(t), 3) {
		t.Fatalf("all down: table %v, want every slot the fallback's (3)", f.table(t))
	}
	if m := dpVIPs(t, f.dp)[VIPKeyOf(vip1)]; m.NoHealthy || m.ID != 1 {
		t.Fatalf("vip meta %+v: want id 1, not NoHealthy while on its fallback", m)
	}
	bs := dpBackends(t, f.dp)
	if len(bs) != 3 || !bs[1].Down || !bs[2].Down || bs[3].Down {
		t.Fatalf("entries %+v", bs)
	}
	if fb := f.fallback(t); fb.State != model.FallbackActive || fb.ID != 3 {
		t.Fatalf("active fallback %+v", fb)
	}
	if w := f.reconcile(t); len(w) != 0 {
		t.Fatalf("second pass writes %v", w)
	}

	// One up: the table is the backends' again, as it was with that one
	// alone; the fallback keeps its entry and id.
	f.health.set(vip1, "10.0.0.2", true, "")
	w = f.reconcile(t)
	if want := []string{"put-backend 2", "put-table 1"}; !slices.Equal(w, want) {
		t.Fatalf("one up: writes %v, want %v", w, want)
	}
	if !onlyID(f.table(t), 2) {
		t.Fatalf("one up: table %v, want every slot backend 2's", f.table(t))
	}
	if e := dpBackends(t, f.dp)[3]; e.Down || e.ID != 3 || e.Addr != netip.MustParseAddr("10.0.0.99") {
		t.Fatalf("fallback entry after hand-back %+v: want kept, not down", e)
	}
	if fb := f.fallback(t); fb.State != model.FallbackStandby {
		t.Fatalf("fallback %+v, want standby", fb)
	}

	f.health.set(vip1, "10.0.0.1", true, "")
	f.reconcile(t)
	if !slices.Equal(f.table(t), before) {
		t.Fatal("the table with both backends up differs from the one before the fallback")
	}

	logs := f.logBuf.String()
	if strings.Count(logs, `msg="vip has no usable backend: new flows go to its fallback"`) != 1 ||
		strings.Count(logs, `msg="vip has a usable backend again: new flows leave its fallback"`) != 1 ||
		strings.Contains(logs, "no healthy backend") {
		t.Errorf("want the fallback taking over and handing back logged once each, log:\n%s", logs)
	}

	// Removed: its entry goes, after nothing points at it.
	if w := f.setFallback(t, ""); !slices.Equal(w, []string{"del-backend 3"}) {
		t.Fatalf("fallback removed: writes %v", w)
	}
	if _, ok := f.rec.Fallback(vip1); ok {
		t.Fatal("removed fallback still known")
	}

	// Removed while it has the table: the VIP drops new flows, and says
	// so, not that a backend is back.
	f.setFallback(t, "10.0.0.99")
	f.health.set(vip1, "10.0.0.1", false, "connect refused")
	f.health.set(vip1, "10.0.0.2", false, "connect refused")
	f.reconcile(t)
	if !onlyID(f.table(t), 4) {
		t.Fatalf("table %v, want the new fallback entry's (4)", f.table(t))
	}
	f.setFallback(t, "")
	if m := dpVIPs(t, f.dp)[VIPKeyOf(vip1)]; !m.NoHealthy {
		t.Fatalf("vip meta %+v after its active fallback went: want NoHealthy", m)
	}
	logs = f.logBuf.String()
	if strings.Count(logs, `new flows leave its fallback`) != 1 || strings.Count(logs, `msg="vip has no healthy backend: new flows are dropped"`) != 1 {
		t.Errorf("active fallback removed: want 'no healthy backend' logged, log:\n%s", logs)
	}
}

// Without a fallback, a VIP whose backends are all down drops new flows
// as before (no table, NoHealthy); an unresolved fallback is no better.
func TestReconcileNoFallback(t *testing.T) {
	f := newHealthFixture(t, testTableSize, "10.0.0.1")
	f.health.set(vip1, "10.0.0.1", false, "connect refused")
	f.reconcile(t)
	if m := dpVIPs(t, f.dp)[VIPKeyOf(vip1)]; !m.NoHealthy {
		t.Fatalf("vip meta %+v: want NoHealthy", m)
	}
	if tbl, _ := f.dp.LookupTable(1); tbl != nil {
		t.Fatal("a vip without a usable backend has a table")
	}

	// 10.0.0.99 has no MAC yet: it has no entry, and is not used.
	w := f.setFallback(t, "10.0.0.99")
	if len(w) != 0 {
		t.Fatalf("unresolved fallback: writes %v, want none", w)
	}
	if fb := f.fallback(t); fb.State != model.BackendUnresolved || fb.ID != 0 || fb.Reason == "" {
		t.Fatalf("unresolved fallback %+v", fb)
	}
	if m := dpVIPs(t, f.dp)[VIPKeyOf(vip1)]; !m.NoHealthy {
		t.Fatalf("vip meta %+v: want NoHealthy with an unresolved fallback", m)
	}

	// Resolved: the VIP takes new flows again, on its fallback.
	f.nw.setMAC("10.0.0.99", mac(99))
	w = f.reconcile(t)
	if want := []string{"put-backend 2", "put-vip 1", "put-table 1"}; !slices.Equal(slices.Sorted(slices.Values(w)), slices.Sorted(slices.Values(want))) {
		t.Fatalf("fallback resolved: writes %v, want %v", w, want)
	}
	if !onlyID(f.table(t), 2) || dpVIPs(t, f.dp)[VIPKeyOf(vip1)].NoHealthy {
		t.Fatal("resolved fallback not used")
	}
}

// A VIP with no backend at all sends its new flows to its fallback.
func TestReconcileFallbackWithoutBackends(t *testing.T) {
	f := newRecFixture(t, nil)
	f.nw.setMAC("10.0.0.99", mac(99))
	if err := f.store.AddVIP(model.VIP{Address: vip1.Addr, Port: vip1.Port, Protocol: vip1.Protocol,
		Fallback: &model.Fallback{Address: netip.MustParseAddr("10.0.0.99")}}); err != nil {
		t.Fatal(err)
	}
	w := f.reconcile(t)
	if want := []string{"put-backend 1", "put-table 1", "put-vip 1"}; !slices.Equal(w, want) {
		t.Fatalf("writes %v, want %v", w, want)
	}
	if !onlyID(tableIDs(t, f.dp, 1), 1) {
		t.Fatalf("table %v", tableIDs(t, f.dp, 1))
	}
	// A backend comes: the fallback stands by.
	f.nw.setMAC("10.0.0.1", mac(1))
	if err := f.store.AddBackend(vip1, be("10.0.0.1", 100)); err != nil {
		t.Fatal(err)
	}
	if err := f.rec.ReconcileChanged(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ids := tableIDs(t, f.dp, 1); !slices.Equal(ids, []uint32{2}) {
		t.Fatalf("table %v, want the backend's alone", ids)
	}
	if e, ok := dpBackends(t, f.dp)[1]; !ok || e.Down {
		t.Fatalf("fallback entry %+v after a backend came", e)
	}
}

// A NAT VIP's fallback is routed as its backends are, and may listen on
// its own port.
func TestReconcileFallbackNAT(t *testing.T) {
	f := newRecFixture(t, nil)
	if err := f.store.AddVIP(model.VIP{Address: vip1.Addr, Port: vip1.Port, Protocol: vip1.Protocol, Mode: model.ModeNAT,
		Backends: []model.Backend{{Address: netip.MustParseAddr("10.0.1.1"), Port: 8080, Weight: 1}},
		Fallback: &model.Fallback{Address: netip.MustParseAddr("10.0.1.99"), Port: 8081}}); err != nil {
		t.Fatal(err)
	}
	f.nw.SetRouted("10.0.1.1", false)
	f.reconcile(t)
	e := dpBackends(t, f.dp)[1]
	if e.Addr != netip.MustParseAddr("10.0.1.99") || e.Port != 8081 || e.Mode != loader.ModeNAT {
		t.Fatalf("fallback entry %+v", e)
	}
	if !onlyID(tableIDs(t, f.dp, 1), 1) {
		t.Fatalf("table %v: want the fallback's", tableIDs(t, f.dp, 1))
	}
	fb, ok := f.rec.Fallback(vip1)
	if !ok || fb.State != model.FallbackActive || fb.Iface != "eth0" {
		t.Fatalf("fallback %+v", fb)
	}
}

// `vip set` of anything but the mode keeps the VIP's id, its backends'
// ids and entries, and its table: a check, announce or fallback change
// writes no backend entry and no table, so no open flow is placed again.
func TestReconcileVIPSetKeepsFlows(t *testing.T) {
	f := newHealthFixture(t, testTableSize, "10.0.0.1", "10.0.0.2")
	table, entries := f.table(t), dpBackends(t, f.dp)
	iv, tcp, no := model.Duration(2*time.Second), model.CheckTCP, false
	sh := model.SchedSH
	for _, tc := range []struct {
		name  string
		patch model.VIPPatch
		want  []string
	}{
		{"check", model.VIPPatch{HealthCheck: &model.HealthCheckPatch{Type: &tcp}}, nil},
		{"check interval", model.VIPPatch{HealthCheck: &model.HealthCheckPatch{Interval: &iv}}, nil},
		{"announce", model.VIPPatch{Announce: &no}, nil},
		{"scheduler", model.VIPPatch{Scheduler: &sh}, []string{"put-vip 1"}},
	} {
		if err := f.store.SetVIP(vip1, tc.patch); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if err := f.rec.ReconcileChanged(context.Background()); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if w := f.dp.TakeWrites(); !slices.Equal(w, tc.want) {
			t.Errorf("%s: writes %v, want %v", tc.name, w, tc.want)
		}
		if w := f.reconcile(t); len(w) != 0 {
			t.Errorf("%s: full pass after it writes %v", tc.name, w)
		}
		if !slices.Equal(f.table(t), table) {
			t.Errorf("%s: the table changed", tc.name)
		}
		for id, e := range dpBackends(t, f.dp) {
			if !sameBackend(entries[id], e) {
				t.Errorf("%s: backend %d %+v, was %+v", tc.name, id, e, entries[id])
			}
		}
		if m := dpVIPs(t, f.dp)[VIPKeyOf(vip1)]; m.ID != 1 {
			t.Errorf("%s: vip id %d", tc.name, m.ID)
		}
	}
	if a, ok := f.nw.Announced()[vip1.Addr]; ok {
		t.Errorf("announced %v after --no-announce", a)
	}

	// A mode change keeps the ids too (the data plane's entries are
	// rewritten in the new mode; open flows break, which `vip set`
	// refuses without --force).
	nat := model.ModeNAT
	if err := f.store.SetVIP(vip1, model.VIPPatch{Mode: &nat}); err != nil {
		t.Fatal(err)
	}
	if err := f.rec.ReconcileChanged(context.Background()); err != nil {
		t.Fatal(err)
	}
	bs := dpBackends(t, f.dp)
	if len(bs) != 2 || bs[1].Mode != loader.ModeNAT || bs[2].Mode != loader.ModeNAT || bs[1].Addr != entries[1].Addr {
		t.Fatalf("after the mode change %+v", bs)
	}
	if m := dpVIPs(t, f.dp)[VIPKeyOf(vip1)]; m.ID != 1 || m.Mode != loader.ModeNAT {
		t.Fatalf("vip meta %+v", m)
	}
}
