package reconcile

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/loader"
)

func (f *healthFixture) setVIP(t *testing.T, p model.VIPPatch) []string {
	t.Helper()
	if err := f.store.SetVIP(vip1, p); err != nil {
		t.Fatal(err)
	}
	return f.reconcileChanged(t)
}

func (f *healthFixture) setBackend(t *testing.T, addr string, p model.BackendPatch) []string {
	t.Helper()
	if err := f.store.SetBackend(vip1, netip.MustParseAddr(addr), 0, p); err != nil {
		t.Fatal(err)
	}
	return f.reconcileChanged(t)
}

func setIDs(s []loader.SchedMember) []uint32 {
	var out []uint32
	for _, m := range s {
		out = append(out, m.ID)
	}
	return out
}

// An rr, wrr, lc or wlc VIP has a backend set: its table's members, written
// before the VIP entry that makes it used, changed in the pass that changes
// the table (a drain), deleted once the VIP no longer uses one; maglev
// VIPs never have one. Passes are idempotent.
func TestReconcileSchedulerSet(t *testing.T) {
	f := newHealthFixture(t, testTableSize, "10.0.0.1", "10.0.0.2", "10.0.0.3")
	if len(f.dp.SchedSets()) != 0 {
		t.Fatalf("a maglev vip has a set: %v", f.dp.SchedSets())
	}
	rr := model.SchedRR
	w := f.setVIP(t, model.VIPPatch{Scheduler: &rr})
	if !slices.Equal(w, []string{"put-set 1", "put-vip 1"}) {
		t.Fatalf("to rr: writes %v, want the set then the vip", w)
	}
	if got := setIDs(f.dp.SchedSets()[1]); !slices.Equal(got, []uint32{1, 2, 3}) {
		t.Fatalf("set %v, want backends 1, 2, 3", got)
	}
	vips, _ := f.dp.VIPs()
	if vips[VIPKeyOf(vip1)].Hash != loader.SchedRR {
		t.Fatalf("vip entry scheduler %d, want rr", vips[VIPKeyOf(vip1)].Hash)
	}
	if w := f.reconcile(t); len(w) != 0 {
		t.Fatalf("second pass writes %v", w)
	}

	drain := true
	w = f.setBackend(t, "10.0.0.2", model.BackendPatch{Drain: &drain})
	if !slices.Equal(w, []string{"put-set 1", "put-table 1"}) {
		t.Fatalf("drain: writes %v, want the set and the table", w)
	}
	if got := setIDs(f.dp.SchedSets()[1]); !slices.Equal(got, []uint32{1, 3}) {
		t.Fatalf("set after drain %v, want 1, 3", got)
	}

	// A restarted daemon does not know the set: it writes it once.
	f.rec = NewReconciler(f.store, f.dp, f.nw, f.health, nil)
	if w := f.reconcile(t); !slices.Equal(w, []string{"put-set 1"}) {
		t.Fatalf("after a restart: writes %v, want the set once", w)
	}
	if w := f.reconcile(t); len(w) != 0 {
		t.Fatalf("second pass after a restart writes %v", w)
	}

	mg := model.SchedMaglev
	w = f.setVIP(t, model.VIPPatch{Scheduler: &mg})
	if !slices.Equal(w, []string{"put-vip 1", "del-set 1"}) {
		t.Fatalf("to maglev: writes %v, want the vip then the set deleted", w)
	}
	if len(f.dp.SchedSets()) != 0 {
		t.Fatalf("sets left: %v", f.dp.SchedSets())
	}
}

// With persistence, every entry of a backend that takes no new flows is
// marked NoNew (a returning client leaves it), and cleared when it takes
// them again; without persistence nothing is marked.
func TestReconcilePersistenceMarks(t *testing.T) {
	f := newHealthFixture(t, testTableSize, "10.0.0.1", "10.0.0.2")
	drain := true
	f.setBackend(t, "10.0.0.2", model.BackendPatch{Drain: &drain})
	if dpBackends(t, f.dp)[2].NoNew {
		t.Fatal("marked NoNew without persistence")
	}
	p := model.Duration(time.Minute)
	w := f.setVIP(t, model.VIPPatch{Persistence: &p})
	if !slices.Equal(w, []string{"put-backend 2", "put-vip 1"}) {
		t.Fatalf("persistence on: writes %v", w)
	}
	bs := dpBackends(t, f.dp)
	if bs[1].NoNew || !bs[2].NoNew {
		t.Fatalf("entries %+v: want only the drained one marked", bs)
	}
	vips, _ := f.dp.VIPs()
	if vips[VIPKeyOf(vip1)].Persistence != time.Minute {
		t.Fatalf("vip entry persistence %s", vips[VIPKeyOf(vip1)].Persistence)
	}
	drain = false
	f.setBackend(t, "10.0.0.2", model.BackendPatch{Drain: &drain})
	if dpBackends(t, f.dp)[2].NoNew {
		t.Fatal("enabled backend still marked NoNew")
	}
}

