package reconcile

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/healthcheck"
)

// healthState is n VIPs with a TCP check and three backends each.
func healthState(n int) model.State {
	var st model.State
	for i := range n {
		v := model.VIP{Address: netip.AddrFrom4([4]byte{10, 0, 1, byte(i + 1)}), Port: 80, Protocol: model.TCP,
			HealthCheck: &model.HealthCheck{Type: model.CheckTCP}}
		for j := range 3 {
			v.Backends = append(v.Backends, be(netip.AddrFrom4([4]byte{10, 3, byte(i), byte(j + 1)}).String(), 100))
		}
		st.VIPs = append(st.VIPs, v)
	}
	model.Normalize(&st)
	return st
}

// wantTargets is every target of st in order, down (pending) for the ids in
// pending and up for the others.
func wantTargets(st model.State, pending ...string) []healthcheck.Target {
	var out []healthcheck.Target
	for i := range st.VIPs {
		v := &st.VIPs[i]
		for _, b := range v.Backends {
			spec, ok := model.HealthSpec(v, b)
			if !ok {
				continue
			}
			id := model.HealthTargetID(v.ID(), b.Address, b.Port)
			out = append(out, healthcheck.Target{ID: id, Spec: spec, StartUp: !slices.Contains(pending, id)})
		}
	}
	return out
}

// TestHealthCheckerSyncSingleVIPChange: after a change of one VIP, Sync
// hands the Manager exactly the targets of the new state, the new backend
// pending and every other target as it was; a change that moves no target
// (a weight) sets nothing.
func TestHealthCheckerSyncSingleVIPChange(t *testing.T) {
	ft := newFakeTargets()
	h := NewHealthChecker(ft)
	st := healthState(10)
	h.Sync(st)
	if sets := ft.takeSets(); len(sets) != 1 || !slices.EqualFunc(sets[0], wantTargets(st), sameTarget) {
		t.Fatalf("first Sync: %+v", sets)
	}

	// Weight and drain changes do not touch the targets.
	next := st.Clone()
	next.VIPs[4].Backends[1].Weight = 7
	next.VIPs[4].Backends[2].Drain = true
	h.Sync(next)
	if sets := ft.takeSets(); len(sets) != 0 {
		t.Fatalf("weight change: %d Set calls, want 0", len(sets))
	}

	// One backend added and one removed on VIP 4.
	vid := next.VIPs[4].ID()
	gone := next.VIPs[4].Backends[0]
	added := be("10.3.4.200", 100)
	next.VIPs[4].Backends = append(next.VIPs[4].Backends[1:], added)
	h.Sync(next)
	addedID := model.HealthTargetID(vid, added.Address, 0)
	sets := ft.takeSets()
	if len(sets) != 1 || !slices.EqualFunc(sets[0], wantTargets(next, addedID), sameTarget) {
		t.Fatalf("single-VIP change: Sets %+v\nwant %+v", sets, wantTargets(next, addedID))
	}
	if st, ok := h.Status(vid, gone); ok {
		t.Errorf("removed backend has a check status %+v", st)
	}
	if h.Up(vid, added) {
		t.Error("added backend up before its checks")
	}
	if !h.Up(vid, next.VIPs[4].Backends[0]) {
		t.Error("kept backend of the changed VIP down")
	}

	// The caller changing its state after Sync changes nothing.
	next.VIPs[5].Backends[0].Address = netip.MustParseAddr("10.9.9.9")
	h.Sync(next)
	if sets := ft.takeSets(); len(sets) != 1 {
		t.Fatalf("changed in place: %d Set calls, want 1", len(sets))
	}

	// A VIP removed takes its targets along, and comes back pending.
	removed := next.VIPs[0]
	less := model.State{VIPs: slices.Clone(next.VIPs[1:])}
	h.Sync(less)
	if sets := ft.takeSets(); len(sets) != 1 || len(sets[0]) != len(wantTargets(next))-3 {
		t.Fatalf("vip removed: %+v", sets)
	}
	if _, ok := h.Status(removed.ID(), removed.Backends[0]); ok {
		t.Error("backend of a removed VIP still checked")
	}
	h.Sync(next)
	var pending []string
	for _, b := range removed.Backends {
		pending = append(pending, model.HealthTargetID(removed.ID(), b.Address, b.Port))
	}
	pending = append(pending, addedID, model.HealthTargetID(next.VIPs[5].ID(), netip.MustParseAddr("10.9.9.9"), 0))
	if sets := ft.takeSets(); len(sets) != 1 || !slices.EqualFunc(sets[0], wantTargets(next, pending...), sameTarget) {
		t.Fatalf("vip back: %+v\nwant %+v", sets, wantTargets(next, pending...))
	}
}

// BenchmarkHealthSyncSingleChange is the Sync of a reconcile after one
// backend weight change, in a state of 1,000 checked VIPs x 32 backends
// and one of 1,000.
func BenchmarkHealthSyncSingleChange(b *testing.B) {
	st := benchState(1000, 32, 1000)
	for i := range st.VIPs {
		st.VIPs[i].HealthCheck = &model.HealthCheck{Type: model.CheckTCP}
	}
	model.Normalize(&st)
	h := NewHealthChecker(newFakeTargets())
	h.Sync(st)
	i := 0
	for b.Loop() {
		next := model.State{VIPs: slices.Clone(st.VIPs)}
		v := next.VIPs[0].Clone()
		v.Backends[7].Weight = uint32(50 + i%2*50)
		i++
		next.VIPs[0] = v
		h.Sync(next)
	}
}
