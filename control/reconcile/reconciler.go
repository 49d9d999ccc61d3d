package reconcile

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"github.com/xdplb/xdplb/control/model"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

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
// a backend is and what its MAC is, and the VIP addresses announced on the
// segment. *netstack.Netlink implements it; tests use a fake.
type Network interface {
	// ResolveAll finds, for each DR backend address, the interface it is
	// reached through and its MAC. An address that is not on a directly
	// connected subnet of an attached interface is an error wrapping
	// model.ErrInvalid. An unknown MAC is not an error: MAC is nil and
	// resolution has been triggered.
	ResolveAll(ctx context.Context, addrs []netip.Addr) map[netip.Addr]model.Resolution
	// Announce makes the kernel answer ARP/NDP for exactly the addresses
	// in want (value true: announce even outside an attached subnet) among
	// those it manages; addresses the operator configured are never
	// touched.
	Announce(ctx context.Context, want map[netip.Addr]bool) error
	// Changes is signalled (coalesced) when a resolved backend's MAC
	// changes.
	Changes() <-chan struct{}
	// Forget stops following addresses that are no longer backends.
	Forget(keep map[netip.Addr]bool)
}

// state is the desired state, shared with the source: the reconciler, and
// the Health it hands it to, only read it.
func (r *Reconciler) state() model.State {
	st, _ := r.src.Snapshot()
	return st
}

// ReconcileInterval is how often the reconciler runs without being asked,
// as a safety net for missed events.
const ReconcileInterval = 5 * time.Second

// backendRef names a backend of a VIP as the maps know it: the port is
// the one in the map (0 means the VIP's port).
type backendRef struct {
	VIP  uint32
	Addr netip.Addr
	Port uint16
}

// BackendInfo is what the reconciler last decided about a backend.
type BackendInfo struct {
	ID    uint32
	State string // model.BackendUp, model.BackendDraining, model.BackendUnresolved, model.BackendDown
	MAC   string
	Iface string
}

type backendKey struct {
	VIP  model.VIPID
	Addr netip.Addr
	Port uint16
}

// Reconciler makes the data plane match the desired state. It is the only
// writer of the maps; it is level-triggered and idempotent: it reads what
// the maps hold and writes only what differs, so running it twice on the
// same input writes nothing the second time.
type Reconciler struct {
	src    Source
	dp     Datapath
	net    Network
	health Health
	log    *slog.Logger

	mu         sync.Mutex // one reconcile at a time; guards the fields below
	vipIDs     idAllocator
	backendIDs idAllocator
	unresolved map[netip.Addr]bool
	info       map[backendKey]BackendInfo
	healthUp   map[backendKey]bool // health of the last pass, to log each change once
	// tables holds, by VIP id, the backends whose table the map holds (nil:
	// no table), so that a pass rebuilds and rewrites only the tables whose
	// usable set changed. Unknown ids (a fresh daemon) are compared with
	// the map.
	tables map[uint32][]MaglevBackend
	// deferred are new VIPs of this pass whose table and entry wait for one
	// batched table write at the end of the pass (see flushDeferred).
	deferred []deferredVIP

	// What the maps hold after the last pass, valid while clean: a change
	// of the desired state then touches only the VIPs whose config
	// changed (ReconcileChanged) instead of reading and walking them all.
	clean bool
	// done: the last pass succeeded on the store's state number doneGen
	// (or a newer one); a pass after a change has nothing to do while
	// the number stays.
	done     bool
	doneGen  uint64
	last     map[model.VIPID]model.VIP        // config of every model.VIP as reconciled
	metas    map[loader.VIPKey]loader.VIPMeta // the model.VIP map
	kept     map[uint32][]loader.Backend      // backend entries by model.VIP id
	beUsed   map[uint32]bool                  // backend ids in use
	announce map[netip.Addr]bool              // last Announce request
	neigh    map[netip.Addr]model.Neighbour   // resolved backends, refreshed by every full pass
	pass     map[netip.Addr]model.Resolution  // resolutions of the running pass
	// passCached: the running pass takes neigh as resolved, without
	// copying it into pass (a change of one big VIP need not copy 1,000).
	passCached bool
	layouts    *maglevCache

	ok, failed atomic.Uint64
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
		unresolved: map[netip.Addr]bool{},
		info:       map[backendKey]BackendInfo{},
		healthUp:   map[backendKey]bool{},
		tables:     map[uint32][]MaglevBackend{},
		neigh:      map[netip.Addr]model.Neighbour{},
		layouts:    newMaglevCache(),
	}
}

// Counts returns how many reconciles succeeded and failed.
func (r *Reconciler) Counts() (ok, failed uint64) { return r.ok.Load(), r.failed.Load() }

