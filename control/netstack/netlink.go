// Package netstack is the control plane's view of the host's network
// stack through netlink: where a DR backend is and what its MAC is, how a
// NAT backend is routed and from which address, the subnet and route
// checks of the desired state, and the VIP addresses announced so that the
// kernel answers ARP and NDP for them.
package netstack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/internal/nsthread"
)

// announceSuffix labels the IPv4 addresses xdplb adds ("eth0:xlb"), so
// `ip addr` shows who put them there.
const announceSuffix = ":xlb"

// announcedFile records the addresses xdplb added, so that a restarted
// daemon removes only its own (IPv6 addresses carry no label).
const announcedFile = "announced.json"

// Options configures NewNetlink.
type Options struct {
	Interfaces []string // the interfaces the program is attached to
	StateDir   string   // where announcedFile lives; "" keeps it in memory
	// Namespace, when set, is the network namespace every netlink request
	// and subscription goes to (tests); nil means the current one.
	Namespace *netns.NsHandle
	Logger    *slog.Logger
}

type announced struct {
	Iface  string       `json:"iface"`
	Prefix netip.Prefix `json:"prefix"`
}

// Netlink is the host network stack through rtnetlink; it implements
// reconcile.Network.
type Netlink struct {
	h        *netlink.Handle
	ns       *netns.NsHandle
	log      *slog.Logger
	ifaces   map[int]string // attached interfaces by ifindex
	names    []string
	stateDir string
	changes  chan struct{}

	mu        sync.Mutex
	lastMAC   map[netip.Addr]string // what Resolve last returned ("" unresolved)
	natAddrs  map[netip.Addr]bool   // NAT backends RouteAll was asked about
	noManaged bool                  // the kernel refused a managed neighbour entry
	announced []announced           // addresses xdplb added
}

// NewNetlink checks that every interface exists and opens a netlink handle.
func New(opts Options) (*Netlink, error) {
	var (
		h   *netlink.Handle
		err error
	)
	if opts.Namespace != nil {
		h, err = netlink.NewHandleAt(*opts.Namespace)
	} else {
		h, err = netlink.NewHandle()
	}
	if err != nil {
		return nil, fmt.Errorf("netlink handle: %w", err)
	}
	n := &Netlink{
		h:        h,
		ns:       opts.Namespace,
		log:      opts.Logger,
		ifaces:   map[int]string{},
		names:    slices.Clone(opts.Interfaces),
		stateDir: opts.StateDir,
		changes:  make(chan struct{}, 1),
		lastMAC:  map[netip.Addr]string{},
		natAddrs: map[netip.Addr]bool{},
	}
	if n.log == nil {
		n.log = slog.New(slog.DiscardHandler)
	}
	for _, name := range opts.Interfaces {
		l, err := h.LinkByName(name)
		if err != nil {
			h.Close()
			return nil, fmt.Errorf("interface %s: %w", name, err)
		}
		n.ifaces[l.Attrs().Index] = name
	}
	if err := n.loadAnnounced(); err != nil {
		h.Close()
		return nil, err
	}
	return n, nil
}

// Close releases the netlink handle. Announced addresses stay in place so
// that clients keep reaching the VIPs while the daemon restarts.
func (n *Netlink) Close() { n.h.Close() }

// Changes is signalled (coalesced) when a resolved backend's MAC changes.
func (n *Netlink) Changes() <-chan struct{} { return n.changes }

func (n *Netlink) signal() {
	select {
	case n.changes <- struct{}{}:
	default:
	}
}

func (n *Netlink) ifaceList() string { return strings.Join(n.names, ", ") }

