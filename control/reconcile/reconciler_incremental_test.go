package reconcile

import (
	"context"
	"errors"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/control/state"
)

var vip2 = model.VIPID{Addr: netip.MustParseAddr("10.0.0.101"), Port: 80, Protocol: model.TCP}

func (f *recFixture) reconcileChanged(t *testing.T) []string {
	t.Helper()
	if err := f.rec.ReconcileChanged(context.Background()); err != nil {
		t.Fatalf("reconcile changed: %v", err)
	}
	return f.dp.TakeWrites()
}

// A change to one VIP writes only that VIP, and resolves only its backends.
func TestReconcileChangedTouchesOnlyTheChangedVIP(t *testing.T) {
	f := newRecFixture(t, nil)
	for _, a := range []string{"10.0.0.1", "10.0.0.2", "10.0.0.3"} {
		f.nw.setMAC(a, mac(a[len(a)-1]))
	}
	addVIP(t, f.store, vip1, be("10.0.0.1", 100), be("10.0.0.2", 100))
	addVIP(t, f.store, vip2, be("10.0.0.1", 100), be("10.0.0.2", 100))
	f.reconcile(t)
	id2 := dpVIPs(t, f.dp)[VIPKeyOf(vip2)].ID

	f.nw.ResetResolves()
	w := uint32(50)
	if err := f.store.SetBackend(vip2, netip.MustParseAddr("10.0.0.1"), 0, model.BackendPatch{Weight: &w}); err != nil {
		t.Fatal(err)
	}
	if got, want := f.reconcileChanged(t), []string{"put-table " + itoa(id2)}; !slices.Equal(got, want) {
		t.Fatalf("weight change writes %v, want %v", got, want)
	}
	if n := f.nw.Resolves(); n != 0 {
		t.Fatalf("weight change resolved %d backends, want 0 (cached)", n)
	}
	if got := f.reconcile(t); len(got) != 0 {
		t.Fatalf("full pass after the incremental one writes %v, want none", got)
	}

	// A new backend on vip1: one backend and vip1's table.
	if err := f.store.AddBackend(vip1, be("10.0.0.3", 100)); err != nil {
		t.Fatal(err)
	}
	got := f.reconcileChanged(t)
	if len(got) != 2 || !strings.HasPrefix(got[0], "put-backend ") || got[1] != "put-table 1" {
		t.Fatalf("new backend writes %v, want one backend then vip 1's table", got)
	}
	// Nothing changed: nothing written.
	if got := f.reconcileChanged(t); len(got) != 0 {
		t.Fatalf("unchanged state writes %v", got)
	}
	// A removed VIP: entry, table, backends; the other VIP untouched.
	if err := f.store.DeleteVIP(vip2); err != nil {
		t.Fatal(err)
	}
	got = f.reconcileChanged(t)
	if len(got) != 4 || got[0] != "del-vip "+itoa(id2) || got[1] != "del-table "+itoa(id2) {
		t.Fatalf("removed vip writes %v", got)
	}
	if got := f.reconcile(t); len(got) != 0 {
		t.Fatalf("full pass after removal writes %v, want none", got)
	}
}

// A neighbour change (a full pass) rewrites only the backends whose MAC
// changed, under every VIP that has them, and no table.
func TestReconcileNeighbourChangeRewritesOnlyAffectedBackends(t *testing.T) {
	f := newRecFixture(t, nil)
	f.nw.setMAC("10.0.0.1", mac(1))
	f.nw.setMAC("10.0.0.2", mac(2))
	addVIP(t, f.store, vip1, be("10.0.0.1", 100), be("10.0.0.2", 100))
	addVIP(t, f.store, vip2, be("10.0.0.1", 100), be("10.0.0.2", 100))
	f.reconcile(t)
	f.nw.setMAC("10.0.0.2", mac(9))
	got := f.reconcile(t)
	if len(got) != 2 || !strings.HasPrefix(got[0], "put-backend ") || !strings.HasPrefix(got[1], "put-backend ") {
		t.Fatalf("neighbour change writes %v, want the two entries of 10.0.0.2", got)
	}
	for _, b := range dpBackends(t, f.dp) {
		want := mac(1)
		if b.Addr == netip.MustParseAddr("10.0.0.2") {
			want = mac(9)
		}
		if b.MAC.String() != want.String() {
			t.Fatalf("backend %s has MAC %s, want %s", b.Addr, b.MAC, want)
		}
	}
	// The incremental pass then uses the new MAC for a changed VIP.
	w := uint32(30)
	if err := f.store.SetBackend(vip1, netip.MustParseAddr("10.0.0.2"), 0, model.BackendPatch{Weight: &w}); err != nil {
		t.Fatal(err)
	}
	if got := f.reconcileChanged(t); len(got) != 1 || got[0] != "put-table 1" {
		t.Fatalf("weight change after the neighbour change writes %v", got)
	}
}

