package reconcile

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/healthcheck"
	"github.com/xdplb/xdplb/loader"
)

// Source is the desired state; *state.Store implements it.
type Source interface {
	// Snapshot is the state and its generation, which grows with every
	// change. The state is shared with the source: it must not be changed.
	Snapshot() (model.State, uint64)
	// Subscribe signals (coalesced) every change of the state.
	Subscribe() <-chan struct{}
}

// Network is what the reconciler needs of the host's network stack: where
// a backend is (a DR backend's MAC, a NAT backend's route), and the VIP
// addresses announced on the segment. *netstack.Netlink implements it;
// tests use a fake.
type Network interface {
	// ResolveAll finds, for each DR backend address, the interface it is
	// reached through and its MAC. An address that is not on a directly
	// connected subnet of an attached interface is an error wrapping
	// model.ErrInvalid. An unknown MAC is not an error: MAC is nil and
	// resolution has been triggered.
	ResolveAll(ctx context.Context, addrs []netip.Addr) map[netip.Addr]model.Resolution
	// RouteAll finds, for each NAT backend address, the attached
	// interface the kernel routes it through and that interface's primary
	// address of the backend's family. An address routed through another
	// interface, or not at all, is an error wrapping model.ErrInvalid.
	RouteAll(ctx context.Context, addrs []netip.Addr) map[netip.Addr]model.Route
	// Announce makes the kernel answer ARP/NDP for exactly the addresses
	// in want (value true: announce even outside an attached subnet) among
	// those it manages; addresses the operator configured are never
	// touched.
	Announce(ctx context.Context, want map[netip.Addr]bool) error
	// Changes is signalled (coalesced) when a resolved backend's MAC
	// changes. Route changes are not signalled: the full pass of every
	// ReconcileInterval reads the routes again.
	Changes() <-chan struct{}
	// Forget stops following addresses that are no longer backends.
	Forget(keep map[netip.Addr]bool)
}

// RouteAnnouncer announces to routers the VIP addresses this node
// serves (the BGP speaker, control/bgp). After a pass that changed it,
// the reconciler hands it the whole set: an address is in it while one
// of its VIPs is routed (see vipPlan.routed).
type RouteAnnouncer interface {
	AnnounceRoutes(ctx context.Context, addrs []netip.Addr) error
}

// ReconcileInterval is how often the reconciler runs without being asked,
// as a safety net for missed events.
const ReconcileInterval = 5 * time.Second

// BackendInfo is what the reconciler last decided about a backend.
type BackendInfo struct {
	ID     uint32
	State  string           // model.BackendUp, BackendDraining, BackendUnresolved, BackendDown, BackendStandby
	MAC    net.HardwareAddr // nil: not resolved, or a NAT backend
	Iface  string           // the egress interface
	Reason string           // why it is not resolved; "" when it is
}

// Reconciler makes the data plane match the desired state. It is the only
// writer of the maps; it is level-triggered and idempotent: it compares
// what the maps should hold with what they hold and writes only what
// differs, so running it twice on the same input writes nothing the second
// time.
//
// A pass is one pipeline: plan (what the maps should hold for each VIP,
// from the desired state, the backends' health and neighbours), diff (the
// ordered writes from what the maps hold to the plan) and apply. A full
// pass reads the maps and the network and plans every VIP; a pass after a
// change of the desired state plans only the VIPs whose config changed
// since the last pass, against the maps as that pass left them.
type Reconciler struct {
	src    Source
	dp     Datapath
	net    Network
	health Health
	log    *slog.Logger

	mu         sync.Mutex // one pass at a time; guards the fields below
	maps       *mirror
	vipIDs     idAllocator
	backendIDs idAllocator
	layouts    *maglevCache
	// neigh holds the resolved DR backends and routes the routed NAT
	// backends, both refreshed by every full pass.
	neigh  map[netip.Addr]model.Neighbour
	routes map[netip.Addr]model.Route
	// vips holds, by VIP, what the last passes decided: for `backend
	// list`, the metrics and the logs (each health change logged once),
	// and the config as reconciled, which is what the maps hold while
	// clean (the last pass succeeded).
	vips       map[model.VIPID]*vipState
	decided    atomic.Pointer[Decisions] // r.vips as of the last pass's end
	unresolved map[netip.Addr]bool       // each resolution problem logged once
	// full holds the backends at their connection cap (conncap.go), as
	// the last count found them.
	full map[backendKey]bool
	// released are backends deleted by force: the next pass does not
	// retain them for their open flows (retain.go).
	released map[backendKey]bool
	announce map[netip.Addr]bool // the last Announce request; nil: none yet
	router   RouteAnnouncer      // nil: no BGP
	routed   map[netip.Addr]bool // the last set the router took; nil: none yet
	clean    bool
	// doneGen is the state generation the last successful pass read.
	doneGen uint64

	progress progress
	ok, fail atomic.Uint64
	observe  func(ok bool, took time.Duration) // nil: none
}

