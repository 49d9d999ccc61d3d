package reconcile

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/control/reconcile/reconciletest"
	"github.com/xdplb/xdplb/control/state"
	"github.com/xdplb/xdplb/loader"
)

const testTableSize = 251

// newTestDatapath is an empty fake data plane with small limits.
func newTestDatapath() *reconciletest.Datapath {
	return reconciletest.NewDatapath(testTableSize, 16, 64)
}

// dpVIPs is what the data plane's VIP map holds.
func dpVIPs(t *testing.T, dp Datapath) map[loader.VIPKey]loader.VIPMeta {
	t.Helper()
	vips, err := dp.VIPs()
	if err != nil {
		t.Fatal(err)
	}
	return vips
}

// dpBackends is what the data plane's backend map holds, by id.
func dpBackends(t *testing.T, dp Datapath) map[uint32]loader.Backend {
	t.Helper()
	bs, err := dp.Backends()
	if err != nil {
		t.Fatal(err)
	}
	return bs
}

type recFixture struct {
	store *state.Store
	dp    *reconciletest.Datapath
	nw    *fakeNetwork
	rec   *Reconciler
}

func newRecFixture(t *testing.T, dp *reconciletest.Datapath) *recFixture {
	t.Helper()
	st, err := state.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if dp == nil {
		dp = newTestDatapath()
	}
	nw := newFakeNetwork()
	return &recFixture{store: st, dp: dp, nw: nw, rec: NewReconciler(st, dp, nw, nil, nil)}
}

func (f *recFixture) reconcile(t *testing.T) []string {
	t.Helper()
	if err := f.rec.Reconcile(context.Background()); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	return f.dp.TakeWrites()
}

var vip1 = model.VIPID{Addr: netip.MustParseAddr("10.0.0.100"), Port: 80, Protocol: model.TCP}

func be(a string, w uint32) model.Backend {
	return model.Backend{Address: netip.MustParseAddr(a), Weight: w}
}

func addVIP(t *testing.T, s *state.Store, id model.VIPID, backends ...model.Backend) {
	t.Helper()
	if err := s.AddVIP(model.VIP{Address: id.Addr, Port: id.Port, Protocol: id.Protocol, Backends: backends}); err != nil {
		t.Fatal(err)
	}
}