// The open flows of lc and wlc backends are written from the count of the
// connection table at every check (CapInterval); other VIPs' are not
// counted.
func TestReconcileOpenFlowsSync(t *testing.T) {
	f := newHealthFixture(t, testTableSize, "10.0.0.1", "10.0.0.2")
	f.dp.SetFlows(1, 7)
	f.dp.SetHalfOpen(2, 3)
	f.checkCaps(t, false)
	if f.dp.FlowCountCalls() != 0 || len(f.dp.OpenFlows()) != 0 {
		t.Fatalf("maglev vip counted: %d walks, %v", f.dp.FlowCountCalls(), f.dp.OpenFlows())
	}
	lc := model.SchedWLC
	f.setVIP(t, model.VIPPatch{Scheduler: &lc})
	f.checkCaps(t, false)
	if got := f.dp.OpenFlows(); got[1] != 7 || got[2] != 3 || f.dp.FlowCountCalls() != 1 {
		t.Fatalf("open flows written %v after %d walks, want 1: 7, 2: 3 after one", got, f.dp.FlowCountCalls())
	}
}

// Blue/green: an apply that swaps a VIP's backend set keeps the old
// backends that have open flows as entries out of the table (their flows
// go on), reported as retained, until their flows end; the check that
// counts them then asks for the pass that deletes them. One without flows
// goes at once, and so does one deleted by force.
func TestReconcileBlueGreenRetainsOpenFlows(t *testing.T) {
	f := newHealthFixture(t, testTableSize, "10.0.0.1", "10.0.0.2")
	f.nw.setMAC("10.0.0.3", mac(3))
	f.nw.setMAC("10.0.0.4", mac(4))
	f.dp.SetFlows(1, 5) // blue 10.0.0.1 has open flows, 10.0.0.2 none
	st := f.store.State()
	st.VIPs[0].Backends = []model.Backend{be("10.0.0.3", 100), be("10.0.0.4", 100)}
	if err := f.store.Replace(st); err != nil {
		t.Fatal(err)
	}
	w := f.reconcileChanged(t)
	if slices.Contains(w, "del-backend 1") || !slices.Contains(w, "del-backend 2") {
		t.Fatalf("swap wrote %v: want backend 1 kept (open flows), 2 deleted", w)
	}
	tbl := f.table(t)
	if slices.Contains(tbl, 1) || slices.Contains(tbl, 2) {
		t.Fatal("an old backend is still in the table")
	}
	ret := f.rec.Retained(vip1)
	if len(ret) != 1 || ret[0].ID != 1 || ret[0].Addr != netip.MustParseAddr("10.0.0.1") {
		t.Fatalf("retained %+v, want backend 1", ret)
	}
	if w := f.reconcile(t); len(w) != 0 {
		t.Fatalf("a full pass while it drains writes %v", w)
	}
	f.checkCaps(t, false)
	f.dp.SetFlows(1, 0)
	if w := f.checkCaps(t, true); !slices.Equal(w, []string{"del-backend 1"}) {
		t.Fatalf("drained: writes %v, want backend 1 deleted", w)
	}
	if len(f.rec.Retained(vip1)) != 0 {
		t.Fatal("still retained")
	}

	// A forced delete is not retained.
	f.dp.SetFlows(3, 9)
	f.rec.Release(vip1, netip.MustParseAddr("10.0.0.3"), 0)
	if err := f.store.DeleteBackend(vip1, netip.MustParseAddr("10.0.0.3"), 0); err != nil {
		t.Fatal(err)
	}
	if w := f.reconcileChanged(t); !slices.Contains(w, "del-backend 3") {
		t.Fatalf("forced delete wrote %v, want backend 3 deleted", w)
	}
}

// Make before break: while none of the new backends is usable (here its
// MAC is not resolved yet), the retained old ones that are up keep taking
// new flows; once one is, the table is the new set's alone.
func TestReconcileBlueGreenMakeBeforeBreak(t *testing.T) {
	f := newHealthFixture(t, testTableSize, "10.0.0.1")
	f.dp.SetFlows(1, 5)
	st := f.store.State()
	st.VIPs[0].Backends = []model.Backend{be("10.0.0.3", 100)}
	if err := f.store.Replace(st); err != nil {
		t.Fatal(err)
	}
	f.reconcileChanged(t)
	if !onlyID(f.table(t), 1) {
		t.Fatalf("green unresolved: table %v, want blue's backend 1 still taking new flows", f.table(t))
	}
	if ret := f.rec.Retained(vip1); len(ret) != 1 || !ret[0].Serving {
		t.Fatalf("retained %+v, want backend 1 serving", ret)
	}
	f.nw.setMAC("10.0.0.3", mac(3))
	f.reconcile(t)
	if tbl := f.table(t); slices.Contains(tbl, 1) {
		t.Fatal("green resolved: blue still in the table")
	}
	if ret := f.rec.Retained(vip1); len(ret) != 1 || ret[0].Serving {
		t.Fatalf("retained %+v, want backend 1 draining only", ret)
	}
}