// Backend returns what the last reconcile decided about a backend.
func (r *Reconciler) Backend(vip model.VIPID, addr netip.Addr, port uint16) (BackendInfo, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	bi, ok := r.info[backendKey{vip, addr.Unmap(), port}]
	return bi, ok
}

// HealthStatus is the health-check state of a backend; false when its VIP
// has no check.
func (r *Reconciler) HealthStatus(vip model.VIPID, b model.Backend) (healthcheck.Status, bool) {
	return r.health.Status(vip, b)
}

// Run reconciles on every state change, neighbour change, health change
// and ReconcileInterval until ctx is done. A health change is applied at
// once: a backend that fails leaves the lookup tables within one pass.
func (r *Reconciler) Run(ctx context.Context) {
	t := time.NewTicker(ReconcileInterval)
	defer t.Stop()
	stateCh := r.src.Subscribe()
	var netCh <-chan struct{}
	if r.net != nil {
		netCh = r.net.Changes()
	}
	healthCh := r.health.Changes()
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
		case <-t.C:
			err = r.Reconcile(ctx)
		}
		if err != nil && ctx.Err() == nil {
			r.log.Error("reconcile", "err", err)
		}
	}
}

// VIPKeyOf converts a VIP id to the data plane's key.
func VIPKeyOf(id model.VIPID) loader.VIPKey {
	p := loader.ProtoTCP
	if id.Protocol == model.UDP {
		p = loader.ProtoUDP
	}
	return loader.VIPKey{Addr: id.Addr.Unmap(), Port: id.Port, Proto: p}
}

// VIPIDOf converts a data plane key to a VIP id.
func VIPIDOf(k loader.VIPKey) model.VIPID {
	p := model.TCP
	if k.Proto == loader.ProtoUDP {
		p = model.UDP
	}
	return model.VIPID{Addr: k.Addr.Unmap(), Port: k.Port, Protocol: p}
}

func vipMeta(v model.VIP, id uint32, noHealthy bool) loader.VIPMeta {
	h := loader.HashMaglev
	if v.Scheduler == model.SchedSH {
		h = loader.HashSource
	}
	return loader.VIPMeta{ID: id, Mode: loader.ModeDR, Hash: h, NoHealthy: noHealthy}
}

// idAllocator hands out ids round-robin in 1..limit-1 rather than the
// lowest free one: a deleted backend's id is then reused as late as
// possible, so a connection-table entry it left behind rarely lands on a
// new backend of the same VIP.
type idAllocator struct {
	next uint32 // 0: not started; begins after the highest id found in the maps
}

func (a *idAllocator) alloc(used map[uint32]bool, limit uint32) (uint32, error) {
	if limit < 2 {
		return 0, fmt.Errorf("no ids below %d", limit)
	}
	if a.next == 0 {
		for id := range used {
			a.next = max(a.next, id)
		}
		a.next++
	}
	for range limit - 1 {
		id := a.next
		if id == 0 || id >= limit {
			id = 1
		}
		a.next = id + 1
		if !used[id] {
			used[id] = true
			return id, nil
		}
	}
	return 0, fmt.Errorf("all %d ids in use", limit-1)
}

func sameBackend(a, b loader.Backend) bool {
	return a.ID == b.ID && a.VIPID == b.VIPID && a.Addr == b.Addr && a.Port == b.Port &&
		a.Ifindex == b.Ifindex && slices.Equal(a.MAC, b.MAC) && slices.Equal(a.SrcMAC, b.SrcMAC) && a.Down == b.Down
}

// Reconcile runs one full pass and counts it in xdplb_reconciles_total: it
// reads the maps, the network and the health of every backend.
func (r *Reconciler) Reconcile(ctx context.Context) error {
	return r.run(ctx, false)
}

// ReconcileChanged runs a pass after a change of the desired state: when
// the last pass succeeded, it reconciles only the VIPs whose config
// differs from what that pass reconciled, from what it left in the maps,
// with the backends' neighbours as last resolved. Otherwise, it is a full
// pass. Network and health changes need full passes (Run does them).
func (r *Reconciler) ReconcileChanged(ctx context.Context) error {
	return r.run(ctx, true)
}