// After a failed pass the next incremental pass is a full one.
func TestReconcileChangedAfterFailureIsFull(t *testing.T) {
	f := newRecFixture(t, nil)
	f.nw.setMAC("10.0.0.1", mac(1))
	addVIP(t, f.store, vip1, be("10.0.0.1", 100))
	f.dp.SetFailPut(errTest)
	if err := f.rec.ReconcileChanged(context.Background()); err == nil {
		t.Fatal("reconcile with failing writes succeeded")
	}
	f.dp.SetFailPut(nil)
	f.dp.TakeWrites()
	got := f.reconcileChanged(t)
	if len(got) != 3 || !strings.HasPrefix(got[0], "put-backend ") || !strings.HasPrefix(got[1], "put-table ") ||
		!strings.HasPrefix(got[2], "put-vip ") {
		t.Fatalf("retry writes %v, want backend, table, vip", got)
	}
	if vips := dpVIPs(t, f.dp); len(vips) != 1 {
		t.Fatalf("vips after retry: %v", vips)
	}
}

func itoa(n uint32) string { return strconv.FormatUint(uint64(n), 10) }

func openTestStore(t *testing.T, dir string, extra func(model.State) error) *state.Store {
	t.Helper()
	s, err := state.Open(dir, extra)
	if err != nil {
		t.Fatalf("OpenStore: %v", err)
	}
	return s
}

// The layout cache gives BuildMaglev's tables, for shared and distinct
// backend sets, weights and ids.
func TestMaglevCacheMatchesBuildMaglev(t *testing.T) {
	c := newMaglevCache()
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 60 {
		n := 1 + rng.IntN(20)
		var bs []MaglevBackend
		for j := range n {
			w := uint32(100)
			if i%3 == 0 {
				w = uint32(rng.IntN(4) * 50)
			}
			key := MaglevKey(netip.AddrFrom4([4]byte{10, 0, byte(i % 4), byte(j)}), 80)
			bs = append(bs, MaglevBackend{ID: uint32(1 + rng.IntN(1000)), Key: key, Weight: w})
		}
		if i%7 == 0 {
			bs = append(bs, MaglevBackend{ID: 5000, Key: bs[0].Key, Weight: 100}) // duplicate key
		}
		if got, want := c.build(bs, testTableSize), BuildMaglev(bs, testTableSize); !slices.Equal(got, want) {
			t.Fatalf("set %d: cached layout differs from BuildMaglev", i)
		}
	}
	if len(c.layouts) > maglevCacheSize {
		t.Fatalf("cache holds %d layouts, bound %d", len(c.layouts), maglevCacheSize)
	}
}

