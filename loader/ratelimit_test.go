package loader

import (
	"fmt"
	"runtime"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/xdplb/xdplb/internal/testutil"
)

// vipDrops is VIP id's drop counters by reason.
func vipDrops(t testing.TB, d *Datapath, id uint32) map[string]uint64 {
	t.Helper()
	all, err := d.VIPDropCounters()
	must(t, err)
	return all[id]
}

// refused runs f's frame and asserts that it is dropped.
func refused(t testing.TB, d *Datapath, f flow) {
	t.Helper()
	if r := mustRun(t, d.Program(), f.build(t)); r.verdict != xdpDrop {
		t.Fatalf("port %d: verdict %d, want drop", f.sport, r.verdict)
	}
}

// rateState reads VIP id's bucket.
func rateState(t testing.TB, d *Datapath, id uint32) xdplbVipRate {
	t.Helper()
	var r xdplbVipRate
	must(t, d.objs.VipRates.Lookup(id, &r))
	return r
}

// A rate-limited VIP takes exactly burst new flows at once, refuses the
// next with rate_limited (counted for the VIP too), and takes more as the
// clock moves: the test moves the bucket's schedule back instead of
// waiting. Packets of open flows, and flows placed again, take no token.
// The frames it forwards are those of a VIP without a limit, byte for
// byte, and the VIPs without one never refuse.
func TestRateLimit(t *testing.T) {
	d := newDatapath(t)
	setupVIPs(t, d)
	limit := RateLimit{Rate: 1, Burst: 5} // one a second: the test is far quicker
	meta := VIPMeta{ID: 1, Mode: ModeDR, Hash: HashMaglev, RateLimit: limit}
	must(t, d.PutVIP(vip4TCP, meta))
	vips, err := d.VIPs()
	must(t, err)
	if got := vips[vip4TCP].RateLimit; got != limit {
		t.Fatalf("read back rate limit %+v, want %+v", got, limit)
	}

	syn := func(port uint16) flow { return flow{src: client4, dst: vipAddr4, dport: 80, sport: port}.as("S") }
	for port := uint16(1); port <= 5; port++ {
		sendTo(t, d, syn(port), 1) // the exact bytes of a VIP without a limit
	}
	refused(t, d, syn(6))
	if got := vipDrops(t, d, 1); got["rate_limited"] != 1 || len(got) != 1 {
		t.Fatalf("vip 1 drops %v, want rate_limited 1", got)
	}
	drops, err := d.DropCounters()
	must(t, err)
	if drops["rate_limited"] != 1 {
		t.Fatalf("drops %v, want rate_limited 1", drops)
	}
	// Open flows go on; a retransmitted SYN of one is no new flow.
	sendTo(t, d, syn(1).as("A"), 1)
	sendTo(t, d, syn(2), 1)
	// A TCP packet of a flow without an entry (a restart, an eviction)
	// is of a connection open already: placed, no token taken.
	sendTo(t, d, syn(7).as("A"), 1)
	refused(t, d, syn(8))

	// Three periods later, three more flows.
	r := rateState(t, d, 1)
	r.Tat -= 3 * r.Period
	must(t, d.objs.VipRates.Put(uint32(1), r))
	for port := uint16(10); port < 13; port++ {
		sendTo(t, d, syn(port), 1)
	}
	refused(t, d, syn(13))

	// The same limit written again keeps the bucket (a reconcile pass, a
	// restart); another one starts it full.
	must(t, d.PutVIP(vip4TCP, meta))
	refused(t, d, syn(14))
	meta.RateLimit = RateLimit{Rate: 1, Burst: 2}
	must(t, d.PutVIP(vip4TCP, meta))
	sendTo(t, d, syn(15), 1)
	sendTo(t, d, syn(16), 1)
	refused(t, d, syn(17))
	if got := vipDrops(t, d, 1)["rate_limited"]; got != 5 {
		t.Fatalf("vip 1 rate_limited %d, want 5", got)
	}
	// Without a limit again: no refusal, and the VIP reads back without.
	meta.RateLimit = RateLimit{}
	must(t, d.PutVIP(vip4TCP, meta))
	for port := uint16(20); port < 40; port++ {
		sendTo(t, d, syn(port), 1)
	}
	vips, err = d.VIPs()
	must(t, err)
	if got := vips[vip4TCP].RateLimit; got != (RateLimit{}) {
		t.Fatalf("read back rate limit %+v, want none", got)
	}

	// UDP: a datagram without an entry opens a flow, the next of the
	// same flow does not.
	must(t, d.PutVIP(vip4UDP, VIPMeta{ID: 2, Mode: ModeDR, Hash: HashMaglev, RateLimit: RateLimit{Rate: 1, Burst: 2}}))
	dgram := func(port uint16) flow {
		return flow{src: client4, dst: vipAddr4, dport: 53, sport: port, proto: ProtoUDP}
	}
	sendTo(t, d, dgram(1), 2)
	sendTo(t, d, dgram(2), 2)
	refused(t, d, dgram(3))
	sendTo(t, d, dgram(1), 2)
	if got := vipDrops(t, d, 2); got["rate_limited"] != 1 {
		t.Fatalf("vip 2 drops %v, want rate_limited 1", got)
	}

	// The VIPs without a limit never refuse.
	for port := uint16(1); port <= 50; port++ {
		sendTo(t, d, flow{src: client6, dst: vipAddr6, dport: 80, sport: port}.as("S"), 3)
	}
	if got := vipDrops(t, d, 3); len(got) != 0 {
		t.Fatalf("vip 3 drops %v, want none", got)
	}
}