// route returns the attached interface addr is directly connected through.
func (n *Netlink) route(addr netip.Addr) (netlink.Link, error) {
	addr = addr.Unmap()
	routes, err := n.h.RouteGet(net.IP(addr.AsSlice()))
	if err != nil {
		return nil, model.Invalidf("backend %s is not on a directly connected subnet of %s (no route: %v)", addr, n.ifaceList(), err)
	}
	for _, r := range routes {
		if r.Gw != nil || r.Via != nil || len(r.MultiPath) > 0 || r.Type == unix.RTN_LOCAL {
			continue
		}
		if _, ok := n.ifaces[r.LinkIndex]; !ok {
			continue
		}
		l, err := n.h.LinkByIndex(r.LinkIndex)
		if err != nil {
			return nil, fmt.Errorf("link %d: %w", r.LinkIndex, err)
		}
		return l, nil
	}
	return nil, model.Invalidf("backend %s is not on a directly connected subnet of %s", addr, n.ifaceList())
}

// usable neighbour states: the kernel has a MAC it would send to.
const nudValid = netlink.NUD_REACHABLE | netlink.NUD_STALE | netlink.NUD_DELAY |
	netlink.NUD_PROBE | netlink.NUD_PERMANENT | netlink.NUD_NOARP

func family(a netip.Addr) int {
	if a.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// Resolve resolves one address (see ResolveAll).
func (n *Netlink) Resolve(ctx context.Context, addr netip.Addr) (model.Neighbour, error) {
	return n.resolveWith(ctx, addr.Unmap(), &resolveCache{})
}

// resolveCache holds what one batch of resolutions shares: neighbour tables
// by interface and family, listed once.
type resolveCache struct {
	neighs map[[2]int]map[netip.Addr]*netlink.Neigh
}

func (c *resolveCache) neighbours(h *netlink.Handle, l netlink.Link, fam int) (map[netip.Addr]*netlink.Neigh, error) {
	k := [2]int{l.Attrs().Index, fam}
	if m, ok := c.neighs[k]; ok {
		return m, nil
	}
	list, err := h.NeighList(l.Attrs().Index, fam)
	if err != nil {
		return nil, fmt.Errorf("list neighbours of %s: %w", l.Attrs().Name, err)
	}
	m := make(map[netip.Addr]*netlink.Neigh, len(list))
	for i := range list {
		if ip, ok := netip.AddrFromSlice(list[i].IP); ok {
			if _, dup := m[ip.Unmap()]; !dup {
				m[ip.Unmap()] = &list[i]
			}
		}
	}
	if c.neighs == nil {
		c.neighs = map[[2]int]map[netip.Addr]*netlink.Neigh{}
	}
	c.neighs[k] = m
	return m, nil
}

// ResolveAll resolves many addresses with one neighbour dump per
// interface. An address that is not on a directly connected subnet of an
// attached interface is an error wrapping model.ErrInvalid. An unknown MAC
// is not an error: MAC is nil and resolution has been triggered.
func (n *Netlink) ResolveAll(ctx context.Context, addrs []netip.Addr) map[netip.Addr]model.Resolution {
	c := &resolveCache{}
	out := make(map[netip.Addr]model.Resolution, len(addrs))
	for _, a := range addrs {
		nb, err := n.resolveWith(ctx, a.Unmap(), c)
		out[a] = model.Resolution{Neighbour: nb, Err: err}
	}
	return out
}

func (n *Netlink) resolveWith(ctx context.Context, addr netip.Addr, c *resolveCache) (model.Neighbour, error) {
	l, err := n.route(addr)
	if err != nil {
		return model.Neighbour{}, err
	}
	attrs := l.Attrs()
	nb := model.Neighbour{Ifindex: attrs.Index, Iface: attrs.Name, SrcMAC: attrs.HardwareAddr}
	neighs, err := c.neighbours(n.h, l, family(addr))
	if err != nil {
		return model.Neighbour{}, err
	}
	found := neighs[addr]
	if found != nil && found.State&nudValid != 0 && len(found.HardwareAddr) == 6 {
		// A group MAC would send the backend's frames to every host of
		// the segment (a broadcast or multicast address, or a static
		// entry that says so).
		if found.HardwareAddr[0]&1 != 0 {
			return model.Neighbour{}, model.Invalidf("backend %s resolves to %s, a broadcast or multicast MAC: refused",
				addr, found.HardwareAddr)
		}
		nb.MAC = slices.Clone(found.HardwareAddr)
	} else {
		n.trigger(ctx, attrs.Index, addr, found)
	}
	n.mu.Lock()
	n.lastMAC[addr] = nb.MAC.String()
	n.mu.Unlock()
	return nb, nil
}

// trigger asks the kernel to resolve addr. A managed neighbour entry
// (NTF_EXT_MANAGED, Linux >= 5.16) is best: the kernel resolves it now and
// keeps it resolved. Without it, a datagram to the discard port makes the
// kernel send ARP/NS like for any first packet.
func (n *Netlink) trigger(ctx context.Context, ifindex int, addr netip.Addr, cur *netlink.Neigh) {
	n.mu.Lock()
	tryManaged := !n.noManaged
	n.mu.Unlock()
	// Never turn an operator's static entry into a dynamic one.
	static := cur != nil && cur.State&(netlink.NUD_PERMANENT|netlink.NUD_NOARP) != 0
	if tryManaged && !static && (cur == nil || cur.FlagsExt&netlink.NTF_EXT_MANAGED == 0) {
		err := n.h.NeighSet(&netlink.Neigh{
			LinkIndex: ifindex,
			Family:    family(addr),
			IP:        net.IP(addr.AsSlice()),
			State:     netlink.NUD_NONE,
			FlagsExt:  netlink.NTF_EXT_MANAGED,
		})
		if err == nil {
			n.log.Debug("managed neighbour entry added", "backend", addr)
			return
		}
		n.mu.Lock()
		n.noManaged = true
		n.mu.Unlock()
		n.log.Info("managed neighbour entries not supported, resolving by sending a datagram", "err", err)
	}
	if err := n.poke(ctx, addr); err != nil {
		n.log.Debug("trigger neighbour resolution", "backend", addr, "err", err)
	}
}

// poke sends one empty UDP datagram to addr's discard port.
func (n *Netlink) poke(ctx context.Context, addr netip.Addr) error {
	send := func() error {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		var d net.Dialer
		c, err := d.DialContext(ctx, "udp", netip.AddrPortFrom(addr, 9).String())
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write(nil)
		return err
	}
	if n.ns == nil {
		return send()
	}
	return nsthread.Do(*n.ns, "of the network stack", send)
}

// Watch follows neighbour changes until ctx is done and signals Changes
// when the MAC of an address Resolve returned changes.
func (n *Netlink) Watch(ctx context.Context) {
	for ctx.Err() == nil {
		err := n.watchOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		n.log.Warn("neighbour subscription ended, resubscribing", "err", err)
		n.signal() // we may have missed updates
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (n *Netlink) watchOnce(ctx context.Context) error {
	ch := make(chan netlink.NeighUpdate, 256)
	done := make(chan struct{})
	defer close(done)
	var (
		errMu  sync.Mutex
		subErr error
	)
	opts := netlink.NeighSubscribeOptions{
		Namespace: n.ns,
		ErrorCallback: func(err error) {
			errMu.Lock()
			subErr = err
			errMu.Unlock()
		},
	}
	if err := netlink.NeighSubscribeWithOptions(ch, done, opts); err != nil {
		return fmt.Errorf("subscribe to neighbours: %w", err)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case u, ok := <-ch:
			if !ok {
				errMu.Lock()
				defer errMu.Unlock()
				return fmt.Errorf("neighbour subscription: %v", subErr)
			}
			n.update(u)
		}
	}
}

func (n *Netlink) update(u netlink.NeighUpdate) {
	ip, ok := netip.AddrFromSlice(u.IP)
	if !ok {
		return
	}
	ip = ip.Unmap()
	if _, ok := n.ifaces[u.LinkIndex]; !ok {
		return
	}
	mac := ""
	if u.Type == unix.RTM_NEWNEIGH && u.State&nudValid != 0 && len(u.HardwareAddr) == 6 {
		mac = u.HardwareAddr.String()
	}
	n.mu.Lock()
	last, watched := n.lastMAC[ip]
	if watched {
		n.lastMAC[ip] = mac
	}
	n.mu.Unlock()
	if watched && last != mac {
		n.log.Debug("backend neighbour changed", "backend", ip, "mac", mac)
		n.signal()
	}
}

// Forget stops following addresses that are no longer backends.
func (n *Netlink) Forget(keep map[netip.Addr]bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for a := range n.lastMAC {
		if !keep[a] {
			delete(n.lastMAC, a)
		}
	}
	for a := range n.natAddrs {
		if !keep[a] {
			delete(n.natAddrs, a)
		}
	}
}

// CheckState is the store's extra validation: every DR backend must be on
// a directly connected subnet of an attached interface that has an address
// of the backend's family; every NAT backend must be routed through an
// attached interface; a fullnat VIP's SNAT address must be an address of
// this host, or, without one, the interface toward each of its backends
// must have an address of the VIP's family to take instead.
func (n *Netlink) CheckState(s model.State) error {
	// Backends are shared between VIPs: ask the kernel once per address
	// and once per interface and family.
	c := &checkCache{dr: map[netip.Addr]netlink.Link{}, nat: map[netip.Addr]netlink.Link{}}
	for _, v := range s.VIPs {
		if err := n.checkVIP(&v, c); err != nil {
			return err
		}
	}
	return nil
}

// checkCache holds what one CheckState learnt from the kernel.
type checkCache struct {
	dr, nat map[netip.Addr]netlink.Link // the routes of DR and NAT backends
	links   linkCache
	local   map[int][]netip.Addr // this host's addresses by family
}

func (n *Netlink) checkVIP(v *model.VIP, c *checkCache) error {
	if v.Mode.IsNAT() {
		return n.checkNAT(v, c)
	}
	for _, b := range v.Backends {
		addr := b.Address.Unmap()
		if local, err := n.isLocal(addr, c); err != nil {
			return err
		} else if local {
			return model.Invalidf("vip %s: backend %s is an address of this host, not a backend", v.ID(), addr)
		}
		l, ok := c.dr[addr]
		if !ok {
			var err error
			if l, err = n.route(b.Address); err != nil {
				return model.AsInvalid(fmt.Errorf("vip %s: %w", v.ID(), err))
			}
			c.dr[addr] = l
		}
		addrs, err := c.links.addrs(n.h, l, family(addr))
		if err != nil {
			return err
		}
		if len(addrs) == 0 {
			return model.Invalidf("vip %s: interface %s has no %s address to reach backend %s",
				v.ID(), l.Attrs().Name, familyName(b.Address), b.Address)
		}
		if err := checkSubnetEdge(addr, addrs, l.Attrs().Name); err != nil {
			return model.Invalidf("vip %s: backend %s", v.ID(), err)
		}
	}
	return nil
}

// checkSubnetEdge refuses an IPv4 backend or VIP that is the network or
// the broadcast address of a subnet of its interface: frames to it reach
// every host of the segment (the broadcast MAC), or none.
func checkSubnetEdge(a netip.Addr, addrs []netlink.Addr, iface string) error {
	if !a.Is4() {
		return nil
	}
	for _, la := range addrs {
		p, ok := ipnetPrefix(la.IPNet)
		if !ok || !p.Addr().Is4() || p.Bits() > 30 {
			continue // /31 and /32 have neither (RFC 3021)
		}
		p = p.Masked()
		if !p.Contains(a) {
			continue
		}
		if a == p.Addr() {
			return fmt.Errorf("%s is the network address of %s on %s", a, p, iface)
		}
		b := p.Addr().As4()
		host := uint32(1)<<(32-p.Bits()) - 1
		n := (uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])) | host
		if a == netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}) {
			return fmt.Errorf("%s is the broadcast address of %s on %s", a, p, iface)
		}
	}
	return nil
}

