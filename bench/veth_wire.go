package bench

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/xdplb/xdplb/internal/nsthread"
)

// The veth wire's addresses. They exist only inside its two namespaces.
var (
	vethLBAddr = netip.MustParsePrefix("10.201.0.1/24") // the LB's veth
	vethVIP    = netip.MustParseAddr("10.201.0.100")
	// The NAT VIPs: the same backends, at vethNATPort.
	vethNATVIP     = netip.MustParseAddr("10.201.0.101")
	vethFullNATVIP = netip.MustParseAddr("10.201.0.102")
	vethClient     = netip.MustParseAddr("10.128.0.1") // source of the one-flow traffic
	vethBackends   = []netip.Addr{                     // reached back through the generator's veth
		netip.MustParseAddr("10.201.0.11"),
		netip.MustParseAddr("10.201.0.12"),
		netip.MustParseAddr("10.201.0.13"),
	}
	vethGenMAC = net.HardwareAddr{0x02, 0x00, 0x0a, 0xc9, 0x00, 0x02}
	vethLBMAC  = net.HardwareAddr{0x02, 0x00, 0x0a, 0xc9, 0x00, 0x01}
)

const (
	vethVIPPort = 80
	vethNATPort = 8080
	vethGenIf   = "veth-gen"
	vethLBIf    = "veth-lb"
)

// vethNode is one end of the wire: a namespace and its veth.
type vethNode struct {
	NetNS   string // name under /run/netns, usable with `ip netns exec`
	Iface   string
	Ifindex int
	MAC     net.HardwareAddr
	ns      netns.NsHandle
}

// vethWire is two namespaces, gen and lb, joined by one veth pair. Nothing
// is created in the root namespace, and Close removes everything.
type vethWire struct {
	Gen, LB *vethNode
	log     *slog.Logger
	closers []func() error // run in reverse order by Close
}

// newVethWire builds the wire; on error it removes what it made.
func newVethWire(log *slog.Logger) (_ *vethWire, err error) {
	w := &vethWire{log: log}
	defer func() {
		if err != nil {
			err = errors.Join(err, w.Close())
		}
	}()
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("random prefix: %w", err)
	}
	// Not lab's "xlb" prefix: lab sweeps namespaces of that shape.
	prefix := "xvb" + hex.EncodeToString(b)
	if w.Gen, err = w.newNode(prefix+"-gen", vethGenIf, vethGenMAC); err != nil {
		return nil, err
	}
	if w.LB, err = w.newNode(prefix+"-lb", vethLBIf, vethLBMAC); err != nil {
		return nil, err
	}
	// No IPv6 anywhere (no router or neighbour solicitations to count) and,
	// on the LB, a router that forwards back out of the interface it
	// received on without sending ICMP redirects or filtering sources.
	quiet := map[string]string{
		"net/ipv6/conf/all/disable_ipv6":     "1",
		"net/ipv6/conf/default/disable_ipv6": "1",
	}
	if err := w.Gen.do(func() error { return vethWriteSysctls(quiet) }); err != nil {
		return nil, err
	}
	router := map[string]string{
		"net/ipv4/ip_forward":                  "1",
		"net/ipv4/conf/all/send_redirects":     "0",
		"net/ipv4/conf/default/send_redirects": "0",
		"net/ipv4/conf/all/rp_filter":          "0",
		"net/ipv4/conf/default/rp_filter":      "0",
	}
	for k, v := range quiet {
		router[k] = v
	}
	if err := w.LB.do(func() error { return vethWriteSysctls(router) }); err != nil {
		return nil, err
	}
	if err := w.link(); err != nil {
		return nil, err
	}
	return w, nil
}

// newNode creates a namespace and registers its removal.
func (w *vethWire) newNode(name, iface string, mac net.HardwareAddr) (*vethNode, error) {
	n := &vethNode{NetNS: name, Iface: iface, MAC: mac}
	h, err := nsthread.NewNamed(name)
	if err != nil {
		return nil, fmt.Errorf("create netns %s: %w", name, err)
	}
	n.ns = h
	w.closers = append(w.closers, func() error {
		errs := []error{n.ns.Close()}
		if err := netns.DeleteNamed(name); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("delete netns %s: %w", name, err))
		}
		return errors.Join(errs...)
	})
	return n, nil
}

