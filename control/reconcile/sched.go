package reconcile

import (
	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/loader"
)

// Schedulers (issue 13). maglev and sh hash into the VIP's lookup table,
// random takes a random slot of it; rr, wrr, lc and wlc choose from the
// VIP's backend set, which is its table's members with their weights:
// whatever takes a backend out of the table (a drain, a failed check, a
// connection cap, a standby pool) takes it out of the set in the same
// pass. lc and wlc compare open-flow counts that the data plane keeps and
// the reconciler writes afresh from the connection table about once a
// second (syncOpenFlows), which covers the flows that end by expiry.
//
// With persistence, a backend that takes no new flows is marked NoNew
// in its entry, so that a returning client leaves it.

// SchedKind is the data plane's scheduler of a VIP's.
func SchedKind(s model.Scheduler) loader.HashKind {
	switch s {
	case model.SchedSH:
		return loader.HashSource
	case model.SchedRR:
		return loader.SchedRR
	case model.SchedWRR:
		return loader.SchedWRR
	case model.SchedRandom:
		return loader.SchedRand
	case model.SchedLC:
		return loader.SchedLC
	case model.SchedWLC:
		return loader.SchedWLC
	default:
		return loader.HashMaglev
	}
}

// planSet plans the VIP's backend set (for a scheduler that uses one) and
// the NoNew marks of its entries (for a VIP with persistence).
func (p *vipPlan) planSet() {
	if p.meta.Hash.UsesSet() && len(p.members) > 0 {
		p.set = make([]loader.SchedMember, 0, len(p.members))
		for _, m := range p.members {
			if m.Weight > 0 {
				p.set = append(p.set, loader.SchedMember{ID: m.ID, Weight: m.Weight})
			}
		}
		if len(p.set) == 0 {
			p.set = nil
		}
	}
	if p.v.Persistence == 0 {
		return
	}
	member := make(map[uint32]bool, len(p.members))
	for _, m := range p.members {
		member[m.ID] = m.Weight > 0
	}
	for _, bp := range p.planned() {
		if bp.hasEntry {
			bp.entry.NoNew = !member[bp.entry.ID]
		}
	}
}

// lcBackends are the backend ids (with an entry) of the VIPs whose
// scheduler compares open flows, the fallback included. r.mu is held.
func (r *Reconciler) lcBackends() []uint32 {
	var out []uint32
	for _, s := range r.vips {
		if s.info == nil || !SchedKind(s.v.Scheduler).CountsFlows() {
			continue
		}
		for _, bi := range s.info {
			if bi.ID != 0 {
				out = append(out, bi.ID)
			}
		}
		if s.fallback != nil && s.fallback.ID != 0 {
			out = append(out, s.fallback.ID)
		}
	}
	return out
}

// syncOpenFlows writes the open flows of ids as counted (both phases).
func (r *Reconciler) syncOpenFlows(ids []uint32, counts map[uint32]loader.FlowCount) error {
	if len(ids) == 0 {
		return nil
	}
	out := make(map[uint32]int64, len(ids))
	for _, id := range ids {
		out[id] = int64(counts[id].Open())
	}
	return r.dp.SetOpenFlows(out)
}
