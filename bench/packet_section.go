package bench

// The report of the per-packet cost section (packet.go).

import (
	"fmt"
	"strings"
)

// Reference figures from issue 4, measured on this machine by hand: not
// this run's, and printed only as such.
const (
	pktRefFloorNs      = 6.0
	pktRefKatranEstNs  = 60.0
	pktRefKatranNewNs  = 70.0
	pktRefKatranPassNs = 24.0
)

func (b *pktBench) section(extraNotes []string) Section {
	s := Section{
		Title:  "Per-packet cost in the program (BPF_PROG_TEST_RUN)",
		Method: b.method(),
		Header: []string{"path", "family", "floor ns", "xdplb ns", "ratio", "harness ns", "ratio, harness out",
			"spread (ratio min..max; xdplb ns min..max)"},
	}
	for path := range pktNumPaths {
		worst, worstFam := 0.0, ""
		for fi, fam := range pktFamilies {
			ser := b.series[fi][path]
			ratio := pktMedian(ser.ratio)
			harness, own := "-", "-"
			spread := fmt.Sprintf("%.2f..%.2fx; %.1f..%.1f", pktQuantile(ser.ratio, 0), pktQuantile(ser.ratio, 1),
				pktQuantile(ser.xdplb, 0), pktQuantile(ser.xdplb, 1))
			if len(ser.own) > 0 {
				// The target holds xdplb's own cost to the floor's.
				ratio = pktMedian(ser.own)
				harness, own = fmt.Sprintf("%.2f", pktMedian(ser.harness)), fmt.Sprintf("%.2fx", ratio)
				spread = fmt.Sprintf("%.2f..%.2fx; %.1f..%.1f", pktQuantile(ser.own, 0), pktQuantile(ser.own, 1),
					pktQuantile(ser.xdplb, 0), pktQuantile(ser.xdplb, 1))
			}
			s.Rows = append(s.Rows, []string{
				pktPathNames[path], fam.name,
				fmt.Sprintf("%.2f", pktMedian(ser.floor)),
				fmt.Sprintf("%.2f", pktMedian(ser.xdplb)),
				fmt.Sprintf("%.2fx", pktMedian(ser.ratio)),
				harness, own, spread,
			})
			if ratio > worst {
				worst, worstFam = ratio, fam.name
			}
		}
		if vs, ok := pktVs[path]; ok {
			s.Targets = append(s.Targets, b.vsTarget(path, vs.name, vs.limit))
		}
		if pktLimits[path] == 0 {
			continue
		}
		what := "xdplb/floor"
		if path >= pktNATFirst {
			what = "xdplb/floor, restore harness taken out"
		}
		s.Targets = append(s.Targets, Target{
			Name:   fmt.Sprintf("packet: %s, worse of IPv4/IPv6 (%s), %s", pktPathNames[path], worstFam, what),
			Got:    worst,
			Limit:  pktLimits[path],
			AtMost: true,
			Unit:   "x",
		})
	}
	s.Notes = append(extraNotes, b.notes()...)
	return s
}

// vsTarget holds path's xdplb figure to its base row's, the harness's
// cost taken out of both (pktSeries.vs), the worse family's median.
func (b *pktBench) vsTarget(path pktPath, name string, limit float64) Target {
	worst, worstFam := 0.0, ""
	for fi, fam := range pktFamilies {
		if vs := pktMedian(b.series[fi][path].vs); vs > worst {
			worst, worstFam = vs, fam.name
		}
	}
	return Target{
		Name:   fmt.Sprintf("packet: %s, worse of IPv4/IPv6 (%s), new-flow harness taken out", name, worstFam),
		Got:    worst,
		Limit:  limit,
		AtMost: true,
		Unit:   "x",
	}
}

