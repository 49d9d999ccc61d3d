package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/xdplb/xdplb/bench/progs"
	"github.com/xdplb/xdplb/loader"
)

// vethLB is what can run on the LB's veth. There is one XDP link there,
// made by loader.Load as the daemon makes it; the cases swap the program
// behind it with a link update, so every case runs on the same attachment
// in the same (native) mode.
type vethLB struct {
	dp       *loader.Datapath
	natFlows *ebpf.Map // the pinned nat_flows, emptied before NAT new-flow runs
	link     link.Link
	floor    *ebpf.Program // progs' floor: swap MACs, XDP_TX
	pass     *ebpf.Program // for the kernel-forwarding case
}

// setupLB loads xdplb onto the LB's veth with a private bpffs, configures
// one UDP VIP whose backends all sit behind the generator's MAC (so DR sends
// every frame back out of the same veth with XDP_TX), and installs the
// nftables DNAT load balancer for the kernel-forwarding case.
func (w *vethWire) setupLB(ctx context.Context, log *slog.Logger) (*vethLB, error) {
	lb := &vethLB{}
	// Registered first, so it runs after everything below is released.
	bpffs, err := os.MkdirTemp("", "xdplb-bench-veth-")
	if err != nil {
		return nil, fmt.Errorf("bpffs dir: %w", err)
	}
	w.onClose(func() error {
		if err := unix.Unmount(bpffs, 0); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("unmount %s: %w", bpffs, err)
		}
		return os.Remove(bpffs)
	})
	err = w.LB.do(func() error {
		var err error
		lb.dp, err = loader.Load(loader.Options{
			BPFFS:      bpffs,
			Interfaces: []string{w.LB.Iface},
			XDPMode:    loader.XDPModeNative,
			Logger:     log.With("section", "veth"),
		})
		if err != nil {
			return fmt.Errorf("load xdplb on %s: %w", w.LB.Iface, err)
		}
		// Status asks netlink about the interface: same namespace.
		st, err := lb.dp.Status()
		if err != nil {
			return fmt.Errorf("xdplb status: %w", err)
		}
		for _, i := range st.Interfaces {
			if i.Name == w.LB.Iface {
				if i.Mode != loader.XDPModeNative {
					return fmt.Errorf("xdplb on %s in %s mode, want native", i.Name, i.Mode)
				}
				lb.link, err = link.NewFromID(link.ID(i.LinkID))
				if err != nil {
					return fmt.Errorf("open xdp link %d: %w", i.LinkID, err)
				}
			}
		}
		if lb.link == nil {
			return fmt.Errorf("xdplb status lists no link on %s", w.LB.Iface)
		}
		return nil
	})
	if lb.dp != nil {
		w.onClose(lb.close)
	}
	if err != nil {
		return nil, err
	}
	if err := lb.configure(w); err != nil {
		return nil, err
	}
	if lb.natFlows, err = ebpf.LoadPinnedMap(filepath.Join(lb.dp.PinPath(), "nat_flows"), nil); err != nil {
		return nil, fmt.Errorf("open pinned nat_flows: %w", err)
	}
	if lb.floor, err = progs.LoadFloor(); err != nil {
		return nil, err
	}
	if lb.pass, err = progs.LoadWirePass(); err != nil {
		return nil, err
	}
	if err := w.nftDNAT(ctx); err != nil {
		return nil, err
	}
	return lb, nil
}

// configure writes the VIPs, their backends and lookup tables straight
// into the maps, as the reconciler would: the DR VIP, a NAT VIP and a
// full-NAT VIP (SNAT address the LB's own), all over the same three
// backends, which the NAT VIPs reach at vethNATPort. NAT's next hop comes
// from the FIB: the backends' permanent neighbours behind the generator's
// MAC, on the LB's veth, so NAT too sends every frame back with XDP_TX.
func (lb *vethLB) configure(w *vethWire) error {
	vips := []struct {
		addr netip.Addr
		meta loader.VIPMeta
	}{
		{vethVIP, loader.VIPMeta{ID: 1, Mode: loader.ModeDR, Hash: loader.HashMaglev}},
		{vethNATVIP, loader.VIPMeta{ID: 2, Mode: loader.ModeNAT, Hash: loader.HashMaglev}},
		{vethFullNATVIP, loader.VIPMeta{ID: 3, Mode: loader.ModeFullNAT, Hash: loader.HashMaglev, SNATAddr: vethLBAddr.Addr()}},
	}
	for vi, v := range vips {
		key := loader.VIPKey{Addr: v.addr, Port: vethVIPPort, Proto: loader.ProtoUDP}
		if err := lb.dp.PutVIP(key, v.meta); err != nil {
			return err
		}
		first := uint32(vi*len(vethBackends) + 1)
		for i, addr := range vethBackends {
			be := loader.Backend{ID: first + uint32(i), VIPID: v.meta.ID, Addr: addr, Mode: v.meta.Mode}
			if v.meta.Mode == loader.ModeDR {
				be.MAC, be.SrcMAC = w.Gen.MAC, w.LB.MAC
				be.Ifindex = uint32(w.LB.Ifindex) // the ingress veth: XDP_TX
			} else {
				be.Port = vethNATPort
			}
			if err := lb.dp.PutBackend(be); err != nil {
				return err
			}
		}
		table := make([]uint32, lb.dp.LookupTableSize())
		for i := range table {
			table[i] = first + uint32(i%len(vethBackends))
		}
		if err := lb.dp.PutLookupTable(v.meta.ID, table); err != nil {
			return err
		}
	}
	return nil
}

