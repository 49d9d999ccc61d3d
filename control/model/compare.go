package model

import (
	"cmp"
	"net/netip"
	"slices"
)

// EqualVIP reports whether two normalized VIP configs are equal.
func EqualVIP(a, b *VIP) bool {
	return a.Address == b.Address && a.Port == b.Port && a.Protocol == b.Protocol && a.Mode == b.Mode &&
		a.SNATAddr == b.SNATAddr && a.Scheduler == b.Scheduler && samePtr(a.Announce, b.Announce) && samePtr(a.HealthCheck, b.HealthCheck) &&
		samePtr(a.Fallback, b.Fallback) && a.MaxNewFlows == b.MaxNewFlows && a.MaxNewFlowsBurst == b.MaxNewFlowsBurst &&
		a.Persistence == b.Persistence &&
		slices.Equal(a.Backends, b.Backends) && a.FailoverBelow == b.FailoverBelow
}

// EqualState reports whether two normalized states are equal.
func EqualState(a, b *State) bool {
	return slices.EqualFunc(a.VIPs, b.VIPs, func(x, y VIP) bool { return EqualVIP(&x, &y) })
}

// SameTargets reports whether a and b probe the same targets: they differ
// at most in their limits, in failover_below, persistence and in the
// weights, drain flags, pools and groups of their backends.
func SameTargets(a, b *VIP) bool {
	x, y := *a, *b
	x.Backends, y.Backends = nil, nil
	x.FailoverBelow, y.FailoverBelow = 0, 0
	x.Persistence, y.Persistence = 0, 0
	x.MaxNewFlows, x.MaxNewFlowsBurst, y.MaxNewFlows, y.MaxNewFlowsBurst = 0, 0, 0, 0
	return EqualVIP(&x, &y) && slices.EqualFunc(a.Backends, b.Backends, func(p, q Backend) bool {
		return p.Address == q.Address && p.Port == q.Port
	})
}

func samePtr[T comparable](a, b *T) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// CompareVIPID orders VIP ids by address, port, protocol: the order of a
// normalized state.
func CompareVIPID(a, b VIPID) int {
	if c := compareAddrPort(a.Addr, a.Port, b.Addr, b.Port); c != 0 {
		return c
	}
	return cmp.Compare(a.Protocol, b.Protocol)
}

func compareAddrPort(a netip.Addr, ap uint16, b netip.Addr, bp uint16) int {
	if c := a.Compare(b); c != 0 {
		return c
	}
	return cmp.Compare(ap, bp)
}

// Canonical is id with its address unmapped, as a normalized state holds it.
func (id VIPID) Canonical() VIPID {
	id.Addr = id.Addr.Unmap()
	return id
}

// Find returns the index of VIP id in s, or -1.
func (s *State) Find(id VIPID) int {
	id = id.Canonical()
	for i := range s.VIPs {
		if s.VIPs[i].ID().Canonical() == id {
			return i
		}
	}
	return -1
}

// FindBackend returns the index of a backend of v, or -1; port 0 means the
// VIP's port.
func (v *VIP) FindBackend(addr netip.Addr, port uint16) int {
	addr = addr.Unmap()
	if port == 0 {
		port = v.Port
	}
	for j, b := range v.Backends {
		if b.Address.Unmap() == addr && v.BackendPort(b) == port {
			return j
		}
	}
	return -1
}

// BackendPort is the port b really receives on: its own, else the VIP's.
func (v *VIP) BackendPort(b Backend) uint16 {
	if b.Port == 0 {
		return v.Port
	}
	return b.Port
}
