package reconciletest

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"

	"github.com/xdplb/xdplb/control/model"
)

// SrcMAC is the MAC of the fake network's only interface, eth0 (ifindex 2).
var SrcMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0xfe}

// Primary4 and Primary6 are eth0's primary addresses until SetPrimary
// changes them: the SNAT address a fullnat VIP without one takes.
var (
	Primary4 = netip.MustParseAddr("192.0.2.1")
	Primary6 = netip.MustParseAddr("2001:db8:ffff::1")
)

// MAC is a backend MAC ending in last.
func MAC(last byte) net.HardwareAddr { return net.HardwareAddr{0x02, 0, 0, 0, 0, last} }

// Network is an in-memory reconcile.Network: every backend is behind
// eth0, with the MAC the test set (none: unresolved), or off-link; every
// NAT backend is routed through eth0 unless the test made it unrouted.
type Network struct {
	mu        sync.Mutex
	macs      map[netip.Addr]net.HardwareAddr
	offLink   map[netip.Addr]bool
	unrouted  map[netip.Addr]bool
	primary   map[bool]netip.Addr // by Is4; invalid: eth0 has none
	resolves  int
	announced map[netip.Addr]bool
	changes   chan struct{}
}

// NewNetwork returns a network where no MAC is resolved and every
// address is routed through eth0, whose addresses are Primary4 and
// Primary6.
func NewNetwork() *Network {
	return &Network{macs: map[netip.Addr]net.HardwareAddr{}, offLink: map[netip.Addr]bool{},
		unrouted: map[netip.Addr]bool{}, primary: map[bool]netip.Addr{true: Primary4, false: Primary6},
		changes: make(chan struct{}, 1)}
}

// SetMAC makes a resolve to mac (nil: unresolved) and signals Changes.
func (n *Network) SetMAC(a string, mac net.HardwareAddr) {
	n.mu.Lock()
	if mac == nil {
		delete(n.macs, netip.MustParseAddr(a))
	} else {
		n.macs[netip.MustParseAddr(a)] = mac
	}
	n.mu.Unlock()
	select {
	case n.changes <- struct{}{}:
	default:
	}
}

// SetOffLink makes a resolve to an ErrInvalid error.
func (n *Network) SetOffLink(a string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.offLink[netip.MustParseAddr(a)] = true
}

// SetRouted makes a route lookup of a succeed through eth0 (true, the
// default) or fail as for an address routed through no attached
// interface.
func (n *Network) SetRouted(a string, routed bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if routed {
		delete(n.unrouted, netip.MustParseAddr(a))
	} else {
		n.unrouted[netip.MustParseAddr(a)] = true
	}
}

// SetPrimary makes a eth0's primary address of its family; SetNoPrimary
// leaves eth0 without one of that family.
func (n *Network) SetPrimary(a string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	p := netip.MustParseAddr(a)
	n.primary[p.Is4()] = p
}

// SetNoPrimary leaves eth0 without an IPv4 (ipv4) or IPv6 address.
func (n *Network) SetNoPrimary(ipv4 bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.primary[ipv4] = netip.Addr{}
}

// Routed reports whether a route lookup of a succeeds (see SetRouted).
func (n *Network) Routed(a netip.Addr) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return !n.unrouted[a]
}

// Primary is eth0's primary address of a family (see SetPrimary); invalid:
// none.
func (n *Network) Primary(ipv4 bool) netip.Addr {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.primary[ipv4]
}

// Resolves counts the addresses resolved so far: neighbours and routes.
func (n *Network) Resolves() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.resolves
}

// Announced is what the last Announce asked for.
func (n *Network) Announced() map[netip.Addr]bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return maps.Clone(n.announced)
}

// ResolveAll implements reconcile.Network.
func (n *Network) ResolveAll(_ context.Context, addrs []netip.Addr) map[netip.Addr]model.Resolution {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make(map[netip.Addr]model.Resolution, len(addrs))
	for _, a := range addrs {
		n.resolves++
		if n.offLink[a] {
			out[a] = model.Resolution{Err: fmt.Errorf("%w: backend %s is not on a directly connected subnet of eth0", model.ErrInvalid, a)}
			continue
		}
		out[a] = model.Resolution{Neighbour: model.Neighbour{Ifindex: 2, Iface: "eth0", SrcMAC: SrcMAC, MAC: slices.Clone(n.macs[a])}}
	}
	return out
}

// RouteAll implements reconcile.Network.
func (n *Network) RouteAll(_ context.Context, addrs []netip.Addr) map[netip.Addr]model.Route {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make(map[netip.Addr]model.Route, len(addrs))
	for _, a := range addrs {
		n.resolves++
		if n.unrouted[a] {
			out[a] = model.Route{Err: fmt.Errorf("%w: backend %s is not routed through an attached interface (eth0)", model.ErrInvalid, a)}
			continue
		}
		out[a] = model.Route{Ifindex: 2, Iface: "eth0", Primary: n.primary[a.Is4()]}
	}
	return out
}

// Announce implements reconcile.Network.
func (n *Network) Announce(_ context.Context, want map[netip.Addr]bool) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.announced = maps.Clone(want)
	return nil
}

// Changes implements reconcile.Network.
func (n *Network) Changes() <-chan struct{} { return n.changes }

// Forget implements reconcile.Network.
func (n *Network) Forget(map[netip.Addr]bool) {}

// ResetResolves starts the count of Resolves again from 0.
func (n *Network) ResetResolves() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.resolves = 0
}
