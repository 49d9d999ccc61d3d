package loader

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/xdplb/xdplb/internal/testutil"
)

// schedLookupSize is the table size of the scheduler tests: big enough
// that a 95/5 split of the slots is off by less than 0.01 point.
const schedLookupSize = 10007

func newSchedDatapath(t *testing.T) *Datapath {
	t.Helper()
	testutil.RequireRoot(t)
	opts := testOptions(testutil.MountBPFFS(t))
	opts.LookupSize = schedLookupSize
	d := load(t, opts)
	t.Cleanup(func() {
		if err := d.Remove(); err != nil {
			t.Errorf("remove: %v", err)
		}
	})
	return d
}

// weightedTable spreads the slots over ids in proportion to weights, each
// id's slots evenly (as Maglev's are, for the tests' purposes).
func weightedTable(n uint32, ids, weights []uint32) []uint32 {
	total := uint64(0)
	for _, w := range weights {
		total += uint64(w)
	}
	tbl := make([]uint32, n)
	acc := make([]int64, len(ids))
	for s := range tbl {
		best := 0
		for i, w := range weights {
			acc[i] += int64(w)
			if acc[i] > acc[best] {
				best = i
			}
		}
		acc[best] -= int64(total)
		tbl[s] = ids[best]
	}
	return tbl
}

// schedVIP makes vip4TCP (id 1) a VIP of scheduler h over backends 1..n
// with weights, its table and, for the set schedulers, its set.
func schedVIP(t *testing.T, d *Datapath, h HashKind, persist time.Duration, weights ...uint32) {
	t.Helper()
	must(t, d.PutVIP(vip4TCP, VIPMeta{ID: 1, Mode: ModeDR, Hash: h, Persistence: persist}))
	var ids []uint32
	var members []SchedMember
	for i, w := range weights {
		id := uint32(i + 1)
		must(t, d.PutBackend(backendAt(vip4TCP, id)))
		ids = append(ids, id)
		members = append(members, SchedMember{ID: id, Weight: w})
	}
	must(t, d.PutLookupTable(1, weightedTable(d.LookupTableSize(), ids, weights)))
	if h.UsesSet() {
		must(t, d.PutSchedSet(1, members))
	}
}

// sentTo runs f's frame and returns the backend it was sent to (the
// last byte of its destination MAC, backendMAC).
func sentTo(t testing.TB, d *Datapath, f flow) uint32 {
	t.Helper()
	r := mustRun(t, d.Program(), f.build(t))
	if r.verdict != xdpTX {
		t.Fatalf("%v port %d: verdict %d, want tx", f.src, f.sport, r.verdict)
	}
	return uint32(r.out[5])
}

// newFlow is the i-th SYN of a test: clients spread over 10.x.y.z, so
// that sh sees many of them.
func newFlow(i int, rnd *rand.Rand) flow {
	src := netip.AddrFrom4([4]byte{10, byte(1 + rnd.IntN(200)), byte(rnd.IntN(256)), byte(1 + rnd.IntN(250))})
	return flow{src: src, dst: vipAddr4, dport: 80, sport: uint16(1024 + i%60000), syn: true}
}