func (r *Reconciler) run(ctx context.Context, changedOnly bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	start := time.Now()
	var err error
	full := !changedOnly || !r.clean
	// A change wakes both the loop and the API call that made it: the
	// second finds the state reconciled by the first and has nothing to
	// do (a pass over an unchanged state still compares every VIP).
	_, gen := r.src.Snapshot()
	if !full && r.done && r.doneGen == gen {
		return nil
	}
	if full {
		err = r.reconcile(ctx)
	} else {
		err = r.reconcileChanged(ctx)
	}
	r.clean = err == nil
	// The pass read a state at least as new as gen: if it changed
	// meanwhile, the next call sees another number and runs.
	r.doneGen, r.done = gen, err == nil
	r.pass, r.passCached = nil, false
	if err != nil {
		r.failed.Add(1)
	} else {
		r.ok.Add(1)
	}
	r.log.Debug("reconciled", "full", full, "took", time.Since(start), "ok", err == nil)
	return err
}

// announceWant is what Announce is asked for st.
func announceWant(st model.State) map[netip.Addr]bool {
	announce := map[netip.Addr]bool{}
	for _, v := range st.VIPs {
		if v.Announce == nil || *v.Announce {
			announce[v.Address] = announce[v.Address] || v.Announce != nil
		}
	}
	return announce
}

// reconcileChanged is the incremental pass (see ReconcileChanged).
func (r *Reconciler) reconcileChanged(ctx context.Context) error {
	st := r.state()
	r.health.Sync(st)
	next := make(map[model.VIPID]model.VIP, len(st.VIPs))
	var changed []model.VIP
	for _, v := range st.VIPs {
		vid := v.ID()
		next[vid] = v
		if old, ok := r.last[vid]; !ok || !model.EqualVIP(&old, &v) {
			changed = append(changed, v)
		}
	}
	var errs []error
	// Removed VIPs first, as in a full pass.
	var removed []model.VIPID
	for vid := range r.last {
		if _, ok := next[vid]; !ok {
			removed = append(removed, vid)
		}
	}
	slices.SortFunc(removed, func(a, b model.VIPID) int { return model.CompareVIPID(a, b) })
	for _, vid := range removed {
		k := VIPKeyOf(vid)
		m, ok := r.metas[k]
		r.forgetInfo(r.last[vid])
		delete(r.last, vid)
		if !ok {
			continue
		}
		if err := r.dp.DeleteVIP(k); err != nil {
			errs = append(errs, fmt.Errorf("delete vip %s: %w", vid, err))
			continue
		}
		delete(r.metas, k)
		delete(r.tables, m.ID)
		if err := r.dp.DeleteLookupTable(m.ID); err != nil {
			errs = append(errs, fmt.Errorf("delete lookup table of vip %s: %w", vid, err))
		}
		for _, b := range r.kept[m.ID] {
			if err := r.dp.DeleteBackend(b.ID); err != nil {
				errs = append(errs, fmt.Errorf("delete backend %s of vip %s: %w", b.Addr, vid, err))
				continue
			}
			delete(r.beUsed, b.ID)
		}
		delete(r.kept, m.ID)
		r.log.Info("vip removed", "vip", vid)
	}

	// A VIP whose backends only changed weights or drain flags keeps its
	// backend entries: only its table and backend states move
	// (reweight). The rest take the whole way.
	rest := changed[:0:0]
	for _, v := range changed {
		done, err := r.reweight(v)
		if err != nil {
			errs = append(errs, err) // the next pass is full
		}
		if !done {
			rest = append(rest, v)
		}
	}
	changed = rest

	r.prefetch(ctx, changed, true)
	var vipUsed map[uint32]bool // built when a new model.VIP needs an id
	// Announce asks the same while no VIP came or went, nor changed its
	// address or announce flag.
	announce := len(removed) > 0
	liveAddrs := map[netip.Addr]bool{}
	for _, v := range changed {
		vid := v.ID()
		key := VIPKeyOf(vid)
		if old, ok := r.last[vid]; !ok || old.Address != v.Address || (old.Announce == nil) != (v.Announce == nil) || old.Announce != nil && *old.Announce != *v.Announce {
			announce = true
		}
		cur, exists := r.metas[key]
		id := cur.ID
		if !exists {
			if vipUsed == nil {
				vipUsed = make(map[uint32]bool, len(r.metas))
				for _, m := range r.metas {
					vipUsed[m.ID] = true
				}
			}
			var err error
			if id, err = r.vipIDs.alloc(vipUsed, r.dp.MaxVIPs()); err != nil {
				errs = append(errs, fmt.Errorf("vip %s: %w", vid, err))
				continue
			}
		}
		if old, ok := r.last[vid]; ok {
			// reconcileVIP replaces what it knew of the backends that
			// stay, and logHealth compares with their health.
			r.forgetGone(old, v)
		}
		curBackends := r.kept[id]
		beByRef := make(map[backendRef]loader.Backend, len(curBackends))
		for _, b := range curBackends {
			beByRef[backendRef{b.VIPID, b.Addr.Unmap(), b.Port}] = b
		}
		res, err := r.reconcileVIP(ctx, v, id, exists, cur, beByRef, curBackends, r.beUsed, r.info, r.healthUp, liveAddrs)
		if err != nil {
			// The maps are not what we know any more: the next pass is full.
			errs = append(errs, err)
			continue
		}
		r.remember(v, key, res)
	}
	if err := r.flushDeferred(); err != nil {
		// The maps are not what we remember: the next pass is full.
		errs = append(errs, err)
	}
	if !announce && r.announce != nil {
		return errors.Join(errs...)
	}
	if want := announceWant(st); r.net != nil && !maps.Equal(want, r.announce) {
		if err := r.net.Announce(ctx, want); err != nil {
			errs = append(errs, fmt.Errorf("announce: %w", err))
		} else {
			r.announce = want
		}
	}
	return errors.Join(errs...)
}

