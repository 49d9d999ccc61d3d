// Package lab builds throw-away network-namespace labs for xdplb: a client,
// a load balancer, backends and a switch namespace holding a Linux bridge,
// all on one L2 segment; optionally a second segment behind a second
// interface of the load balancer, with the backends of NAT VIPs (a
// two-armed load balancer). It also runs the HTTP and UDP backends, the
// clients and the daemon that the end-to-end tests and `xdplb demo` use.
//
// Nothing is created in the root network namespace: every link and address
// lives in namespaces whose names carry a random per-lab prefix, so parallel
// or leftover runs never collide.
package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/xdplb/xdplb/internal/nsthread"
	"github.com/xdplb/xdplb/loader"
)

// Addresses of the lab segment (the client's) and of the NAT segment
// behind the load balancer. They exist only inside the lab namespaces.
var (
	Subnet4    = netip.MustParsePrefix("10.200.0.0/24")
	Subnet6    = netip.MustParsePrefix("fd00:200::/64")
	VIP4       = netip.MustParseAddr("10.200.0.100")
	VIP6       = netip.MustParseAddr("fd00:200::100")
	NATSubnet4 = netip.MustParsePrefix("10.201.0.0/24")
	NATSubnet6 = netip.MustParsePrefix("fd00:201::/64")
	// The client's own segment in an ECMP lab, behind the router.
	ClientSubnet4 = netip.MustParsePrefix("10.202.0.0/24")
	ClientSubnet6 = netip.MustParsePrefix("fd00:202::/64")
)

// Iface is the name of every node's interface on its segment; BackIface is
// the load balancer's second interface, on the NAT segment.
const (
	Iface     = "eth0"
	BackIface = "eth1"
)

const (
	// maxBackends keeps host numbers clear of the VIP (.100).
	maxBackends = 80
	lbHost      = 10 // the load balancer's host number on both segments
)

// segment is one L2 segment of the lab: a bridge in the switch namespace
// and the subnets of the nodes wired to it.
type segment struct {
	bridge     string
	subnet4    netip.Prefix
	subnet6    netip.Prefix
	portPrefix string // bridge ports are portPrefix + node name
	macByte    byte   // 5th byte of the nodes' MACs, telling the segments apart
}

var (
	frontSegment  = segment{bridge: "br0", subnet4: Subnet4, subnet6: Subnet6, portPrefix: "sw-", macByte: 0xc8}
	natSegment    = segment{bridge: "br1", subnet4: NATSubnet4, subnet6: NATSubnet6, portPrefix: "swn-", macByte: 0xc9}
	clientSegment = segment{bridge: "br2", subnet4: ClientSubnet4, subnet6: ClientSubnet6, portPrefix: "swc-", macByte: 0xca}
)

// Options configure New.
type Options struct {
	// Backends is the number of DR backend namespaces (be1, be2, ...) on
	// the client's segment, the VIPs on their lo; default 3 in a lab
	// without a NAT segment, none in one with it.
	Backends int
	// NAT, when set, adds the NAT segment: the load balancer's BackIface
	// and NAT backend namespaces behind it.
	NAT *NATOptions
	// ECMP, when set, makes the multi-node topology: the client on a
	// segment of its own behind a router, and several load balancers on
	// the backends' segment, to which the router spreads the VIPs' traffic
	// (ECMP over the routes the load balancers announce).
	ECMP *ECMPOptions
	// AttachPass attaches a pass-only XDP program to an interface of the
	// calling thread's namespace; default loader.AttachPass.
	AttachPass func(ifindex int) (io.Closer, error)
	Logger     *slog.Logger
}

// NATOptions configure the NAT segment: NATSubnet4 and NATSubnet6 on a
// bridge of its own, the load balancer's BackIface on it (host .10, the
// backends' gateway when Gateway is set, and the default SNAT address of a
// fullnat VIP) and backends nat1, nat2, ... at .11, .12, ...
type NATOptions struct {
	// Backends is the number of NAT backends; default 3.
	Backends int
	// Gateway gives the backends default routes via the load balancer's
	// addresses on the segment, as `nat` needs: its backends answer the
	// client's own address. Without it they have only their connected
	// subnet, no route toward the clients at all: what `fullnat` promises
	// is enough.
	Gateway bool
}

