package netstack

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"

	"github.com/xdplb/xdplb/control/model"
)

// CheckVIPAddress refuses a VIP address that is not safe to take. The
// network or broadcast address of an IPv4 subnet of this host is always
// refused: frames to it reach every host of the segment, or none. An
// address configured on this host (not one xdplb announced for a VIP) is
// refused with model.ErrOwnAddress, which the operator may override: the
// VIP would take the host's own connections to that port (SSH to the LB
// itself), and drop them while it has no backend.
func (n *Netlink) CheckVIPAddress(addr netip.Addr) error {
	addr = addr.Unmap()
	list, err := n.h.AddrList(nil, family(addr))
	if err != nil {
		return fmt.Errorf("addresses of this host: %w", err)
	}
	byLink := map[int][]netlink.Addr{}
	ann := n.announcedAddrs()
	for _, la := range list {
		byLink[la.LinkIndex] = append(byLink[la.LinkIndex], la)
		if p, ok := ipnetPrefix(la.IPNet); ok && p.Addr() == addr && !ann[addr] {
			return model.OwnAddressf("%s is an address of this host (on %s): the VIP would take the host's own connections to its port; use --force to take it anyway",
				addr, n.linkName(la.LinkIndex))
		}
	}
	for _, idx := range slices.Sorted(maps.Keys(byLink)) {
		if err := checkSubnetEdge(addr, byLink[idx], n.linkName(idx)); err != nil {
			return model.AsInvalid(err)
		}
	}
	return nil
}

// linkName names an interface for a message; its index if it is gone.
func (n *Netlink) linkName(index int) string {
	if l, err := n.h.LinkByIndex(index); err == nil {
		return l.Attrs().Name
	}
	return fmt.Sprintf("ifindex %d", index)
}