// The bucket is one for all CPUs: CPUs racing for the same VIP's tokens
// admit exactly burst flows between them, as long as the clock gives no
// new token meanwhile (one a second here). Per-CPU buckets would give
// each CPU its share and refuse the rest.
func TestRateLimitSharedByCPUs(t *testing.T) {
	testutil.RequireRoot(t)
	cpus := runtime.NumCPU()
	if cpus < 2 {
		t.Skip("needs two CPUs")
	}
	d := newDatapath(t)
	setupVIPs(t, d)
	const burst, perCPU = 300, 400
	must(t, d.PutVIP(vip4TCP, VIPMeta{ID: 1, Mode: ModeDR, Hash: HashMaglev, RateLimit: RateLimit{Rate: 1, Burst: burst}}))
	frames := make([][][]byte, 2)
	for c := range frames {
		for i := range perCPU {
			f := flow{src: client4, dst: vipAddr4, dport: 80, sport: uint16(1000 + c*perCPU + i)}.as("S")
			frames[c] = append(frames[c], f.build(t))
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, len(frames))
	for c := range frames {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Thrown away when the goroutine ends locked.
			runtime.LockOSThread()
			var set unix.CPUSet
			set.Set(c)
			if errs[c] = unix.SchedSetaffinity(0, &set); errs[c] != nil {
				return
			}
			for _, in := range frames[c] {
				if _, err := run(t, d.Program(), in); err != nil {
					errs[c] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		must(t, err)
	}
	vc, err := d.VIPCounters()
	must(t, err)
	refusedN := vipDrops(t, d, 1)["rate_limited"]
	if vc[1].Flows != burst || refusedN != 2*perCPU-burst {
		t.Fatalf("%d flows admitted and %d refused, want %d and %d", vc[1].Flows, refusedN, burst, 2*perCPU-burst)
	}
}

// rateToC's period is the rate clock's units per flow, rounded, at any
// tick rate; tau lets burst flows through at once.
func TestRateToC(t *testing.T) {
	unit := uint64(1) << uint64(xdplbRateClockRATE_CLOCK_SHIFT)
	for _, tt := range []struct {
		l      RateLimit
		hz     uint64
		period uint64
	}{
		{RateLimit{Rate: 1, Burst: 1}, 1000, 1000 * unit},
		{RateLimit{Rate: 3, Burst: 10}, 250, (250*unit + 1) / 3},
		{RateLimit{Rate: 10_000_000, Burst: 10_000_000}, 100, 168},
	} {
		t.Run(fmt.Sprint(tt.l, tt.hz), func(t *testing.T) {
			r, err := rateToC(tt.l, tt.hz)
			must(t, err)
			if r.Period != tt.period || r.Tau != uint64(tt.l.Burst-1)*tt.period || r.Rate != tt.l.Rate || r.Burst != tt.l.Burst || r.Tat != 0 {
				t.Fatalf("%+v, want period %d", r, tt.period)
			}
		})
	}
	// The model's largest burst at its smallest rate fits.
	if _, err := rateToC(RateLimit{Rate: 1, Burst: 100_000_000}, 1000); err != nil {
		t.Errorf("burst 1e8 at 1/s: %v", err)
	}
	for _, l := range []RateLimit{{Rate: 0, Burst: 1}, {Rate: 1, Burst: 0}, {Rate: 1, Burst: 1 << 31}} {
		if _, err := rateToC(l, 1000); err == nil {
			t.Errorf("%+v accepted", l)
		}
	}
}

// Every new flow a VIP refuses is counted for that VIP by reason, beside
// the drops by reason alone: at its rate limit, without a backend,
// without a healthy one, with every backend full. A VIP that takes over
// a deleted one's id starts from zero.
func TestVIPDrops(t *testing.T) {
	d := newDatapath(t)
	setupVIPs(t, d)
	keys := map[uint32]VIPKey{}
	for id, m := range map[uint32]VIPMeta{
		5: {},
		6: {NoHealthy: true},
		7: {BackendsFull: true},
	} {
		keys[id] = VIPKey{Addr: vipAddr4, Port: uint16(1000 + id), Proto: ProtoTCP}
		m.ID, m.Mode, m.Hash = id, ModeDR, HashMaglev
		must(t, d.PutVIP(keys[id], m))
	}
	to := func(id uint32, port uint16) []byte {
		return flow{src: client4, dst: vipAddr4, dport: keys[id].Port, sport: port}.as("S").build(t)
	}
	checkDrops(t, d, []dropCase{
		{"no backend", to(5, 1), "no_backend"},
		{"no backend again", to(5, 2), "no_backend"},
		{"no healthy backend", to(6, 1), "no_healthy_backend"},
		{"backends full", to(7, 1), "backends_full"},
	})
	all, err := d.VIPDropCounters()
	must(t, err)
	want := map[uint32]map[string]uint64{
		5: {"no_backend": 2},
		6: {"no_healthy_backend": 1},
		7: {"backends_full": 1},
	}
	if fmt.Sprint(all) != fmt.Sprint(want) {
		t.Fatalf("vip drops %v, want %v", all, want)
	}
	vips, err := d.VIPs()
	must(t, err)
	for id := uint32(5); id <= 7; id++ {
		if m := vips[keys[id]]; m.BackendsFull != (id == 7) || m.NoHealthy != (id == 6) {
			t.Errorf("vip %d read back %+v", id, m)
		}
	}
	if err := d.PutVIP(keys[5], VIPMeta{ID: 8, Mode: ModeDR, Hash: HashMaglev, NoHealthy: true, BackendsFull: true}); err == nil {
		t.Fatal("a vip both without a healthy backend and with all full accepted")
	}
	must(t, d.DeleteVIP(keys[5]))
	must(t, d.PutVIP(VIPKey{Addr: vipAddr4, Port: 2000, Proto: ProtoTCP}, VIPMeta{ID: 5, Mode: ModeDR, Hash: HashMaglev}))
	if got := vipDrops(t, d, 5); len(got) != 0 {
		t.Fatalf("new vip on id 5: drops %v, want none", got)
	}
}