// reweight reconciles v when it differs from what the last pass
// reconciled only in its backends' weights and drain flags, and reports
// whether it did. Backend entries, MACs and ids stay as they are: the
// neighbours are taken as the last pass resolved them, as in any pass
// after a state change (a neighbour change runs a full pass of its own),
// and a backend whose health moved since sends v the whole way. What changes is the lookup table, the backends'
// states and the VIP's no-healthy flag, written in the order reconcileVIP
// writes them. A weight change on a VIP of 1,000 backends then costs its
// Maglev table, not the resolution and rewrite of 1,000 backends.
func (r *Reconciler) reweight(v model.VIP) (bool, error) {
	vid := v.ID()
	old, ok := r.last[vid]
	if !ok || !model.SameTargets(&old, &v) {
		return false, nil
	}
	key := VIPKeyOf(vid)
	cur, exists := r.metas[key]
	if !exists {
		return false, nil
	}
	type change struct {
		key backendKey
		bi  BackendInfo
	}
	var states []change
	maglev := make([]MaglevBackend, 0, len(v.Backends))
	active, healthy := 0, 0
	for _, b := range v.Backends {
		addr := b.Address.Unmap()
		k := backendKey{vid, addr, b.Port}
		bi, known := r.info[k]
		up, seen := r.healthUp[k]
		if !known || !seen || r.health.Up(vid, b) != up {
			// Not all decided by the last pass, or the health moved
			// since (its own pass may not have run yet): the whole way.
			return false, nil
		}
		drained := b.Weight == 0 || b.Drain
		if !drained {
			active++
			if up {
				healthy++
			}
		}
		if st := model.BackendState(drained, up, bi.MAC != ""); st != bi.State {
			bi.State = st
			states = append(states, change{k, bi})
		}
		if bi.State == model.BackendUp {
			port := b.Port
			if port == 0 {
				port = v.Port
			}
			maglev = append(maglev, MaglevBackend{ID: bi.ID, Key: MaglevKey(addr, port), Weight: b.Weight})
		}
	}
	noHealthy := active > 0 && healthy == 0
	meta := vipMeta(v, cur.ID, noHealthy)
	putMeta := func() error {
		if cur == meta {
			return nil
		}
		if noHealthy {
			r.log.Warn("vip has no healthy backend: new flows are dropped", "vip", vid, "backends", active)
		} else if cur.NoHealthy {
			r.log.Info("vip has a healthy backend again", "vip", vid)
		}
		if err := r.dp.PutVIP(key, meta); err != nil {
			return fmt.Errorf("put vip %s: %w", vid, err)
		}
		return nil
	}
	// As in reconcileVIP: without a table the entry first, so that new
	// flows are counted under the right reason; with one, the table first.
	var err error
	if len(maglev) == 0 {
		if err = putMeta(); err == nil {
			err = r.syncTable(cur.ID, vid, nil)
		}
	} else if err = r.syncTable(cur.ID, vid, maglev); err == nil {
		err = putMeta()
	}
	if err != nil {
		return true, err
	}
	for _, c := range states {
		r.info[c.key] = c.bi
	}
	r.remember(v, key, vipResult{meta: meta, kept: r.kept[cur.ID]})
	return true, nil
}

// forgetInfo drops what the last pass decided about v's backends.
func (r *Reconciler) forgetInfo(v model.VIP) {
	vid := v.ID()
	for _, b := range v.Backends {
		k := backendKey{vid, b.Address.Unmap(), b.Port}
		delete(r.info, k)
		delete(r.healthUp, k)
	}
}

