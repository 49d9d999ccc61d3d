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

// MAC is a backend MAC ending in last.
func MAC(last byte) net.HardwareAddr { return net.HardwareAddr{0x02, 0, 0, 0, 0, last} }

// Network is an in-memory reconcile.Network: every backend is behind
// eth0, with the MAC the test set (none: unresolved), or off-link.
type Network struct {
	mu        sync.Mutex
	macs      map[netip.Addr]net.HardwareAddr
	offLink   map[netip.Addr]bool
	resolves  int
	announced map[netip.Addr]bool
	changes   chan struct{}
}

// NewNetwork returns a network where nothing is resolved.
func NewNetwork() *Network {
	return &Network{macs: map[netip.Addr]net.HardwareAddr{}, offLink: map[netip.Addr]bool{}, changes: make(chan struct{}, 1)}
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

// Resolves counts the addresses resolved so far.
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
