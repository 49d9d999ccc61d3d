package reconcile

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/control/reconcile/reconciletest"
	"github.com/xdplb/xdplb/control/state"
	"github.com/xdplb/xdplb/internal/testutil"
	"github.com/xdplb/xdplb/loader"
)

// writeCounter is a Datapath that counts the writes made through it.
type writeCounter struct {
	Datapath
	writes []string
}

func (w *writeCounter) PutVIP(k loader.VIPKey, m loader.VIPMeta) error {
	w.writes = append(w.writes, fmt.Sprintf("put-vip %d", m.ID))
	return w.Datapath.PutVIP(k, m)
}

func (w *writeCounter) DeleteVIP(k loader.VIPKey) error {
	w.writes = append(w.writes, fmt.Sprintf("del-vip %s", VIPIDOf(k)))
	return w.Datapath.DeleteVIP(k)
}

func (w *writeCounter) PutBackend(b loader.Backend) error {
	w.writes = append(w.writes, fmt.Sprintf("put-backend %d", b.ID))
	return w.Datapath.PutBackend(b)
}

func (w *writeCounter) DeleteBackend(id uint32) error {
	w.writes = append(w.writes, fmt.Sprintf("del-backend %d", id))
	return w.Datapath.DeleteBackend(id)
}

func (w *writeCounter) PutLookupTable(id uint32, t []uint32) error {
	w.writes = append(w.writes, fmt.Sprintf("put-table %d", id))
	return w.Datapath.PutLookupTable(id, t)
}

func (w *writeCounter) PutLookupTables(ts map[uint32][]uint32) error {
	w.writes = append(w.writes, fmt.Sprintf("put-tables %d", len(ts)))
	return w.Datapath.PutLookupTables(ts)
}

func (w *writeCounter) DeleteLookupTable(id uint32) error {
	w.writes = append(w.writes, fmt.Sprintf("del-table %d", id))
	return w.Datapath.DeleteLookupTable(id)
}

