package reconcile

import (
	"bytes"
	"slices"
	"sync"

	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/healthcheck"
)

// Health says whether a backend passes its health checks. The reconciler
// calls Sync with the desired state on every pass (level-triggered), reads
// Up for every backend, and reconciles again on every Changes signal.
type Health interface {
	// Sync makes the set of probed targets match st, which it must not
	// change (the reconciler shares it with the store).
	Sync(st model.State)
	// Up is false while a checked backend is down or pending; a backend
	// without a check is always up.
	Up(vip model.VIPID, b model.Backend) bool
	// Status is the check state of a backend; false when it has no check.
	Status(vip model.VIPID, b model.Backend) (healthcheck.Status, bool)
	// Changes signals (coalesced) that some backend went up or down.
	Changes() <-chan struct{}
}

type allUp struct{}

func (allUp) Sync(model.State)                   {}
func (allUp) Up(model.VIPID, model.Backend) bool { return true }
func (allUp) Status(model.VIPID, model.Backend) (healthcheck.Status, bool) {
	return healthcheck.Status{}, false
}
func (allUp) Changes() <-chan struct{} { return nil }

// HealthTargets is what a Manager must do for HealthChecker;
// *healthcheck.Manager implements it.
type HealthTargets interface {
	Set(targets []healthcheck.Target)
	Status(id string) (healthcheck.Status, bool)
	Changes() <-chan struct{}
}

// HealthChecker is the Health of the daemon: one health-check target per
// (VIP, backend) of every VIP whose check is not none, probed by a
// healthcheck.Manager.
type HealthChecker struct {
	m HealthTargets

	mu sync.Mutex
	// checked holds the targets of the last Sync by id, so Up can tell a
	// backend without a check (always up) from one whose check has no
	// result yet.
	checked map[string]healthcheck.Target
	// vips holds what the last Sync derived from each VIP, so that a Sync
	// redoes only the VIPs whose config changed; order is their order.
	vips  map[model.VIPID]*healthVIP
	order []model.VIPID
	last  []healthcheck.Target // handed to the Manager last; nil: never
}

// healthVIP is what Sync derived from a VIP.
type healthVIP struct {
	v model.VIP // a copy (the caller may change its state after Sync); weights and drain flags as first seen
	// known are the ids of v's backends, checked or not; a backend
	// missing from it was added since and begins down (pending).
	known   map[string]bool
	targets []healthcheck.Target
}

// NewHealthChecker returns a Health on top of m. The first Sync is taken as
// the daemon's start: the backends in it begin up, so that a restart does not
// stop forwarding; backends that appear in later Syncs begin down until they
// pass rise checks.
func NewHealthChecker(m HealthTargets) *HealthChecker {
	return &HealthChecker{m: m, checked: map[string]healthcheck.Target{}, vips: map[model.VIPID]*healthVIP{}}
}

