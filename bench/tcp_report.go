package bench

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/xdplb/xdplb/internal/lab"
)

// tcpRatios are one case's figures over direct's in the same round and shape.
type tcpRatios struct{ RPS, P50, P99 float64 }

// tcpStats gathers one case in one shape over all rounds.
type tcpStats struct {
	RPS, P50, P99    []float64 // absolute: req/s, µs, µs
	Ratios           []tcpRatios
	Requests, Errors int64
}

// tcpCollect groups the runs by case and shape and divides each run by the
// direct run of its own round and shape.
func tcpCollect(nCases, nShapes int, runs []tcpRun) [][]tcpStats {
	stats := make([][]tcpStats, nCases)
	for i := range stats {
		stats[i] = make([]tcpStats, nShapes)
	}
	direct := map[[2]int]wrkResult{} // {shape, round}
	for _, r := range runs {
		if r.Case == 0 {
			direct[[2]int{r.Shape, r.Round}] = r.wrkResult
		}
	}
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	for _, r := range runs {
		s := &stats[r.Case][r.Shape]
		s.RPS = append(s.RPS, r.RPS)
		s.P50 = append(s.P50, us(r.P50))
		s.P99 = append(s.P99, us(r.P99))
		s.Requests += r.Requests
		s.Errors += r.Errors
		if d, ok := direct[[2]int{r.Shape, r.Round}]; ok && d.RPS > 0 && d.P50 > 0 && d.P99 > 0 {
			s.Ratios = append(s.Ratios, tcpRatios{RPS: r.RPS / d.RPS, P50: us(r.P50) / us(d.P50), P99: us(r.P99) / us(d.P99)})
		}
	}
	return stats
}