// ECMPOptions configure the multi-node topology: load balancers lb1, lb2,
// ... at .31, .32, ... of the backends' segment, and the router at .1 of it
// and of the client's segment (ClientSubnet4/6), the gateway of the client
// and of the backends, with forwarding and L4 multipath hashing on.
type ECMPOptions struct {
	LBs int // default 3
}

// RouterHost is the router's host number on both of its segments.
const RouterHost = 1

// Node is one namespace of the lab with its interface on its segment.
type Node struct {
	Name  string // role: client, lb, be1, nat1, ...
	NetNS string // namespace name under /run/netns, usable with `ip netns exec`
	Iface string // interface on the segment ("" for the switch)
	MAC   net.HardwareAddr
	IPv4  netip.Addr
	IPv6  netip.Addr
	// Back is the load balancer's interface on the NAT segment, or the
	// router's on the client's segment in an ECMP lab; nil for every
	// other node.
	Back *Interface

	ns netns.NsHandle
}

// Interface is one interface of a node on a segment.
type Interface struct {
	Name string
	MAC  net.HardwareAddr
	IPv4 netip.Addr
	IPv6 netip.Addr
}

// Ifaces names every interface of n on a segment: the ones a daemon on the
// load balancer attaches to.
func (n *Node) Ifaces() []string {
	if n.Back != nil {
		return []string{n.Iface, n.Back.Name}
	}
	return []string{n.Iface}
}

// Lab is a running topology. Close removes everything it created.
type Lab struct {
	Prefix   string
	Switch   *Node
	Client   *Node
	LB       *Node   // the load balancer; the first of LBs in an ECMP lab
	LBs      []*Node // every load balancer: just LB, but in an ECMP lab
	Router   *Node   // ECMP lab only: between the client and the load balancers
	Backends []*Node // DR backends, on the load balancers' segment
	// NATBackends are the backends on the NAT segment (Options.NAT).
	NATBackends []*Node

	log *slog.Logger

	mu      sync.Mutex
	closers []func() error // run in reverse order by Close
	closed  bool
}

