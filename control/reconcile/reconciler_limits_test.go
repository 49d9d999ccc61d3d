package reconcile

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/loader"
)

// setCap gives backend addr of vip1 the cap max (0: none) and lower mark
// min (0: the default), as `backend set --max-conns` does, and reconciles
// the change.
func (f *healthFixture) setCap(t *testing.T, addr string, max, min uint32) []string {
	t.Helper()
	p := model.BackendPatch{MaxConns: &model.ConnCap{Max: max, Min: min}}
	if err := f.store.SetBackend(vip1, netip.MustParseAddr(addr), 0, p); err != nil {
		t.Fatal(err)
	}
	return f.reconcileChanged(t)
}

// checkCaps counts the capped backends' flows and, on a change, runs the
// pass the reconcile loop would; it returns that pass's writes.
func (f *healthFixture) checkCaps(t *testing.T, wantChange bool) []string {
	t.Helper()
	changed, err := f.rec.CheckCaps()
	if err != nil {
		t.Fatal(err)
	}
	if changed != wantChange {
		t.Fatalf("caps changed %v, want %v", changed, wantChange)
	}
	if !changed {
		return nil
	}
	return f.reconcile(t)
}

// A backend at its cap leaves the table as a drained one does (its entry
// and flows stay) and is back once its open flows are at its lower mark,
// not before: the hysteresis. Half-open flows do not count. With every
// backend full the VIP has no table and is marked BackendsFull, so that
// its new flows are counted as backends_full; with a fallback, the
// fallback takes them. Nothing is counted while no backend has a cap.
func TestReconcileConnCapHysteresis(t *testing.T) {
	f := newHealthFixture(t, testTableSize, "10.0.0.1", "10.0.0.2")
	before := f.table(t)
	if _, err := f.rec.CheckCaps(); err != nil {
		t.Fatal(err)
	}
	if n := f.dp.FlowCountCalls(); n != 0 {
		t.Fatalf("%d flow counts without a cap, want none", n)
	}

	if w := f.setCap(t, "10.0.0.1", 10, 5); len(w) != 0 {
		t.Fatalf("a cap alone writes %v", w)
	}
	f.dp.SetFlows(1, 9)
	f.dp.SetHalfOpen(1, 100)
	f.checkCaps(t, false)
	if f.dp.FlowCountCalls() != 1 {
		t.Fatal("the capped backend's flows were not counted")
	}

	f.dp.SetFlows(1, 10)
	if w := f.checkCaps(t, true); !slices.Equal(w, []string{"put-table 1"}) {
		t.Fatalf("full: writes %v, want the table only", w)
	}
	if !onlyID(f.table(t), 2) {
		t.Fatalf("full: table %v, want every slot backend 2's", f.table(t))
	}
	if st := f.state(t, "10.0.0.1"); st != model.BackendFull {
		t.Fatalf("state %q, want %q", st, model.BackendFull)
	}
	if e := dpBackends(t, f.dp)[1]; e.Down || e.ID != 1 {
		t.Fatalf("full backend's entry %+v: want kept, not down", e)
	}
	if w := f.reconcile(t); len(w) != 0 {
		t.Fatalf("second pass writes %v", w)
	}

	// Above the lower mark it stays full; at it, it is back, with the
	// table it had.
	f.dp.SetFlows(1, 6)
	f.checkCaps(t, false)
	f.dp.SetFlows(1, 5)
	f.checkCaps(t, true)
	if !slices.Equal(f.table(t), before) || f.state(t, "10.0.0.1") != model.BackendUp {
		t.Fatalf("back: table changed or state %q", f.state(t, "10.0.0.1"))
	}

	// Both full: no table, BackendsFull, and not NoHealthy.
	f.setCap(t, "10.0.0.2", 3, 0)
	f.dp.SetFlows(1, 12)
	f.dp.SetFlows(2, 3)
	if w := f.checkCaps(t, true); !slices.Equal(w, []string{"put-vip 1", "del-table 1"}) {
		t.Fatalf("all full: writes %v, want the vip flagged, then no table", w)
	}
	if m := dpVIPs(t, f.dp)[VIPKeyOf(vip1)]; !m.BackendsFull || m.NoHealthy {
		t.Fatalf("all full: vip meta %+v", m)
	}
	// A down backend is down, whatever its flows.
	f.health.set(vip1, "10.0.0.2", false, "timeout")
	f.reconcile(t)
	if st := f.state(t, "10.0.0.2"); st != model.BackendDown {
		t.Fatalf("down and full: state %q", st)
	}
	if m := dpVIPs(t, f.dp)[VIPKeyOf(vip1)]; !m.BackendsFull {
		t.Fatalf("one down, one full: vip meta %+v, want BackendsFull", m)
	}
	f.health.set(vip1, "10.0.0.2", true, "")
	f.reconcile(t)

	// A fallback takes the new flows while every backend is full.
	f.nw.setMAC("10.0.0.99", mac(99))
	f.setFallback(t, "10.0.0.99")
	if !onlyID(f.table(t), 3) || f.fallback(t).State != model.FallbackActive {
		t.Fatalf("all full with a fallback: table %v, fallback %+v", f.table(t), f.fallback(t))
	}
	if m := dpVIPs(t, f.dp)[VIPKeyOf(vip1)]; m.BackendsFull {
		t.Fatalf("on its fallback: vip meta %+v, want not BackendsFull", m)
	}
	f.setFallback(t, "")

	// A cap removed frees the backend at once, before any count.
	f.setCap(t, "10.0.0.1", 0, 0)
	if !onlyID(f.table(t), 1) || f.state(t, "10.0.0.1") != model.BackendUp {
		t.Fatalf("cap removed: table %v, state %q", f.table(t), f.state(t, "10.0.0.1"))
	}
	if m := dpVIPs(t, f.dp)[VIPKeyOf(vip1)]; m.BackendsFull {
		t.Fatalf("cap removed: vip meta %+v", m)
	}
	if w := f.checkCaps(t, true); len(w) != 0 {
		t.Fatalf("forgetting a removed cap writes %v", w)
	}

	logs := f.logBuf.String()
	for _, msg := range []string{
		`msg="backend full: it takes no new flows until its open flows are back at its lower mark" vip=10.0.0.100:80/tcp backend=10.0.0.1 flows=10 max_conns=10 max_conns_min=5`,
		`msg="backend back at its lower mark: it takes new flows again" vip=10.0.0.100:80/tcp backend=10.0.0.1 flows=5 max_conns_min=5`,
		`msg="every usable backend of the vip is full: new flows are dropped" vip=10.0.0.100:80/tcp backends=2`,
	} {
		if !strings.Contains(logs, msg) {
			t.Errorf("no log %s in\n%s", msg, logs)
		}
	}
}