func (b *pktBench) method() string {
	return fmt.Sprintf("xdplb's program (loaded through the loader into a private bpffs, DR VIPs for TCP and UDP per family, "+
		"one backend leaving by the ingress interface, so forwarding is `XDP_TX`) and a floor program of the benchmark's own "+
		"(`bench/progs/floor.c`: swap the MACs, `XDP_TX`) run through `BPF_PROG_TEST_RUN` on the same frames. "+
		"Before timing, every path is run once and its verdict and output bytes checked (forwarded: `XDP_TX` with the "+
		"backend's MACs and nothing else changed; pass: `XDP_PASS`, frame untouched). "+
		"Established, UDP and pass: %d rounds; in each, floor and xdplb run back to back on each frame (order alternating "+
		"between rounds), %d repeats per run. The kernel reports whole ns per run, excluding time the thread was "+
		"rescheduled but counting time stolen by the hypervisor; the figure used is the thread's CPU time over the "+
		"syscall divided by the repeats, which resolves fractions and leaves steal out, checked against the kernel's "+
		"(a run where it exceeds the kernel's by more than the 1 ns step is repeated, up to %d times). "+
		"New flows: with repeat > 1 the kernel reruns the program on the frame it already ran on, so a plain repeat "+
		"would find the flow the first run inserted. Instead a harness program of the benchmark "+
		"(`bench/progs/newflow.c`) writes a source port and source address from a per-CPU sequence number into "+
		"the SYN on every run and tail-calls the program under test through a `PROG_ARRAY`: every repeat is a 5-tuple "+
		"never seen before, and the floor runs through the same harness, so the harness's cost is in both figures of the "+
		"ratio. %d repeats per run, timed as above. A new flow looks in the connection table (a miss) and goes to the "+
		"half-open table (buckets of 8 flows, %d flows), in two states: *not full* (sized so that few inserts of the "+
		"run evict, checked afterwards; the connection table holds only the section's few flows) and *full*: first "+
		"the connection table is filled until 99.9%% of its slots are in use, with flows established through the "+
		"program itself (a flow-set harness, `bench/progs/flowset.c`, runs each flow's ACK twice: the first goes to "+
		"the half-open table, the second moves the flow into the connection table), then the half-open table with "+
		"new flows, so every insert takes a half-open flow's place, an early drop: the steady state of a load "+
		"balancer under a SYN flood, or that has seen more flows than its tables hold. Both tables' fill is in the "+
		"notes. The full-table target uses that state, the state a busy LB stays in; the not-full one the other. "+
		"*Limits*: per family a third VIP, TCP port %d, configured as the port-%d one (DR, one backend, "+
		"a lookup table of the default size naming it) but with a new-flow rate limit (`vip add --max-new-flows "+
		"%d,burst=%d`: the bucket alone holds more than every flow the section sends it, so even a clock that stood "+
		"still would refuse none, and every timed SYN takes a token). In every table-full round its SYN runs through "+
		"the same new-flow harness right beside the port-%d VIP's (the two take turns going first), and the floor "+
		"also alone on the SYN: *harness ns* is the floor behind the harness less the floor alone, and the target "+
		"holds (with the limit - harness ns) / (without - harness ns), the median of the rounds' ratios. Before "+
		"timing the limits are read back from the maps (the port-%d VIPs', and only theirs); after every round "+
		"rate_limited must still be 0, and after the last those VIPs' own drop counters empty, else the section "+
		"fails: a figure that included refusals would not be the cost of taking a token. "+
		"Figures are medians over rounds; ratios are the median of each round's xdplb/floor. "+
		"Every program a timed run starts is also attached to a veth of the benchmark that stays down, so the "+
		"test run finds it in the kernel's XDP dispatcher already and does not add and remove it around every "+
		"run (a few hundred µs of CPU in each syscall, which made every run of few repeats, the new-flow runs, "+
		"fail the CPU-time check). "+
		"*NAT and full NAT* run in a network namespace of the benchmark shaped like a two-armed load balancer "+
		"(veths `cli` facing the clients and `srv` facing the backends, addresses on both, permanent neighbours "+
		"for the client and the backends, forwarding on), with a datapath of their own loaded there and attached "+
		"natively to both arms (so both are in its `tx_ports`): per family a `nat` VIP (port %d) and a `fullnat` "+
		"VIP (port %d, SNAT address srv's own), each with four backends on port %d behind srv (neighbours there), the lookup table naming them in turn. Every NAT run passes "+
		"the ingress interface in the test run's `xdp_md` (cli forward, srv for replies), so the program's "+
		"`bpf_fib_lookup` routes in that namespace, and the test runs execute there. A NAT rewrite is not "+
		"idempotent, so with a plain repeat every run after the first would see a translated frame and take "+
		"another path: each repeat first goes through a restore harness of the benchmark (`bench/progs/restore.c`: "+
		"`bpf_xdp_store_bytes` of the original frame, then a tail call to the program under test), new flows "+
		"then through the new-flow harness above as well. The floor runs behind the same harness, and also alone "+
		"on the same frame; *harness ns* is the difference, and *ratio, harness out* = (xdplb behind the harness "+
		"- harness ns) / floor alone, xdplb's own cost over the floor's, which is what the NAT targets hold "+
		"(stricter than the plain ratio of the two harnessed figures, which the harness's cost pulls towards 1). "+
		"Before timing, each NAT flow's SYN is run once and its output compared byte for byte (which also learns "+
		"full NAT's SNAT port), every row's frame once plain and three repeats through its harness; then the "+
		"output of the last repeat of *every* timed run is checked: xdplb's must be `XDP_REDIRECT` to the other "+
		"arm with the translated frame, byte for byte (addresses, ports, TTL, IPv4 header and TCP checksums, the "+
		"FIB's MACs; the expected frames are built with gopacket and their checksums verified), new flows field "+
		"by field (the harness writes their source), and afterwards no drop and no packet passed to the kernel "+
		"(fib_failed, fib_no_neigh, egress_not_xdp, ttl_exceeded, frag_needed all 0); a benchmark of the pass "+
		"path would fail the section.",
		b.p.rounds, b.p.repeat, b.p.retries, b.p.newRepeat, b.dp.HalfOpenSize(),
		pktLimitedPort, pktTCPPort, pktRateLimit.Rate, pktRateLimit.Burst, pktTCPPort, pktLimitedPort,
		pktNATPort, pktFullNATPort, pktBackendPort)
}