// forgetGone drops what the last pass decided about the backends of old
// that v does not have.
func (r *Reconciler) forgetGone(old, v model.VIP) {
	type ref struct {
		addr netip.Addr
		port uint16
	}
	keep := make(map[ref]bool, len(v.Backends))
	for _, b := range v.Backends {
		keep[ref{b.Address.Unmap(), b.Port}] = true
	}
	vid := old.ID()
	for _, b := range old.Backends {
		if keep[ref{b.Address.Unmap(), b.Port}] {
			continue
		}
		k := backendKey{vid, b.Address.Unmap(), b.Port}
		delete(r.info, k)
		delete(r.healthUp, k)
	}
}

// remember records what reconcileVIP left in the maps for v.
func (r *Reconciler) remember(v model.VIP, key loader.VIPKey, res vipResult) {
	r.last[v.ID()] = v
	r.metas[key] = res.meta
	for _, b := range r.kept[res.meta.ID] {
		delete(r.beUsed, b.ID)
	}
	for _, b := range res.kept {
		r.beUsed[b.ID] = true
	}
	r.kept[res.meta.ID] = res.kept
}

// prefetch resolves, in one batch when the network can, the backends of vips
// that the running pass will ask for; cached: addresses resolved by an
// earlier pass are taken as they were.
func (r *Reconciler) prefetch(ctx context.Context, vips []model.VIP, cached bool) {
	r.pass, r.passCached = map[netip.Addr]model.Resolution{}, cached
	var addrs []netip.Addr
	for _, v := range vips {
		for _, b := range v.Backends {
			a := b.Address.Unmap()
			if _, ok := r.pass[a]; ok {
				continue
			}
			if _, ok := r.neigh[a]; ok && cached {
				continue // resolve finds it in neigh
			}
			r.pass[a] = model.Resolution{} // placeholder: to resolve
			addrs = append(addrs, a)
		}
	}
	for _, a := range addrs {
		delete(r.pass, a)
	}
	if r.net == nil || len(addrs) == 0 {
		return
	}
	for a, res := range r.net.ResolveAll(ctx, addrs) {
		r.pass[a] = res
		if res.Err == nil && res.MAC != nil {
			r.neigh[a] = res.Neighbour
		} else {
			delete(r.neigh, a)
		}
	}
}

