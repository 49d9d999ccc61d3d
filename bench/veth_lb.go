package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
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
	dp    *loader.Datapath
	link  link.Link
	floor *ebpf.Program // progs' floor: swap MACs, XDP_TX
	pass  *ebpf.Program // for the kernel-forwarding case
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

// configure writes the VIP, its backends and a lookup table straight into
// the maps, as the reconciler would.
func (lb *vethLB) configure(w *vethWire) error {
	const vipID = 1
	key := loader.VIPKey{Addr: vethVIP, Port: vethVIPPort, Proto: loader.ProtoUDP}
	if err := lb.dp.PutVIP(key, loader.VIPMeta{ID: vipID, Mode: loader.ModeDR, Hash: loader.HashMaglev}); err != nil {
		return err
	}
	for i, addr := range vethBackends {
		if err := lb.dp.PutBackend(loader.Backend{
			ID:      uint32(i + 1),
			VIPID:   vipID,
			Addr:    addr,
			MAC:     w.Gen.MAC,
			SrcMAC:  w.LB.MAC,
			Ifindex: uint32(w.LB.Ifindex), // the ingress veth: XDP_TX
		}); err != nil {
			return err
		}
	}
	table := make([]uint32, lb.dp.LookupTableSize())
	for i := range table {
		table[i] = uint32(i%len(vethBackends)) + 1
	}
	return lb.dp.PutLookupTable(vipID, table)
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
