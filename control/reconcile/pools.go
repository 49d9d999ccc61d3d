package reconcile

import (
	"cmp"
	"slices"

	"github.com/xdplb/xdplb/control/model"
)

// Backup pools (issue 24). A VIP's backends are in pools by their
// priority: 0, the primary, then backups (another availability zone) in
// increasing order. The pools that take new flows are a ladder walked from
// the best: each pool's usable backends join the lookup table, and the walk
// stops at the first pool that suffices. A pool suffices when its healthy
// weight (the weights of its usable backends: not drained, passing their
// checks, resolved) is above 0 and not below the VIP's failover_below
// percentage of its configured weight (the weights of its backends that are
// not drained). With failover_below 0, the default, a pool suffices as soon
// as one of its backends is usable: the next pool takes new flows only when
// none is. A pool whose backends are all drained has no configured weight
// and is no step of the ladder. Past the last pool comes the VIP's fallback
// (it takes the table when no pool has a usable backend), then the drop
// (no_healthy_backend).
//
// Pools that share the table mix by weight: every usable backend of the
// active pools is a member with its own weight, as if in one pool; a
// backup's weights are thus relative to the primary's. The backends of the
// pools past the walk keep their entries (their open flows continue, as a
// drained backend's do) and take no slot: their state is standby.
//
// The choice depends only on the config and the backends' health, never
// on map or insertion order, so every LB node with the same state builds
// the same table.

// poolWeight is one pool of a VIP's backends as the ladder sees it.
type poolWeight struct {
	priority   uint32
	configured uint64 // weights of its backends not drained
	healthy    uint64 // weights of its usable backends
}

// suffices reports whether the walk stops at pool w (see above): healthy
// is above 0 and at least pct percent of configured.
func (w poolWeight) suffices(pct uint32) bool {
	return w.healthy > 0 && w.healthy*100 >= uint64(pct)*w.configured
}

// activePools returns the priorities of the pools that take new flows,
// best first, from pools sorted by priority: the ladder's walk. Pools
// without a usable backend take none and are not listed, though the walk
// goes past them.
func activePools(pools []poolWeight, failoverBelow uint32) []uint32 {
	var out []uint32
	for _, w := range pools {
		if w.configured == 0 {
			continue
		}
		if w.healthy > 0 {
			out = append(out, w.priority)
		}
		if w.suffices(failoverBelow) {
			break
		}
	}
	return out
}

// poolWeights sums the weights of a VIP's planned backends by pool,
// sorted by priority.
func poolWeights(bs []backendPlan) []poolWeight {
	var out []poolWeight
	for i := range bs {
		b := &bs[i].b
		if b.Drained() {
			continue
		}
		j := slices.IndexFunc(out, func(w poolWeight) bool { return w.priority == b.Priority })
		if j < 0 {
			out = append(out, poolWeight{priority: b.Priority})
			j = len(out) - 1
		}
		out[j].configured += uint64(b.Weight)
		if bs[i].info.State == model.BackendUp {
			out[j].healthy += uint64(b.Weight)
		}
	}
	slices.SortFunc(out, func(a, b poolWeight) int { return cmp.Compare(a.priority, b.priority) })
	return out
}

// choosePools makes the usable backends of the active pools the members
// of p's lookup table, in config order, and marks the usable backends of
// the other pools standby.
func (p *vipPlan) choosePools() {
	p.pools = activePools(poolWeights(p.backends), p.v.FailoverBelow)
	for i := range p.backends {
		bp := &p.backends[i]
		if bp.info.State != model.BackendUp || !bp.hasEntry {
			continue
		}
		if !slices.Contains(p.pools, bp.b.Priority) {
			bp.info.State = model.BackendStandby
			continue
		}
		p.members = append(p.members, MaglevBackend{ID: bp.entry.ID, Key: MaglevKey(bp.key.Addr, p.v.BackendPort(bp.b)), Weight: bp.b.Weight})
	}
}

// worsePools reports whether new flows moved away from the primary pool
// from pools a to b: to a deeper step of the ladder, or off a better pool
// that shared them, or to no pool.
func worsePools(a, b []uint32) bool {
	switch {
	case len(b) == 0:
		return len(a) > 0
	case len(a) == 0:
		return false
	}
	if c := cmp.Compare(model.ActivePriority(b), model.ActivePriority(a)); c != 0 {
		return c > 0
	}
	return b[0] > a[0]
}

// logPools logs a change of a VIP's active pools.
func (r *Reconciler) logPools(vid model.VIPID, from, to []uint32) {
	msg, args := "vip active pool changed", []any{"vip", vid, "from", model.PoolsString(from), "to", model.PoolsString(to)}
	if worsePools(from, to) {
		r.log.Warn(msg, args...)
		return
	}
	r.log.Info(msg, args...)
}