// NewReconciler returns a reconciler; health may be nil (all up).
func NewReconciler(src Source, dp Datapath, nw Network, health Health, log *slog.Logger) *Reconciler {
	if health == nil {
		health = allUp{}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Reconciler{
		src: src, dp: dp, net: nw, health: health, log: log,
		maps:       newMirror(),
		layouts:    newMaglevCache(),
		neigh:      map[netip.Addr]model.Neighbour{},
		routes:     map[netip.Addr]model.Route{},
		vips:       map[model.VIPID]*vipState{},
		unresolved: map[netip.Addr]bool{},
		progress:   progress{done: make(chan struct{})},
	}
}

// SetRouteAnnouncer makes the passes tell a the VIP addresses to route
// to this node; call it before the first pass.
func (r *Reconciler) SetRouteAnnouncer(a RouteAnnouncer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.router, r.routed = a, nil
}

// SetPassObserver makes every pass counted in Counts call fn with its
// result and how long it took (from taking the lock to its end), for
// xdplb_reconcile_duration_seconds; call it before the first pass.
func (r *Reconciler) SetPassObserver(fn func(ok bool, took time.Duration)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.observe = fn
}

// Counts returns how many reconciles succeeded and failed.
func (r *Reconciler) Counts() (ok, failed uint64) { return r.ok.Load(), r.fail.Load() }

// Backend returns what the last reconcile decided about a backend.
func (r *Reconciler) Backend(vip model.VIPID, addr netip.Addr, port uint16) (BackendInfo, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.vips[vip].backend(addr.Unmap(), port)
}

// Fallback returns what the last reconcile decided about a VIP's
// fallback server; false when it has none.
func (r *Reconciler) Fallback(vip model.VIPID) (BackendInfo, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.vips[vip]
	if s == nil || s.fallback == nil {
		return BackendInfo{}, false
	}
	return *s.fallback, true
}

// ActivePools returns the pools (priorities, best first) whose backends
// took a VIP's new flows in the last reconcile; none: its fallback took
// them, or they were dropped. False when the VIP was not planned.
func (r *Reconciler) ActivePools(vip model.VIPID) ([]uint32, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.vips[vip].activePools()
}

// Decisions is what the last passes decided about every VIP, as of one
// moment: Reconciler.Backend and ActivePools for readers of many VIPs
// (a scrape of /metrics reads every backend), which take the lock once
// rather than once a backend, and so never queue behind a pass for each.
type Decisions struct{ vips map[model.VIPID]*vipState }

// Decisions returns what the passes decided, as of the last one to end,
// without waiting for a pass under way: a full pass of thousands of VIPs
// holds the pass lock for seconds on a host busy with health checks, and
// a scrape that waited for it took as long (bench/RESULTS.md).
func (r *Reconciler) Decisions() Decisions {
	if d := r.decided.Load(); d != nil {
		return *d
	}
	return Decisions{}
}

// publish makes r.vips what Decisions returns; called at the end of
// each pass, with the pass lock held. The vipStates are never changed
// once in r.vips, so a copy of the map is a consistent view.
func (r *Reconciler) publish() {
	r.decided.Store(&Decisions{vips: maps.Clone(r.vips)})
}

// Backend is Reconciler.Backend as of d.
func (d Decisions) Backend(vip model.VIPID, addr netip.Addr, port uint16) (BackendInfo, bool) {
	return d.vips[vip].backend(addr.Unmap(), port)
}

// ActivePools is Reconciler.ActivePools as of d.
func (d Decisions) ActivePools(vip model.VIPID) ([]uint32, bool) { return d.vips[vip].activePools() }

// SNATAddr returns the SNAT address the last reconcile gave a fullnat VIP:
// its own, or the one found for it; false when it has none.
func (r *Reconciler) SNATAddr(vip model.VIPID) (netip.Addr, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.vips[vip]
	if s == nil || !s.snat.IsValid() {
		return netip.Addr{}, false
	}
	return s.snat, true
}

// HealthStatus is the health-check state of a backend; false when its VIP
// has no check.
func (r *Reconciler) HealthStatus(vip model.VIPID, b model.Backend) (healthcheck.Status, bool) {
	return r.health.Status(vip, b)
}

// Run reconciles on every state change, neighbour change, health change,
// change of the backends at their connection cap (counted every
// CapInterval while some backend has one) and ReconcileInterval until ctx
// is done. It is the one place changes are applied: whoever changed the
// state waits for it (Wait). A health change is applied at once: a backend
// that fails leaves the lookup tables within one pass.
func (r *Reconciler) Run(ctx context.Context) {
	t := time.NewTicker(ReconcileInterval)
	defer t.Stop()
	capsCh := make(chan struct{}, 1)
	go r.runCaps(ctx, capsCh)
	stateCh := r.src.Subscribe()
	var netCh <-chan struct{}
	if r.net != nil {
		netCh = r.net.Changes()
	}
	healthCh := r.health.Changes()
	// A change made before the loop subscribed must not wait for the tick.
	if err := r.ReconcileChanged(ctx); err != nil && ctx.Err() == nil {
		r.log.Error("reconcile", "err", err)
	}
	for {
		var err error
		select {
		case <-ctx.Done():
			return
		case <-stateCh:
			err = r.ReconcileChanged(ctx)
		case <-netCh:
			err = r.Reconcile(ctx)
		case <-healthCh:
			err = r.Reconcile(ctx)
		case <-capsCh:
			err = r.Reconcile(ctx)
		case <-t.C:
			err = r.Reconcile(ctx)
		}
		if err != nil && ctx.Err() == nil {
			r.log.Error("reconcile", "err", err)
		}
	}
}

// Reconcile runs one full pass and counts it in xdplb_reconciles_total: it
// reads the maps, the network and the health of every backend.
func (r *Reconciler) Reconcile(ctx context.Context) error { return r.run(ctx, false) }

// ReconcileChanged runs a pass after a change of the desired state: when
// the last pass succeeded, it reconciles only the VIPs whose config
// differs from what that pass reconciled, from what it left in the maps,
// with the backends' neighbours as last resolved; when the state did not
// change since, it does nothing. Otherwise, it is a full pass. Network and
// health changes need full passes (Run does them).
func (r *Reconciler) ReconcileChanged(ctx context.Context) error { return r.run(ctx, true) }

func (r *Reconciler) run(ctx context.Context, changedOnly bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	start := time.Now()
	st, gen := r.src.Snapshot()
	full := !changedOnly || !r.clean
	if !full && r.doneGen == gen {
		r.progress.finish(gen, nil)
		return nil
	}
	var err error
	if full {
		err = r.reconcileAll(ctx, st)
	} else {
		err = r.reconcileChanged(ctx, st)
	}
	r.clean = err == nil
	if err == nil {
		r.doneGen = gen
		r.ok.Add(1)
	} else {
		r.fail.Add(1)
	}
	r.publish()
	r.progress.finish(gen, err)
	took := time.Since(start)
	if r.observe != nil {
		r.observe(err == nil, took)
	}
	r.log.Debug("reconciled", "full", full, "took", took, "ok", err == nil)
	return err
}

// reconcileAll is the full pass.
func (r *Reconciler) reconcileAll(ctx context.Context, st model.State) error {
	r.health.Sync(st)
	if err := r.maps.read(r.dp); err != nil {
		return err
	}
	// The network is read afresh.
	r.neigh, r.routes = map[netip.Addr]model.Neighbour{}, map[netip.Addr]model.Route{}
	loc := r.locate(ctx, st.VIPs)
	a := r.newIDs()
	plans := make([]vipPlan, len(st.VIPs))
	want := make(map[loader.VIPKey]bool, len(st.VIPs))
	for i, v := range st.VIPs {
		plans[i] = planVIP(v, r.maps, a, r.judge(), loc)
		want[plans[i].key] = !plans[i].held
	}
	var removed []loader.VIPKey
	for _, k := range r.maps.vipsByID() {
		if !want[k] {
			removed = append(removed, k)
		}
	}
	r.retain(plans)
	decided := r.decide(plans)
	failed, err := r.apply(diff(r.maps, plans, removed, true))
	errs := []error{err}

	r.vips = make(map[model.VIPID]*vipState, len(plans))
	live := map[netip.Addr]bool{}
	for i, p := range plans {
		decided[i].routed = p.routed() && !failed[p.v.ID()]
		r.vips[p.v.ID()] = decided[i]
		for _, a := range targetAddrs(&p.v) {
			live[a] = true
		}
		errs = append(errs, p.err)
	}
	maps.DeleteFunc(r.unresolved, func(a netip.Addr, _ bool) bool { return !live[a] })
	if r.net != nil {
		r.net.Forget(live)
	}
	errs = append(errs, r.announceVIPs(ctx, st, plans, failed, true), r.announceRoutes(ctx))
	return errors.Join(errs...)
}

// reconcileChanged is the pass after a change (see ReconcileChanged).
func (r *Reconciler) reconcileChanged(ctx context.Context, st model.State) error {
	r.health.Sync(st)
	next := make(map[model.VIPID]bool, len(st.VIPs))
	var changed []model.VIP
	for _, v := range st.VIPs {
		vid := v.ID()
		next[vid] = true
		if old, ok := r.vips[vid]; !ok || !model.EqualVIP(&old.v, &v) {
			changed = append(changed, v)
		}
	}
	var removed []loader.VIPKey
	for vid := range r.vips {
		if next[vid] {
			continue
		}
		delete(r.vips, vid)
		if _, ok := r.maps.vips[VIPKeyOf(vid)]; ok {
			removed = append(removed, VIPKeyOf(vid))
		}
	}
	slices.SortFunc(removed, func(a, b loader.VIPKey) int { return cmp.Compare(r.maps.vips[a].ID, r.maps.vips[b].ID) })

	loc := r.locate(ctx, changed)
	a := r.newIDs()
	plans := make([]vipPlan, len(changed))
	moved := false // a VIP came into the maps, or changed its address or announce flag
	for i, v := range changed {
		plans[i] = planVIP(v, r.maps, a, r.judge(), loc)
		_, inMaps := r.maps.vips[plans[i].key]
		if plans[i].held && inMaps {
			removed = append(removed, plans[i].key)
		}
		// A held VIP (a fullnat one that had no SNAT address) entering
		// the maps is announced now, not at the next full pass.
		if !plans[i].held && !inMaps {
			moved = true
		}
		old, ok := r.vips[v.ID()]
		if !ok || old.v.Address != v.Address || (old.v.Announce == nil) != (v.Announce == nil) ||
			old.v.Announce != nil && *old.v.Announce != *v.Announce {
			moved = true
		}
	}
	r.retain(plans)
	decided := r.decide(plans)
	failed, err := r.apply(diff(r.maps, plans, removed, false))
	errs := []error{err}
	for i, p := range plans {
		decided[i].routed = p.routed() && !failed[p.v.ID()]
		r.vips[p.v.ID()] = decided[i]
		errs = append(errs, p.err)
	}
	if announce := len(removed) > 0 || len(failed) > 0 || r.announce == nil || moved; announce {
		errs = append(errs, r.announceVIPs(ctx, st, plans, failed, false))
	}
	errs = append(errs, r.announceRoutes(ctx))
	return errors.Join(errs...)
}

// locate finds where the backends of vips are, in one batch per kind: DR
// backends by neighbour, NAT backends by route. Those found by an earlier
// pass since the last full one are taken as they were.
func (r *Reconciler) locate(ctx context.Context, vips []model.VIP) locator {
	var dr, nat addrBatch
	for _, v := range vips {
		for _, a := range targetAddrs(&v) {
			if v.Mode.IsNAT() {
				if _, cached := r.routes[a]; !cached {
					nat.add(a)
				}
			} else if _, cached := r.neigh[a]; !cached {
				dr.add(a)
			}
		}
	}
	var neighs map[netip.Addr]model.Resolution
	var routes map[netip.Addr]model.Route
	if r.net != nil && len(dr.addrs) > 0 {
		neighs = r.net.ResolveAll(ctx, dr.addrs)
	}
	if r.net != nil && len(nat.addrs) > 0 {
		routes = r.net.RouteAll(ctx, nat.addrs)
	}
	for _, a := range dr.addrs {
		if res := neighs[a]; res.Err == nil && res.MAC != nil {
			r.neigh[a] = res.Neighbour
		}
	}
	for _, a := range nat.addrs {
		if rt, ok := routes[a]; ok && rt.Err == nil {
			r.routes[a] = rt
		}
	}
	return locator{
		neigh: func(a netip.Addr) model.Resolution {
			if res, ok := neighs[a]; ok {
				return res
			}
			if nb, ok := r.neigh[a]; ok {
				return model.Resolution{Neighbour: nb}
			}
			return model.Resolution{Err: errNoNetwork}
		},
		route: func(a netip.Addr) model.Route {
			if rt, ok := routes[a]; ok {
				return rt
			}
			if rt, ok := r.routes[a]; ok {
				return rt
			}
			return model.Route{Err: errNoNetwork}
		},
	}
}

var errNoNetwork = errors.New("no network")

// targetAddrs is the addresses v forwards to: its backends' and its
// fallback's, unmapped.
func targetAddrs(v *model.VIP) []netip.Addr {
	out := make([]netip.Addr, 0, len(v.Backends)+1)
	for _, b := range v.Backends {
		out = append(out, b.Address.Unmap())
	}
	if v.Fallback != nil {
		out = append(out, v.Fallback.Address.Unmap())
	}
	return out
}

// addrBatch collects addresses to ask the network about, each once.
type addrBatch struct {
	seen  map[netip.Addr]bool
	addrs []netip.Addr
}

func (b *addrBatch) add(a netip.Addr) {
	if b.seen == nil {
		b.seen = map[netip.Addr]bool{}
	}
	if !b.seen[a] {
		b.seen[a] = true
		b.addrs = append(b.addrs, a)
	}
}

// announceVIPs asks the network to announce the VIPs of st that are in the
// maps: announced after the entries exist, withdrawn after they are gone.
// A pass after a change asks only when the set changed.
func (r *Reconciler) announceVIPs(ctx context.Context, st model.State, plans []vipPlan, failed map[model.VIPID]bool, always bool) error {
	if r.net == nil {
		return nil
	}
	skip := map[model.VIPID]bool{}
	for _, p := range plans {
		if p.err != nil || p.held || failed[p.v.ID()] {
			skip[p.v.ID()] = true
		}
	}
	want := map[netip.Addr]bool{}
	for _, v := range st.VIPs {
		if (v.Announce == nil || *v.Announce) && !skip[v.ID()] {
			want[v.Address] = want[v.Address] || v.Announce != nil
		}
	}
	if !always && r.announce != nil && maps.Equal(want, r.announce) {
		return nil
	}
	if err := r.net.Announce(ctx, want); err != nil {
		return fmt.Errorf("announce: %w", err)
	}
	r.announce = want
	return nil
}

// announceRoutes hands the router the addresses of the routed VIPs when
// they changed since it last took them (a VIP address with several ports
// is routed while any of its VIPs is).
func (r *Reconciler) announceRoutes(ctx context.Context) error {
	if r.router == nil {
		return nil
	}
	want := map[netip.Addr]bool{}
	for _, s := range r.vips {
		if s.routed {
			want[s.v.Address.Unmap()] = true
		}
	}
	if r.routed != nil && maps.Equal(want, r.routed) {
		return nil
	}
	if err := r.router.AnnounceRoutes(ctx, slices.SortedFunc(maps.Keys(want), netip.Addr.Compare)); err != nil {
		return fmt.Errorf("announce routes: %w", err)
	}
	r.routed = want
	return nil
}

// vipState is what the passes decided about a VIP.
//
// A vipState is not changed once in Reconciler.vips (each pass decides
// new ones), so Decisions shares them without a copy.
type vipState struct {
	v    model.VIP     // the config as reconciled (normalized: backends sorted)
	info []BackendInfo // by index of v.Backends; nil: the VIP was not planned
	up   []bool        // the health each backend had, likewise
	// snat is a fullnat VIP's SNAT address (invalid: none); noSNAT: none
	// can be found now (snat is then the last one, kept for open flows).
	snat   netip.Addr
	noSNAT bool
	// fallback is what was decided about the VIP's fallback (nil: none
	// configured, or the VIP was not planned); onFallback: it took the
	// VIP's new flows.
	fallback   *BackendInfo
	onFallback bool
	// pools are the pools whose backends take the VIP's new flows, best
	// first; none: its fallback takes them, or they are dropped.
	pools []uint32
	// routed: routers should send the VIP's traffic to this node (see
	// vipPlan.routed), and its entries were written.
	routed bool
	// retained are the backends removed from the config that keep their
	// entries for their open flows (retain.go).
	retained []RetainedBackend
}

// index finds a backend of s by its address and port as configured.
func (s *vipState) index(addr netip.Addr, port uint16) (int, bool) {
	if s == nil || s.info == nil {
		return 0, false
	}
	return slices.BinarySearchFunc(s.v.Backends, addr, func(b model.Backend, a netip.Addr) int {
		if c := b.Address.Compare(a); c != 0 {
			return c
		}
		return cmp.Compare(b.Port, port)
	})
}

func (s *vipState) activePools() ([]uint32, bool) {
	if s == nil || s.info == nil {
		return nil, false
	}
	return slices.Clone(s.pools), true
}

func (s *vipState) backend(addr netip.Addr, port uint16) (BackendInfo, bool) {
	if j, ok := s.index(addr, port); ok {
		return s.info[j], true
	}
	return BackendInfo{}, false
}

// decide turns plans into the VIPs' new states and logs, once per change,
// what they decide that an operator must know: a backend going down or
// coming back, one that cannot be resolved, a VIP without a healthy
// backend, a change of the pools that take a VIP's new flows.
func (r *Reconciler) decide(plans []vipPlan) []*vipState {
	out := make([]*vipState, len(plans))
	for i, p := range plans {
		vid := p.v.ID()
		ns := &vipState{v: p.v}
		out[i] = ns
		if p.err != nil {
			continue
		}
		ns.snat, ns.noSNAT = p.meta.SNATAddr, p.snatErr != nil
		ns.pools = p.pools
		ns.retained = retainedOf(&p)
		for _, b := range ns.retained {
			if old := r.vips[vid]; old == nil || !slices.Contains(old.retained, b) {
				r.log.Info("backend removed from the config keeps its open flows until they end", "vip", vid,
					"backend", model.BackendName(b.Addr, b.Port))
			}
		}
		ns.info, ns.up = make([]BackendInfo, len(p.backends)), make([]bool, len(p.backends))
		old := r.vips[vid]
		aligned := old != nil && old.info != nil && model.SameTargets(&old.v, &p.v)
		for j, bp := range p.backends {
			ns.info[j], ns.up[j] = bp.info, bp.up
			k, seen := j, aligned
			if !aligned {
				k, seen = old.index(bp.key.Addr, bp.key.Port)
			}
			r.logHealth(vid, bp.b, bp.up, seen, seen && old.up[k])
			r.logResolution(vid, bp, p.mode.IsNAT())
		}
		if p.fallback != nil {
			fb := p.fallback.info
			ns.fallback, ns.onFallback = &fb, p.onFallback
			r.logResolution(vid, *p.fallback, p.mode.IsNAT())
		}
		wasOnFallback := old != nil && old.onFallback
		switch noHealthy := p.meta.NoHealthy; {
		case p.held:
		case p.onFallback && !wasOnFallback:
			r.log.Warn("vip has no usable backend: new flows go to its fallback", "vip", vid, "fallback", p.fallback.key.Addr, "backends", p.active)
		case p.onFallback:
		case noHealthy && (!p.exists || !p.cur.NoHealthy):
			r.log.Warn("vip has no healthy backend: new flows are dropped", "vip", vid, "backends", p.active)
		case wasOnFallback && len(p.members) > 0:
			r.log.Info("vip has a usable backend again: new flows leave its fallback", "vip", vid)
		case !noHealthy && p.exists && p.cur.NoHealthy:
			r.log.Info("vip has a healthy backend again", "vip", vid)
		case p.meta.BackendsFull && (!p.exists || !p.cur.BackendsFull):
			r.log.Warn("every usable backend of the vip is full: new flows are dropped", "vip", vid, "backends", p.full)
		case !p.meta.BackendsFull && p.exists && p.cur.BackendsFull:
			r.log.Info("vip has a backend below its cap again", "vip", vid)
		}
		if old != nil && old.info != nil && !slices.Equal(old.pools, ns.pools) {
			r.logPools(vid, old.pools, ns.pools)
		}
		r.logSNAT(vid, old, ns, p.held, p.snatErr)
	}
	return out
}

// logSNAT logs, once per change, a fullnat VIP's SNAT address: the one it
// takes, a change (which resets the VIP's open connections: their
// translations name the old address), or none to be found.
func (r *Reconciler) logSNAT(vid model.VIPID, old, ns *vipState, held bool, err error) {
	var was netip.Addr
	wasMissing := false
	if old != nil {
		was, wasMissing = old.snat, old.noSNAT
	}
	switch {
	case ns.noSNAT && !wasMissing && held:
		r.log.Warn("fullnat vip left out of the data plane: it has no SNAT address", "vip", vid, "err", err)
	case ns.noSNAT && !wasMissing:
		r.log.Warn("fullnat vip has no SNAT address: new flows are dropped, open ones keep the last one", "vip", vid, "err", err)
	case !ns.noSNAT && wasMissing:
		r.log.Info("fullnat vip has a SNAT address again", "vip", vid, "snat_addr", ns.snat)
	}
	switch {
	case !ns.snat.IsValid() || ns.snat == was:
	case was.IsValid():
		r.log.Warn("fullnat vip SNAT address changed: its open connections are reset", "vip", vid, "from", was, "snat_addr", ns.snat)
	default:
		r.log.Info("fullnat vip SNAT address", "vip", vid, "snat_addr", ns.snat, "configured", ns.v.SNATAddr.IsValid())
	}
}

// logHealth logs a backend's health once per change (was: its health in
// the last pass, if seen): a backend that goes down (with the reason of
// its last check), comes back, or is new and waits for its first checks.
func (r *Reconciler) logHealth(vid model.VIPID, b model.Backend, up, seen, was bool) {
	if seen && was == up || !seen && up {
		return
	}
	st, _ := r.health.Status(vid, b)
	name := model.BackendName(b.Address.Unmap(), b.Port)
	switch {
	case !seen:
		r.log.Info("backend waits for its health checks before taking flows", "vip", vid, "backend", name)
	case up:
		r.log.Info("backend up", "vip", vid, "backend", name, "reason", st.Reason)
	default:
		r.log.Warn("backend down", "vip", vid, "backend", name, "reason", st.Reason)
	}
}

// logResolution logs a backend that cannot be resolved, and when it is
// again, once per address. A NAT backend needs no MAC: its route is what
// can be missing.
func (r *Reconciler) logResolution(vid model.VIPID, bp backendPlan, nat bool) {
	addr := bp.key.Addr
	switch {
	case nat && bp.res.Err == nil:
		if len(r.unresolved) > 0 && r.unresolved[addr] {
			delete(r.unresolved, addr)
			r.log.Info("backend route found", "vip", vid, "backend", addr, "iface", bp.res.Iface)
		}
	case bp.res.Err != nil || bp.res.MAC == nil:
		if !r.unresolved[addr] {
			r.unresolved[addr] = true
			if bp.res.Err != nil {
				r.log.Warn("backend unreachable", "vip", vid, "backend", addr, "err", bp.res.Err)
			} else {
				r.log.Info("backend MAC not resolved yet", "vip", vid, "backend", addr)
			}
		}
	case len(r.unresolved) > 0 && r.unresolved[addr]:
		delete(r.unresolved, addr)
		r.log.Info("backend MAC resolved", "vip", vid, "backend", addr, "mac", bp.res.MAC.String())
	}
}

// progress tells waiters which state generation the passes have reached.
type progress struct {
	mu   sync.Mutex
	gen  uint64        // the newest generation a finished pass read
	err  error         // that pass's error
	done chan struct{} // closed and replaced when a pass finishes
}

func (p *progress) finish(gen uint64, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if gen >= p.gen {
		p.gen, p.err = gen, err
	}
	close(p.done)
	p.done = make(chan struct{})
}

// Wait returns when a pass that read state generation gen, or a newer
// one, has finished, with that pass's error, or ctx's. Whoever changes the
// state waits so, for the loop (Run) to apply it: one trigger, one pass.
func (r *Reconciler) Wait(ctx context.Context, gen uint64) error {
	for {
		r.progress.mu.Lock()
		reached, err, done := r.progress.gen >= gen, r.progress.err, r.progress.done
		r.progress.mu.Unlock()
		if reached {
			return err
		}
		select {
		case <-done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