// Sync implements Health. It hands the Manager the targets of st, and does
// nothing when they are the ones of the last Sync: the reconciler calls it
// on every pass. Only the VIPs whose config changed since the last Sync
// cost work; a pass over an unchanged state compares configs only.
func (h *HealthChecker) Sync(st model.State) {
	h.mu.Lock()
	defer h.mu.Unlock()
	synced := h.last != nil
	vips := make(map[model.VIPID]*healthVIP, len(st.VIPs))
	order := make([]model.VIPID, 0, len(st.VIPs))
	same := synced && len(st.VIPs) == len(h.order)
	var redone []*healthVIP // VIPs whose targets changed, with their old ids
	var gone []*healthVIP
	for i := range st.VIPs {
		v := &st.VIPs[i]
		vid := v.ID()
		if same && h.order[i] != vid {
			same = false
		}
		order = append(order, vid)
		old := h.vips[vid]
		if old != nil && model.SameTargets(&old.v, v) {
			vips[vid] = old
			continue
		}
		hv := h.syncVIP(v, old, synced)
		vips[vid] = hv
		if old == nil || !slices.EqualFunc(hv.targets, old.targets, sameTarget) {
			same = false
			redone = append(redone, hv)
			if old != nil {
				gone = append(gone, old)
			}
		}
	}
	for vid, old := range h.vips {
		if _, ok := vips[vid]; !ok {
			same = false
			gone = append(gone, old)
		}
	}
	h.vips, h.order = vips, order
	if same {
		return
	}
	for _, old := range gone {
		for _, t := range old.targets {
			delete(h.checked, t.ID)
		}
	}
	for _, hv := range redone {
		for _, t := range hv.targets {
			h.checked[t.ID] = t
		}
	}
	n := 0
	for _, hv := range vips {
		n += len(hv.targets)
	}
	targets := make([]healthcheck.Target, 0, n)
	for i := range st.VIPs {
		targets = append(targets, vips[st.VIPs[i].ID()].targets...)
	}
	// Like a normalized state, the list is sorted: equal states give
	// equal lists; another order only costs one more Set.
	if synced && slices.EqualFunc(targets, h.last, sameTarget) {
		return
	}
	h.last = targets
	if len(targets) == 0 {
		h.m.Set(nil) // as before: an empty list is nil to the Manager
		return
	}
	h.m.Set(targets)
}

// syncVIP derives the targets of v; old (may be nil) is what the last Sync
// derived from the VIP of the same id, synced whether there was one.
func (h *HealthChecker) syncVIP(v *model.VIP, old *healthVIP, synced bool) *healthVIP {
	hv := &healthVIP{v: v.Clone(), known: make(map[string]bool, len(v.Backends))}
	for _, b := range v.Backends {
		id := model.HealthTargetID(v.ID(), b.Address, b.Port)
		hv.known[id] = true
		spec, ok := model.HealthSpec(v, b)
		if !ok {
			continue
		}
		// A backend that was there before (with or without a check)
		// keeps forwarding while its first checks run; only a new one
		// must prove itself first.
		startUp := !synced || old != nil && old.known[id]
		if t, had := h.checked[id]; had {
			startUp = t.StartUp // the Manager keeps its state; keep the target stable
		}
		hv.targets = append(hv.targets, healthcheck.Target{ID: id, Spec: spec, StartUp: startUp})
	}
	return hv
}

func sameTarget(a, b healthcheck.Target) bool {
	x, y := a.Spec, b.Spec
	return a.ID == b.ID && a.StartUp == b.StartUp && x.Kind == y.Kind && x.Target == y.Target &&
		x.Path == y.Path && x.Host == y.Host && x.Expect == y.Expect && bytes.Equal(x.Payload, y.Payload) &&
		x.Interval == y.Interval && x.Timeout == y.Timeout && x.Rise == y.Rise && x.Fall == y.Fall
}

// Up implements Health.
func (h *HealthChecker) Up(vip model.VIPID, b model.Backend) bool {
	t, checked := h.target(vip, b)
	if !checked {
		return true
	}
	if st, ok := h.m.Status(t.ID); ok {
		return st.Up
	}
	return t.StartUp
}

// target is the check target of backend b of vip, if it has one. A VIP
// without checks (the last Sync gave it no targets) answers without
// naming its backend: the reconciler asks for every backend of every
// VIP it touches.
func (h *HealthChecker) target(vip model.VIPID, b model.Backend) (healthcheck.Target, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if hv := h.vips[vip]; hv == nil || len(hv.targets) == 0 {
		return healthcheck.Target{}, false
	}
	t, ok := h.checked[model.HealthTargetID(vip, b.Address, b.Port)]
	return t, ok
}

// Status implements Health.
func (h *HealthChecker) Status(vip model.VIPID, b model.Backend) (healthcheck.Status, bool) {
	t, checked := h.target(vip, b)
	if !checked {
		return healthcheck.Status{}, false
	}
	if st, ok := h.m.Status(t.ID); ok {
		return st, true
	}
	return healthcheck.Status{Up: t.StartUp}, true
}

// Changes implements Health.
func (h *HealthChecker) Changes() <-chan struct{} { return h.m.Changes() }
