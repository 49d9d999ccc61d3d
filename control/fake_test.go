package control

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
)

// fakeNetwork resolves backends from a table the test controls.
type fakeNetwork struct {
	mu        sync.Mutex
	macs      map[netip.Addr]net.HardwareAddr // missing: unresolved
	offLink   map[netip.Addr]bool
	resolves  int
	announced map[netip.Addr]bool
	changes   chan struct{}
}

func newFakeNetwork() *fakeNetwork {
	return &fakeNetwork{macs: map[netip.Addr]net.HardwareAddr{}, offLink: map[netip.Addr]bool{}, changes: make(chan struct{}, 1)}
}

var fakeSrcMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0xfe}

func (n *fakeNetwork) setMAC(a string, mac net.HardwareAddr) {
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

func (n *fakeNetwork) Resolve(_ context.Context, a netip.Addr) (Neighbour, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.resolves++
	if n.offLink[a] {
		return Neighbour{}, fmt.Errorf("%w: backend %s is not on a directly connected subnet of eth0", ErrInvalid, a)
	}
	return Neighbour{Ifindex: 2, Iface: "eth0", SrcMAC: fakeSrcMAC, MAC: slices.Clone(n.macs[a])}, nil
}

func (n *fakeNetwork) Announce(_ context.Context, want map[netip.Addr]bool) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.announced = maps.Clone(want)
	return nil
}

func (n *fakeNetwork) Changes() <-chan struct{} { return n.changes }

func mac(last byte) net.HardwareAddr { return net.HardwareAddr{0x02, 0, 0, 0, 0, last} }