// Weights are a split: backends of weight 95 and 5 get 95% and 5% of
// 20,000 new flows within one point, for every scheduler that honours
// weights; rr ignores them and splits evenly.
func TestSchedulerSplit(t *testing.T) {
	const flows = 20000
	for _, tc := range []struct {
		h       HashKind
		weights []uint32
		want    []float64 // shares, percent
		tol     float64   // points
	}{
		{HashMaglev, []uint32{95, 5}, []float64{95, 5}, 1},
		{HashSource, []uint32{95, 5}, []float64{95, 5}, 1},
		{SchedWRR, []uint32{95, 5}, []float64{95, 5}, 0.05},
		{SchedRand, []uint32{95, 5}, []float64{95, 5}, 1},
		{SchedRR, []uint32{95, 5, 100}, []float64{100.0 / 3, 100.0 / 3, 100.0 / 3}, 0.05},
		{SchedWRR, []uint32{1, 2, 3, 4}, []float64{10, 20, 30, 40}, 0.05},
		{SchedWLC, []uint32{95, 5}, []float64{95, 5}, 1},
		{SchedLC, []uint32{95, 5}, []float64{50, 50}, 1},
	} {
		t.Run(fmt.Sprintf("%d %v", tc.h, tc.weights), func(t *testing.T) {
			d := newSchedDatapath(t)
			schedVIP(t, d, tc.h, 0, tc.weights...)
			rnd := rand.New(rand.NewPCG(1, uint64(tc.h)))
			got := make([]int, len(tc.weights)+1)
			for i := range flows {
				got[sentTo(t, d, newFlow(i, rnd))]++
			}
			for i, w := range tc.want {
				share := 100 * float64(got[i+1]) / flows
				if share < w-tc.tol || share > w+tc.tol {
					t.Errorf("backend %d: %.2f%% of new flows, want %.2f%% ± %.2f (counts %v)", i+1, share, w, tc.tol, got[1:])
				}
			}
		})
	}
}

// rr, wrr, random, lc and wlc choose only for a packet that opens a flow:
// a TCP packet without SYN of a flow the node does not know (placed before
// a restart, or by another node) takes the table's 5-tuple slot, as under
// maglev. A UDP datagram of an untracked flow opens one.
func TestSchedulerSYNvsNonSYN(t *testing.T) {
	for _, h := range []HashKind{SchedRR, SchedWRR, SchedLC, SchedWLC, SchedRand} {
		t.Run(fmt.Sprint(h), func(t *testing.T) {
			d := newSchedDatapath(t)
			schedVIP(t, d, h, 0, 1, 1)
			// The table names backend 1 only; the set and the random
			// slot backend 2 only.
			must(t, d.PutLookupTable(1, fill(d.LookupTableSize(), 1)))
			if h == SchedRand {
				must(t, d.PutLookupTable(1, fill(d.LookupTableSize(), 2)))
			} else {
				must(t, d.PutSchedSet(1, []SchedMember{{ID: 2, Weight: 1}}))
			}
			syn := flow{src: client4, dst: vipAddr4, dport: 80, sport: 41000, syn: true}
			ack := flow{src: client4, dst: vipAddr4, dport: 80, sport: 41001, ack: true}
			if got := sentTo(t, d, syn); got != 2 {
				t.Errorf("SYN went to backend %d, want 2 (the scheduler's)", got)
			}
			want := uint32(1) // the table's
			if h == SchedRand {
				want = 2
			}
			if got := sentTo(t, d, ack); got != want {
				t.Errorf("ACK of an unknown flow went to backend %d, want %d (the table's)", got, want)
			}
			// Its later packets stay.
			if got := sentTo(t, d, ack); got != want {
				t.Errorf("second ACK went to backend %d, want %d", got, want)
			}
			// Without a set, a SYN falls back to the table.
			if h != SchedRand {
				must(t, d.DeleteSchedSet(1))
				syn.sport = 41002
				if got := sentTo(t, d, syn); got != 1 {
					t.Errorf("SYN without a set went to backend %d, want 1 (the table's)", got)
				}
			}
		})
	}
	t.Run("udp", func(t *testing.T) {
		d := newSchedDatapath(t)
		schedVIP(t, d, SchedRR, 0, 1, 1)
		must(t, d.PutVIP(vip4UDP, VIPMeta{ID: 2, Mode: ModeDR, Hash: SchedRR}))
		b := backendAt(vip4UDP, 3)
		b.VIPID = 2
		must(t, d.PutBackend(b))
		b.ID = 4
		b.MAC = backendMAC(4)
		must(t, d.PutBackend(b))
		must(t, d.PutLookupTable(2, fill(d.LookupTableSize(), 3)))
		must(t, d.PutSchedSet(2, []SchedMember{{ID: 4, Weight: 1}}))
		f := flow{src: client4, dst: vipAddr4, dport: 53, sport: 41000, proto: ProtoUDP}
		for i := range 3 {
			if got := sentTo(t, d, f); got != 4 {
				t.Errorf("datagram %d went to backend %d, want 4 (the scheduler's)", i, got)
			}
		}
	})
}