// The extra check sees only new VIPs and new backends of the others.
func TestStoreExtraCheckSeesOnlyNewBackends(t *testing.T) {
	var seen []model.State
	s := openTestStore(t, t.TempDir(), func(st model.State) error { seen = append(seen, st); return nil })
	addVIP(t, s, vip1, be("10.0.0.1", 100), be("10.0.0.2", 100))
	addVIP(t, s, vip2, be("10.0.0.1", 100))
	w := uint32(1)
	if err := s.SetBackend(vip1, netip.MustParseAddr("10.0.0.1"), 0, model.BackendPatch{Weight: &w}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddBackend(vip2, be("10.0.0.3", 100)); err != nil {
		t.Fatal(err)
	}
	count := func(st model.State) (vips, backends int) {
		for _, v := range st.VIPs {
			vips++
			backends += len(v.Backends)
		}
		return
	}
	want := [][2]int{{1, 2}, {1, 1}, {0, 0}, {1, 1}}
	if len(seen) != len(want) {
		t.Fatalf("extra check ran %d times, want %d", len(seen), len(want))
	}
	for i, st := range seen {
		if v, b := count(st); v != want[i][0] || b != want[i][1] {
			t.Fatalf("check %d saw %d vips, %d backends; want %v", i, v, b, want[i])
		}
	}
	if got := seen[3].VIPs[0].Backends[0].Address; got != netip.MustParseAddr("10.0.0.3") {
		t.Fatalf("check of the new backend saw %s", got)
	}
}

// Weight and drain changes take reconcile's weight-only way (reweight):
// random ones, with some backends down and one unresolved, must leave the
// maps and the backend states exactly as a full pass would, writing only
// lookup tables and VIP entries, in every mode (NAT backends on another
// port than the VIP's). A health change not yet reconciled sends the VIP
// the whole way.
func TestReweightMatchesFullPass(t *testing.T) {
	for _, mode := range []model.Mode{model.ModeDR, model.ModeNAT, model.ModeFullNAT} {
		t.Run(string(mode), func(t *testing.T) { testReweightMatchesFullPass(t, mode) })
	}
}

func testReweightMatchesFullPass(t *testing.T, mode model.Mode) {
	addrs := []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"}
	f := newHealthFixture(t, 251, addrs[:5]...) // 10.0.0.6 has no MAC: unresolved in dr
	for _, a := range addrs[5:] {
		if err := f.store.AddBackend(vip1, be(a, 100)); err != nil {
			t.Fatal(err)
		}
	}
	addVIP(t, f.store, vip2, be("10.0.0.1", 100), be("10.0.0.2", 100))
	var port uint16 // of vip1's backends
	if mode.IsNAT() {
		port = 8080
		f.nw.SetRouted("10.0.0.6", false) // unresolved in nat
		setMode(t, f.store, vip1, mode, port)
		setMode(t, f.store, vip2, mode, 0)
	}
	target := func(a string) model.Backend { return model.Backend{Address: netip.MustParseAddr(a), Port: port} }
	f.health.SetBackend(vip1, target("10.0.0.3"), false, "connect refused")
	f.reconcile(t)
	if meta := dpVIPs(t, f.dp)[VIPKeyOf(vip1)]; meta.Mode != ForwardMode(mode) {
		t.Fatalf("vip entry %+v, want mode %s", meta, mode)
	}

	rng := rand.New(rand.NewPCG(3, 4))
	states := func() map[string]string {
		out := map[string]string{}
		for _, a := range addrs {
			bi, _ := f.rec.Backend(vip1, netip.MustParseAddr(a), port)
			out[a] = bi.State
		}
		return out
	}
	if st := states(); st["10.0.0.6"] != model.BackendUnresolved || st["10.0.0.3"] != model.BackendDown || st["10.0.0.1"] != model.BackendUp {
		t.Fatalf("backend states %v", st)
	}
	for round := range 200 {
		a := netip.MustParseAddr(addrs[rng.IntN(len(addrs))])
		var p model.BackendPatch
		switch rng.IntN(3) {
		case 0:
			w := uint32(rng.IntN(3) * 50) // 0 drains too
			p.Weight = &w
		case 1:
			d := true
			p.Drain = &d
		default:
			d := false
			p.Drain = &d
		}
		if err := f.store.SetBackend(vip1, a, port, p); err != nil {
			t.Fatal(err)
		}
		for _, w := range f.reconcileChanged(t) {
			if !strings.HasPrefix(w, "put-table ") && !strings.HasPrefix(w, "del-table ") && !strings.HasPrefix(w, "put-vip ") {
				t.Fatalf("round %d: a weight change wrote %q", round, w)
			}
		}
		incremental, tables := states(), f.dp.LookupTables()
		vips := dpVIPs(t, f.dp)
		if got := f.reconcile(t); len(got) != 0 {
			t.Fatalf("round %d: a full pass after the weight-only one writes %v", round, got)
		}
		if full := states(); !maps.Equal(incremental, full) {
			t.Fatalf("round %d: backend states %v, a full pass makes them %v", round, incremental, full)
		}
		if !maps.EqualFunc(tables, f.dp.LookupTables(), slices.Equal) || !maps.Equal(vips, dpVIPs(t, f.dp)) {
			t.Fatalf("round %d: the full pass changed the tables or VIP entries", round)
		}
	}

	// A health change whose own pass has not run: the weight change takes
	// the whole way and brings it in (the backend entry is rewritten).
	w, undrain := uint32(100), false
	if err := f.store.SetBackend(vip1, netip.MustParseAddr("10.0.0.1"), port, model.BackendPatch{Weight: &w, Drain: &undrain}); err != nil {
		t.Fatal(err)
	}
	f.reconcileChanged(t)
	f.health.SetBackend(vip1, target("10.0.0.1"), false, "timeout")
	w = 70
	if err := f.store.SetBackend(vip1, netip.MustParseAddr("10.0.0.2"), port, model.BackendPatch{Weight: &w}); err != nil {
		t.Fatal(err)
	}
	got := f.reconcileChanged(t)
	if !slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, "put-backend ") }) {
		t.Fatalf("weight change after a health change writes %v, want the down backend's entry too", got)
	}
	if bi, _ := f.rec.Backend(vip1, netip.MustParseAddr("10.0.0.1"), port); bi.State != model.BackendDown {
		t.Fatalf("10.0.0.1 is %s after the pass, want down", bi.State)
	}
}

