package bench

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cilium/ebpf"
)

// Names of the veth cases, in report order.
const (
	vethFloor      = "floor (swap MACs, XDP_TX)"
	vethXdplbOne   = "xdplb DR, one established flow"
	vethXdplbNew   = "xdplb DR, a new flow per packet"
	vethNftOne     = "nftables DNAT, one flow"
	vethNftNew     = "nftables DNAT, a new flow per packet"
	vethNATOne     = "xdplb NAT, one established flow"
	vethNATNew     = "xdplb NAT, a new flow per packet"
	vethFullNATOne = "xdplb full NAT, one established flow"
	vethVsFloorMin = 0.7
	vethVsNftMin   = 5
	// New flows (issue 14): a new flow per packet.
	vethNewVsFloorMin = 0.4
	vethNewVsNftMin   = 8
	// NAT against the kernel's own DNAT (issue 11).
	vethNATVsNftMin = 3
)

// vethCaseOrder is the report's order.
var vethCaseOrder = []string{vethFloor, vethXdplbOne, vethXdplbNew, vethNATOne, vethNATNew, vethFullNATOne, vethNftOne, vethNftNew}

// vethCase is one program on the LB's veth fed by one generator.
type vethCase struct {
	name string
	gen  *ebpf.Program
	lb   *ebpf.Program
	// nat: xdplb translates; every run's counters are checked.
	nat bool
	// before runs untimed before every run of the case.
	before func() error
}

// runVethPPS measures packets per second through a veth pair: a
// live-frames generator in one namespace, the load balancer in another,
// everything on the same wire and in interleaved rounds.
func runVethPPS(ctx context.Context, c Config) (_ Section, err error) {
	rounds, dur := 9, 2*time.Second
	if c.Quick {
		rounds, dur = 3, 300*time.Millisecond
	}
	w, err := newVethWire(c.Log)
	if err != nil {
		return Section{}, err
	}
	defer func() {
		if cerr := w.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("clean up veth wire: %w", cerr))
		}
	}()
	lb, err := w.setupLB(ctx, c.Log)
	if err != nil {
		return Section{}, err
	}
	frame := vethFrame(w)
	gens, err := w.loadGenerators(frame)
	if err != nil {
		return Section{}, err
	}
	cases := []vethCase{
		{vethFloor, gens.OneFlow, lb.floor, false, nil},
		{vethXdplbOne, gens.OneFlow, lb.dp.Program(), false, nil},
		{vethXdplbNew, gens.NewFlows, lb.dp.Program(), false, nil},
		{vethNftOne, gens.OneFlow, lb.pass, false, nil},
		{vethNftNew, gens.NewFlows, lb.pass, false, nil},
		{vethNATOne, gens.NATOneFlow, lb.dp.Program(), true, nil},
		// nat_flows is a plain hash (it must never evict a live
		// translation) of the connection table's size: a run of new flows
		// would fill it within seconds, so each run starts with it empty.
		{vethNATNew, gens.NATNewFlows, lb.dp.Program(), true, func() error {
			_, err := pktEmptyMap(lb.natFlows, func([]byte) bool { return false })
			return err
		}},
		{vethFullNATOne, gens.FullNATOneFlow, lb.dp.Program(), true, nil},
	}
	runs := map[string][]vethRun{}
	natTableFull := map[string]uint64{}
	// Round 0 warms up (caches, the connection tables) and is not counted;
	// each round starts at a different case so no case always follows the
	// same one.
	for r := 0; r <= rounds; r++ {
		for i := range cases {
			cs := cases[(i+r)%len(cases)]
			if err := ctx.Err(); err != nil {
				return Section{}, err
			}
			if err := lb.use(cs.lb); err != nil {
				return Section{}, err
			}
			if cs.before != nil {
				if err := cs.before(); err != nil {
					return Section{}, fmt.Errorf("%s: %w", cs.name, err)
				}
			}
			d := dur
			if r == 0 {
				d = dur / 3
			}
			before, err := lb.counters(w.LB.Ifindex)
			if err != nil {
				return Section{}, err
			}
			run, err := w.generate(ctx, cs.gen, frame, d)
			if err != nil {
				return Section{}, fmt.Errorf("%s: %w", cs.name, err)
			}
			if cs.nat {
				full, err := lb.checkNAT(before, w.LB.Ifindex, run.Received)
				if err != nil {
					return Section{}, fmt.Errorf("%s, round %d: %w", cs.name, r, err)
				}
				natTableFull[cs.name] += full
			}
			c.Log.Debug("veth run", "case", cs.name, "round", r, "mpps", run.Mpps(), "sent", run.Sent,
				"received", run.Received, "returned", run.Returned)
			if r > 0 {
				runs[cs.name] = append(runs[cs.name], run)
			}
		}
	}
	return vethSection(runs, natTableFull, rounds, dur), nil
}

// vethRatio is the median over rounds of a/b (wall-clock rates), each
// taken within one round.
func vethRatio(runs map[string][]vethRun, a, b string) float64 {
	return vethRatioOf(runs, a, b, vethRun.Mpps)
}

// vethCPURatio is vethRatio over rates per generator CPU-second.
func vethCPURatio(runs map[string][]vethRun, a, b string) float64 {
	return vethRatioOf(runs, a, b, vethRun.MppsPerCPU)
}

func vethRatioOf(runs map[string][]vethRun, a, b string, rate func(vethRun) float64) float64 {
	var rs []float64
	for i := range min(len(runs[a]), len(runs[b])) {
		if d := rate(runs[b][i]); d > 0 {
			rs = append(rs, rate(runs[a][i])/d)
		}
	}
	return vethMedian(rs)
}

func vethMedian(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
