package reconcile

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

// fakeNetwork resolves backends from a table the test controls.
type fakeNetwork struct {
	mu        sync.Mutex
	macs      map[netip.Addr]net.HardwareAddr // missing: unresolved
	offLink   map[netip.Addr]bool
	resolves  int
	announced map[netip.Addr]bool
	forgot    []map[netip.Addr]bool // the keep sets of Forget, in order
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

func (n *fakeNetwork) ResolveAll(_ context.Context, addrs []netip.Addr) map[netip.Addr]model.Resolution {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make(map[netip.Addr]model.Resolution, len(addrs))
	for _, a := range addrs {
		n.resolves++
		if n.offLink[a] {
			out[a] = model.Resolution{Err: fmt.Errorf("%w: backend %s is not on a directly connected subnet of eth0", model.ErrInvalid, a)}
			continue
		}
		out[a] = model.Resolution{Neighbour: model.Neighbour{Ifindex: 2, Iface: "eth0", SrcMAC: fakeSrcMAC, MAC: slices.Clone(n.macs[a])}}
	}
	return out
}

func (n *fakeNetwork) Announce(_ context.Context, want map[netip.Addr]bool) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.announced = maps.Clone(want)
	return nil
}

func (n *fakeNetwork) Changes() <-chan struct{} { return n.changes }

func (n *fakeNetwork) Forget(keep map[netip.Addr]bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.forgot = append(n.forgot, maps.Clone(keep))
}

func mac(last byte) net.HardwareAddr { return net.HardwareAddr{0x02, 0, 0, 0, 0, last} }
