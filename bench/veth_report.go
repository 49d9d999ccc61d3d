package bench

import (
	"fmt"
	"slices"
	"time"
)

// vethSection turns the runs into the report's table, targets and notes.
func vethSection(runs map[string][]vethRun, natTableFull map[string]uint64, rounds int, dur time.Duration) Section {
	s := Section{
		Title: "Packets per second through veth",
		Method: fmt.Sprintf("Two network namespaces joined by one veth pair. The generator is an XDP program of the benchmark "+
			"(`progs/trafficgen.c`) run by `BPF_PROG_TEST_RUN` in live-frames mode (`BPF_F_TEST_XDP_LIVE_FRAMES`, one "+
			"thread, ingress = the generator's veth): it writes a %d-byte UDP/IPv4 frame to the VIP and returns `XDP_TX`, "+
			"which sends it out of the generator's veth into the LB's. For new flows it also writes a source port and "+
			"source address from a per-CPU sequence number, so every frame is a new 5-tuple. Every generator is also attached "+
			"to an idle veth (kept down), so each test run finds its program in the kernel's XDP dispatcher already and does not stall "+
			"on the two RCU grace periods it otherwise costs (that stall, not the wire, set the rate before). The LB's veth has one XDP "+
			"link, made by `loader.Load` (native mode); each case swaps the program behind it: the floor (swap MACs, "+
			"`XDP_TX`), xdplb with one UDP VIP whose 3 DR backends sit behind the generator's MAC (so DR sends every "+
			"frame back with `XDP_TX`), or, for nftables, a pass program (a veth end takes its peer's XDP frames only "+
			"while it runs XDP) with the kernel forwarding: `dnat to numgen random mod 3` over 3 backend addresses with "+
			"static neighbours back through the generator's veth, conntrack on. xdplb NAT and full NAT: two more UDP VIPs "+
			"over the same 3 backends (backend port 8080, full NAT's SNAT address the LB veth's own), their own "+
			"generators sending to them; the next hop comes from `bpf_fib_lookup` (forwarding on, the backends' "+
			"static neighbours), which names the LB's veth again, so they too send every frame back with `XDP_TX`, "+
			"translated (destination and port, TTL, IPv4 checksum; full NAT also the source). After every NAT run "+
			"xdplb's counters are checked: as many `XDP_TX` as frames the LB veth took in, no drop, nothing passed "+
			"to the kernel (no route, no neighbour, no XDP egress), else the section fails. The NAT table "+
			"(nat_flows, a plain hash as large as the connection table, which never evicts a live translation) is "+
			"emptied before each NAT new-flow run; the connection table is not. The generator's veth runs an `XDP_DROP` "+
			"sink, so the kernel stack never receives the returning frames; its rx_packets counter (the veth counts "+
			"every frame its XDP program saw) is what arrived. Rate = frames back / generator run time. "+
			"%d rounds of %s per case after a warm-up round, cases interleaved and rotated each round; medians; ratios "+
			"are taken within each round, then the median.", vethFrameLen, rounds, dur),
		Header: []string{"case", "Mpps (median)", "spread (min-max)", "ratio to floor", "ns/frame over floor", "Mpps per gen CPU-s", "back/sent"},
	}
	floor := vethMedian(vethRates(runs[vethFloor]))
	for _, name := range vethCaseOrder {
		rates := vethRates(runs[name])
		if len(rates) == 0 {
			continue
		}
		med := vethMedian(rates)
		over := "-"
		if name != vethFloor && med > 0 && floor > 0 {
			over = fmt.Sprintf("%.0f", 1e3/med-1e3/floor)
		}
		perCPU := make([]float64, 0, len(runs[name]))
		for _, r := range runs[name] {
			perCPU = append(perCPU, r.MppsPerCPU())
		}
		var sent, back uint64
		for _, r := range runs[name] {
			sent += r.Sent
			back += r.Returned
		}
		s.Rows = append(s.Rows, []string{
			name,
			fmt.Sprintf("%.3f", med),
			fmt.Sprintf("%.3f-%.3f", slices.Min(rates), slices.Max(rates)),
			fmt.Sprintf("%.2fx", vethRatio(runs, name, vethFloor)),
			over,
			fmt.Sprintf("%.3f", vethMedian(perCPU)),
			fmt.Sprintf("%.1f%%", 100*float64(back)/float64(max(sent, 1))),
		})
	}
	s.Targets = []Target{
		{Name: "veth: xdplb DR established / floor", Got: vethRatio(runs, vethXdplbOne, vethFloor), Limit: vethVsFloorMin, Unit: "x"},
		{Name: "veth: xdplb DR new flows / floor", Got: vethRatio(runs, vethXdplbNew, vethFloor), Limit: vethNewVsFloorMin, Unit: "x"},
		{Name: "veth: xdplb DR established / nftables DNAT one flow", Got: vethRatio(runs, vethXdplbOne, vethNftOne), Limit: vethVsNftMin, Unit: "x"},
		{Name: "veth: xdplb DR new flows / nftables DNAT new flows", Got: vethRatio(runs, vethXdplbNew, vethNftNew), Limit: vethNewVsNftMin, Unit: "x"},
		{Name: "veth: xdplb NAT established / nftables DNAT one flow", Got: vethRatio(runs, vethNATOne, vethNftOne), Limit: vethNATVsNftMin, Unit: "x"},
		{Name: "veth: xdplb NAT new flows / nftables DNAT new flows", Got: vethRatio(runs, vethNATNew, vethNftNew), Limit: vethNATVsNftMin, Unit: "x"},
	}
	s.Notes = append([]string{fmt.Sprintf("The same ratios per generator CPU-second (median of per-round ratios): "+
		"xdplb established / floor %.2fx, xdplb new flows / floor %.2fx, xdplb established / nftables one flow %.2fx, "+
		"xdplb new flows / nftables new flows %.2fx.",
		vethCPURatio(runs, vethXdplbOne, vethFloor), vethCPURatio(runs, vethXdplbNew, vethFloor),
		vethCPURatio(runs, vethXdplbOne, vethNftOne), vethCPURatio(runs, vethXdplbNew, vethNftNew))}, vethNotes()...)
	s.Notes = append(s.Notes, fmt.Sprintf("NAT (this run): NAT established / nftables one flow %.2fx, NAT new flows / "+
		"nftables new flows %.2fx, full NAT established / nftables one flow %.2fx; per generator CPU-second %.2fx, %.2fx, "+
		"%.2fx. NAT established / DR established %.2fx. Full NAT is measured with one flow only: a new flow per "+
		"packet would use up its SNAT range (one port per flow per backend) within a fraction of a second.",
		vethRatio(runs, vethNATOne, vethNftOne), vethRatio(runs, vethNATNew, vethNftNew), vethRatio(runs, vethFullNATOne, vethNftOne),
		vethCPURatio(runs, vethNATOne, vethNftOne), vethCPURatio(runs, vethNATNew, vethNftNew), vethCPURatio(runs, vethFullNATOne, vethNftOne),
		vethRatio(runs, vethNATOne, vethXdplbOne)))
	for _, name := range vethCaseOrder {
		if n := natTableFull[name]; n > 0 {
			s.Notes = append(s.Notes, fmt.Sprintf("**%s: %d frames were dropped as nat_table_full** (a run's new flows "+
				"outgrew the NAT table); back/sent counts them as lost.", name, n))
		}
	}
	return s
}