// Random sequences of events (VIPs of every mode and backends, on the
// VIP's port or another, added and deleted, modes and SNAT addresses
// changed, weights, pools and drain flags changed, backends failing and
// recovering, MACs changing or lost, NAT routes and the interface's
// address lost and back, daemon restarts over the pinned maps) go through
// the reconciler
// the way the daemon drives it, over the real loaded program's maps: state
// changes by incremental passes, health and neighbour changes by full
// passes, a restart by a new reconciler's full pass. After every step, a
// reconciler that knows nothing (no mirror, no known table, nothing
// resolved) makes a full pass over the same maps: it must find nothing to
// write, so the maps are byte for byte what a plan built from scratch
// wants, lookup tables included. Every table slot is also checked to name
// a backend of its VIP that is up.
func TestReconcilePropertyRealMaps(t *testing.T) {
	const tableSize = 251
	opts := loader.Options{BPFFS: testutil.MountBPFFS(t), LookupSize: tableSize, ConntrackSize: 1024,
		MaxVIPs: 16, MaxBackends: 64}
	dp, err := loader.Load(opts)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Cleanup(func() { _ = dp.Remove() })
	store, err := state.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	nw, health := reconciletest.NewNetwork(), reconciletest.NewHealth()
	ctx := context.Background()
	rec := NewReconciler(store, dp, nw, health, nil)

	vipAddrs := []string{"10.0.0.100", "10.0.0.101", "10.0.0.102", "10.0.0.103", "10.0.0.104", "10.0.0.105"}
	beAddrs := []string{"10.0.1.1", "10.0.1.2", "10.0.1.3", "10.0.1.4", "10.0.1.5", "10.0.1.6", "10.0.1.7", "10.0.1.8"}
	for i, a := range beAddrs {
		nw.SetMAC(a, reconciletest.MAC(byte(i+1)))
	}
	vipID := func(a string) model.VIPID {
		return model.VIPID{Addr: netip.MustParseAddr(a), Port: 80, Protocol: model.TCP}
	}
	r := rand.New(rand.NewPCG(7, 11))
	pick := func(s []string) string { return s[r.IntN(len(s))] }
	modes := []model.Mode{model.ModeDR, model.ModeNAT, model.ModeFullNAT}
	// a backend on the VIP's port (0), or for NAT often on another
	port := func() uint16 { return []uint16{0, 0, 8080, 8081}[r.IntN(4)] }
	snat := func(v *model.VIP) {
		v.SNATAddr = netip.Addr{}
		if v.Mode == model.ModeFullNAT && r.IntN(2) == 0 {
			v.SNATAddr = netip.MustParseAddr(pick([]string{"10.0.2.1", "10.0.2.2"}))
		}
	}
	// a random backend of a random VIP of the state, if any
	someBackend := func() (model.VIPID, model.Backend, bool) {
		st := store.State()
		if len(st.VIPs) == 0 {
			return model.VIPID{}, model.Backend{}, false
		}
		v := st.VIPs[r.IntN(len(st.VIPs))]
		if len(v.Backends) == 0 {
			return v.ID(), model.Backend{}, false
		}
		return v.ID(), v.Backends[r.IntN(len(v.Backends))], true
	}

	counts := map[string]int{}
	inMaps := map[loader.ForwardMode]int{} // VIP entries seen after the steps, by mode
	for step := range 400 {
		var event string
		full := false
		switch k := r.IntN(100); {
		case k < 15:
			event = "add vip"
			v := model.VIP{Address: netip.MustParseAddr(pick(vipAddrs)), Port: 80, Protocol: model.TCP, Mode: modes[r.IntN(3)]}
			if r.IntN(3) == 0 {
				v.Scheduler = model.SchedSH
			}
			snat(&v)
			v.FailoverBelow = uint32(r.IntN(3) * 50) // backup pools: 0, 50 or 100
			for range r.IntN(5) {
				b := model.Backend{Address: netip.MustParseAddr(pick(beAddrs)), Weight: uint32(r.IntN(4) * 50)}
				b.Priority = uint32(r.IntN(3))
				if v.Mode.IsNAT() {
					b.Port = port()
				}
				v.Backends = append(v.Backends, b)
			}
			if store.AddVIP(v) != nil { // a duplicate VIP or backend: refused, nothing changes
				event = "add vip (refused)"
			}
		case k < 19:
			event = "del vip"
			_ = store.DeleteVIP(vipID(pick(vipAddrs)))
		case k < 26:
			// A mode or SNAT change (refused when a backend port does
			// not fit the new mode): the VIP's backends are rewritten.
			event = "mode"
			st := store.State()
			if len(st.VIPs) == 0 {
				break
			}
			v := &st.VIPs[r.IntN(len(st.VIPs))]
			v.Mode = modes[r.IntN(3)]
			snat(v)
			if store.Replace(st) != nil {
				event = "mode (refused)"
			}
		case k < 39:
			event = "add backend"
			_ = store.AddBackend(vipID(pick(vipAddrs)), model.Backend{Address: netip.MustParseAddr(pick(beAddrs)), Port: port(), Weight: 100})
		case k < 48:
			event = "del backend"
			if vid, b, ok := someBackend(); ok {
				_ = store.DeleteBackend(vid, b.Address, b.Port)
			}
		case k < 60:
			event = "weight"
			if vid, b, ok := someBackend(); ok {
				w := uint32(r.IntN(5) * 50)
				_ = store.SetBackend(vid, b.Address, b.Port, model.BackendPatch{Weight: &w})
			}
			if vid, b, ok := someBackend(); ok && r.IntN(2) == 0 {
				event = "weight, priority"
				prio := uint32(r.IntN(3))
				_ = store.SetBackend(vid, b.Address, b.Port, model.BackendPatch{Priority: &prio})
			}
		case k < 66:
			event = "drain"
			if vid, b, ok := someBackend(); ok {
				d := !b.Drain
				_ = store.SetBackend(vid, b.Address, b.Port, model.BackendPatch{Drain: &d})
			}
		case k < 76:
			event, full = "health", true
			if vid, b, ok := someBackend(); ok {
				health.Set(vid, b.Address.String(), r.IntN(2) == 0, "test")
			}
		case k < 82:
			event, full = "route", true
			nw.SetRouted(pick(beAddrs), r.IntN(3) != 0)
		case k < 84:
			// The interface's address, a fullnat VIP's SNAT address
			// unless it has its own: changed, or lost for a while.
			event, full = "iface address", true
			switch r.IntN(3) {
			case 0:
				nw.SetNoPrimary(true)
			default:
				nw.SetPrimary(pick([]string{"192.0.2.1", "192.0.2.2"}))
			}
		case k < 92:
			event, full = "neighbour", true
			a := pick(beAddrs)
			if r.IntN(3) == 0 {
				nw.SetMAC(a, nil)
			} else {
				nw.SetMAC(a, reconciletest.MAC(byte(r.IntN(250)+1)))
			}
		default:
			event, full = "restart", true
			if err := dp.Close(); err != nil {
				t.Fatal(err)
			}
			if dp, err = loader.Load(opts); err != nil {
				t.Fatalf("step %d: reload: %v", step, err)
			}
			rec = NewReconciler(store, dp, nw, health, nil)
		}
		counts[event]++
		if full {
			err = rec.Reconcile(ctx)
		} else {
			err = rec.ReconcileChanged(ctx)
		}
		if err != nil {
			t.Fatalf("step %d (%s): reconcile: %v", step, event, err)
		}

		check := &writeCounter{Datapath: dp}
		if err := NewReconciler(store, check, nw, health, nil).Reconcile(ctx); err != nil {
			t.Fatalf("step %d (%s): check pass: %v", step, event, err)
		}
		if len(check.writes) > 0 {
			t.Fatalf("step %d (%s): the maps differ from a plan built from scratch: it writes %v\nstate %+v",
				step, event, check.writes, store.State())
		}
		checkTables(t, step, dp, store.State(), tableSize)
		checkSNAT(t, step, dp, store.State(), nw)
		vips, err := dp.VIPs()
		if err != nil {
			t.Fatal(err)
		}
		for _, meta := range vips {
			inMaps[meta.Mode]++
		}
	}
	t.Logf("events: %v; vip entries by mode: %v", counts, inMaps)
	for _, m := range []loader.ForwardMode{loader.ModeDR, loader.ModeNAT, loader.ModeFullNAT} {
		if inMaps[m] == 0 {
			t.Errorf("no vip of mode %d ever in the maps", m)
		}
	}
	for _, e := range []string{"mode", "route", "iface address", "add vip", "add backend"} {
		if counts[e] == 0 {
			t.Errorf("no %q event in the run", e)
		}
	}
}