// checkNAT checks a nat or fullnat VIP (see CheckState).
func (n *Netlink) checkNAT(v *model.VIP, c *checkCache) error {
	if v.SNATAddr.IsValid() {
		local, err := n.isLocal(v.SNATAddr.Unmap(), c)
		if err != nil {
			return err
		}
		if !local {
			return model.Invalidf("vip %s: snat address %s is not an address of this host", v.ID(), v.SNATAddr)
		}
	}
	ann := n.announcedAddrs()
	for _, b := range v.Backends {
		addr := b.Address.Unmap()
		if local, err := n.isLocal(addr, c); err != nil {
			return err
		} else if local {
			return model.Invalidf("vip %s: backend %s is an address of this host, not a backend", v.ID(), addr)
		}
		l, ok := c.nat[addr]
		if !ok {
			var err error
			if l, _, err = n.natRoute(addr); err != nil {
				return model.AsInvalid(fmt.Errorf("vip %s: %w", v.ID(), err))
			}
			c.nat[addr] = l
		}
		addrs, err := c.links.addrs(n.h, l, family(addr))
		if err != nil {
			return err
		}
		if err := checkSubnetEdge(addr, addrs, l.Attrs().Name); err != nil {
			return model.Invalidf("vip %s: backend %s", v.ID(), err)
		}
		if v.Mode != model.ModeFullNAT || v.SNATAddr.IsValid() {
			continue
		}
		p, err := n.primaryAddr(l, family(v.Address.Unmap()), &c.links, ann)
		if err != nil {
			return err
		}
		if !p.IsValid() {
			return model.Invalidf("vip %s: interface %s toward backend %s has no %s address to take as the snat address: set one with --snat-addr",
				v.ID(), l.Attrs().Name, model.BackendName(addr, b.Port), familyName(v.Address))
		}
	}
	return nil
}

