package bench

import (
	"cmp"
	"fmt"
	"net/netip"
	"time"

	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/control/reconcile"
)

// The control-plane section's addresses. They exist only inside its lab's
// namespaces: the LB's interface gets ctlSubnet besides the lab's own
// subnet, so that every backend below is directly connected.
var (
	ctlSubnet = netip.MustParsePrefix("10.201.0.0/16")
	ctlLBAddr = netip.MustParseAddr("10.201.0.1")
	// ctlVIPBase: VIPs are 10.250.x.y, outside every attached subnet, so
	// the daemon announces none of them (no address per VIP to add).
	ctlVIPBase = netip.MustParseAddr("10.250.0.1")
	// ctlPoolBase: the shared pool of backends behind every VIP.
	ctlPoolBase = netip.MustParseAddr("10.201.1.1")
	// ctlBigBase: the backends of the one VIP with many backends.
	ctlBigBase = netip.MustParseAddr("10.201.8.1")
	// ctlCheckBase: backends that really answer health checks, in the
	// lab's backend namespace.
	ctlCheckBase = netip.MustParseAddr("10.201.200.1")
	// ctlCheckPort0: VIP i's health checks go to port ctlCheckPort0+i, so
	// every (VIP, backend) is a distinct probe (equal probes are shared).
	ctlCheckPort0 = 20000
)

// ctlAddrRange returns n consecutive addresses from base.
func ctlAddrRange(base netip.Addr, n int) []netip.Addr {
	out := make([]netip.Addr, 0, n)
	a := base
	for range n {
		out = append(out, a)
		a = a.Next()
	}
	return out
}

// ctlState is the state the section applies: vips VIPs on port 80, each
// with the same pool of backends (the realistic shape: one server pool
// behind many service addresses), VIP 0 with big backends of its own when
// big > 0, and a tcp check to check ports when check is set.
type ctlState struct {
	vips, pool, big int
	bigWeightIdx    int    // backend of VIP 0 whose weight is bigWeight
	bigWeight       uint32 // 0: all weights are model.DefaultWeight
	poolBase        netip.Addr
	check           bool
	checkInterval   time.Duration // 0: 1 s
	changedVIP      int           // -1: none; else this VIP's pool weights differ
}

func (s ctlState) build() model.State {
	pool := ctlAddrRange(s.poolBase, s.pool)
	big := ctlAddrRange(ctlBigBase, s.big)
	vipAddr := ctlVIPBase
	st := model.State{VIPs: make([]model.VIP, 0, s.vips)}
	for i := range s.vips {
		v := model.VIP{Address: vipAddr, Port: 80, Protocol: model.TCP, Mode: model.ModeDR,
			Scheduler: model.SchedMaglev}
		vipAddr = vipAddr.Next()
		addrs := pool
		if i == 0 && s.big > 0 {
			addrs = big
		}
		for j, a := range addrs {
			w := uint32(model.DefaultWeight)
			if i == 0 && s.big > 0 && s.bigWeight != 0 && j == s.bigWeightIdx {
				w = s.bigWeight
			}
			if i == s.changedVIP && j == 0 {
				w = model.DefaultWeight / 2
			}
			v.Backends = append(v.Backends, model.Backend{Address: a, Weight: w})
		}
		if s.check {
			v.HealthCheck = &model.HealthCheck{Type: "tcp", Port: uint16(ctlCheckPort0 + i),
				Interval: model.Duration(cmp.Or(s.checkInterval, time.Second)), Timeout: model.Duration(5e8), Rise: 2, Fall: 3}
		}
		st.VIPs = append(st.VIPs, v)
	}
	return st
}

// ctlMaglevLayout is the table the daemon must write for one VIP's backends,
// with ids 1..n standing for the backends in the order given; the daemon's
// ids differ, so tables are compared up to a renaming of ids.
func ctlMaglevLayout(addrs []netip.Addr, weights []uint32, size uint32) []uint32 {
	bs := make([]reconcile.MaglevBackend, len(addrs))
	for i, a := range addrs {
		bs[i] = reconcile.MaglevBackend{ID: uint32(i + 1), Key: reconcile.MaglevKey(a, 80), Weight: weights[i]}
	}
	return reconcile.BuildMaglev(bs, size)
}

// ctlSameUpToRenaming reports whether got is want with ids renamed one to one
// (0 stays 0: an empty slot).
func ctlSameUpToRenaming(got, want []uint32) error {
	if len(got) != len(want) {
		return fmt.Errorf("table has %d slots, want %d", len(got), len(want))
	}
	// ids are below 65536 (the backends map): slices beat maps here.
	fwd := make([]int32, 1<<16)
	back := make([]int32, 1<<16)
	for i := range got {
		w, g := want[i], got[i]
		if w >= 1<<16 || g >= 1<<16 {
			return fmt.Errorf("slot %d: id out of range", i)
		}
		if (w == 0) != (g == 0) {
			return fmt.Errorf("slot %d holds %d, want %s", i, g, map[bool]string{true: "empty", false: "a backend"}[w == 0])
		}
		if w == 0 {
			continue
		}
		switch {
		case fwd[w] == 0 && back[g] == 0:
			fwd[w], back[g] = int32(g), int32(w)
		case fwd[w] != int32(g) || back[g] != int32(w):
			return fmt.Errorf("slot %d holds backend %d, not the one the layout puts there", i, g)
		}
	}
	return nil
}