// New builds the lab: namespaces, bridge, veth pairs, addresses, sysctls and
// pass programs on the bridge ports. On error everything created so far is
// removed again.
func New(ctx context.Context, opts Options) (_ *Lab, err error) {
	if opts.Backends == 0 && opts.NAT == nil {
		opts.Backends = 3
	}
	if opts.Backends < 0 || opts.Backends > maxBackends {
		return nil, fmt.Errorf("backends: %d out of range 0-%d", opts.Backends, maxBackends)
	}
	var nat NATOptions
	if opts.NAT != nil {
		nat = *opts.NAT
		if nat.Backends == 0 {
			nat.Backends = 3
		}
		if nat.Backends < 1 || nat.Backends > maxBackends {
			return nil, fmt.Errorf("nat backends: %d out of range 1-%d", nat.Backends, maxBackends)
		}
	}
	if opts.ECMP != nil {
		if opts.ECMP.LBs == 0 {
			opts.ECMP.LBs = 3
		}
		if opts.ECMP.LBs < 1 || opts.ECMP.LBs > 9 || opts.NAT != nil {
			return nil, fmt.Errorf("ecmp: %d load balancers (1-9), and no NAT segment", opts.ECMP.LBs)
		}
	}
	if opts.AttachPass == nil {
		opts.AttachPass = loader.AttachPass
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	l := &Lab{log: opts.Logger}
	defer func() {
		if err != nil {
			err = errors.Join(err, l.Close())
		}
	}()

	if err := sweep(l.log); err != nil {
		l.log.Warn("sweeping leftover labs", "err", err)
	}
	// A random prefix, locked for the lab's lifetime; retry on the
	// (unlikely) clash with a leftover lab.
	for attempt := 0; ; attempt++ {
		l.Prefix, err = randomPrefix()
		if err != nil {
			return nil, err
		}
		lock, err := lockPrefix(l.Prefix)
		if err != nil {
			return nil, err
		}
		// Registered first, so released last: after the namespaces are gone.
		l.AddCloser(func() error {
			_ = os.Remove(lock.Name())
			return lock.Close()
		})
		l.Switch, err = l.newNode("sw")
		if err == nil {
			break
		}
		if !errors.Is(err, os.ErrExist) || attempt == 3 {
			return nil, err
		}
	}
	l.log.Debug("lab namespaces", "prefix", l.Prefix)

	if err := l.Switch.Do(func() error {
		// Bridge ports need no IPv6 of their own: keeps the segment quiet.
		return writeSysctls(map[string]string{
			"net/ipv6/conf/all/disable_ipv6":     "1",
			"net/ipv6/conf/default/disable_ipv6": "1",
		})
	}); err != nil {
		return nil, err
	}
	sw, err := netlink.NewHandleAt(l.Switch.ns)
	if err != nil {
		return nil, fmt.Errorf("netlink handle %s: %w", l.Switch.NetNS, err)
	}
	defer sw.Close()
	if err := linkUp(sw, "lo"); err != nil {
		return nil, fmt.Errorf("%s: %w", l.Switch.NetNS, err)
	}
	segments := []segment{frontSegment}
	if opts.NAT != nil {
		segments = append(segments, natSegment)
	}
	if opts.ECMP != nil {
		segments = append(segments, clientSegment)
	}
	bridges := map[string]netlink.Link{}
	for _, seg := range segments {
		off := false
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: seg.bridge}, MulticastSnooping: &off}
		if err := sw.LinkAdd(br); err != nil {
			return nil, fmt.Errorf("add bridge %s in %s: %w", seg.bridge, l.Switch.NetNS, err)
		}
		if err := sw.LinkSetUp(br); err != nil {
			return nil, fmt.Errorf("bridge %s up: %w", seg.bridge, err)
		}
		bridges[seg.bridge] = br
	}

	type plan struct {
		node *Node
		seg  segment
		host byte
	}
	plans := []plan{}
	add := func(role string, seg segment, host byte) (*Node, error) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n, err := l.newNode(role)
		if err != nil {
			return nil, err
		}
		plans = append(plans, plan{n, seg, host})
		return n, nil
	}
	if opts.ECMP == nil {
		if l.Client, err = add("client", frontSegment, 2); err != nil {
			return nil, err
		}
		if l.LB, err = add("lb", frontSegment, lbHost); err != nil {
			return nil, err
		}
		l.LBs = []*Node{l.LB}
	} else {
		if l.Client, err = add("client", clientSegment, 2); err != nil {
			return nil, err
		}
		if l.Router, err = add("router", frontSegment, RouterHost); err != nil {
			return nil, err
		}
		for i := range opts.ECMP.LBs {
			lb, err := add(fmt.Sprintf("lb%d", i+1), frontSegment, byte(31+i))
			if err != nil {
				return nil, err
			}
			l.LBs = append(l.LBs, lb)
		}
		l.LB = l.LBs[0]
	}
	for i := range opts.Backends {
		be, err := add(fmt.Sprintf("be%d", i+1), frontSegment, byte(11+i))
		if err != nil {
			return nil, err
		}
		l.Backends = append(l.Backends, be)
	}
	for i := range nat.Backends {
		be, err := add(fmt.Sprintf("nat%d", i+1), natSegment, byte(11+i))
		if err != nil {
			return nil, err
		}
		l.NATBackends = append(l.NATBackends, be)
	}
	for _, p := range plans {
		ifc, err := l.wire(sw, bridges[p.seg.bridge], p.seg, p.node, Iface, p.host, opts.AttachPass)
		if err != nil {
			return nil, err
		}
		p.node.Iface, p.node.MAC, p.node.IPv4, p.node.IPv6 = ifc.Name, ifc.MAC, ifc.IPv4, ifc.IPv6
	}
	for _, be := range l.Backends {
		if err := be.makeDRBackend(); err != nil {
			return nil, err
		}
	}
	// A veth sends TCP with a partial checksum (CHECKSUM_PARTIAL: only the
	// pseudo-header sum) and leaves the rest to the receiver's skb metadata.
	// XDP_TX turns the frame into an xdp_frame, which loses that metadata,
	// so the backend sees a bad checksum and drops it (TcpInCsumErrors).
	// Real NICs put full checksums on the wire; here the client must too.
	if err := l.Client.SetTxChecksum(false); err != nil {
		return nil, err
	}
	if opts.NAT != nil {
		if err := l.wireNAT(sw, bridges[natSegment.bridge], nat, opts.AttachPass); err != nil {
			return nil, err
		}
	}
	if opts.ECMP != nil {
		if err := l.wireRouter(sw, bridges[clientSegment.bridge], opts.AttachPass); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// wireRouter finishes an ECMP lab: the router's second interface on the
// client's segment, forwarding with an L4 multipath hash (so that the
// flows of one client spread over the load balancers, and each flow stays
// on one), and the routes of the client and the backends through it.
func (l *Lab) wireRouter(sw *netlink.Handle, br netlink.Link, attachPass func(int) (io.Closer, error)) error {
	back, err := l.wire(sw, br, clientSegment, l.Router, BackIface, RouterHost, attachPass)
	if err != nil {
		return err
	}
	l.Router.Back = &back
	if err := l.Router.Do(func() error {
		return writeSysctls(map[string]string{
			"net/ipv4/ip_forward":                "1",
			"net/ipv6/conf/all/forwarding":       "1",
			"net/ipv4/fib_multipath_hash_policy": "1",
			"net/ipv6/fib_multipath_hash_policy": "1",
		})
	}); err != nil {
		return err
	}
	if err := l.Client.addDefaultRoutes(back.IPv4, back.IPv6); err != nil {
		return err
	}
	for _, be := range l.Backends {
		if err := be.addDefaultRoutes(l.Router.IPv4, l.Router.IPv6); err != nil {
			return err
		}
	}
	return nil
}

// wireNAT finishes the NAT segment: the load balancer's second interface,
// forwarding on (bpf_fib_lookup answers only for a forwarding interface,
// and the kernel forwards what the program passes to it), the backends'
// routes and full checksums from them (their replies go through XDP too).
func (l *Lab) wireNAT(sw *netlink.Handle, br netlink.Link, o NATOptions, attachPass func(int) (io.Closer, error)) error {
	back, err := l.wire(sw, br, natSegment, l.LB, BackIface, lbHost, attachPass)
	if err != nil {
		return err
	}
	l.LB.Back = &back
	if err := l.LB.Do(func() error {
		return writeSysctls(map[string]string{
			"net/ipv4/ip_forward":          "1",
			"net/ipv6/conf/all/forwarding": "1",
		})
	}); err != nil {
		return err
	}
	for _, be := range l.NATBackends {
		if o.Gateway {
			if err := be.addDefaultRoutes(back.IPv4, back.IPv6); err != nil {
				return err
			}
		}
		if err := be.SetTxChecksum(false); err != nil {
			return err
		}
	}
	return nil
}

// addDefaultRoutes routes everything off n's subnet via gw4 and gw6.
func (n *Node) addDefaultRoutes(gw4, gw6 netip.Addr) error {
	h, err := netlink.NewHandleAt(n.ns)
	if err != nil {
		return fmt.Errorf("netlink handle %s: %w", n.NetNS, err)
	}
	defer h.Close()
	link, err := h.LinkByName(n.Iface)
	if err != nil {
		return fmt.Errorf("find %s in %s: %w", n.Iface, n.NetNS, err)
	}
	for _, gw := range []netip.Addr{gw4, gw6} {
		r := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: gw.AsSlice()}
		if err := h.RouteAdd(r); err != nil {
			return fmt.Errorf("default route via %s in %s: %w", gw, n.NetNS, err)
		}
	}
	return nil
}