// isLocal reports whether a is configured on an interface of this host;
// the VIP addresses xdplb announces do not count, they go with their VIP.
func (n *Netlink) isLocal(a netip.Addr, c *checkCache) (bool, error) {
	fam := family(a)
	if c.local == nil {
		c.local = map[int][]netip.Addr{}
	}
	addrs, ok := c.local[fam]
	if !ok {
		list, err := n.h.AddrList(nil, fam)
		if err != nil {
			return false, fmt.Errorf("addresses of this host: %w", err)
		}
		for _, la := range list {
			if p, ok := ipnetPrefix(la.IPNet); ok {
				addrs = append(addrs, p.Addr())
			}
		}
		c.local[fam] = addrs
	}
	return slices.Contains(addrs, a) && !n.announcedAddrs()[a], nil
}

// natRoute returns the interface the kernel routes a NAT backend through,
// which must be an attached one: the program forwards only out of those.
// Unlike DR, a gateway is fine: the next hop comes from the FIB.
func (n *Netlink) natRoute(addr netip.Addr) (netlink.Link, netip.Addr, error) {
	routes, err := n.h.RouteGet(net.IP(addr.AsSlice()))
	if err != nil || len(routes) == 0 {
		return nil, netip.Addr{}, model.Invalidf("backend %s is not reachable through %s (no route: %v)", addr, n.ifaceList(), err)
	}
	r := routes[0]
	if r.Type == unix.RTN_LOCAL {
		return nil, netip.Addr{}, model.Invalidf("backend %s is an address of this host", addr)
	}
	l, err := n.h.LinkByIndex(r.LinkIndex)
	if err != nil {
		return nil, netip.Addr{}, fmt.Errorf("link %d: %w", r.LinkIndex, err)
	}
	if _, ok := n.ifaces[r.LinkIndex]; !ok {
		return nil, netip.Addr{}, model.Invalidf("backend %s is routed through %s, which is not an attached interface (%s)",
			addr, l.Attrs().Name, n.ifaceList())
	}
	nh := addr
	if gw, ok := netip.AddrFromSlice(r.Gw); ok && r.Gw != nil {
		nh = gw.Unmap()
	}
	return l, nh, nil
}

