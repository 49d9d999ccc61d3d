package reconcile

import (
	"context"
	"net/netip"
	"testing"

	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/control/reconcile/reconciletest"
	"github.com/xdplb/xdplb/control/state"
	"github.com/xdplb/xdplb/loader"
)

// benchState is vips VIPs on port 80 with the same pool of backends each,
// and VIP 0 with big backends of its own when big > 0: the shapes of the
// control-plane benchmark (vm-tests/bench).
func benchState(vips, pool, big int) model.State {
	var st model.State
	for i := range vips {
		v := model.VIP{Address: netip.AddrFrom4([4]byte{10, 250, byte(i >> 8), byte(i)}), Port: 80, Protocol: model.TCP}
		n, third := pool, byte(1)
		if i == 0 && big > 0 {
			n, third = big, 8
		}
		for j := range n {
			a := netip.AddrFrom4([4]byte{10, 201, third + byte(j>>8), byte(j)})
			v.Backends = append(v.Backends, model.Backend{Address: a, Weight: model.DefaultWeight})
		}
		st.VIPs = append(st.VIPs, v)
	}
	return st
}

// benchNetwork resolves every backend of benchState.
func benchNetwork(st model.State) *fakeNetwork {
	nw := newFakeNetwork()
	for _, v := range st.VIPs {
		for _, b := range v.Backends {
			a := b.Address.As4()
			nw.SetMAC(b.Address.String(), mac(a[3]))
		}
	}
	return nw
}

func newBenchReconciler(b *testing.B, st model.State) (*state.Store, *Reconciler) {
	b.Helper()
	store, err := state.Open(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	dp := reconciletest.NewDatapath(loader.DefaultLookupSize, 1024, 65536)
	return store, NewReconciler(store, dp, benchNetwork(st), nil, nil)
}

// BenchmarkApply1000x32 is `apply` of 1,000 VIPs x 32 backends to an empty
// data plane: the store's Replace and the reconcile the API runs.
func BenchmarkApply1000x32(b *testing.B) {
	st := benchState(1000, 32, 0)
	ctx := context.Background()
	for b.Loop() {
		b.StopTimer()
		store, rec := newBenchReconciler(b, st)
		if err := rec.Reconcile(ctx); err != nil { // the daemon's first pass
			b.Fatal(err)
		}
		b.StartTimer()
		if err := store.Replace(st); err != nil {
			b.Fatal(err)
		}
		if err := rec.ReconcileChanged(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReconcileFull1000x32 is one full pass (the safety net, and what
// a network or health change runs) over 1,000 VIPs x 32 backends that are
// already in the maps.
func BenchmarkReconcileFull1000x32(b *testing.B) {
	st := benchState(1000, 32, 0)
	store, rec := newBenchReconciler(b, st)
	if err := store.Replace(st); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := rec.Reconcile(ctx); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := rec.Reconcile(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSingleChange is one backend weight change on a VIP with 1,000
// backends, in a state of 1,000 VIPs: the store's update (validation,
// persistence) and the reconcile the API runs before answering.
func BenchmarkSingleChange(b *testing.B) {
	st := benchState(1000, 32, 1000)
	store, rec := newBenchReconciler(b, st)
	if err := store.Replace(st); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := rec.Reconcile(ctx); err != nil {
		b.Fatal(err)
	}
	v := st.VIPs[0]
	i := 0
	for b.Loop() {
		w := uint32(50 + i%2*50)
		i++
		if err := store.SetBackend(v.ID(), v.Backends[7].Address, 0, model.BackendPatch{Weight: &w}); err != nil {
			b.Fatal(err)
		}
		if err := rec.ReconcileChanged(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