// Persistence sends a client's new flows to its last backend within the
// timeout whatever the scheduler; a backend that takes no new flows, or
// is down, releases its clients; past the timeout the scheduler chooses.
func TestPersistence(t *testing.T) {
	d := newSchedDatapath(t)
	schedVIP(t, d, SchedRR, time.Minute, 1, 1, 1)
	vips, err := d.VIPs()
	must(t, err)
	if got := vips[vip4TCP].Persistence; got != time.Minute {
		t.Fatalf("persistence read back as %s, want 1m", got)
	}
	syn := func(port uint16) flow {
		return flow{src: client4, dst: vipAddr4, dport: 80, sport: port, syn: true}
	}
	first := sentTo(t, d, syn(42000))
	for p := uint16(42001); p < 42010; p++ {
		if got := sentTo(t, d, syn(p)); got != first {
			t.Fatalf("port %d: backend %d, want %d (persistence)", p, got, first)
		}
	}
	// Another client is scheduled (rr: the next backend).
	other := flow{src: other4, dst: vipAddr4, dport: 80, sport: 42000, syn: true}
	if got := sentTo(t, d, other); got == first {
		t.Errorf("another client went to backend %d too: rr should have moved on", got)
	}

	// Drained (no new flows): its clients go elsewhere, and stay there.
	b := backendAt(vip4TCP, first)
	b.NoNew = true
	must(t, d.PutBackend(b))
	must(t, d.PutSchedSet(1, withoutMember([]uint32{1, 2, 3}, first)))
	second := sentTo(t, d, syn(42100))
	if second == first {
		t.Fatalf("a drained backend kept its client")
	}
	for p := uint16(42101); p < 42105; p++ {
		if got := sentTo(t, d, syn(p)); got != second {
			t.Fatalf("port %d: backend %d, want %d (the new persistence)", p, got, second)
		}
	}
	// Down: likewise (and out of the set, as the reconciler does).
	b = backendAt(vip4TCP, second)
	b.Down = true
	must(t, d.PutBackend(b))
	third := 6 - first - second
	must(t, d.PutSchedSet(1, []SchedMember{{ID: third, Weight: 1}}))
	if got := sentTo(t, d, syn(42200)); got != third {
		t.Fatalf("a down backend's client went to %d, want %d", got, third)
	}
	// All back.
	for _, id := range []uint32{1, 2, 3} {
		must(t, d.PutBackend(backendAt(vip4TCP, id)))
	}
	must(t, d.PutSchedSet(1, withoutMember([]uint32{1, 2, 3}, 0)))

	// Past the timeout the scheduler chooses again.
	k := xdplbPersistKey{VipId: 1, Client: client4.As16()}
	var v xdplbPersistVal
	must(t, d.objs.Persist.Lookup(&k, &v))
	hz, err := d.ticks.rate()
	must(t, err)
	v.Stamp -= 61 * hz
	must(t, d.objs.Persist.Put(&k, &v))
	seen := map[uint32]bool{}
	for p := uint16(42300); p < 42306; p++ {
		got := sentTo(t, d, syn(p))
		seen[got] = true
		// Expire each choice at once: rr then walks on.
		must(t, d.objs.Persist.Lookup(&k, &v))
		v.Stamp -= 61 * hz
		must(t, d.objs.Persist.Put(&k, &v))
	}
	if len(seen) < 2 {
		t.Errorf("expired persistence still pinned the client to %v", seen)
	}
}

func withoutMember(ids []uint32, drop uint32) []SchedMember {
	var out []SchedMember
	for _, id := range ids {
		if id != drop {
			out = append(out, SchedMember{ID: id, Weight: 1})
		}
	}
	return out
}