func vethRates(runs []vethRun) []float64 {
	out := make([]float64, 0, len(runs))
	for _, r := range runs {
		out = append(out, r.Mpps())
	}
	return out
}

// vethNotes are the method's limits.
func vethNotes() []string {
	return []string{
		"veth is a software wire: no NIC, no DMA, no interrupts. The generator, the LB's XDP program and the sink share the machine's CPUs; " +
			"the generator's transmit schedules the LB veth's NAPI on the generator's own CPU, so a frame's whole path usually runs on one CPU. " +
			"The rate is therefore 1 / (generator + veth hand-over + LB + veth hand-over + sink), and a ratio to the floor understates the LB " +
			"program's own cost: the column ns/frame over floor (1/rate minus 1/floor rate) is that cost, measured on the wire.",
		"Mpps per gen CPU-s divides the frames by the generator thread's CPU time instead of wall time: since the whole path runs inline in that " +
			"thread, it is nearly free of the time the thread spent waiting for a CPU while other work ran (it overstates the rate if the kernel " +
			"defers softirq work to ksoftirqd). The targets use the wall-clock rates, ratios within one round.",
		"What a real NIC would change: the generator would be another machine, so the LB's CPU would spend nothing on making frames, on the " +
			"generator's veth transmit or on the sink; it would pay the driver's receive and XDP_TX ring work instead (DMA, descriptors, no " +
			"copy). The ratio to the floor would then stand closer to the packet section's program-only ratios, where a new flow costs more " +
			"against a floor of a few ns: a fast NIC would show the program's own cost more, not less. The ns/frame over floor column is that cost " +
			"as the wire sees it, and holds on either.",
		"What limits the new-flow figure now: a new UDP flow's datagram looks in the connection table (a miss: its two buckets, four cache " +
			"lines loaded in parallel), then takes a way of the half-open table (ct_half: a bucket of 8 ways under a spin lock, full after the " +
			"first few seconds, so every insert replaces a half-open flow, an early drop) and is placed by Maglev. With the generator on the same " +
			"CPU, each frame's path (generator, veth hand-over, xdplb, veth hand-over, sink) is one thread's: the rate is the inverse of their sum, " +
			"and the generator and the two hand-overs are most of the floor's frame time. The per-packet section's table-full row gives " +
			"xdplb's own new-flow cost without them; the connection-table section gives the table's part of it.",
		"New flows: nftables creates a conntrack entry per frame up to nf_conntrack_max, then evicts unreplied entries (early drop). xdplb's " +
			"counterpart is ct_half, sized from --conntrack-size; a UDP flow reaches the connection table only with its second datagram, which " +
			"no frame of this case has.",
		"back/sent below 100% means frames were lost on the wire (a full veth ring when the receiving side is the slower one, or conntrack dropping new flows); " +
			"the rate counts only frames that came back.",
		"The machine is shared (2 CPUs, other benchmark sections and helpers may run at the same time): absolute Mpps drift, ratios taken within one round much less.",
	}
}
