package loader

import (
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/xdplb/xdplb/internal/testutil"
)

// wrapperKeys are the 5-tuples newFlowWrapper gives the n runs of one
// call on a frame of f: the source port counts up from f's, carrying into
// the source address's last byte.
func wrapperKeys(f flow, n int) []xdplbFlowKey {
	out := make([]xdplbFlowKey, n)
	last := f.src.As16()[15]
	for r := range n {
		v := int(f.sport) + r + 1
		src := f.src.As16()
		src[15] = last + byte(v>>16)
		k := ctKey(f)
		k.Src = src
		k.Sport = toNetPort(uint16(v))
		out[r] = k
	}
	return out
}

// BenchmarkConntrackTable times, in the kernel, the connection table's
// paths at table sizes of XDPLB_BENCH_CT_SIZES (default 1M,8M flows of
// --conntrack-size), each run a flow not seen for a table's worth of runs
// (newFlowWrapper), so every lookup is cold: an established packet (a
// random one of size live flows), the packet that moves a half-open flow
// into the table (an insert) with the table empty and full (every slot
// taken: each insert replaces a flow), and a new flow's SYN (a miss, then
// ct_half). The wrapper's own cost (the floor behind it less the floor) is
// taken out of each figure.
func BenchmarkConntrackTable(b *testing.B) {
	testutil.RequireRoot(b)
	sizes := []int{1 << 20, 8 << 20}
	if s := os.Getenv("XDPLB_BENCH_CT_SIZES"); s != "" {
		sizes = nil
		for _, f := range strings.Split(s, ",") {
			n, err := strconv.Atoi(f)
			must(b, err)
			sizes = append(sizes, n)
		}
	}
	const runs = 200_000
	for _, size := range sizes {
		b.Run(fmt.Sprintf("flows=%d", size), func(b *testing.B) {
			opts := testOptions(testutil.MountBPFFS(b))
			opts.ConntrackSize = uint32(size)
			opts.HalfOpenSize = 1 << 20
			opts.MaxBackends = 64
			start := time.Now()
			d, err := Load(opts)
			must(b, err)
			b.Cleanup(func() { d.Remove() })
			b.Logf("load: %s; %s", time.Since(start), benchTableInfo(d))
			setupVIPs(b, d)
			floor := floorProgram(b)

			time1 := func(prog *ebpf.Program, in []byte, n int) float64 {
				_, per, err := prog.Benchmark(in, n, nil)
				must(b, err)
				return float64(per.Nanoseconds())
			}
			ack := func(src byte) flow {
				return flow{src: netip.AddrFrom4([4]byte{192, 0, 2, src}), dst: vipAddr4, dport: 80, ack: true}
			}
			synOf := func(f flow) flow { f.ack, f.syn = false, true; return f }
			wrapFloor := time1(newFlowWrapper(b, floor, sport4, srcLastByte4), ack(1).build(b), runs) - time1(floor, ack(1).build(b), runs)
			wrap := newFlowWrapper(b, d.Program(), sport4, srcLastByte4)

			// The table filled with `size` live flows (sources .10-...),
			// established packets of random ones of them.
			live := ack(10)
			fillStart := time.Now()
			benchFill(b, d, wrapperKeys(live, size))
			b.Logf("filled %d flows in %s", size, time.Since(fillStart))
			est := time1(wrap, live.build(b), min(size, 2*runs)) - wrapFloor

			// Inserts into a full table: the remaining slots filled too
			// (sources .200-), then half-open flows (sources .150-)
			// established by their second packet.
			benchFillAll(b, d, ack(200))
			newf := ack(150)
			time1(wrap, newf.build(b), runs) // into ct_half
			insFull := time1(wrap, newf.build(b), runs) - wrapFloor
			syns := synOf(ack(100))
			syns.src = netip.AddrFrom4([4]byte{198, 51, 100, 1})
			synFull := time1(wrap, syns.build(b), runs) - wrapFloor

			b.ReportMetric(est, "ns-established")
			b.ReportMetric(insFull, "ns-insert-full")
			b.ReportMetric(synFull, "ns-syn")
			b.Logf("wrapper %.1f ns; established %.1f ns; insert (table full) %.1f ns; SYN %.1f ns; live evictions %d",
				wrapFloor, est, insFull, synFull, eventCount0(b, d, "ct_evicted_live"))
		})
	}
	// Inserts with room: a table of the default size, empty.
	b.Run("insert-room", func(b *testing.B) {
		opts := testOptions(testutil.MountBPFFS(b))
		opts.ConntrackSize = 1 << 20
		opts.HalfOpenSize = 1 << 20
		d, err := Load(opts)
		must(b, err)
		b.Cleanup(func() { d.Remove() })
		setupVIPs(b, d)
		floor := floorProgram(b)
		f := flow{src: netip.AddrFrom4([4]byte{192, 0, 2, 150}), dst: vipAddr4, dport: 80, ack: true}
		wf := newFlowWrapper(b, floor, sport4, srcLastByte4)
		_, w, err := wf.Benchmark(f.build(b), runs, nil)
		must(b, err)
		_, fl, err := floor.Benchmark(f.build(b), runs, nil)
		must(b, err)
		wrap := newFlowWrapper(b, d.Program(), sport4, srcLastByte4)
		_, _, err = wrap.Benchmark(f.build(b), runs, nil)
		must(b, err)
		_, ins, err := wrap.Benchmark(f.build(b), runs, nil)
		must(b, err)
		v := float64(ins.Nanoseconds() - (w.Nanoseconds() - fl.Nanoseconds()))
		b.ReportMetric(v, "ns-insert-room")
		b.Logf("insert with room: %.1f ns", v)
	})
}

func eventCount0(tb testing.TB, d *Datapath, name string) uint64 {
	ev, err := d.EventCounters()
	must(tb, err)
	return ev[name]
}