// tcpMedian is the median of xs (0 for none).
func tcpMedian(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func (s tcpStats) ratio(pick func(tcpRatios) float64) float64 {
	xs := make([]float64, len(s.Ratios))
	for i, r := range s.Ratios {
		xs[i] = pick(r)
	}
	return tcpMedian(xs)
}

func tcpFmtUs(us float64) string {
	if us >= 1000 {
		return fmt.Sprintf("%.2f ms", us/1000)
	}
	return fmt.Sprintf("%.0f µs", us)
}

// tcpSection turns the runs into the report's section; load tells the
// machine's load average before and after the runs.
func tcpSection(plan tcpPlan, shapes []wrkShape, runs []tcpRun, load string) Section {
	stats := tcpCollect(len(tcpCases), len(shapes), runs)
	sec := Section{
		Title: "Real TCP through the load balancer",
		Method: fmt.Sprintf("Namespaces client, lb and be1-be3 on one bridge (internal/lab). Each backend runs nginx on ports 80 and 8080 "+
			"(one worker, access log off, a static page naming the backend). wrk runs in the client namespace: "+
			"-t%d -c%d --latency, %s per run, in two shapes: keep-alive (wrk's default) and one connection per "+
			"request (`-H \"Connection: close\"`). %d rounds; in each round every case runs both shapes, the cases "+
			"in an order that rotates from round to round. Paths: direct to be1 (the ceiling); xdplb DR (the daemon "+
			"with native XDP on the lb's interface, VIP %s:80 over the three backends, Maglev); xdplb NAT and xdplb "+
			"full NAT (the same daemon, `vip add --mode nat`, and `--mode fullnat --snat-addr`, backends at port 8080); "+
			"nftables DNAT in the lb namespace (kernel forwarding, `numgen inc` round robin to port 8080, the answers "+
			"routed back through the lb as for xdplb NAT) and nftables DNAT + SNAT (the same with SNAT to an address "+
			"of the lb's, the shape of full NAT); HAProxy in TCP mode in the lb namespace (one thread, balance "+
			"roundrobin). Each case is set up just "+
			"before its runs (then warmed up with a discarded 1 s wrk run) and torn down right after (the daemon is "+
			"started afresh each round), so the lb "+
			"namespace holds only the path being measured, and each is checked first with a few requests on new "+
			"connections. Ratios are to the direct run of the same round and shape; the table shows medians over "+
			"the rounds.", plan.Load.Threads, plan.Load.Conns, plan.Load.Duration, plan.Rounds, lab.VIP4),
		Header: []string{"shape", "path", "req/s", "req/s vs direct", "p50", "p50 vs direct", "p99", "p99 vs direct", "errors"},
	}
	for si, sh := range shapes {
		for ci, c := range tcpCases {
			s := stats[ci][si]
			errs := "0"
			if s.Errors > 0 {
				errs = fmt.Sprintf("%d (%.2g%%)", s.Errors, 100*float64(s.Errors)/float64(max(s.Requests, 1)))
			}
			sec.Rows = append(sec.Rows, []string{
				sh.Name, c.Name,
				fmt.Sprintf("%.0f", tcpMedian(s.RPS)), fmt.Sprintf("%.2fx", s.ratio(func(r tcpRatios) float64 { return r.RPS })),
				tcpFmtUs(tcpMedian(s.P50)), fmt.Sprintf("%.2fx", s.ratio(func(r tcpRatios) float64 { return r.P50 })),
				tcpFmtUs(tcpMedian(s.P99)), fmt.Sprintf("%.2fx", s.ratio(func(r tcpRatios) float64 { return r.P99 })),
				errs,
			})
		}
		if xi, ok := tcpCaseIndex(tcpXDPLBDR); ok {
			x := stats[xi][si]
			sec.Targets = append(sec.Targets,
				Target{Name: "TCP " + sh.Name + ": xdplb DR req/s vs direct", Got: x.ratio(func(r tcpRatios) float64 { return r.RPS }), Limit: 0.9, Unit: "x"},
				Target{Name: "TCP " + sh.Name + ": xdplb DR p99 vs direct", Got: x.ratio(func(r tcpRatios) float64 { return r.P99 }), Limit: 1.5, AtMost: true, Unit: "x"},
			)
		}
		// NAT and full NAT (issue 11): 0.9x direct, and ahead of the
		// kernel's DNAT of the same shape and of HAProxy, each ratio taken
		// within a round.
		for _, m := range []struct{ xdplb, nft string }{{tcpXDPLBNAT, tcpNftDNAT}, {tcpXDPLBFullNAT, tcpNftDNATSNAT}} {
			xi, ok := tcpCaseIndex(m.xdplb)
			if !ok {
				continue
			}
			x := stats[xi][si]
			sec.Targets = append(sec.Targets, Target{Name: "TCP " + sh.Name + ": " + m.xdplb + " req/s vs direct",
				Got: x.ratio(func(r tcpRatios) float64 { return r.RPS }), Limit: 0.9, Unit: "x"})
			for _, peer := range []string{m.nft, tcpHAProxy} {
				if pi, ok := tcpCaseIndex(peer); ok {
					sec.Targets = append(sec.Targets, Target{Name: "TCP " + sh.Name + ": " + m.xdplb + " req/s vs " + peer,
						Got: tcpRoundRatio(x.RPS, stats[pi][si].RPS), Limit: 1, Unit: "x"})
				}
			}
		}
	}
	sec.Notes = append(sec.Notes, tcpNotes(shapes, stats, load)...)
	return sec
}

// tcpRoundRatio is the median over rounds of a[i]/b[i] (one case's
// figure over another's, both from round i).
func tcpRoundRatio(a, b []float64) float64 {
	var rs []float64
	for i := range min(len(a), len(b)) {
		if b[i] > 0 {
			rs = append(rs, a[i]/b[i])
		}
	}
	return tcpMedian(rs)
}

func tcpCaseIndex(name string) (int, bool) {
	for i, c := range tcpCases {
		if c.Name == name {
			return i, true
		}
	}
	return 0, false
}

func tcpNotes(shapes []wrkShape, stats [][]tcpStats, load string) []string {
	// rps says a case's median req/s ratio per shape, "a / b".
	rps := func(name string) string {
		ci, ok := tcpCaseIndex(name)
		if !ok {
			return "not run"
		}
		var rs []string
		for si := range shapes {
			rs = append(rs, fmt.Sprintf("%.2fx", stats[ci][si].ratio(func(r tcpRatios) float64 { return r.RPS })))
		}
		return strings.Join(rs, " / ")
	}
	notes := []string{
		"Reference figures from the issue, measured on this machine before (nftables with DNAT and SNAT, as " +
			tcpNftDNATSNAT + " here): nftables 0.70x and HAProxy 0.39x " +
			"direct req/s with keep-alive, 0.68x and 0.27x with a new connection per request. This run (keep-alive / " +
			"new connection): " + tcpNftDNATSNAT + " " + rps(tcpNftDNATSNAT) + ", " + tcpNftDNAT + " " + rps(tcpNftDNAT) +
			", HAProxy " + rps(tcpHAProxy) + ".",
	}
	for _, name := range []string{tcpXDPLBDR, tcpXDPLBNAT, tcpXDPLBFullNAT} {
		x, ok := tcpCaseIndex(name)
		if !ok {
			continue
		}
		var perRound []string
		for si, sh := range shapes {
			var rs []string
			for _, r := range stats[x][si].Ratios {
				rs = append(rs, fmt.Sprintf("%.2f/%.2f", r.RPS, r.P99))
			}
			perRound = append(perRound, fmt.Sprintf("%s %s", sh.Name, strings.Join(rs, ", ")))
		}
		notes = append(notes, name+" req/s and p99 vs direct, round by round: "+strings.Join(perRound, "; ")+".")
	}
	notes = append(notes,
		"Return paths: DR answers go from the backends straight to the client (the VIP is on their loopback); "+
			"xdplb NAT and "+tcpNftDNAT+" get them back through the lb by a host route to the client on each backend, "+
			"added for those cases only (a NAT LB is its backends' gateway), xdplb's program translating them in XDP, "+
			"the kernel's conntrack un-NATing them; xdplb full NAT ("+tcpFullNATAddr.String()+") and "+tcpNftDNATSNAT+
			" ("+tcpSNAT4.String()+") SNAT towards the backends to an address of their own on the lb, so the backends "+
			"answer the lb without any route; HAProxy opens its own connections to the backends. Every path but "+
			"direct and DR reaches the backends on port 8080 behind the VIP's port 80 (nginx listens on both).",
		"The backends' transmit checksum offload is off for the whole section (the client's is off in every lab): "+
			"a veth hands a TCP frame on with only the pseudo-header summed, and a frame the lb sends with XDP_TX "+
			"(a NAT answer) loses the metadata that says so, so the client would drop it. Every path pays the "+
			"software checksum alike (direct to a backend measured with it on and off, 5 s runs alternating: no difference beyond the run-to-run spread); a real NIC would compute it.",
		"What limits these figures: 2 cores shared by wrk (-t1, about one core), nginx, the load balancer, the softirq "+
			"work of the veth and bridge hops and whatever else runs on the machine (load average "+load+"). "+
			"p99 over a 10 s run is decided by a few scheduling stalls, so it moves a lot from round to round even "+
			"side by side; req/s ratios are steadier. Direct goes to one nginx worker, the balanced paths to three: "+
			"on a busy machine three runnable workers likely get a larger share of the CPU than one, which would "+
			"explain balanced paths above 1.0x with keep-alive; with a new connection per request every request "+
			"also pays the load balancer's new-flow path (for DR: two more veth hops and the XDP program on the "+
			"way in; the answers bypass the lb).",
	)
	for si, sh := range shapes {
		for ci, c := range tcpCases {
			if s := stats[ci][si]; s.Errors > 0 {
				notes = append(notes, fmt.Sprintf("%s, %s: wrk counted %d errors in %d requests (socket errors and non-2xx answers).",
					c.Name, sh.Name, s.Errors, s.Requests))
			}
		}
	}
	return notes
}