// RouteTo reports whether n's kernel has a route to a, and through which
// interface and gateway ("eth0", invalid gateway: on link).
func (n *Node) RouteTo(a netip.Addr) (ok bool, dev string, gw netip.Addr, err error) {
	h, err := netlink.NewHandleAt(n.ns)
	if err != nil {
		return false, "", netip.Addr{}, fmt.Errorf("netlink handle %s: %w", n.NetNS, err)
	}
	defer h.Close()
	routes, err := h.RouteGet(a.AsSlice())
	if errors.Is(err, unix.ENETUNREACH) || errors.Is(err, unix.EHOSTUNREACH) {
		return false, "", netip.Addr{}, nil
	}
	if err != nil {
		return false, "", netip.Addr{}, fmt.Errorf("route to %s in %s: %w", a, n.NetNS, err)
	}
	if len(routes) == 0 {
		return false, "", netip.Addr{}, nil
	}
	r := routes[0]
	if link, err := h.LinkByIndex(r.LinkIndex); err == nil {
		dev = link.Attrs().Name
	}
	if g, ok := netip.AddrFromSlice(r.Gw); ok {
		gw = g.Unmap()
	}
	return true, dev, gw, nil
}

// Nodes returns every node with an interface on a segment.
func (l *Lab) Nodes() []*Node {
	out := append([]*Node{l.Client, l.LB}, l.Backends...)
	return append(out, l.NATBackends...)
}