// tableIDs is the set of backend ids a VIP's table points at.
func tableIDs(t *testing.T, dp Datapath, vipID uint32) []uint32 {
	t.Helper()
	tbl, err := dp.LookupTable(vipID)
	if err != nil {
		t.Fatal(err)
	}
	var ids []uint32
	for _, id := range tbl {
		if id != 0 && !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

func TestReconcileFirstWritesInOrderThenNothing(t *testing.T) {
	f := newRecFixture(t, nil)
	f.nw.setMAC("10.0.0.1", mac(1))
	f.nw.setMAC("10.0.0.2", mac(2))
	addVIP(t, f.store, vip1, be("10.0.0.1", 100), be("10.0.0.2", 100))

	w := f.reconcile(t)
	want := []string{"put-backend 1", "put-backend 2", "put-table 1", "put-vip 1"}
	if !slices.Equal(w, want) {
		t.Fatalf("first reconcile writes %v, want %v", w, want)
	}
	meta := dpVIPs(t, f.dp)[VIPKeyOf(vip1)]
	if meta.ID != 1 || meta.Mode != loader.ModeDR || meta.Hash != loader.HashMaglev {
		t.Fatalf("vip meta %+v", meta)
	}
	b := dpBackends(t, f.dp)[1]
	if b.VIPID != 1 || b.Addr != netip.MustParseAddr("10.0.0.1") || b.MAC.String() != mac(1).String() ||
		b.SrcMAC.String() != reconciletest.SrcMAC.String() || b.Ifindex != 2 {
		t.Fatalf("backend 1 = %+v", b)
	}
	if got := tableIDs(t, f.dp, 1); !slices.Equal(got, []uint32{1, 2}) {
		t.Fatalf("table points at %v", got)
	}
	if got := f.nw.Announced(); len(got) != 1 || got[vip1.Addr] {
		t.Fatalf("announce request %v, want the vip address not forced", got)
	}

	if w := f.reconcile(t); len(w) != 0 {
		t.Fatalf("second reconcile writes %v, want none", w)
	}
	if ok, failed := f.rec.Counts(); ok != 2 || failed != 0 {
		t.Fatalf("counts ok=%d failed=%d", ok, failed)
	}
}

func TestReconcileBackendRemovalRewritesTableBeforeDelete(t *testing.T) {
	f := newRecFixture(t, nil)
	for i, a := range []string{"10.0.0.1", "10.0.0.2", "10.0.0.3"} {
		f.nw.setMAC(a, mac(byte(i+1)))
	}
	addVIP(t, f.store, vip1, be("10.0.0.1", 100), be("10.0.0.2", 100), be("10.0.0.3", 100))
	f.reconcile(t)
	if err := f.store.DeleteBackend(vip1, netip.MustParseAddr("10.0.0.2"), 0); err != nil {
		t.Fatal(err)
	}
	w := f.reconcile(t)
	want := []string{"put-table 1", "del-backend 2"}
	if !slices.Equal(w, want) {
		t.Fatalf("writes %v, want %v", w, want)
	}
	if got := tableIDs(t, f.dp, 1); !slices.Equal(got, []uint32{1, 3}) {
		t.Fatalf("table points at %v", got)
	}
}

func TestReconcileDrainKeepsEntryOutOfTable(t *testing.T) {
	f := newRecFixture(t, nil)
	f.nw.setMAC("10.0.0.1", mac(1))
	f.nw.setMAC("10.0.0.2", mac(2))
	addVIP(t, f.store, vip1, be("10.0.0.1", 100), be("10.0.0.2", 100))
	f.reconcile(t)
	drain := true
	if err := f.store.SetBackend(vip1, netip.MustParseAddr("10.0.0.2"), 0, model.BackendPatch{Drain: &drain}); err != nil {
		t.Fatal(err)
	}
	w := f.reconcile(t)
	if !slices.Equal(w, []string{"put-table 1"}) {
		t.Fatalf("writes %v, want only the table", w)
	}
	if _, ok := dpBackends(t, f.dp)[2]; !ok {
		t.Fatal("drained backend entry deleted; its open flows would break")
	}
	if got := tableIDs(t, f.dp, 1); !slices.Equal(got, []uint32{1}) {
		t.Fatalf("table points at %v", got)
	}
	if bi, _ := f.rec.Backend(vip1, netip.MustParseAddr("10.0.0.2"), 0); bi.State != model.BackendDraining {
		t.Fatalf("state %q", bi.State)
	}
	// Weight 0 drains too; with no backend left the table goes away.
	zero := uint32(0)
	if err := f.store.SetBackend(vip1, netip.MustParseAddr("10.0.0.1"), 0, model.BackendPatch{Weight: &zero}); err != nil {
		t.Fatal(err)
	}
	if w := f.reconcile(t); !slices.Equal(w, []string{"del-table 1"}) {
		t.Fatalf("writes %v", w)
	}
	if bs := dpBackends(t, f.dp); len(bs) != 2 {
		t.Fatalf("backends %v", bs)
	}
}

func TestReconcileRecoversIDs(t *testing.T) {
	dp := newTestDatapath()
	// A previous daemon left VIP id 5 and backend ids 7 and 9, and an
	// orphan backend 3 of a VIP that never got its entry.
	for _, err := range []error{
		dp.PutBackend(loader.Backend{ID: 7, VIPID: 5, Addr: netip.MustParseAddr("10.0.0.1"), Mode: loader.ModeDR, MAC: mac(1), SrcMAC: reconciletest.SrcMAC, Ifindex: 2}),
		dp.PutBackend(loader.Backend{ID: 9, VIPID: 5, Addr: netip.MustParseAddr("10.0.0.2"), Mode: loader.ModeDR, MAC: mac(2), SrcMAC: reconciletest.SrcMAC, Ifindex: 2}),
		dp.PutLookupTable(5, BuildMaglev([]MaglevBackend{
			{ID: 7, Key: MaglevKey(netip.MustParseAddr("10.0.0.1"), 80), Weight: 100},
			{ID: 9, Key: MaglevKey(netip.MustParseAddr("10.0.0.2"), 80), Weight: 100},
		}, testTableSize)),
		dp.PutVIP(VIPKeyOf(vip1), loader.VIPMeta{ID: 5, Mode: loader.ModeDR, Hash: loader.HashMaglev}),
		dp.PutBackend(loader.Backend{ID: 3, VIPID: 4, Addr: netip.MustParseAddr("10.0.0.9"), Mode: loader.ModeDR}),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	dp.TakeWrites()

	f := newRecFixture(t, dp)
	f.nw.setMAC("10.0.0.1", mac(1))
	f.nw.setMAC("10.0.0.2", mac(2))
	f.nw.setMAC("10.0.0.3", mac(3))
	addVIP(t, f.store, vip1, be("10.0.0.1", 100), be("10.0.0.2", 100))
	if w := f.reconcile(t); !slices.Equal(w, []string{"del-backend 3"}) {
		t.Fatalf("restart writes %v, want only the orphan removed", w)
	}
	// New ids continue after the highest id found in the maps.
	if err := f.store.AddBackend(vip1, be("10.0.0.3", 100)); err != nil {
		t.Fatal(err)
	}
	vip2 := model.VIPID{Addr: netip.MustParseAddr("10.0.0.101"), Port: 53, Protocol: model.UDP}
	addVIP(t, f.store, vip2, be("10.0.0.1", 100))
	f.reconcile(t)
	vips := dpVIPs(t, f.dp)
	if got := vips[VIPKeyOf(vip2)].ID; got != 6 {
		t.Fatalf("new vip id %d, want 6", got)
	}
	if vips[VIPKeyOf(vip1)].ID != 5 {
		t.Fatal("vip id changed")
	}
	if got := tableIDs(t, f.dp, 5); !slices.Equal(got, []uint32{7, 9, 10}) {
		t.Fatalf("vip1 table points at %v", got)
	}
	if got := tableIDs(t, f.dp, 6); !slices.Equal(got, []uint32{11}) {
		t.Fatalf("vip2 table points at %v", got)
	}
}

func TestReconcileUnresolvedThenNeighbourUpdate(t *testing.T) {
	f := newRecFixture(t, nil)
	f.nw.setMAC("10.0.0.1", mac(1))
	addVIP(t, f.store, vip1, be("10.0.0.1", 100), be("10.0.0.2", 100))
	f.reconcile(t)
	if _, ok := dpBackends(t, f.dp)[2]; ok {
		t.Fatal("unresolved backend written")
	}
	if got := tableIDs(t, f.dp, 1); !slices.Equal(got, []uint32{1}) {
		t.Fatalf("table points at %v", got)
	}
	if bi, _ := f.rec.Backend(vip1, netip.MustParseAddr("10.0.0.2"), 0); bi.State != model.BackendUnresolved {
		t.Fatalf("state %q", bi.State)
	}

	// The neighbour update reaches Run, which brings the backend in.
	<-f.nw.Changes() // drain the signals of the set-up
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.rec.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	f.nw.setMAC("10.0.0.2", mac(2))
	deadline := time.Now().Add(3 * time.Second)
	for {
		bi, _ := f.rec.Backend(vip1, netip.MustParseAddr("10.0.0.2"), 0)
		if bi.State == model.BackendUp {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("backend still %q after neighbour update", bi.State)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if got := tableIDs(t, f.dp, 1); !slices.Equal(got, []uint32{1, 2}) {
		t.Fatalf("table points at %v", got)
	}
	if b := dpBackends(t, f.dp)[2]; b.MAC.String() != mac(2).String() {
		t.Fatalf("backend 2 MAC %v", b.MAC)
	}
}

func TestReconcileRemovesVIPInOrder(t *testing.T) {
	f := newRecFixture(t, nil)
	f.nw.setMAC("10.0.0.1", mac(1))
	addVIP(t, f.store, vip1, be("10.0.0.1", 100))
	f.reconcile(t)
	if err := f.store.DeleteVIP(vip1); err != nil {
		t.Fatal(err)
	}
	w := f.reconcile(t)
	if want := []string{"del-vip 1", "del-table 1", "del-backend 1"}; !slices.Equal(w, want) {
		t.Fatalf("writes %v, want %v", w, want)
	}
	if len(f.nw.Announced()) != 0 {
		t.Fatalf("still announcing %v", f.nw.Announced())
	}
}

func TestReconcileMACChangeRewritesBackend(t *testing.T) {
	f := newRecFixture(t, nil)
	f.nw.setMAC("10.0.0.1", mac(1))
	addVIP(t, f.store, vip1, be("10.0.0.1", 100))
	f.reconcile(t)
	f.nw.setMAC("10.0.0.1", mac(9))
	if w := f.reconcile(t); !slices.Equal(w, []string{"put-backend 1"}) {
		t.Fatalf("writes %v", w)
	}
	// Failed neighbour: the entry stays for open flows, the table empties.
	f.nw.setMAC("10.0.0.1", nil)
	w := f.reconcile(t)
	if !slices.Equal(w, []string{"del-table 1"}) {
		t.Fatalf("writes %v", w)
	}
	if dpBackends(t, f.dp)[1].MAC.String() != mac(9).String() {
		t.Fatal("backend entry lost its last MAC")
	}
}

func TestReconcileWriteErrorCounted(t *testing.T) {
	f := newRecFixture(t, nil)
	f.nw.setMAC("10.0.0.1", mac(1))
	addVIP(t, f.store, vip1, be("10.0.0.1", 100))
	f.dp.SetFailPut(errTest)
	if err := f.rec.Reconcile(context.Background()); err == nil {
		t.Fatal("reconcile succeeded despite a failing write")
	}
	if len(dpVIPs(t, f.dp)) != 0 || len(f.dp.LookupTables()) != 0 {
		t.Fatal("vip or table published over a backend that was not written")
	}
	if _, failed := f.rec.Counts(); failed != 1 {
		t.Fatalf("failed = %d", failed)
	}
}

type testErr string

func (e testErr) Error() string { return string(e) }

const errTest = testErr("injected failure")

func TestIDAllocatorRotates(t *testing.T) {
	used := map[uint32]bool{1: true, 4: true}
	var a idAllocator
	var got []uint32
	for range 4 {
		id, err := a.alloc(used, 8)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, id)
	}
	// Starts after the highest id in use, wraps, skips used ids.
	if want := []uint32{5, 6, 7, 2}; !slices.Equal(got, want) {
		t.Fatalf("ids %v, want %v", got, want)
	}
	delete(used, 5) // freed: not handed out again before the others
	id, err := a.alloc(used, 8)
	if err != nil || id != 3 {
		t.Fatalf("next id %d (%v), want 3", id, err)
	}
	id, err = a.alloc(used, 8)
	if err != nil || id != 5 {
		t.Fatalf("next id %d (%v), want 5 after wrapping", id, err)
	}
	if _, err := a.alloc(used, 8); err == nil {
		t.Fatal("allocated from a full range")
	}
}