// fullAfter is the hysteresis alone: full from the cap on, free again
// from the lower mark down; backends without a count have no flows.
func TestFullAfter(t *testing.T) {
	k := func(a string) backendKey { return backendKey{vip1, netip.MustParseAddr(a), 0} }
	capped := []cappedBackend{
		{key: k("10.0.0.1"), id: 1, max: 10, min: 5},
		{key: k("10.0.0.2"), id: 2, max: 1, min: 0},
	}
	full := map[backendKey]bool{}
	for i, step := range []struct {
		flows1, flows2 int
		full1, full2   bool
	}{
		{0, 0, false, false},
		{9, 1, false, true},
		{10, 1, true, true},
		{6, 0, true, false},
		{5, 1, false, true},
		{9, 0, false, false},
	} {
		counts := map[uint32]loader.FlowCount{1: {Established: step.flows1}, 2: {Established: step.flows2}}
		full = fullAfter(full, capped, counts)
		if full[k("10.0.0.1")] != step.full1 || full[k("10.0.0.2")] != step.full2 {
			t.Fatalf("step %d: full %v", i, full)
		}
	}
	if got := fullAfter(full, nil, nil); len(got) != 0 {
		t.Fatalf("no capped backend: %v", got)
	}
}

// A VIP's rate limit is its entry's, written alone: `vip set
// --max-new-flows` keeps the table and the backends, so no flow moves.
func TestReconcileRateLimit(t *testing.T) {
	f := newHealthFixture(t, testTableSize, "10.0.0.1", "10.0.0.2")
	set := func(l model.NewFlowLimit) []string {
		t.Helper()
		if err := f.store.SetVIP(vip1, model.VIPPatch{MaxNewFlows: &l}); err != nil {
			t.Fatal(err)
		}
		return f.reconcileChanged(t)
	}
	if w := set(model.NewFlowLimit{Rate: 100}); !slices.Equal(w, []string{"put-vip 1"}) {
		t.Fatalf("limit set: writes %v, want the vip entry only", w)
	}
	if m := dpVIPs(t, f.dp)[VIPKeyOf(vip1)]; m.RateLimit != (loader.RateLimit{Rate: 100, Burst: 100}) {
		t.Fatalf("vip meta %+v", m)
	}
	if w := f.reconcile(t); len(w) != 0 {
		t.Fatalf("second pass writes %v", w)
	}
	if w := set(model.NewFlowLimit{Rate: 100, Burst: 1000}); !slices.Equal(w, []string{"put-vip 1"}) {
		t.Fatalf("burst changed: writes %v", w)
	}
	set(model.NewFlowLimit{})
	if m := dpVIPs(t, f.dp)[VIPKeyOf(vip1)]; m.RateLimit != (loader.RateLimit{}) {
		t.Fatalf("limit removed: vip meta %+v", m)
	}
}