// Backend returns the backend node (DR or NAT) with the given name, or nil.
func (l *Lab) Backend(name string) *Node {
	for _, be := range append(append([]*Node(nil), l.Backends...), l.NATBackends...) {
		if be.Name == name {
			return be
		}
	}
	return nil
}

// AddCloser registers f to run when the lab is closed, before the
// namespaces are deleted (closers run in reverse order of registration).
func (l *Lab) AddCloser(f func() error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closers = append(l.closers, f)
}

// Close stops everything started in the lab and deletes its namespaces.
// It is safe to call more than once.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	closers := l.closers
	l.closers = nil
	l.mu.Unlock()

	var errs []error
	for i := len(closers) - 1; i >= 0; i-- {
		if err := closers[i](); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func randomPrefix() (string, error) {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random prefix: %w", err)
	}
	return "xlb" + hex.EncodeToString(b), nil
}

// newNode creates the named namespace prefix-role and registers its removal.
func (l *Lab) newNode(role string) (*Node, error) {
	n := &Node{Name: role, NetNS: l.Prefix + "-" + role}
	h, err := nsthread.NewNamed(n.NetNS)
	if err != nil {
		return nil, fmt.Errorf("create netns %s: %w", n.NetNS, err)
	}
	n.ns = h
	l.AddCloser(func() error {
		var errs []error
		if err := n.ns.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close netns handle %s: %w", n.NetNS, err))
		}
		if err := netns.DeleteNamed(n.NetNS); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("delete netns %s: %w", n.NetNS, err))
		}
		return errors.Join(errs...)
	})
	// Sysctls of "default" apply to the interfaces created next: no DAD, so
	// IPv6 works at once; no reverse-path filtering, which DR would trip.
	if err := n.Do(func() error {
		return writeSysctls(map[string]string{
			"net/ipv6/conf/all/accept_dad":     "0",
			"net/ipv6/conf/default/accept_dad": "0",
			"net/ipv4/conf/all/rp_filter":      "0",
			"net/ipv4/conf/default/rp_filter":  "0",
		})
	}); err != nil {
		return nil, err
	}
	return n, nil
}

// wire connects n to the segment's bridge: a veth pair whose bridge end
// (<portPrefix><role>) stays in the switch namespace and whose other end is
// n's interface ifname, host number host on the segment's subnets.
func (l *Lab) wire(sw *netlink.Handle, br netlink.Link, seg segment, n *Node, ifname string, host byte,
	attachPass func(int) (io.Closer, error)) (Interface, error) {
	ifc := Interface{Name: ifname, MAC: net.HardwareAddr{0x02, 0x00, 0x0a, seg.macByte, 0x00, host}}
	v4 := seg.subnet4.Addr().As4()
	v4[3] = host
	ifc.IPv4 = netip.AddrFrom4(v4)
	v6 := seg.subnet6.Addr().As16()
	v6[15] = byte(host/10)<<4 | host%10 // ::2, ::10, ::11 read like the IPv4 host numbers
	ifc.IPv6 = netip.AddrFrom16(v6)

	swEnd := seg.portPrefix + n.Name
	if len(swEnd) > unix.IFNAMSIZ-1 {
		return ifc, fmt.Errorf("interface name %q longer than %d", swEnd, unix.IFNAMSIZ-1)
	}
	veth := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: swEnd},
		PeerName:         ifc.Name,
		PeerHardwareAddr: ifc.MAC,
		PeerNamespace:    netlink.NsFd(int(n.ns)),
	}
	if err := sw.LinkAdd(veth); err != nil {
		return ifc, fmt.Errorf("add veth %s <-> %s/%s: %w", swEnd, n.NetNS, ifc.Name, err)
	}
	swLink, err := sw.LinkByName(swEnd)
	if err != nil {
		return ifc, fmt.Errorf("find %s: %w", swEnd, err)
	}
	if err := sw.LinkSetMaster(swLink, br); err != nil {
		return ifc, fmt.Errorf("enslave %s: %w", swEnd, err)
	}
	if err := sw.LinkSetUp(swLink); err != nil {
		return ifc, fmt.Errorf("%s up: %w", swEnd, err)
	}
	// Frames that the LB sends with XDP_TX arrive at this end; a veth end
	// with no XDP program (nor GRO) of its own refuses them: they are lost.
	var pass io.Closer
	if err := l.Switch.Do(func() error {
		var err error
		pass, err = attachPass(swLink.Attrs().Index)
		return err
	}); err != nil {
		return ifc, fmt.Errorf("attach pass program to %s: %w", swEnd, err)
	}
	l.AddCloser(func() error {
		// Closed from the switch namespace too, in case the program was
		// attached through netlink rather than a bpf link.
		if err := l.Switch.Do(pass.Close); err != nil {
			return fmt.Errorf("detach pass program from %s: %w", swEnd, err)
		}
		return nil
	})

	h, err := netlink.NewHandleAt(n.ns)
	if err != nil {
		return ifc, fmt.Errorf("netlink handle %s: %w", n.NetNS, err)
	}
	defer h.Close()
	if err := linkUp(h, "lo"); err != nil {
		return ifc, fmt.Errorf("%s: %w", n.NetNS, err)
	}
	link, err := h.LinkByName(ifc.Name)
	if err != nil {
		return ifc, fmt.Errorf("find %s in %s: %w", ifc.Name, n.NetNS, err)
	}
	for _, a := range []netip.Prefix{
		netip.PrefixFrom(ifc.IPv4, seg.subnet4.Bits()),
		netip.PrefixFrom(ifc.IPv6, seg.subnet6.Bits()),
	} {
		if err := addAddr(h, link, a); err != nil {
			return ifc, fmt.Errorf("%s: %w", n.NetNS, err)
		}
	}
	if err := h.LinkSetUp(link); err != nil {
		return ifc, fmt.Errorf("%s up in %s: %w", ifc.Name, n.NetNS, err)
	}
	return ifc, nil
}