func (b *pktBench) notes() []string {
	var notes []string
	for fi, fam := range pktFamilies {
		s := b.singles[fi]
		syn, ack, cold, floorSingle := pktMedian(s.syn), pktMedian(s.ack), pktMedian(s.cold), pktMedian(s.floor)
		floorRepeat := pktMedian(b.series[fi][pktEstablished].floor)
		notes = append(notes, fmt.Sprintf("%s new flow (this run): a single SYN run takes %.1f ns and a single ACK run "+
			"of a flow just placed %.1f ns, so a new flow costs %.1f ns more than an established one whose entry is in "+
			"cache; an ACK of a flow placed %d SYNs earlier (entry likely out of cache) takes %.1f ns, %.1f ns less than "+
			"the SYN. A single floor run reports %.1f ns against %.2f ns in repeat mode: about %.0f ns of each "+
			"single-run figure is the kernel timer, which cancels in the differences. The earlier method's new-flow "+
			"figure (repeat-mode established plus that difference, %d single-run SYNs per round) is %.1f ns here.",
			fam.name, syn, ack, syn-ack, b.p.newFlows/2, cold, syn-cold, floorSingle, floorRepeat,
			floorSingle-floorRepeat, b.p.newFlows, pktMedian(s.extra)))
	}
	if b.fillNote != "" {
		notes = append(notes, b.fillNote)
	}
	notes = append(notes, b.limitNotes()...)
	notes = append(notes,
		fmt.Sprintf("Frames: IPv4 TCP SYN, TCP ACK and UDP, and IPv6 UDP, are %d bytes as the program sees them "+
			"(no FCS), padded with L4 payload; an IPv6 TCP frame's headers alone take 74 bytes, so IPv6 TCP frames are "+
			"that minimal size.", pktFrameLen),
		fmt.Sprintf("%d of %d repeat-mode runs lost more than 1 ns per packet to the hypervisor (steal, left out of "+
			"the CPU-time figure); %d stayed inconsistent after every retry, and their kernel figure (whole ns, plus "+
			"half a step) stands.", b.stolen, b.runs, b.disturbed),
		fmt.Sprintf("Reference figures from the issue (measured earlier on this machine, not in this run): floor about "+
			"%.0f ns; Katran, built from its own sources and run the same way, %.0f ns established (%.1fx), %.0f ns new "+
			"flow (%.1fx), %.0f ns non-VIP pass (%.1fx). Katran's new-flow figure comes from re-running one SYN with "+
			"repeat > 1: Katran writes the same key into its LRU on every SYN, so each run after the first re-inserts "+
			"an entry already in cache and evicts nothing; the rows above insert a new 5-tuple on every run, which "+
			"walks a hash bucket and an LRU list not in cache. Everything else in this section is from this run; the "+
			"floor's median here is %s ns.", pktRefFloorNs, pktRefKatranEstNs, pktRefKatranEstNs/pktRefFloorNs,
			pktRefKatranNewNs, pktRefKatranNewNs/pktRefFloorNs, pktRefKatranPassNs, pktRefKatranPassNs/pktRefFloorNs,
			b.floorMedians()),
		"What limits new flows: before the cache-line connection table (issue 14; profiled with perf on this machine "+
			"then, not in this run) the kernel's LRU hash took about 70% of a new flow's time (lookup_nulls_elem_raw, the "+
			"bucket walk of the miss and of the insert, and bpf_lru_pop_free), the program under 10%. Now a SYN's table "+
			"work is the connection table's miss (its two buckets, four cache lines loaded in parallel) and a way of the "+
			"half-open table (one bucket of 8 ways under its spin lock; with the table full, the choice of the way to "+
			"take); the rest is the VIP lookup, Maglev and counters. The connection-table section times the table's "+
			"lookups alone at 1M and 8M flows; this section has not been profiled again since.",
		"What NAT costs (profiled with perf on this machine, not in this run: 20 harnessed runs of 1M repeats of the "+
			"established NAT ACK, when the program still asked the FIB on every packet): the kernel's FIB lookup "+
			"(`bpf_fib_lookup` with the packet's length, so the MTU check too) took about 31% of the time for IPv4 and "+
			"51% for IPv6 (fib_table_lookup, fib6_table_lookup, fib6_node_lookup, ip6_mtu_from_fib6, ...), about 70 ns "+
			"and 190 ns against a floor of about 25 ns, which put NAT at 8.6x (IPv4) and 15x (IPv6). The program now "+
			"reuses a next hop for loader.NextHopReuse (250 ms): per backend for the packets toward it, per flow "+
			"(in its nat_flows entry) for the replies, so an established packet asks the FIB about four times a "+
			"second; a packet longer than any the MTU check passed still asks at once.",
		"The machine is shared (2 CPUs, other work running): absolute ns drift between runs, the side-by-side ratios much less.",
	)
	return notes
}