func (r *Reconciler) reconcile(ctx context.Context) error {
	st := r.state()
	r.health.Sync(st)
	// A full pass re-reads the network: start the neighbour cache afresh.
	r.neigh = map[netip.Addr]model.Neighbour{}
	r.prefetch(ctx, st.VIPs, false)
	r.last = make(map[model.VIPID]model.VIP, len(st.VIPs))
	r.metas = make(map[loader.VIPKey]loader.VIPMeta, len(st.VIPs))
	r.kept = make(map[uint32][]loader.Backend, len(st.VIPs))
	r.announce = nil
	curVIPs, err := r.dp.VIPs()
	if err != nil {
		return fmt.Errorf("read vips: %w", err)
	}
	curBackends, err := r.dp.Backends()
	if err != nil {
		return fmt.Errorf("read backends: %w", err)
	}

	// Ids kept from the maps, so a restarted daemon keeps them and the
	// connection table stays valid.
	vipUsed, vipUsedBefore := map[uint32]bool{}, map[uint32]bool{}
	for _, m := range curVIPs {
		vipUsed[m.ID] = true
		vipUsedBefore[m.ID] = true
	}
	beUsed := map[uint32]bool{}
	beByRef := map[backendRef]loader.Backend{}
	beByVIP := map[uint32][]loader.Backend{} // by id order: deletes are deterministic
	beSorted := sortedBackends(curBackends)
	for _, b := range beSorted {
		beUsed[b.ID] = true
		beByRef[backendRef{b.VIPID, b.Addr.Unmap(), b.Port}] = b
		beByVIP[b.VIPID] = append(beByVIP[b.VIPID], b)
	}

	r.beUsed = beUsed
	var errs []error
	want := map[loader.VIPKey]bool{}
	for _, v := range st.VIPs {
		want[VIPKeyOf(v.ID())] = true
	}

	// Removed VIPs first: entry, then table, then backends, so no packet
	// finds a VIP whose table or backends are gone.
	for _, k := range sortedKeys(curVIPs) {
		if want[k] {
			continue
		}
		m := curVIPs[k]
		if err := r.dp.DeleteVIP(k); err != nil {
			errs = append(errs, fmt.Errorf("delete vip %s: %w", VIPIDOf(k), err))
			continue
		}
		delete(r.tables, m.ID)
		if err := r.dp.DeleteLookupTable(m.ID); err != nil {
			errs = append(errs, fmt.Errorf("delete lookup table of vip %s: %w", VIPIDOf(k), err))
		}
		for _, b := range beByVIP[m.ID] {
			if err := r.dp.DeleteBackend(b.ID); err != nil {
				errs = append(errs, fmt.Errorf("delete backend %s of vip %s: %w", b.Addr, VIPIDOf(k), err))
			}
		}
		r.log.Info("vip removed", "vip", VIPIDOf(k))
	}

	info := map[backendKey]BackendInfo{}
	healthUp := map[backendKey]bool{}
	vipIDs := map[uint32]bool{} // ids of the VIPs in the maps after this pass
	announce := map[netip.Addr]bool{}
	liveAddrs := map[netip.Addr]bool{}
	for _, v := range st.VIPs {
		vid := v.ID()
		key := VIPKeyOf(vid)
		cur, exists := curVIPs[key]
		id := cur.ID
		if !exists {
			if id, err = r.vipIDs.alloc(vipUsed, r.dp.MaxVIPs()); err != nil {
				errs = append(errs, fmt.Errorf("vip %s: %w", vid, err))
				continue
			}
		}
		vipIDs[id] = true
		res, err := r.reconcileVIP(ctx, v, id, exists, cur, beByRef, beByVIP[id], beUsed, info, healthUp, liveAddrs)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		r.remember(v, key, res)
		if v.Announce == nil || *v.Announce {
			announce[vid.Addr] = announce[vid.Addr] || v.Announce != nil
		}
	}
	if err := r.flushDeferred(); err != nil {
		errs = append(errs, err)
	}
	// Backends of a VIP id that has no VIP entry are left over from an
	// interrupted pass (backends are written before their VIP).
	for _, b := range beSorted {
		if vipIDs[b.VIPID] || vipUsedBefore[b.VIPID] {
			continue
		}
		if err := r.dp.DeleteBackend(b.ID); err != nil {
			errs = append(errs, fmt.Errorf("delete orphan backend %d: %w", b.ID, err))
		}
	}
	r.info, r.healthUp = info, healthUp
	for id := range r.tables {
		if !vipIDs[id] {
			delete(r.tables, id)
		}
	}
	for a := range r.unresolved {
		if !liveAddrs[a] {
			delete(r.unresolved, a)
		}
	}
	if r.net != nil {
		r.net.Forget(liveAddrs)
	}
	// Announce after the VIP entries exist, withdraw after they are gone.
	if r.net != nil {
		if err := r.net.Announce(ctx, announce); err != nil {
			errs = append(errs, fmt.Errorf("announce: %w", err))
		} else {
			r.announce = announce
		}
	}
	return errors.Join(errs...)
}

// reconcileVIP writes one VIP: backends, then lookup table, then the VIP
// entry; backends that left the VIP are deleted last, once the new table no
// longer points at them, and so are the Down flags of backends that just
// failed: no packet finds a table slot that names a backend marked down.
//
// A backend is usable (in the table) when it is resolved, not drained and
// passes its checks. One that fails its checks keeps its entry, marked Down
// (its flows are placed again by the data plane); a drained one keeps its
// entry as is (its flows continue). When every configured, not drained
// backend fails, the VIP has no table and is marked NoHealthy.
// deferredVIP is a new VIP whose backends are written; its table and then
// its entry are published by flushDeferred.
type deferredVIP struct {
	id       uint32
	vid      model.VIPID
	backends []MaglevBackend
	table    []uint32
	putMeta  func() error
}

