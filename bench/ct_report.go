package bench

// The report of the connection-table section (ct.go).

import (
	"fmt"
)

// ctOwn is each round's a - base: a harnessed run's cost over its
// reference's in the same round.
func ctOwn(a, base []float64) []float64 {
	out := make([]float64, 0, len(a))
	for i := range min(len(a), len(base)) {
		out = append(out, a[i]-base[i])
	}
	return out
}

// ctRatios is each round's a / b.
func ctRatios(a, b []float64) []float64 {
	out := make([]float64, 0, len(a))
	for i := range min(len(a), len(b)) {
		out = append(out, a[i]/b[i])
	}
	return out
}

func ctFlows(n uint32) string {
	if n%(1<<20) == 0 {
		return fmt.Sprintf("%dM", n>>20)
	}
	return fmt.Sprintf("%dK", n>>10)
}

func ctSpread(xs []float64) string {
	return fmt.Sprintf("%.2f..%.2f", pktQuantile(xs, 0), pktQuantile(xs, 1))
}

func (b *ctBench) section() Section {
	s := Section{
		Title:  "Connection table at scale: established lookups among millions of flows, live-flow loss, memory",
		Method: b.method(),
		Header: []string{"flows", "row", "LRU hash (replaced)", "cache-line table", "cache-line / LRU", "spread (ratio min..max)"},
	}
	for _, z := range b.sizes {
		n := ctFlows(z.size)
		lruOwn, newOwn := ctOwn(z.lruRand, z.floorRand), ctOwn(z.newRand, z.floorRand)
		ratio := ctRatios(newOwn, lruOwn)
		lruHot, newHot := ctOwn(z.lruHot, z.floorHot), ctOwn(z.newHot, z.floorHot)
		hotRatio := ctRatios(newHot, lruHot)
		s.Rows = append(s.Rows,
			[]string{n, fmt.Sprintf("established lookup, random of %s live flows: ns (harness and floor out)", n),
				fmt.Sprintf("%.1f", pktMedian(lruOwn)), fmt.Sprintf("%.1f", pktMedian(newOwn)),
				fmt.Sprintf("%.2fx", pktMedian(ratio)), ctSpread(ratio)},
			[]string{n, "established lookup, one flow (hot): ns (harness and floor out)",
				fmt.Sprintf("%.1f", pktMedian(lruHot)), fmt.Sprintf("%.1f", pktMedian(newHot)),
				fmt.Sprintf("%.2fx", pktMedian(hotRatio)), ctSpread(hotRatio)},
			[]string{n, fmt.Sprintf("fill of %s flows: ns per flow, wall clock (fill program behind the harness)", n),
				fmt.Sprintf("%.0f", float64(z.lruFill.Nanoseconds())/float64(z.size)),
				fmt.Sprintf("%.0f", float64(z.newFill.Nanoseconds())/float64(z.size)),
				fmt.Sprintf("%.2fx", float64(z.newFill)/float64(z.lruFill)), "-"},
			[]string{n, "memory per flow of capacity: bytes (the maps' memlock; LRU per entry, cache-line table per --conntrack-size flow)",
				fmt.Sprintf("%.1f", float64(z.lruBytes)/float64(z.lruEntries)), fmt.Sprintf("%.1f", float64(z.newBytes)/float64(z.size)),
				fmt.Sprintf("%.2fx", float64(z.newBytes)/float64(z.size)/(float64(z.lruBytes)/float64(z.lruEntries))),
				fmt.Sprintf("%d MiB (%d entries) vs %d MiB", z.lruBytes>>20, z.lruEntries, z.newBytes>>20)},
		)
		harness := ctOwn(z.xFloorRand, z.xFloor)
		xRand := ctOwn(z.xRand, harness)
		harnessHot := ctOwn(z.xFloorHot, z.xFloor)
		xHot := ctOwn(z.xHot, harnessHot)
		s.Rows = append(s.Rows,
			[]string{n, fmt.Sprintf("xdplb, established ACK of a random one of %s live flows: ns (harness out); ratio to the floor", n),
				"-", fmt.Sprintf("%.1f", pktMedian(xRand)), fmt.Sprintf("%.2fx floor", pktMedian(ctRatios(xRand, z.xFloor))),
				fmt.Sprintf("floor %.1f ns", pktMedian(z.xFloor))},
			[]string{n, "xdplb, established ACK of one flow (hot): ns (harness out); ratio to the floor",
				"-", fmt.Sprintf("%.1f", pktMedian(xHot)), fmt.Sprintf("%.2fx floor", pktMedian(ctRatios(xHot, z.xFloor))),
				fmt.Sprintf("random / hot %.2fx", pktMedian(ctRatios(xRand, xHot)))},
			[]string{n, fmt.Sprintf("xdplb --conntrack-size %s: bytes per flow of capacity (%d slots x 16 + keys x 40, whole pages)",
				n, z.slots), "-", fmt.Sprintf("%.1f", float64(z.xBytes)/float64(z.size)), "-",
				fmt.Sprintf("%d MiB", z.xBytes>>20)},
		)
		for _, l := range z.loss {
			s.Rows = append(s.Rows, []string{n,
				fmt.Sprintf("xdplb, live flows evicted per million established, at %d%% of --conntrack-size (%d flows in %d slots)",
					l.percent, l.inserted, z.slots),
				"-", fmt.Sprintf("%.1f", ctPerMillion(l.evicted, l.inserted)), "-",
				fmt.Sprintf("%d evicted, %d held; simulation %.1f per million; %d early drops", l.evicted, l.held,
					ctPerMillion(uint64(l.simEvicted), l.inserted), l.earlyDrops)})
		}
		s.Targets = append(s.Targets, Target{
			Name: fmt.Sprintf("ct: established lookup, random of %s live flows, cache-line table / LRU hash (same run)", n),
			Got:  pktMedian(ratio), Limit: ctLookupLimit, AtMost: true, Unit: "x",
		})
		for _, l := range z.loss {
			if l.percent == ctLossTargetLevel {
				s.Targets = append(s.Targets, Target{
					Name: fmt.Sprintf("ct: live flows evicted per million established at %d%% of --conntrack-size %s", l.percent, n),
					Got:  ctPerMillion(l.evicted, l.inserted), Limit: ctLossLimit, AtMost: true, Unit: "/M",
				})
			}
		}
	}
	s.Notes = b.notes()
	return s
}