// setMode gives VIP id another mode, and its backends port (0: the VIP's).
func setMode(t *testing.T, s *state.Store, id model.VIPID, mode model.Mode, port uint16) {
	t.Helper()
	st := s.State()
	v := &st.VIPs[st.Find(id)]
	v.Mode = mode
	for j := range v.Backends {
		v.Backends[j].Port = port
	}
	if err := s.Replace(st); err != nil {
		t.Fatal(err)
	}
}

// A pass after a change that an earlier pass has reconciled already (the
// loop and the API call both run one) does no work, not even a compare of
// every VIP; a new change, or a failed pass, makes the next one run.
func TestReconcileChangedSkipsReconciledState(t *testing.T) {
	f := newHealthFixture(t, 251, "10.0.0.1", "10.0.0.2")
	syncs := func() int {
		return len(f.health.Synced())
	}
	w := uint32(50)
	if err := f.store.SetBackend(vip1, netip.MustParseAddr("10.0.0.1"), 0, model.BackendPatch{Weight: &w}); err != nil {
		t.Fatal(err)
	}
	before := syncs()
	if got := f.reconcileChanged(t); len(got) != 1 {
		t.Fatalf("the change writes %v, want its table", got)
	}
	if syncs() != before+1 {
		t.Fatalf("the pass after the change did not run")
	}
	if got := f.reconcileChanged(t); len(got) != 0 || syncs() != before+1 {
		t.Fatalf("a second pass on the same state ran (writes %v)", got)
	}
	// A full pass always runs.
	f.reconcile(t)
	if syncs() != before+2 {
		t.Fatal("a full pass was skipped")
	}
	// After a failed pass the next one runs, whole.
	f.dp.SetFailPut(errors.New("map full"))
	if err := f.store.SetBackend(vip1, netip.MustParseAddr("10.0.0.2"), 0, model.BackendPatch{Weight: &w}); err != nil {
		t.Fatal(err)
	}
	if err := f.store.AddBackend(vip1, be("10.0.0.3", 100)); err != nil {
		t.Fatal(err)
	}
	f.nw.setMAC("10.0.0.3", mac(3))
	if err := f.rec.ReconcileChanged(context.Background()); err == nil {
		t.Fatal("a pass with failing writes succeeded")
	}
	f.dp.SetFailPut(nil)
	n := syncs()
	if err := f.rec.ReconcileChanged(context.Background()); err != nil {
		t.Fatal(err)
	}
	if syncs() != n+1 {
		t.Fatal("the pass after a failed one was skipped")
	}
}