// vethCounters are xdplb's counters that say what it did with the frames.
type vethCounters struct {
	tx            uint64 // XDP_TX on the LB's veth
	drops, events map[string]uint64
}

func (lb *vethLB) counters(ifindex int) (vethCounters, error) {
	c := vethCounters{}
	acts, err := lb.dp.ActionCounters()
	if err != nil {
		return c, err
	}
	for _, a := range acts {
		if int(a.Ifindex) == ifindex && a.Action == "tx" {
			c.tx += a.Count
		}
	}
	if c.drops, err = lb.dp.DropCounters(); err != nil {
		return c, err
	}
	if c.events, err = lb.dp.EventCounters(); err != nil {
		return c, err
	}
	return c, nil
}

// checkNAT compares the counters after a NAT run with those before it: the
// program must have sent the frames the LB's veth took in back out itself
// (XDP_TX after the translation; nothing passed to the kernel for want
// of a route, a neighbour or an XDP egress, nothing dropped but for a
// full NAT table, which it returns for the report). A NAT case that
// measured the pass path would otherwise pass for a rate.
func (lb *vethLB) checkNAT(before vethCounters, ifindex int, received uint64) (natTableFull uint64, err error) {
	after, err := lb.counters(ifindex)
	if err != nil {
		return 0, err
	}
	var errs []error
	for reason, n := range after.drops {
		d := n - before.drops[reason]
		if reason == "nat_table_full" {
			natTableFull = d
			continue
		}
		if d != 0 {
			errs = append(errs, fmt.Errorf("xdplb dropped %d frames (%s)", d, reason))
		}
	}
	for _, ev := range []string{"fib_failed", "fib_no_neigh", "egress_not_xdp", "ttl_exceeded", "frag_needed"} {
		if d := after.events[ev] - before.events[ev]; d != 0 {
			errs = append(errs, fmt.Errorf("xdplb passed %d frames to the kernel (%s)", d, ev))
		}
	}
	if tx := after.tx - before.tx; tx+natTableFull < received*99/100 {
		errs = append(errs, fmt.Errorf("xdplb sent %d of the %d frames the LB's veth took in with XDP_TX", tx, received))
	}
	return natTableFull, errors.Join(errs...)
}

// use puts p behind the LB veth's XDP link.
func (lb *vethLB) use(p *ebpf.Program) error {
	if err := lb.link.Update(p); err != nil {
		return fmt.Errorf("swap program on the lb veth: %w", err)
	}
	return nil
}

// close releases our handles, then unpins xdplb's link and maps, which
// detaches it.
func (lb *vethLB) close() error {
	var errs []error
	if lb.link != nil {
		errs = append(errs, lb.link.Close())
	}
	if lb.natFlows != nil {
		errs = append(errs, lb.natFlows.Close())
	}
	for _, p := range []*ebpf.Program{lb.floor, lb.pass} {
		if p != nil {
			errs = append(errs, p.Close())
		}
	}
	errs = append(errs, lb.dp.Remove())
	return errors.Join(errs...)
}

// nftDNAT installs the kernel's own L4 load balancer in the LB namespace:
// DNAT of the VIP to one of the backends picked by numgen, then ordinary
// IP forwarding back out of the veth (conntrack makes later packets of a
// flow follow the first).
func (w *vethWire) nftDNAT(ctx context.Context) error {
	var m []string
	for i, be := range vethBackends {
		m = append(m, fmt.Sprintf("%d : %s", i, be))
	}
	ruleset := fmt.Sprintf(`table ip xvbnat {
  chain pre { type nat hook prerouting priority dstnat; policy accept;
    ip daddr %s udp dport %d dnat to numgen random mod %d map { %s }
  }
}
`, vethVIP, vethVIPPort, len(vethBackends), strings.Join(m, ", "))
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", w.LB.NetNS, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft in %s: %w: %s\nruleset:\n%s", w.LB.NetNS, err, strings.TrimSpace(string(out)), ruleset)
	}
	return nil
}