// keepResolved makes sure the kernel resolves a NAT next hop: the program
// finds its MAC in the kernel's neighbour table (bpf_fib_lookup), and a
// packet that finds none goes to the kernel, which for full NAT drops it
// (its source, the SNAT address, is the host's own). As for DR backends,
// a managed entry keeps it resolved from then on.
func (n *Netlink) keepResolved(ctx context.Context, l netlink.Link, nh netip.Addr, c *resolveCache) {
	neighs, err := c.neighbours(n.h, l, family(nh))
	if err != nil {
		n.log.Debug("read neighbours", "iface", l.Attrs().Name, "err", err)
		return
	}
	found := neighs[nh]
	if found != nil && found.State&nudValid != 0 && found.FlagsExt&netlink.NTF_EXT_MANAGED != 0 {
		return
	}
	if found != nil && found.State&(netlink.NUD_PERMANENT|netlink.NUD_NOARP) != 0 {
		return
	}
	n.trigger(ctx, l.Attrs().Index, nh, found)
}

// RouteAll finds the route of each NAT backend address (see natRoute) and
// the primary address of the egress interface of the backend's family, and
// has the route's next hop resolved (keepResolved).
func (n *Netlink) RouteAll(ctx context.Context, addrs []netip.Addr) map[netip.Addr]model.Route {
	c := &linkCache{}
	rc := &resolveCache{}
	ann := n.announcedAddrs()
	out := make(map[netip.Addr]model.Route, len(addrs))
	n.mu.Lock()
	for _, a := range addrs {
		n.natAddrs[a.Unmap()] = true
	}
	n.mu.Unlock()
	for _, a := range addrs {
		l, nh, err := n.natRoute(a.Unmap())
		if err != nil {
			out[a] = model.Route{Err: err}
			continue
		}
		n.keepResolved(ctx, l, nh, rc)
		rt := model.Route{Ifindex: l.Attrs().Index, Iface: l.Attrs().Name}
		if rt.Primary, err = n.primaryAddr(l, family(a.Unmap()), c, ann); err != nil {
			rt.Err = err
		}
		out[a] = rt
	}
	return out
}

