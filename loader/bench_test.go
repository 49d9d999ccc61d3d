package loader

import (
	"net/netip"
	"os"
	"strconv"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/xdplb/xdplb/internal/testutil"
)

// Offsets in the untagged frames flow.build makes: the last byte of the
// source address and the TCP/UDP source port.
const (
	srcLastByte4, sport4 = 14 + 12 + 3, 14 + 20
	srcLastByte6, sport6 = 14 + 8 + 15, 14 + 40
)

// floorProgram is the reference the issue measures against: swap the two
// MACs and XDP_TX, nothing else.
func floorProgram(tb testing.TB) *ebpf.Program {
	tb.Helper()
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "xdp_floor", Type: ebpf.XDP, AttachType: ebpf.AttachXDP, License: "GPL",
		Instructions: asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 0, asm.Word), // ctx->data
			asm.LoadMem(asm.R3, asm.R1, 4, asm.Word), // ctx->data_end
			asm.Mov.Reg(asm.R4, asm.R2),
			asm.Add.Imm(asm.R4, 14),
			asm.JGT.Reg(asm.R4, asm.R3, "pass"),
			asm.LoadMem(asm.R5, asm.R2, 0, asm.Word),
			asm.LoadMem(asm.R6, asm.R2, 4, asm.Half),
			asm.LoadMem(asm.R7, asm.R2, 6, asm.Word),
			asm.LoadMem(asm.R8, asm.R2, 10, asm.Half),
			asm.StoreMem(asm.R2, 0, asm.R7, asm.Word),
			asm.StoreMem(asm.R2, 4, asm.R8, asm.Half),
			asm.StoreMem(asm.R2, 6, asm.R5, asm.Word),
			asm.StoreMem(asm.R2, 10, asm.R6, asm.Half),
			asm.Mov.Imm(asm.R0, xdpTX),
			asm.Return(),
			asm.Mov.Imm(asm.R0, xdpPass).WithSymbol("pass"),
			asm.Return(),
		},
	})
	if err != nil {
		tb.Fatalf("floor program: %v", err)
	}
	tb.Cleanup(func() { p.Close() })
	return p
}

// newFlowWrapper runs target on a frame whose source port (and, on wrap,
// the source address's last byte) it first increments in place. With a
// repeat count the kernel re-runs on the same buffer, so every run sees
// a 5-tuple not seen for 2^24 runs: a new flow each time. The wrapper's
// own cost (a few loads and a tail call) is measured with the floor as
// target.
func newFlowWrapper(tb testing.TB, target *ebpf.Program, sportOff, srcByteOff int16) *ebpf.Program {
	tb.Helper()
	progs, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.ProgramArray, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		tb.Fatalf("prog array: %v", err)
	}
	tb.Cleanup(func() { progs.Close() })
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "xdp_newflow", Type: ebpf.XDP, AttachType: ebpf.AttachXDP, License: "GPL",
		Instructions: asm.Instructions{
			asm.Mov.Reg(asm.R6, asm.R1),
			asm.LoadMem(asm.R2, asm.R1, 0, asm.Word),
			asm.LoadMem(asm.R3, asm.R1, 4, asm.Word),
			asm.Mov.Reg(asm.R4, asm.R2),
			asm.Add.Imm(asm.R4, int32(sportOff+2)),
			asm.JGT.Reg(asm.R4, asm.R3, "call"),
			// The port is big-endian: bump the low byte, carry into the
			// high byte, and on its wrap into the source address.
			asm.LoadMem(asm.R5, asm.R2, sportOff+1, asm.Byte),
			asm.Add.Imm(asm.R5, 1),
			asm.StoreMem(asm.R2, sportOff+1, asm.R5, asm.Byte),
			asm.And.Imm(asm.R5, 0xff),
			asm.JNE.Imm(asm.R5, 0, "call"),
			asm.LoadMem(asm.R5, asm.R2, sportOff, asm.Byte),
			asm.Add.Imm(asm.R5, 1),
			asm.StoreMem(asm.R2, sportOff, asm.R5, asm.Byte),
			asm.And.Imm(asm.R5, 0xff),
			asm.JNE.Imm(asm.R5, 0, "call"),
			asm.LoadMem(asm.R5, asm.R2, srcByteOff, asm.Byte),
			asm.Add.Imm(asm.R5, 1),
			asm.StoreMem(asm.R2, srcByteOff, asm.R5, asm.Byte),
			asm.Mov.Reg(asm.R1, asm.R6).WithSymbol("call"),
			asm.LoadMapPtr(asm.R2, progs.FD()),
			asm.Mov.Imm(asm.R3, 0),
			asm.FnTailCall.Call(),
			asm.Mov.Imm(asm.R0, xdpAborted),
			asm.Return(),
		},
	})
	if err != nil {
		tb.Fatalf("new-flow wrapper: %+v", err)
	}
	tb.Cleanup(func() { p.Close() })
	if err := progs.Put(uint32(0), target); err != nil {
		tb.Fatalf("prog array: %v", err)
	}
	return p
}

