// Package lab builds throw-away network-namespace labs for xdplb: a client,
// a load balancer, backends and a switch namespace holding a Linux bridge,
// all on one L2 segment. It also runs the HTTP backends, the clients and the
// daemon that the end-to-end tests and `xdplb demo` use.
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

// Addresses of the lab segment. They exist only inside the lab namespaces.
var (
	Subnet4 = netip.MustParsePrefix("10.200.0.0/24")
	Subnet6 = netip.MustParsePrefix("fd00:200::/64")
	VIP4    = netip.MustParseAddr("10.200.0.100")
	VIP6    = netip.MustParseAddr("fd00:200::100")
)

// Iface is the name of every node's interface on the segment.
const Iface = "eth0"

const (
	bridgeName = "br0"
	// maxBackends keeps host numbers clear of the VIP (.100).
	maxBackends = 80
)

// Options configure New.
type Options struct {
	// Backends is the number of backend namespaces (be1, be2, ...); default 3.
	Backends int
	// AttachPass attaches a pass-only XDP program to an interface of the
	// calling thread's namespace; default loader.AttachPass.
	AttachPass func(ifindex int) (io.Closer, error)
	Logger     *slog.Logger
}

// Node is one namespace of the lab with its interface on the segment.
type Node struct {
	Name  string // role: client, lb, be1, ...
	NetNS string // namespace name under /run/netns, usable with `ip netns exec`
	Iface string // interface on the segment ("" for the switch)
	MAC   net.HardwareAddr
	IPv4  netip.Addr
	IPv6  netip.Addr

	ns netns.NsHandle
}

// Lab is a running topology. Close removes everything it created.
type Lab struct {
	Prefix   string
	Switch   *Node
	Client   *Node
	LB       *Node
	Backends []*Node

	log *slog.Logger

	mu      sync.Mutex
	closers []func() error // run in reverse order by Close
	closed  bool
}

// New builds the lab: namespaces, bridge, veth pairs, addresses, sysctls and
// pass programs on the bridge ports. On error everything created so far is
// removed again.
func New(ctx context.Context, opts Options) (_ *Lab, err error) {
	if opts.Backends == 0 {
		opts.Backends = 3
	}
	if opts.Backends < 1 || opts.Backends > maxBackends {
		return nil, fmt.Errorf("backends: %d out of range 1-%d", opts.Backends, maxBackends)
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
	off := false
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: bridgeName}, MulticastSnooping: &off}
	if err := sw.LinkAdd(br); err != nil {
		return nil, fmt.Errorf("add bridge in %s: %w", l.Switch.NetNS, err)
	}
	if err := sw.LinkSetUp(br); err != nil {
		return nil, fmt.Errorf("bridge up: %w", err)
	}

	type plan struct {
		node *Node
		host byte
	}
	plans := []plan{}
	add := func(role string, host byte) (*Node, error) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n, err := l.newNode(role)
		if err != nil {
			return nil, err
		}
		plans = append(plans, plan{n, host})
		return n, nil
	}
	if l.Client, err = add("client", 2); err != nil {
		return nil, err
	}
	if l.LB, err = add("lb", 10); err != nil {
		return nil, err
	}
	for i := range opts.Backends {
		be, err := add(fmt.Sprintf("be%d", i+1), byte(11+i))
		if err != nil {
			return nil, err
		}
		l.Backends = append(l.Backends, be)
	}
	for _, p := range plans {
		if err := l.wire(sw, br, p.node, p.host, opts.AttachPass); err != nil {
			return nil, err
		}
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
	return l, nil
}

// Nodes returns every node with an interface on the segment.
func (l *Lab) Nodes() []*Node {
	return append([]*Node{l.Client, l.LB}, l.Backends...)
}

// Backend returns the backend node with the given name, or nil.
func (l *Lab) Backend(name string) *Node {
	for _, be := range l.Backends {
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

// wire connects n to the bridge: a veth pair whose bridge end (sw-<role>)
// stays in the switch namespace and whose other end is n's eth0.
func (l *Lab) wire(sw *netlink.Handle, br netlink.Link, n *Node, host byte, attachPass func(int) (io.Closer, error)) error {
	n.Iface = Iface
	n.MAC = net.HardwareAddr{0x02, 0x00, 0x0a, 0xc8, 0x00, host}
	n.IPv4 = netip.AddrFrom4([4]byte{10, 200, 0, host})
	v6 := Subnet6.Addr().As16()
	v6[15] = byte(host/10)<<4 | host%10 // ::2, ::10, ::11 read like the IPv4 host numbers
	n.IPv6 = netip.AddrFrom16(v6)

	swEnd := "sw-" + n.Name
	if len(swEnd) > unix.IFNAMSIZ-1 {
		return fmt.Errorf("interface name %q longer than %d", swEnd, unix.IFNAMSIZ-1)
	}
	veth := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: swEnd},
		PeerName:         n.Iface,
		PeerHardwareAddr: n.MAC,
		PeerNamespace:    netlink.NsFd(int(n.ns)),
	}
	if err := sw.LinkAdd(veth); err != nil {
		return fmt.Errorf("add veth %s <-> %s/%s: %w", swEnd, n.NetNS, n.Iface, err)
	}
	swLink, err := sw.LinkByName(swEnd)
	if err != nil {
		return fmt.Errorf("find %s: %w", swEnd, err)
	}
	if err := sw.LinkSetMaster(swLink, br); err != nil {
		return fmt.Errorf("enslave %s: %w", swEnd, err)
	}
	if err := sw.LinkSetUp(swLink); err != nil {
		return fmt.Errorf("%s up: %w", swEnd, err)
	}
	// Frames that the LB sends with XDP_TX arrive at this end; a veth end
	// delivers them promptly only with an XDP program of its own.
	var pass io.Closer
	if err := l.Switch.Do(func() error {
		var err error
		pass, err = attachPass(swLink.Attrs().Index)
		return err
	}); err != nil {
		return fmt.Errorf("attach pass program to %s: %w", swEnd, err)
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
		return fmt.Errorf("netlink handle %s: %w", n.NetNS, err)
	}
	defer h.Close()
	if err := linkUp(h, "lo"); err != nil {
		return fmt.Errorf("%s: %w", n.NetNS, err)
	}
	link, err := h.LinkByName(n.Iface)
	if err != nil {
		return fmt.Errorf("find %s in %s: %w", n.Iface, n.NetNS, err)
	}
	for _, a := range []netip.Prefix{
		netip.PrefixFrom(n.IPv4, Subnet4.Bits()),
		netip.PrefixFrom(n.IPv6, Subnet6.Bits()),
	} {
		if err := addAddr(h, link, a); err != nil {
			return fmt.Errorf("%s: %w", n.NetNS, err)
		}
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("%s up in %s: %w", n.Iface, n.NetNS, err)
	}
	return nil
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