// lc and wlc send new flows to the backends with the fewest open flows:
// one holding 50 long-lived connections gets none of the next 60 while
// the others catch up; a FIN or RST counts a flow off its backend, and
// the count the daemon writes (SetOpenFlows) is where counting resumes.
func TestLeastConnections(t *testing.T) {
	d := newSchedDatapath(t)
	schedVIP(t, d, SchedLC, 0, 1, 1, 1)
	must(t, d.SetOpenFlows(map[uint32]int64{1: 50, 2: 0, 3: 0}))
	rnd := rand.New(rand.NewPCG(7, 7))
	got := map[uint32]int{}
	var onTwo []flow
	for i := range 60 {
		f := newFlow(i, rnd)
		id := sentTo(t, d, f)
		got[id]++
		if id == 2 {
			onTwo = append(onTwo, f)
		}
	}
	if got[1] != 0 || got[2] != 30 || got[3] != 30 {
		t.Errorf("60 new flows went %v, want none to backend 1 (50 open) and 30 each to 2 and 3", got)
	}
	for b, want := range map[uint32]int64{1: 50, 2: 30, 3: 30} {
		n, err := d.OpenFlows(b)
		must(t, err)
		if n != want {
			t.Errorf("backend %d: %d open flows counted, want %d", b, n, want)
		}
	}
	// Established, then closed by a FIN: counted off once, however many
	// FINs follow.
	for _, f := range onTwo[:10] {
		f.syn, f.ack = false, true
		sentTo(t, d, f)
		f.fin = true
		sentTo(t, d, f)
		sentTo(t, d, f)
	}
	if n, _ := d.OpenFlows(2); n != 20 {
		t.Errorf("backend 2 after 10 FINs: %d open flows, want 20", n)
	}
	// The next 10 new flows fill backend 2 back up.
	got = map[uint32]int{}
	for i := range 10 {
		got[sentTo(t, d, newFlow(100+i, rnd))]++
	}
	if got[2] != 10 {
		t.Errorf("after closes: 10 new flows went %v, want all to backend 2", got)
	}
}

// wlc weighs the open flows: with 30 on a backend of weight 1 and none on
// one of weight 3, the next 90 go to the second until it holds three
// times as many, then both grow in step.
func TestWeightedLeastConnections(t *testing.T) {
	d := newSchedDatapath(t)
	schedVIP(t, d, SchedWLC, 0, 1, 3)
	must(t, d.SetOpenFlows(map[uint32]int64{1: 30, 2: 0}))
	rnd := rand.New(rand.NewPCG(9, 9))
	got := map[uint32]int{}
	for i := range 90 {
		got[sentTo(t, d, newFlow(i, rnd))]++
	}
	if got[2] < 89 {
		t.Errorf("90 new flows went %v, want (nearly) all to backend 2 until it has 90", got)
	}
	got = map[uint32]int{}
	for i := range 400 {
		got[sentTo(t, d, newFlow(1000+i, rnd))]++
	}
	if got[1] < 95 || got[1] > 105 {
		t.Errorf("400 new flows went %v, want about 100 and 300", got)
	}
}

// The set round-trips, and the wrr sequence in it is WRRSequence's.
func TestSchedSetRoundTrip(t *testing.T) {
	d := newSchedDatapath(t)
	schedVIP(t, d, SchedWRR, 0, 95, 5)
	s, ok, err := d.SchedSet(1)
	must(t, err)
	if !ok || len(s.Members) != 2 || s.Members[1] != (SchedMember{ID: 2, Weight: 5}) || len(s.Sequence) != 20 {
		t.Fatalf("set read back as %+v, %v", s, ok)
	}
	must(t, d.DeleteSchedSet(1))
	if _, ok, _ := d.SchedSet(1); ok {
		t.Errorf("set still there after delete")
	}
	must(t, d.DeleteSchedSet(1))
}