// ResolveNATNextHops has the next hop of every NAT backend resolved again
// (keepResolved): the daemon calls it when the program reports a packet
// whose next hop had no neighbour entry (someone flushed the table, or an
// entry aged out), so that the flow's next packet finds one without
// waiting for the next full pass.
func (n *Netlink) ResolveNATNextHops(ctx context.Context) {
	n.mu.Lock()
	addrs := make([]netip.Addr, 0, len(n.natAddrs))
	for a := range n.natAddrs {
		addrs = append(addrs, a)
	}
	n.mu.Unlock()
	rc := &resolveCache{}
	for _, a := range addrs {
		if l, nh, err := n.natRoute(a); err == nil {
			n.keepResolved(ctx, l, nh, rc)
		}
	}
}

// primaryAddr is l's primary address of a family: the first one the
// kernel lists that is global, usable now (not tentative, deprecated or
// failed) and not a secondary or temporary one, leaving out the VIP
// addresses xdplb announced (skip). Invalid: l has none.
func (n *Netlink) primaryAddr(l netlink.Link, fam int, c *linkCache, skip map[netip.Addr]bool) (netip.Addr, error) {
	addrs, err := c.addrs(n.h, l, fam)
	if err != nil {
		return netip.Addr{}, err
	}
	const unusable = unix.IFA_F_SECONDARY | unix.IFA_F_TENTATIVE | unix.IFA_F_DEPRECATED | unix.IFA_F_DADFAILED
	for _, a := range addrs {
		p, ok := ipnetPrefix(a.IPNet)
		if !ok || a.Scope != unix.RT_SCOPE_UNIVERSE || a.Flags&unusable != 0 || skip[p.Addr()] {
			continue
		}
		return p.Addr(), nil
	}
	return netip.Addr{}, nil
}