// BenchmarkProgram times the program per frame in the kernel beside the
// floor program, path by path. Run with -count N: each round runs every
// path once, so paths are interleaved and ratios are taken per round.
func BenchmarkProgram(b *testing.B) {
	testutil.RequireRoot(b)
	opts := testOptions(testutil.MountBPFFS(b))
	// The default size: new flows insert into (and evict from) a table of
	// the size an operator runs.
	opts.ConntrackSize = benchConntrackSize(b)
	d, err := Load(opts)
	if err != nil {
		b.Fatalf("load: %v", err)
	}
	b.Cleanup(func() { d.Remove() })
	setupVIPs(b, d)
	// VIP 5, port 81: the new flows of vip4TCP's, through a rate limit
	// that admits them all (1e8 at once beyond 1e7 a second).
	limited := VIPKey{Addr: vipAddr4, Port: 81, Proto: ProtoTCP}
	must(b, d.PutVIP(limited, VIPMeta{ID: 5, Mode: ModeDR, Hash: HashMaglev, RateLimit: RateLimit{Rate: 10_000_000, Burst: 100_000_000}}))
	putBackend(b, d, 5, 5, netip.MustParseAddr("10.0.1.5"), loIfindex)
	must(b, d.PutLookupTable(5, fill(d.LookupTableSize(), 5)))
	floor := floorProgram(b)

	syn4 := flow{src: client4, dst: vipAddr4, dport: 80, syn: true}.build(b)
	syn4Limited := flow{src: client4, dst: vipAddr4, dport: 81, syn: true}.build(b)
	syn6 := flow{src: client6, dst: vipAddr6, dport: 80, syn: true}.build(b)
	frames := []struct {
		name    string
		prog    *ebpf.Program
		in      []byte
		verdict uint32
	}{
		{"floor", floor, flow{src: client4, dst: vipAddr4, dport: 80, ack: true}.build(b), xdpTX},
		{"established ipv4 tcp", d.Program(), flow{src: client4, dst: vipAddr4, dport: 80, ack: true}.build(b), xdpTX},
		{"established ipv6 tcp", d.Program(), flow{src: client6, dst: vipAddr6, dport: 80, ack: true}.build(b), xdpTX},
		{"established ipv4 udp", d.Program(), flow{src: client4, dst: vipAddr4, dport: 53, proto: ProtoUDP}.build(b), xdpTX},
		{"non-vip ipv4 tcp", d.Program(), flow{src: client4, dst: other4, dport: 80}.build(b), xdpPass},
		{"non-vip ipv6 tcp", d.Program(), flow{src: client6, dst: other6, dport: 80}.build(b), xdpPass},
		{"vip address other port", d.Program(), flow{src: client4, dst: vipAddr4, dport: 8080}.build(b), xdpPass},
		{"new flow wrapper floor", newFlowWrapper(b, floor, sport4, srcLastByte4), syn4, xdpTX},
		{"new flow ipv4 tcp", newFlowWrapper(b, d.Program(), sport4, srcLastByte4), syn4, xdpTX},
		{"new flow ipv4 tcp rate limited", newFlowWrapper(b, d.Program(), sport4, srcLastByte4), syn4Limited, xdpTX},
		{"new flow ipv6 tcp", newFlowWrapper(b, d.Program(), sport6, srcLastByte6), syn6, xdpTX},
	}
	frames = append(frames, schedBenchFrames(b, d)...)
	for _, f := range frames {
		// The first run creates the flow entry, so the timed runs take the
		// established path.
		if r := mustRun(b, f.prog, f.in); r.verdict != f.verdict {
			b.Fatalf("%s: verdict %d, want %d", f.name, r.verdict, f.verdict)
		}
		b.Run(f.name, func(b *testing.B) {
			v, per, err := f.prog.Benchmark(f.in, b.N, nil)
			if err != nil {
				b.Fatal(err)
			}
			if v != f.verdict {
				b.Fatalf("verdict %d, want %d", v, f.verdict)
			}
			b.ReportMetric(float64(per.Nanoseconds()), "ns/frame")
		})
	}
}

// benchConntrackSize is the connection table's size for the benchmark:
// the default, or XDPLB_BENCH_CONNTRACK to see how the size (cache and TLB
// footprint of a new flow) changes the cost.
func benchConntrackSize(tb testing.TB) uint32 {
	s := os.Getenv("XDPLB_BENCH_CONNTRACK")
	if s == "" {
		return DefaultConntrackSize
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		tb.Fatalf("XDPLB_BENCH_CONNTRACK: %v", err)
	}
	return uint32(n)
}