// makeDRBackend turns n into a direct-return real server: the VIPs on lo and
// ARP settings that keep it from answering for them on the segment.
func (n *Node) makeDRBackend() error {
	h, err := netlink.NewHandleAt(n.ns)
	if err != nil {
		return fmt.Errorf("netlink handle %s: %w", n.NetNS, err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo in %s: %w", n.NetNS, err)
	}
	for _, vip := range []netip.Addr{VIP4, VIP6} {
		if err := addAddr(h, lo, netip.PrefixFrom(vip, vip.BitLen())); err != nil {
			return fmt.Errorf("%s: %w", n.NetNS, err)
		}
	}
	// IPv6 needs no equivalent: the kernel answers neighbour solicitations
	// only for addresses on the receiving interface, not for those on lo.
	return n.Do(func() error {
		return writeSysctls(map[string]string{
			"net/ipv4/conf/all/arp_ignore":          "1",
			"net/ipv4/conf/all/arp_announce":        "2",
			"net/ipv4/conf/all/rp_filter":           "0",
			"net/ipv4/conf/" + Iface + "/rp_filter": "0",
		})
	})
}

func linkUp(h *netlink.Handle, name string) error {
	link, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find %s: %w", name, err)
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("%s up: %w", name, err)
	}
	return nil
}

func addAddr(h *netlink.Handle, link netlink.Link, p netip.Prefix) error {
	a := &netlink.Addr{IPNet: &net.IPNet{
		IP:   p.Addr().AsSlice(),
		Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen()),
	}}
	if p.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	if err := h.AddrAdd(link, a); err != nil {
		return fmt.Errorf("add %s to %s: %w", p, link.Attrs().Name, err)
	}
	return nil
}

// Do runs fn on a locked OS thread inside n's namespace (see nsthread.Do).
// Sockets created by fn stay in n's namespace for their lifetime.
func (n *Node) Do(fn func() error) error { return nsthread.Do(n.ns, n.NetNS, fn) }

// Sysctl reads a sysctl (path below /proc/sys, e.g. "net/ipv4/ip_forward")
// as seen inside n's namespace.
func (n *Node) Sysctl(name string) (string, error) {
	var v string
	err := n.Do(func() error {
		b, err := os.ReadFile(filepath.Join("/proc/sys", name))
		if err != nil {
			return fmt.Errorf("read sysctl %s: %w", name, err)
		}
		v = strings.TrimSpace(string(b))
		return nil
	})
	return v, err
}

// writeSysctls must run on a thread inside the target namespace: files below
// /proc/sys/net belong to the namespace of the thread that opens them.
func writeSysctls(kv map[string]string) error {
	for k, v := range kv {
		if err := os.WriteFile(filepath.Join("/proc/sys", k), []byte(v), 0o644); err != nil {
			return fmt.Errorf("sysctl %s=%s: %w", k, v, err)
		}
	}
	return nil
}