// announcedAddrs is the set of VIP addresses xdplb added.
func (n *Netlink) announcedAddrs() map[netip.Addr]bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make(map[netip.Addr]bool, len(n.announced))
	for _, a := range n.announced {
		out[a.Prefix.Addr()] = true
	}
	return out
}

func familyName(a netip.Addr) string {
	if a.Unmap().Is4() {
		return "IPv4"
	}
	return "IPv6"
}

func hostPrefix(a netip.Addr) netip.Prefix {
	return netip.PrefixFrom(a, a.BitLen())
}

// announceIface picks the interface to add addr to: the attached interface
// with a subnet containing it, else (force) the first attached interface.
func (n *Netlink) announceIface(addr netip.Addr, force bool, c *linkCache) (netlink.Link, bool, error) {
	var first netlink.Link
	for _, name := range n.names {
		l, err := c.link(n.h, name)
		if err != nil {
			return nil, false, err
		}
		if first == nil {
			first = l
		}
		addrs, err := c.addrs(n.h, l, family(addr))
		if err != nil {
			return nil, false, err
		}
		for _, a := range addrs {
			p, ok := ipnetPrefix(a.IPNet)
			if ok && p.Bits() < addr.BitLen() && p.Contains(addr) {
				return l, true, nil
			}
		}
	}
	if force && first != nil {
		return first, true, nil
	}
	return nil, false, nil
}

func ipnetPrefix(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	a = a.Unmap()
	return netip.PrefixFrom(a, ones), true
}

// linkCache holds the links and addresses one Announce call reads: a
// thousand VIPs must not cost two thousand netlink dumps.
type linkCache struct {
	links map[string]netlink.Link
	addrL map[[2]int][]netlink.Addr
}

func (c *linkCache) link(h *netlink.Handle, name string) (netlink.Link, error) {
	if l, ok := c.links[name]; ok {
		return l, nil
	}
	l, err := h.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("interface %s: %w", name, err)
	}
	if c.links == nil {
		c.links = map[string]netlink.Link{}
	}
	c.links[name] = l
	return l, nil
}

func (c *linkCache) addrs(h *netlink.Handle, l netlink.Link, fam int) ([]netlink.Addr, error) {
	k := [2]int{l.Attrs().Index, fam}
	if a, ok := c.addrL[k]; ok {
		return a, nil
	}
	a, err := h.AddrList(l, fam)
	if err != nil {
		return nil, fmt.Errorf("addresses of %s: %w", l.Attrs().Name, err)
	}
	if c.addrL == nil {
		c.addrL = map[[2]int][]netlink.Addr{}
	}
	c.addrL[k] = a
	return a, nil
}

// changed forgets l's addresses after we added one.
func (c *linkCache) changed(l netlink.Link) {
	for k := range c.addrL {
		if k[0] == l.Attrs().Index {
			delete(c.addrL, k)
		}
	}
}

// hasAddr reports whether addr is configured on l with any prefix length.
func (n *Netlink) hasAddr(l netlink.Link, addr netip.Addr, c *linkCache) (bool, error) {
	addrs, err := c.addrs(n.h, l, family(addr))
	if err != nil {
		return false, err
	}
	for _, a := range addrs {
		if p, ok := ipnetPrefix(a.IPNet); ok && p.Addr() == addr {
			return true, nil
		}
	}
	return false, nil
}

