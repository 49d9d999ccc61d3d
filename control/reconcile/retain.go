package reconcile

import (
	"net/netip"
	"slices"

	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/loader"
)

// Blue/green (issue 13). A backend that leaves its VIP's config (an apply
// -f that swaps the backend set) while flows are open on it keeps its
// entry, out of the table as a drained backend is: its open flows go on,
// new ones go to the backends that replace it. It is retained until its
// open flows (both phases, counted from the connection table) reach zero,
// then deleted; `backend list` shows it draining meanwhile. While none of
// the VIP's new backends is usable yet (their MACs unresolved, their
// checks pending), the retained ones that are up keep taking its new
// flows (serveRetained). A forced
// delete (`backend del --force`) is not retained. The check of the
// retained backends' flows shares the walk of CheckCaps (CapInterval).

// RetainedBackend is a backend removed from its VIP's config that keeps
// its entry for its open flows.
type RetainedBackend struct {
	Addr netip.Addr
	Port uint16 // as in the maps: 0 is the VIP's port
	ID   uint32
	// Serving: it still takes the VIP's new flows, none of the backends
	// that replace it being usable yet (make before break).
	Serving bool
}

// leftovers are the entries of p's VIP in the maps that no backend of its
// config (nor its fallback) names.
func (p *vipPlan) leftovers(m *mirror) []loader.Backend {
	if p.err != nil || p.held || !p.exists {
		return nil
	}
	planned := map[uint32]bool{}
	for _, bp := range p.planned() {
		if bp.had {
			planned[bp.old.ID] = true
		}
	}
	var out []loader.Backend
	for _, bid := range m.byVIP[p.meta.ID] {
		if !planned[bid] {
			out = append(out, m.backends[bid])
		}
	}
	return out
}

// retain decides which leftovers of plans keep their entries: those with
// open flows, unless released by a forced delete. One walk of the
// connection table, and only when some plan has leftovers. r.mu is held.
func (r *Reconciler) retain(plans []vipPlan) {
	type left struct {
		p *vipPlan
		b loader.Backend
	}
	var all []left
	for i := range plans {
		for _, b := range plans[i].leftovers(r.maps) {
			k := backendKey{plans[i].v.ID(), b.Addr.Unmap(), b.Port}
			if r.released[k] {
				delete(r.released, k)
				continue
			}
			all = append(all, left{&plans[i], b})
		}
	}
	if len(all) == 0 {
		return
	}
	counts, err := r.dp.FlowCountsByBackend()
	if err != nil {
		// Keep them all: a pass with a count deletes the idle ones.
		r.log.Error("count flows of removed backends: they are kept for now", "err", err)
	}
	for _, l := range all {
		if err == nil && counts[l.b.ID].Open() == 0 {
			continue
		}
		e := l.b
		e.NoNew = l.p.v.Persistence > 0
		l.p.retained = append(l.p.retained, e)
	}
	for i := range plans {
		plans[i].serveRetained()
	}
}

// serveRetained makes the retained backends that are up the members of a
// VIP that has no other (its new backends not resolved or checked yet,
// and no fallback): an apply that swaps the backend set breaks no new
// connection while the new set comes up. They leave the table once a new
// backend is usable. Each counts with weight 1: their weights left the
// config with them.
func (p *vipPlan) serveRetained() {
	if len(p.members) > 0 || len(p.retained) == 0 {
		return
	}
	for i := range p.retained {
		e := &p.retained[i]
		if e.Down {
			continue
		}
		e.NoNew = false
		p.members = append(p.members, MaglevBackend{ID: e.ID, Key: MaglevKey(e.Addr, p.v.BackendPort(model.Backend{Port: e.Port})), Weight: 1})
		p.serving = append(p.serving, e.ID)
	}
	if len(p.members) > 0 {
		p.meta.NoHealthy, p.meta.BackendsFull = false, false
		p.set = nil
		p.planSet()
	}
}

// Release makes the next pass delete a backend of vip that leaves its
// config, open flows or not (`backend del --force`).
func (r *Reconciler) Release(vip model.VIPID, addr netip.Addr, port uint16) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.released == nil {
		r.released = map[backendKey]bool{}
	}
	r.released[backendKey{vip, addr.Unmap(), port}] = true
}

// Retained returns the backends of vip retained for their open flows, by
// address.
func (r *Reconciler) Retained(vip model.VIPID) []RetainedBackend {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.vips[vip]
	if s == nil {
		return nil
	}
	return slices.Clone(s.retained)
}

// retainedIDs are the ids of every retained backend. r.mu is held.
func (r *Reconciler) retainedIDs() []uint32 {
	var out []uint32
	for _, s := range r.vips {
		for _, b := range s.retained {
			out = append(out, b.ID)
		}
	}
	return out
}

// retainedDone reports whether a retained backend has no open flow left,
// so that a pass deletes it.
func retainedDone(ids []uint32, counts map[uint32]loader.FlowCount) bool {
	return slices.ContainsFunc(ids, func(id uint32) bool { return counts[id].Open() == 0 })
}

func retainedOf(p *vipPlan) []RetainedBackend {
	out := make([]RetainedBackend, 0, len(p.retained))
	for _, b := range p.retained {
		out = append(out, RetainedBackend{Addr: b.Addr.Unmap(), Port: b.Port, ID: b.ID, Serving: slices.Contains(p.serving, b.ID)})
	}
	slices.SortFunc(out, func(a, b RetainedBackend) int { return compareRef(a.Addr, a.Port, b.Addr, b.Port) })
	return out
}

func compareRef(a netip.Addr, ap uint16, b netip.Addr, bp uint16) int {
	if c := a.Compare(b); c != 0 {
		return c
	}
	return int(ap) - int(bp)
}
