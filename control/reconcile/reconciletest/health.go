package reconciletest

import (
	"net/netip"
	"sync"
	"time"

	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/healthcheck"
)

// Health is an in-memory reconcile.Health: every backend is up until the
// test sets it down, with a reason.
type Health struct {
	mu      sync.Mutex
	down    map[string]string // target id -> reason
	synced  []model.State
	changes chan struct{}
}

// NewHealth returns a Health where every backend is up.
func NewHealth() *Health {
	return &Health{down: map[string]string{}, changes: make(chan struct{}, 1)}
}

// Since is the time every status reports as its last transition.
var Since = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// Set makes backend addr (on the VIP's port) of vip up or down, and
// signals Changes.
func (h *Health) Set(vip model.VIPID, addr string, up bool, reason string) {
	h.SetBackend(vip, model.Backend{Address: netip.MustParseAddr(addr)}, up, reason)
}

// SetBackend is Set for a backend of vip with its own port.
func (h *Health) SetBackend(vip model.VIPID, b model.Backend, up bool, reason string) {
	id := model.HealthTargetID(vip, b.Address, b.Port)
	h.mu.Lock()
	if up {
		delete(h.down, id)
	} else {
		h.down[id] = reason
	}
	h.mu.Unlock()
	select {
	case h.changes <- struct{}{}:
	default:
	}
}

// Synced returns the states of every Sync so far.
func (h *Health) Synced() []model.State {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.synced
}

// Sync implements reconcile.Health.
func (h *Health) Sync(st model.State) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.synced = append(h.synced, st)
}

// Up implements reconcile.Health.
func (h *Health) Up(vip model.VIPID, b model.Backend) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, down := h.down[model.HealthTargetID(vip, b.Address, b.Port)]
	return !down
}

// Status implements reconcile.Health.
func (h *Health) Status(vip model.VIPID, b model.Backend) (healthcheck.Status, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	reason, down := h.down[model.HealthTargetID(vip, b.Address, b.Port)]
	if !down {
		reason = "ok"
	}
	return healthcheck.Status{Up: !down, Known: true, Reason: reason, Since: Since}, true
}

// Changes implements reconcile.Health.
func (h *Health) Changes() <-chan struct{} { return h.changes }