// Announce makes the kernel answer ARP/NDP for exactly the addresses in
// want (value true: announce even outside an attached subnet) among those
// it manages; addresses the operator configured are never touched. Addresses are added as /32 or /128 (IPv6
// without duplicate address detection, so they answer at once) and
// recorded; only recorded addresses are ever removed. They stay in place
// when the daemon exits so the VIPs stay reachable across a restart.
func (n *Netlink) Announce(_ context.Context, want map[netip.Addr]bool) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	var errs []error
	keep := map[announced]bool{}
	c := &linkCache{}
	for _, addr := range sortedAddrs(want) {
		addr = addr.Unmap()
		l, ok, err := n.announceIface(addr, want[addr], c)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !ok {
			continue
		}
		name := l.Attrs().Name
		p := hostPrefix(addr)
		rec := announced{Iface: name, Prefix: p}
		if slices.Contains(n.announced, rec) {
			keep[rec] = true
			if has, err := n.hasAddr(l, addr, c); err != nil || has {
				continue // present (or unknown): nothing to do
			}
		} else if has, err := n.hasAddr(l, addr, c); err != nil {
			errs = append(errs, err)
			continue
		} else if has {
			continue // the operator's address: not ours to manage
		}
		nlAddr := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(addr.AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Bits())}}
		if addr.Is4() {
			if label := name + announceSuffix; len(label) < unix.IFNAMSIZ {
				nlAddr.Label = label
			}
		} else {
			nlAddr.Flags = unix.IFA_F_NODAD
		}
		c.changed(l)
		if err := n.h.AddrAdd(l, nlAddr); err != nil && !errors.Is(err, unix.EEXIST) {
			errs = append(errs, fmt.Errorf("announce %s on %s: %w", addr, name, err))
			continue
		}
		keep[rec] = true
		if !slices.Contains(n.announced, rec) {
			n.announced = append(n.announced, rec)
		}
		n.log.Info("announcing vip address", "vip", addr, "iface", name)
	}
	var left []announced
	for _, a := range n.announced {
		if keep[a] {
			left = append(left, a)
			continue
		}
		if err := n.withdraw(a); err != nil {
			errs = append(errs, err)
			left = append(left, a)
			continue
		}
		n.log.Info("withdrew vip address", "vip", a.Prefix.Addr(), "iface", a.Iface)
	}
	n.announced = left
	if err := n.saveAnnounced(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (n *Netlink) withdraw(a announced) error {
	l, err := n.h.LinkByName(a.Iface)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil // the interface and its addresses are gone
		}
		return fmt.Errorf("interface %s: %w", a.Iface, err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(a.Prefix.Addr().AsSlice()), Mask: net.CIDRMask(a.Prefix.Bits(), a.Prefix.Addr().BitLen())}}
	if err := n.h.AddrDel(l, addr); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("withdraw %s from %s: %w", a.Prefix, a.Iface, err)
	}
	return nil
}

func sortedAddrs(m map[netip.Addr]bool) []netip.Addr {
	out := make([]netip.Addr, 0, len(m))
	for a := range m {
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return out
}

func (n *Netlink) loadAnnounced() error {
	if n.stateDir == "" {
		return nil
	}
	b, err := os.ReadFile(filepath.Join(n.stateDir, announcedFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read announced addresses: %w", err)
	}
	if err := json.Unmarshal(b, &n.announced); err != nil {
		return fmt.Errorf("read announced addresses: %w", err)
	}
	return nil
}

func (n *Netlink) saveAnnounced() error {
	if n.stateDir == "" {
		return nil
	}
	b, err := json.MarshalIndent(n.announced, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(n.stateDir, announcedFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write announced addresses: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write announced addresses: %w", err)
	}
	return nil
}

// Announced returns the addresses xdplb currently manages (for tests and
// status).
func (n *Netlink) Announced() []netip.Prefix {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]netip.Prefix, 0, len(n.announced))
	for _, a := range n.announced {
		out = append(out, a.Prefix)
	}
	return out
}