// link creates the veth pair, addresses the LB's end and gives it static
// neighbours for the backends, which all sit behind the generator's MAC.
func (w *vethWire) link() error {
	gh, err := netlink.NewHandleAt(w.Gen.ns)
	if err != nil {
		return fmt.Errorf("netlink handle %s: %w", w.Gen.NetNS, err)
	}
	defer gh.Close()
	lh, err := netlink.NewHandleAt(w.LB.ns)
	if err != nil {
		return fmt.Errorf("netlink handle %s: %w", w.LB.NetNS, err)
	}
	defer lh.Close()
	veth := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: w.Gen.Iface, HardwareAddr: w.Gen.MAC},
		PeerName:         w.LB.Iface,
		PeerHardwareAddr: w.LB.MAC,
		PeerNamespace:    netlink.NsFd(int(w.LB.ns)),
	}
	if err := gh.LinkAdd(veth); err != nil {
		return fmt.Errorf("add veth %s <-> %s: %w", w.Gen.Iface, w.LB.Iface, err)
	}
	for _, x := range []struct {
		h *netlink.Handle
		n *vethNode
	}{{gh, w.Gen}, {lh, w.LB}} {
		l, err := x.h.LinkByName(x.n.Iface)
		if err != nil {
			return fmt.Errorf("find %s in %s: %w", x.n.Iface, x.n.NetNS, err)
		}
		if err := x.h.LinkSetUp(l); err != nil {
			return fmt.Errorf("%s up in %s: %w", x.n.Iface, x.n.NetNS, err)
		}
		x.n.Ifindex = l.Attrs().Index
	}
	lbLink, err := lh.LinkByName(w.LB.Iface)
	if err != nil {
		return fmt.Errorf("find %s: %w", w.LB.Iface, err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: vethLBAddr.Addr().AsSlice(), Mask: net.CIDRMask(vethLBAddr.Bits(), 32)}}
	if err := lh.AddrAdd(lbLink, addr); err != nil {
		return fmt.Errorf("add %s to %s: %w", vethLBAddr, w.LB.Iface, err)
	}
	// Permanent neighbours: no ARP on the wire, no resolution in the way.
	for _, be := range vethBackends {
		if err := lh.NeighSet(&netlink.Neigh{
			LinkIndex:    w.LB.Ifindex,
			Family:       netlink.FAMILY_V4,
			State:        netlink.NUD_PERMANENT,
			IP:           be.AsSlice(),
			HardwareAddr: w.Gen.MAC,
		}); err != nil {
			return fmt.Errorf("neighbour %s on %s: %w", be, w.LB.Iface, err)
		}
	}
	return nil
}

// vethIfStats is what a veth's counters say.
type vethIfStats struct{ RxPackets, RxDropped uint64 }

// stats reads n's interface counters.
func (n *vethNode) stats() (vethIfStats, error) {
	h, err := netlink.NewHandleAt(n.ns)
	if err != nil {
		return vethIfStats{}, fmt.Errorf("netlink handle %s: %w", n.NetNS, err)
	}
	defer h.Close()
	l, err := h.LinkByName(n.Iface)
	if err != nil {
		return vethIfStats{}, fmt.Errorf("find %s in %s: %w", n.Iface, n.NetNS, err)
	}
	s := l.Attrs().Statistics
	if s == nil {
		return vethIfStats{}, fmt.Errorf("%s in %s: no statistics", n.Iface, n.NetNS)
	}
	return vethIfStats{RxPackets: s.RxPackets, RxDropped: s.RxDropped}, nil
}

// do runs fn on a locked OS thread inside n's namespace (see nsthread.Do).
func (n *vethNode) do(fn func() error) error { return nsthread.Do(n.ns, n.NetNS, fn) }

// onClose registers f to run at Close, before the namespaces go.
func (w *vethWire) onClose(f func() error) { w.closers = append(w.closers, f) }

// Close undoes everything in reverse order. Deleting the namespaces removes
// the veth pair and any XDP program still attached to it.
func (w *vethWire) Close() error {
	var errs []error
	for i := len(w.closers) - 1; i >= 0; i-- {
		errs = append(errs, w.closers[i]())
	}
	w.closers = nil
	return errors.Join(errs...)
}

// vethWriteSysctls must run on a thread inside the target namespace: files
// below /proc/sys/net belong to the namespace of the thread that opens them.
func vethWriteSysctls(kv map[string]string) error {
	for k, v := range kv {
		if err := os.WriteFile(filepath.Join("/proc/sys", k), []byte(v), 0o644); err != nil {
			return fmt.Errorf("sysctl %s=%s: %w", k, v, err)
		}
	}
	return nil
}