// limitNotes report the limits rows beyond the table: the ratio and the
// difference per family, and what is not measured and why.
func (b *pktBench) limitNotes() []string {
	var parts []string
	for fi, fam := range pktFamilies {
		with, without := b.series[fi][pktNewFullLimited], b.series[fi][pktNewFull]
		var diff []float64
		for r := range min(len(with.xdplb), len(without.xdplb)) {
			diff = append(diff, with.xdplb[r]-without.xdplb[r])
		}
		parts = append(parts, fmt.Sprintf("%s %.3fx (%.3f..%.3fx over the rounds; with the limit %+.1f ns, the "+
			"median of the rounds' differences)", fam.name, pktMedian(with.vs), pktQuantile(with.vs, 0),
			pktQuantile(with.vs, 1), pktMedian(diff)))
	}
	return []string{
		fmt.Sprintf("Limits (this run): a new flow to the VIP with a rate limit over one to the VIP without, table "+
			"full, the new-flow harness's cost taken out of both: %s. %d new flows went to the rate-limited VIPs "+
			"(retries included), fewer than one bucket holds (%d), and rate_limited stayed 0 after every round.",
			strings.Join(parts, "; "), b.limited, pktRateLimit.Burst),
		"Limits: a backend's connection cap (`backend add --max-conns`) costs nothing per packet, so it has no row: " +
			"the daemon's reconciler counts each capped backend's established flows from the connection table (at " +
			"most every CapInterval, 1 s) and takes a full backend out of the VIP's lookup table; the program reads " +
			"VIP_F_BACKENDS_FULL only when a new flow finds no backend. A VIP whose backends have caps runs the path " +
			"of the rows without limits; the per-packet cost of limits is the rate limit's alone.",
		"Limits: the rate limit's bucket is one per VIP, shared by the CPUs (bpf/ratelimit.h). Here one CPU takes " +
			"every token, so the bucket's cache line stays in its cache; when one VIP's new flows arrive on several " +
			"CPUs at once, each admission's atomic add moves the line between them, a cost this row does not include.",
	}
}

// floorMedians lists the floor's median per family, e.g. "6.12 (IPv4), 6.20 (IPv6)".
func (b *pktBench) floorMedians() string {
	var parts []string
	for fi, fam := range pktFamilies {
		parts = append(parts, fmt.Sprintf("%.2f (%s)", pktMedian(b.series[fi][pktEstablished].floor), fam.name))
	}
	return strings.Join(parts, ", ")
}
