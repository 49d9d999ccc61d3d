package reconcile

import (
	"context"
	"maps"
	"time"

	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/loader"
)

// Connection caps (backend max_conns, max_conns_min) are kept by the
// control plane, not the data plane: the program sees flows begin, but not
// all of them end (the LRU evicts entries, idle ones expire without a
// packet), so a counter it kept would only grow. Instead the reconciler
// counts each capped backend's open flows from the connection table, as
// `backend list` does, and takes a full backend out of its VIP's lookup
// table, as a drain does: its open flows go on, new ones go to the others.
// Back at or below its lower mark, it takes new flows again.
//
// Only established flows count: a half-open one (a SYN never answered)
// would let a flood of spoofed SYNs fill every backend's cap and lock the
// real clients out. A handshake that completes counts one round trip later.
//
// It is as fast and as exact as the counting: a backend may take the new
// flows of one CapInterval (or of a walk of the connection table, when
// that is slower) beyond its cap before it leaves the table, and is back
// within one interval once its flows have ended. Nothing is counted while
// no backend has a cap and no VIP is lc or wlc.

// CapInterval is how often the capped backends' open flows are counted at
// most; at least four walks of the connection table fit in it, so that the
// walks take at most a quarter of a CPU.
const CapInterval = time.Second

// cappedBackend is a backend with a connection cap, as the last pass left
// it: its id in the maps and its marks.
type cappedBackend struct {
	key      backendKey
	name     string
	id       uint32
	max, min uint32
}

// judge is what decides, besides the config and the network, whether a
// backend takes new flows: the health checks, and the caps as the last
// count found them. A backend whose cap was removed since is not full.
func (r *Reconciler) judge() judge {
	return judge{up: r.health.Up, full: func(vid model.VIPID, b model.Backend) bool {
		return b.MaxConns > 0 && r.full[backendKey{vid, b.Address.Unmap(), b.Port}]
	}}
}

// cappedBackends lists the backends with a cap that have an id in the
// maps. r.mu is held.
func (r *Reconciler) cappedBackends() []cappedBackend {
	var out []cappedBackend
	for vid, s := range r.vips {
		if s.info == nil {
			continue
		}
		for j, b := range s.v.Backends {
			if b.MaxConns == 0 || s.info[j].ID == 0 {
				continue
			}
			addr := b.Address.Unmap()
			out = append(out, cappedBackend{key: backendKey{vid, addr, b.Port}, name: model.BackendName(addr, b.Port),
				id: s.info[j].ID, max: b.MaxConns, min: b.MaxConnsMin})
		}
	}
	return out
}

// fullAfter is which of capped are full given their open flows (counts,
// by id) and which were full before (prev): one that was not is full at
// its cap, one that was stays full above its lower mark.
func fullAfter(prev map[backendKey]bool, capped []cappedBackend, counts map[uint32]loader.FlowCount) map[backendKey]bool {
	next := map[backendKey]bool{}
	for _, c := range capped {
		n := uint32(counts[c.id].Established)
		if prev[c.key] && n > c.min || !prev[c.key] && n >= c.max {
			next[c.key] = true
		}
	}
	return next
}

// CheckCaps counts the open flows of the backends with a cap and decides
// which are full; it reports whether that changed, for a pass to apply.
// The count (a walk of the connection table) runs without the
// reconciler's lock.
//
// The same walk gives the open flows of the backends of lc and wlc VIPs,
// written to the data plane (syncOpenFlows), and of the backends retained
// for their open flows (retain.go): a change is reported too when one of
// those has none left, for a pass to delete it.
func (r *Reconciler) CheckCaps() (bool, error) {
	r.mu.Lock()
	capped := r.cappedBackends()
	lc := r.lcBackends()
	retained := r.retainedIDs()
	r.mu.Unlock()
	var counts map[uint32]loader.FlowCount
	if len(capped) > 0 || len(lc) > 0 || len(retained) > 0 {
		var err error
		if counts, err = r.dp.FlowCountsByBackend(); err != nil {
			return false, err
		}
	}
	if err := r.syncOpenFlows(lc, counts); err != nil {
		r.log.Error("write open flows of lc/wlc backends", "err", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	next := fullAfter(r.full, capped, counts)
	done := retainedDone(retained, counts)
	if maps.Equal(next, r.full) {
		return done, nil
	}
	for _, c := range capped {
		n := counts[c.id].Established
		switch {
		case next[c.key] && !r.full[c.key]:
			r.log.Warn("backend full: it takes no new flows until its open flows are back at its lower mark",
				"vip", c.key.VIP, "backend", c.name, "flows", n, "max_conns", c.max, "max_conns_min", c.min)
		case !next[c.key] && r.full[c.key]:
			r.log.Info("backend back at its lower mark: it takes new flows again",
				"vip", c.key.VIP, "backend", c.name, "flows", n, "max_conns_min", c.min)
		}
	}
	r.full = next
	return true, nil
}

// runCaps checks the caps every CapInterval, or every four walks of the
// connection table when they take longer, and signals changed after a
// change, until ctx is done.
func (r *Reconciler) runCaps(ctx context.Context, changed chan<- struct{}) {
	t := time.NewTimer(CapInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		ch, err := r.CheckCaps()
		if err != nil && ctx.Err() == nil {
			r.log.Error("count flows of capped backends", "err", err)
		}
		if ch {
			select {
			case changed <- struct{}{}:
			default:
			}
		}
		t.Reset(max(CapInterval, 4*time.Since(start)))
	}
}