func ctPerMillion(n uint64, of int) float64 {
	if of == 0 {
		return 0
	}
	return float64(n) * 1e6 / float64(of)
}

func (b *ctBench) method() string {
	return fmt.Sprintf("Per size (--conntrack-size in flows; the LRU hash has as many entries, the size it had before, "+
		"and %d%% more plus 1024 a CPU: it takes free entries from per-CPU lists and evicts before its last free one is "+
		"used, and sized exactly it lost up to half of the flows here, so no lookup would have been of a flow it holds): "+
		"*the tables alone*: two programs of the benchmark (`bench/progs/ctlookup.c`) do an established packet's table "+
		"work and nothing else, each on its own maps: the LRU hash of 5-tuple to a 16-byte value (backend, flags, stamp) "+
		"that the connection table replaced, looked up (which marks the entry used) and its stamp rewritten at most "+
		"every %d ticks, as the old path did; and the product's cache-line table, through `bpf/conntrack.h` itself "+
		"(`flow_hash64`, `conntrack_lookup`, `conntrack_touch`), as many slots as xdplb makes for that size. Both read "+
		"the 5-tuple from the frame the same way, swap the MACs and return `XDP_TX`, as the floor does. Each table is "+
		"filled with as many flows (the LRU by an update when the flow is missing, the cache-line table by the "+
		"product's `conntrack_insert`), then in each of %d rounds a flow-set harness (`bench/progs/flowset.c`) writes "+
		"the source of a random one of those flows into the frame on every run (a 64-bit LCG, scaled to the set "+
		"without a division) and tail-calls the program: %d runs each of the floor, the LRU and the cache-line "+
		"programs behind it, the three drawing the same flows in a round, order reversed every other round. A "+
		"figure is the run's cost over the floor behind the same harness in the same round (the harness, the floor's "+
		"work and the frame's parse cancel), the ratio the median of the rounds' ratios. *One flow (hot)*: the "+
		"same with a set of one. Lookups that found no flow are counted and must stay under 1%%. *xdplb*: the "+
		"real program, loaded with that --conntrack-size (one DR VIP, TCP port %d, one backend leaving by lo), "+
		"establishes the flows itself: the harness in order over the flows, twice per batch of %d (a flow's first "+
		"ACK goes to the half-open table, its second moves it into the connection table), and at %v%% of the size "+
		"the `ct_evicted_live` and `early_drop` counters are read: live flows evicted per million established, beside "+
		"a simulation of the same buckets (two random choices of 8 slots, the emptier taken, both full an eviction). "+
		"Then established ACKs of random flows of the full table, and of one, behind the same harness, with the "+
		"floor behind it and alone: *harness out* is xdplb behind the harness less (floor behind it less floor "+
		"alone). Timing as in the packet section: the thread's CPU time over the syscall divided by the repeats, "+
		"checked against the kernel's. Every map is the benchmark's own, unpinned (xdplb's in a private bpffs, "+
		"removed), and each size's tables are freed before the next size is filled.",
		100/ctLRUHeadroom, 256, b.p.rounds, b.p.repeat, pktTCPPort, b.p.batch, ctLoadLevels)
}

func (b *ctBench) notes() []string {
	var notes []string
	for _, z := range b.sizes {
		notes = append(notes, fmt.Sprintf("%s flows: filled the LRU hash in %s and the cache-line table in %s; "+
			"xdplb established its %d flows (two passes) in %s; lookups that missed: LRU %d, cache-line %d, of at least "+
			"%d each.", ctFlows(z.size), z.lruFill.Round(1e6), z.newFill.Round(1e6), z.size, z.xFill.Round(1e6),
			z.lruMisses, z.newMisses, z.lookups))
	}
	notes = append(notes,
		"What the rows do not include: both established paths then read the backend and check its VIP (the same "+
			"two lookups in either design), which the xdplb rows do include. The LRU hash's figure is that of a "+
			"table whose lists only one CPU touched; with traffic on every CPU its lookups would also move the LRU "+
			"list's cache lines between CPUs, which the cache-line table's lookups never write.",
		fmt.Sprintf("%d of %d timed runs lost more than 1 ns per packet to the hypervisor; %d stayed inconsistent "+
			"after every retry (their kernel figure stands).", b.timer.stolen, b.timer.runs, b.timer.disturbed),
		"The machine is shared (2 CPUs, other work running): absolute ns drift between runs, the side-by-side ratios much less.",
	)
	return notes
}