// flushDeferred writes the tables of the pass's new VIPs in one batch, then
// their entries: a VIP is never visible before its table.
func (r *Reconciler) flushDeferred() error {
	pending := r.deferred
	r.deferred = nil
	if len(pending) == 0 {
		return nil
	}
	tables := make(map[uint32][]uint32, len(pending))
	for _, d := range pending {
		tables[d.id] = d.table
	}
	if err := r.dp.PutLookupTables(tables); err != nil {
		return fmt.Errorf("put %d lookup tables: %w", len(tables), err)
	}
	var errs []error
	for _, d := range pending {
		r.tables[d.id] = slices.Clone(d.backends)
		if err := d.putMeta(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// vipResult is what reconcileVIP left in the maps.
type vipResult struct {
	meta loader.VIPMeta
	kept []loader.Backend // the model.VIP's backend entries
}

func (r *Reconciler) reconcileVIP(ctx context.Context, v model.VIP, id uint32, exists bool, cur loader.VIPMeta,
	beByRef map[backendRef]loader.Backend, curBackends []loader.Backend, beUsed map[uint32]bool,
	info map[backendKey]BackendInfo, healthUp map[backendKey]bool, liveAddrs map[netip.Addr]bool) (vipResult, error) {
	vid := v.ID()
	var errs []error
	var kept []loader.Backend
	var maglev []MaglevBackend
	var late []loader.Backend // entries going down, written after the table
	keep := make(map[uint32]bool, len(v.Backends))
	active, healthy := 0, 0 // backends not drained; of them, passing checks
	put := func(b loader.Backend, wasUp bool) error {
		if b.Down && wasUp {
			late = append(late, b)
			return nil
		}
		return r.dp.PutBackend(b)
	}
	for _, b := range v.Backends {
		addr := b.Address.Unmap()
		liveAddrs[addr] = true
		key := backendKey{vid, addr, b.Port}
		ref := backendRef{id, addr, b.Port}
		old, had := beByRef[ref]
		bid := old.ID
		drained := b.Weight == 0 || b.Drain
		up := r.health.Up(vid, b)
		r.logHealth(vid, b, key, up)
		healthUp[key] = up
		if !drained {
			active++
			if up {
				healthy++
			}
		}
		bi := BackendInfo{ID: bid}
		nb, rerr := r.resolve(ctx, addr)
		if rerr != nil || nb.MAC == nil {
			bi.State = model.BackendState(drained, up, false)
			if !r.unresolved[addr] {
				r.unresolved[addr] = true
				if rerr != nil {
					r.log.Warn("backend unreachable", "vip", vid, "backend", addr, "err", rerr)
				} else {
					r.log.Info("backend MAC not resolved yet", "vip", vid, "backend", addr)
				}
			}
			if had {
				// Keep the entry (last known MAC) for its open flows; it
				// only leaves the table, and follows the checks.
				keep[bid] = true
				want := old
				if old.Down == up {
					want.Down = !up
					if err := put(want, !old.Down); err != nil {
						errs = append(errs, fmt.Errorf("put backend %s of vip %s: %w", addr, vid, err))
					}
				}
				kept = append(kept, want)
			}
			info[key] = bi
			continue
		}
		if !had {
			// Only a resolved backend takes an id: one that stays
			// unresolved must not move the allocator on every pass.
			var err error
			if bid, err = r.backendIDs.alloc(beUsed, r.dp.MaxBackends()); err != nil {
				errs = append(errs, fmt.Errorf("vip %s backend %s: %w", vid, addr, err))
				continue
			}
			bi.ID = bid
		}
		if r.unresolved[addr] {
			delete(r.unresolved, addr)
			r.log.Info("backend MAC resolved", "vip", vid, "backend", addr, "mac", nb.MAC.String())
		}
		bi.MAC, bi.Iface = nb.MAC.String(), nb.Iface
		want := loader.Backend{ID: bid, VIPID: id, Addr: addr, Port: b.Port,
			MAC: nb.MAC, SrcMAC: nb.SrcMAC, Ifindex: uint32(nb.Ifindex), Down: !up}
		keep[bid] = true
		kept = append(kept, want)
		if !had || !sameBackend(old, want) {
			if err := put(want, had && !old.Down); err != nil {
				errs = append(errs, fmt.Errorf("put backend %s of vip %s: %w", addr, vid, err))
				info[key] = BackendInfo{ID: bid, State: model.BackendUnresolved}
				continue
			}
		}
		bi.State = model.BackendState(drained, up, true)
		if bi.State == model.BackendUp {
			port := b.Port
			if port == 0 {
				port = v.Port
			}
			maglev = append(maglev, MaglevBackend{ID: bid, Key: MaglevKey(addr, port), Weight: b.Weight})
		}
		info[key] = bi
	}
	if len(errs) > 0 {
		// Leave the table and entry as they are rather than publish a
		// table over backends that were not written.
		return vipResult{}, errors.Join(errs...)
	}

	noHealthy := active > 0 && healthy == 0
	if noHealthy && (!exists || !cur.NoHealthy) {
		r.log.Warn("vip has no healthy backend: new flows are dropped", "vip", vid, "backends", active)
	} else if !noHealthy && exists && cur.NoHealthy {
		r.log.Info("vip has a healthy backend again", "vip", vid)
	}
	meta := vipMeta(v, id, noHealthy)
	putMeta := func() error {
		if exists && cur == meta {
			return nil
		}
		if err := r.dp.PutVIP(VIPKeyOf(vid), meta); err != nil {
			return fmt.Errorf("put vip %s: %w", vid, err)
		}
		if !exists {
			r.log.Info("vip added", "vip", vid, "id", id)
		}
		return nil
	}
	if len(maglev) == 0 {
		// The VIP entry first, so that packets of new flows are counted
		// under the right reason as soon as the table is gone.
		if err := putMeta(); err != nil {
			return vipResult{}, err
		}
		if err := r.syncTable(id, vid, nil); err != nil {
			return vipResult{}, err
		}
	} else if !exists && len(late) == 0 {
		// A new VIP: its backends are written; its table joins the
		// pass's batch and its entry follows it (flushDeferred).
		r.deferred = append(r.deferred, deferredVIP{id: id, vid: vid, backends: maglev,
			table: r.layouts.build(maglev, r.dp.LookupTableSize()), putMeta: putMeta})
	} else {
		if err := r.syncTable(id, vid, maglev); err != nil {
			return vipResult{}, err
		}
		if err := putMeta(); err != nil {
			return vipResult{}, err
		}
	}

	for _, b := range late {
		if err := r.dp.PutBackend(b); err != nil {
			errs = append(errs, fmt.Errorf("put backend %s of vip %s: %w", b.Addr, vid, err))
		}
	}
	for _, b := range curBackends {
		if !keep[b.ID] {
			if err := r.dp.DeleteBackend(b.ID); err != nil {
				errs = append(errs, fmt.Errorf("delete backend %s of vip %s: %w", b.Addr, vid, err))
			}
		}
	}
	return vipResult{meta: meta, kept: kept}, errors.Join(errs...)
}

// syncTable makes VIP id's lookup table the Maglev table of backends (none:
// no table). When the backends are those of the table this reconciler last
// wrote, it neither reads the map nor builds the table: a health change on
// one VIP costs one table, not one per VIP.
func (r *Reconciler) syncTable(id uint32, vid model.VIPID, backends []MaglevBackend) error {
	last, known := r.tables[id]
	if known && slices.Equal(last, backends) {
		return nil
	}
	delete(r.tables, id) // unknown until written
	// The map holds the table of last when it is known: a new set of
	// backends makes a new table, so only an unknown table is read (a
	// whole map of LookupTableSize entries) to spare a write.
	var curTable []uint32
	if !known {
		var err error
		if curTable, err = r.dp.LookupTable(id); err != nil {
			return fmt.Errorf("read lookup table of vip %s: %w", vid, err)
		}
	}
	if len(backends) == 0 {
		if curTable != nil || known && last != nil {
			// Packets of new flows are dropped either way; no table
			// saves a map of LookupTableSize entries.
			if err := r.dp.DeleteLookupTable(id); err != nil {
				return fmt.Errorf("delete lookup table of vip %s: %w", vid, err)
			}
		}
		r.tables[id] = nil
		return nil
	}
	table := r.layouts.build(backends, r.dp.LookupTableSize())
	if known || !slices.Equal(curTable, table) {
		if err := r.dp.PutLookupTable(id, table); err != nil {
			return fmt.Errorf("put lookup table of vip %s: %w", vid, err)
		}
	}
	r.tables[id] = slices.Clone(backends)
	return nil
}

// logHealth logs a backend's health once per change: a backend that goes
// down (with the reason of its last check), comes back, or is new and
// waits for its first checks.
func (r *Reconciler) logHealth(vid model.VIPID, b model.Backend, key backendKey, up bool) {
	prev, seen := r.healthUp[key]
	if seen && prev == up || !seen && up {
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

// resolve resolves addr once per pass (many VIPs share backends).
func (r *Reconciler) resolve(ctx context.Context, addr netip.Addr) (model.Neighbour, error) {
	if r.net == nil {
		return model.Neighbour{}, errors.New("no network")
	}
	if res, ok := r.pass[addr]; ok {
		return res.Neighbour, res.Err
	}
	if nb, ok := r.neigh[addr]; ok && r.passCached {
		return nb, nil
	}
	res := r.net.ResolveAll(ctx, []netip.Addr{addr})[addr]
	nb, err := res.Neighbour, res.Err
	if r.pass != nil {
		r.pass[addr] = res
	}
	if err == nil && nb.MAC != nil {
		r.neigh[addr] = nb
	} else {
		delete(r.neigh, addr)
	}
	return nb, err
}

func sortedKeys(m map[loader.VIPKey]loader.VIPMeta) []loader.VIPKey {
	out := make([]loader.VIPKey, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.SortFunc(out, func(a, b loader.VIPKey) int { return cmp.Compare(m[a].ID, m[b].ID) })
	return out
}

func sortedBackends(m map[uint32]loader.Backend) []loader.Backend {
	out := make([]loader.Backend, 0, len(m))
	for _, b := range m {
		out = append(out, b)
	}
	slices.SortFunc(out, func(a, b loader.Backend) int { return cmp.Compare(a.ID, b.ID) })
	return out
}