// checkSNAT checks that a fullnat VIP without a SNAT address of its own
// has the interface's primary address as soon as one of its backends is
// routed and the interface has one.
func checkSNAT(t *testing.T, step int, dp Datapath, st model.State, nw *reconciletest.Network) {
	t.Helper()
	vips, err := dp.VIPs()
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range st.VIPs {
		if v.Mode != model.ModeFullNAT || v.SNATAddr.IsValid() {
			continue
		}
		want := nw.Primary(v.Address.Is4())
		routed := slices.ContainsFunc(v.Backends, func(b model.Backend) bool { return nw.Routed(b.Address) })
		if got := vips[VIPKeyOf(v.ID())].SNATAddr; routed && want.IsValid() && got != want {
			t.Fatalf("step %d: vip %s has snat address %s, want the interface's %s", step, v.ID(), got, want)
		}
	}
}

// checkTables checks that the maps hold exactly the VIPs of st (but
// fullnat VIPs without a SNAT address of their own, held out while no
// address can be found), each entry and backend entry in the VIP's mode,
// and that every slot of every table names a backend entry of its own VIP
// that is not down.
func checkTables(t *testing.T, step int, dp Datapath, st model.State, size uint32) {
	t.Helper()
	vips, err := dp.VIPs()
	if err != nil {
		t.Fatal(err)
	}
	backends, err := dp.Backends()
	if err != nil {
		t.Fatal(err)
	}
	inState := 0
	for _, v := range st.VIPs {
		meta, ok := vips[VIPKeyOf(v.ID())]
		if !ok {
			if v.Mode == model.ModeFullNAT && !v.SNATAddr.IsValid() {
				continue
			}
			t.Fatalf("step %d: vip %s missing from the maps", step, v.ID())
		}
		inState++
		mode := ForwardMode(v.Mode)
		if meta.Mode != mode || (mode == loader.ModeFullNAT) != meta.SNATAddr.IsValid() ||
			v.SNATAddr.IsValid() && meta.SNATAddr != v.SNATAddr {
			t.Fatalf("step %d: vip %s (%s, snat %s) has entry %+v", step, v.ID(), v.Mode, v.SNATAddr, meta)
		}
		for id, b := range backends {
			if b.VIPID == meta.ID && b.Mode != mode {
				t.Fatalf("step %d: vip %s (%s): backend %d has mode %d", step, v.ID(), v.Mode, id, b.Mode)
			}
		}
		table, err := dp.LookupTable(meta.ID)
		if err != nil {
			t.Fatal(err)
		}
		if table == nil {
			continue
		}
		if uint32(len(table)) != size {
			t.Fatalf("step %d: vip %s: table of %d slots", step, v.ID(), len(table))
		}
		for _, id := range slices.Compact(slices.Sorted(slices.Values(table))) {
			b, ok := backends[id]
			if id == 0 || !ok || b.VIPID != meta.ID || b.Down {
				t.Fatalf("step %d: vip %s: table names backend %d (%+v, in map %v)", step, v.ID(), id, b, ok)
			}
		}
	}
	if len(vips) != inState {
		t.Fatalf("step %d: %d VIPs in the maps, %d of the state", step, len(vips), inState)
	}
}
