package reconcile

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/loader"
)

// vipPlan is what the maps should hold for one VIP.
type vipPlan struct {
	v      model.VIP
	key    loader.VIPKey
	mode   loader.ForwardMode
	exists bool           // the VIP has an entry in the maps
	cur    loader.VIPMeta // that entry
	meta   loader.VIPMeta // the entry it should have
	// snatErr says why no SNAT address can be found for a fullnat VIP:
	// none of its backends is usable, and meta.SNATAddr is the one its
	// entry had, kept for its open flows. held: it had none either, and
	// the VIP is kept out of the maps (the data plane takes no fullnat VIP
	// without one) until it has one.
	snatErr error
	held    bool
	// backends are the VIP's backends in config order; those with an
	// entry make up the VIP's backend entries.
	backends []backendPlan
	members  []MaglevBackend      // the lookup table's backends; none: no table
	retained []loader.Backend     // entries left by backends removed from the config, kept for their open flows (retain.go)
	serving  []uint32             // the ids of those that take new flows still (serveRetained)
	set      []loader.SchedMember // the backend set of an rr, wrr, lc or wlc VIP: the members; nil: none
	active   int                  // backends not drained
	pools    []uint32             // the pools whose backends are members, best first (see pools.go)
	full     int                  // backends that would be members but for their connection cap
	// fallback is the VIP's fallback server (nil: none), planned as a
	// backend that is never down; onFallback: it is the table's only
	// member, none of the backends being usable.
	fallback   *backendPlan
	onFallback bool
	err        error // no id could be had: nothing is written for the VIP
}

// backendPlan is one backend of a VIP: its entry, and what `backend list`
// shows of it.
type backendPlan struct {
	b        model.Backend
	key      backendKey
	entry    loader.Backend // valid when hasEntry
	hasEntry bool
	old      loader.Backend // the entry in the maps, when had
	had      bool
	up       bool
	res      model.Resolution // a NAT backend's route as a Resolution without MACs
	blocked  error            // its VIP cannot use it whatever res says (a fullnat VIP without SNAT address)
	resolved bool             // usable for new flows, as far as the network goes
	info     BackendInfo
}

// backendKey names a backend of a VIP as the configuration does.
type backendKey struct {
	VIP  model.VIPID
	Addr netip.Addr
	Port uint16
}

// judge says what, besides the config and the network, decides whether a
// backend takes new flows: its health checks (up) and its connection cap
// (full: at max_conns, not yet back at max_conns_min).
type judge struct {
	up   func(model.VIPID, model.Backend) bool
	full func(model.VIPID, model.Backend) bool
}

// locator is where the network says backends are: a DR backend by its
// neighbour, a NAT backend by its route.
type locator struct {
	neigh func(netip.Addr) model.Resolution
	route func(netip.Addr) model.Route
}

// planVIP decides what the maps should hold for v: given the health and
// the connection caps of its backends (j), where they are (loc) and what
// the maps hold now (m); new VIPs and backends take their ids from a.
//
// A backend is usable (in the table) when it is resolved, not drained,
// passes its checks and is not full (at its connection cap). Resolved is,
// for DR, a known MAC; for NAT, a route through an attached interface (the
// program looks the next hop up in the FIB) and, for fullnat, a SNAT
// address for the VIP. The usable backends of the pools that take new
// flows make up the table (see pools.go); those of the other pools stand
// by. One that fails its checks keeps its entry, marked Down (its flows are
// placed again by the data plane); a drained or full one keeps its entry as
// is (its flows continue); an unresolved one keeps the entry it has (last
// known MAC) for its open flows, and only a resolved backend takes a new
// id: one that stays unresolved must not move the allocator on every pass.
// When every configured, not drained backend fails, the VIP has no table
// and is marked NoHealthy, unless it has a fallback (see planFallback);
// when every one that could take flows is full, it is marked BackendsFull,
// likewise. A fullnat VIP without any SNAT address (none of its own, none
// found, none in its entry) is held: nothing of it is written, and the
// caller removes it from the maps.
func planVIP(v model.VIP, m *mirror, a *ids, j judge, loc locator) vipPlan {
	vid := v.ID()
	p := vipPlan{v: v, key: VIPKeyOf(vid), mode: ForwardMode(v.Mode)}
	p.cur, p.exists = m.vips[p.key]
	snat := p.snatAddr(loc.route)
	p.held = p.mode == loader.ModeFullNAT && !snat.IsValid()
	id := p.cur.ID
	if !p.exists && !p.held {
		var err error
		if id, err = a.vip(); err != nil {
			p.err = err
			return p
		}
	}
	healthy := 0
	p.backends = make([]backendPlan, 0, len(v.Backends))
	for _, b := range v.Backends {
		addr := b.Address.Unmap()
		// Filled in place: a backendPlan is big, and a VIP may have thousands.
		p.backends = append(p.backends, backendPlan{b: b, key: backendKey{vid, addr, b.Port}, up: j.up(vid, b)})
		bp := &p.backends[len(p.backends)-1]
		p.locate(bp, loc)
		drained := b.Drained()
		if !drained {
			p.active++
			if bp.up {
				healthy++
			}
		}
		bp.info = BackendInfo{State: model.BackendState(drained, bp.up, bp.resolved), Iface: bp.res.Iface, Reason: bp.reason()}
		if bp.info.State == model.BackendUp && j.full != nil && j.full(vid, b) {
			bp.info.State = model.BackendFull
			p.full++
		}
		if p.held {
			continue // nothing of the VIP is written
		}
		if p.err = p.placeEntry(bp, id, m, a); p.err != nil {
			return p
		}
	}
	p.choosePools()
	if v.Fallback != nil {
		if p.planFallback(*v.Fallback, id, m, a, loc); p.err != nil {
			return p
		}
	}
	if !p.held {
		noHealthy := p.active > 0 && healthy == 0 && !p.onFallback
		p.meta = vipMeta(v, id, noHealthy, snat)
		p.meta.BackendsFull = !noHealthy && len(p.members) == 0 && p.full > 0
		p.planSet()
	}
	return p
}

// routed reports whether routers should send the VIP's traffic to this
// node (BGP): it is in the maps and its new flows go somewhere, to a
// usable backend or to its fallback, or its backends that would take
// them are only full (at their connection cap: a passing load that
// must not move the routers' ECMP choices), or every backend is drained
// (their open flows go on here). A VIP without a healthy (or resolved)
// backend nor fallback is not: its new flows are better taken by a node
// that has one. The caller also leaves out a VIP whose writes failed.
func (p *vipPlan) routed() bool {
	if p.err != nil || p.held {
		return false
	}
	return len(p.members) > 0 || p.full > 0 || p.active == 0 && len(p.backends) > 0
}

// planFallback plans the fallback f of the VIP (id in the maps) once its
// backends are planned. It is a backend of the VIP with its own entry and
// id, located as the backends are, and never down: it is not checked (a
// sorry server often answers everything with a 503). While resolved it
// keeps its entry, so that the flows it took keep going to it after a
// backend is usable again, as a drained backend's do; it is the whole
// table while no backend is usable (p.members is empty), and in no table
// otherwise.
func (p *vipPlan) planFallback(f model.Fallback, id uint32, m *mirror, a *ids, loc locator) {
	b := f.Backend()
	addr := b.Address.Unmap()
	fp := &backendPlan{b: b, key: backendKey{p.v.ID(), addr, b.Port}, up: true}
	p.fallback = fp
	p.locate(fp, loc)
	fp.info = BackendInfo{State: model.BackendUnresolved, Iface: fp.res.Iface, Reason: fp.reason()}
	if p.held {
		return
	}
	if p.err = p.placeEntry(fp, id, m, a); p.err != nil || !fp.resolved {
		return
	}
	fp.info.State = model.FallbackStandby
	if len(p.members) == 0 {
		p.members = []MaglevBackend{{ID: fp.info.ID, Key: MaglevKey(addr, p.v.BackendPort(b)), Weight: b.Weight}}
		p.onFallback = true
		fp.info.State = model.FallbackActive
	}
}

// placeEntry gives bp (of the VIP whose id in the maps is id) the entry it
// is to have: a resolved backend its own, with the id it has or a new one;
// an unresolved one the entry it had, if it can keep it (keptEntry).
func (p *vipPlan) placeEntry(bp *backendPlan, id uint32, m *mirror, a *ids) error {
	bp.old, bp.had = m.entry(backendRef{id, bp.key.Addr, bp.b.Port})
	bp.info.ID = bp.old.ID
	switch {
	case bp.resolved:
		bid := bp.old.ID
		if !bp.had {
			var err error
			if bid, err = a.backend(); err != nil {
				return err
			}
		}
		bp.entry, bp.hasEntry = p.backendEntry(bp, id, bid), true
		bp.info.ID, bp.info.MAC = bid, bp.entry.MAC
	case bp.had:
		bp.entry, bp.hasEntry = p.keptEntry(bp.old, bp.up)
	}
	return nil
}

// planned is every backend of p with a plan, the fallback last.
func (p *vipPlan) planned() []*backendPlan {
	out := make([]*backendPlan, 0, len(p.backends)+1)
	for i := range p.backends {
		out = append(out, &p.backends[i])
	}
	if p.fallback != nil {
		out = append(out, p.fallback)
	}
	return out
}

// locate fills in where bp is and whether that makes it usable. A
// fullnat VIP without a SNAT address has no usable backend: its packets
// could not be translated.
func (p *vipPlan) locate(bp *backendPlan, loc locator) {
	addr := bp.key.Addr
	if !p.mode.IsNAT() {
		bp.res = loc.neigh(addr)
		bp.resolved = bp.res.Err == nil && bp.res.MAC != nil
		return
	}
	rt := loc.route(addr)
	bp.res = model.Resolution{Neighbour: model.Neighbour{Ifindex: rt.Ifindex, Iface: rt.Iface}, Err: rt.Err}
	bp.blocked = p.snatErr
	bp.resolved = bp.res.Err == nil && bp.blocked == nil
}

// reason says why bp is not resolved ("" when it is).
func (bp *backendPlan) reason() string {
	switch {
	case bp.resolved:
		return ""
	case bp.res.Err != nil:
		return bp.res.Err.Error()
	case bp.blocked != nil:
		return bp.blocked.Error()
	default:
		return "MAC not resolved yet"
	}
}

// backendEntry is the entry of a resolved backend: a NAT backend needs no
// MAC nor interface, the program asks the FIB per packet.
func (p *vipPlan) backendEntry(bp *backendPlan, vipID, id uint32) loader.Backend {
	e := loader.Backend{ID: id, VIPID: vipID, Addr: bp.key.Addr, Port: bp.b.Port, Mode: p.mode, Down: !bp.up}
	if !p.mode.IsNAT() {
		nb := bp.res.Neighbour
		e.MAC, e.SrcMAC, e.Ifindex = nb.MAC, nb.SrcMAC, uint32(nb.Ifindex)
	}
	return e
}

// keptEntry is the entry an unresolved backend keeps for its open flows:
// the one it has, in the VIP's mode, down as its checks say. A DR entry
// needs the MAC it was written with; one written for NAT has none, and
// is not kept (its flows are placed again).
func (p *vipPlan) keptEntry(old loader.Backend, up bool) (loader.Backend, bool) {
	e := old
	e.Mode, e.Down = p.mode, !up
	if p.mode.IsNAT() {
		e.MAC, e.SrcMAC, e.Ifindex = nil, nil, 0
		return e, true
	}
	return e, old.Mode == loader.ModeDR && hasMAC(old.MAC)
}

func hasMAC(m []byte) bool {
	for _, b := range m {
		if b != 0 {
			return true
		}
	}
	return false
}

// snatAddr is the SNAT address of a fullnat VIP (invalid for the other
// modes), and sets p.snatErr when there is none.
//
// Without a configured one, it is the primary address of the VIP's family
// on the egress interface of the route to the VIP's first backend that
// has such a route and address, in config order: the address this host's
// kernel would itself use toward the backends, so their network routes it
// back here already, and the LB answers ARP/NDP for it. A backend that
// sorts first only decides while it is reachable, so one lost route does
// not leave the VIP without an address. When none can be had, the VIP
// keeps the address its entry has, if any, for its open flows, as an
// unresolved backend keeps its last MAC.
func (p *vipPlan) snatAddr(route func(netip.Addr) model.Route) netip.Addr {
	v := &p.v
	if p.mode != loader.ModeFullNAT {
		return netip.Addr{}
	}
	if v.SNATAddr.IsValid() {
		return v.SNATAddr.Unmap()
	}
	is4 := v.Address.Unmap().Is4()
	bs := v.Backends
	if v.Fallback != nil {
		bs = append(slices.Clip(bs), v.Fallback.Backend())
	}
	for _, b := range bs {
		rt := route(b.Address.Unmap())
		if rt.Err == nil && rt.Primary.IsValid() && rt.Primary.Unmap().Is4() == is4 {
			return rt.Primary.Unmap()
		}
	}
	if len(bs) == 0 {
		p.snatErr = errors.New("no SNAT address until a backend is routed through an attached interface; or set one with --snat-addr")
	} else {
		p.snatErr = fmt.Errorf("no SNAT address: no backend is routed through an attached interface with an %s address; set one with --snat-addr",
			familyName(is4))
	}
	if p.exists && p.cur.Mode == loader.ModeFullNAT {
		return p.cur.SNATAddr
	}
	return netip.Addr{}
}

func familyName(is4 bool) string {
	if is4 {
		return "IPv4"
	}
	return "IPv6"
}

// ForwardMode is the data plane's mode of a VIP's.
func ForwardMode(m model.Mode) loader.ForwardMode {
	switch m {
	case model.ModeNAT:
		return loader.ModeNAT
	case model.ModeFullNAT:
		return loader.ModeFullNAT
	default:
		return loader.ModeDR
	}
}

func vipMeta(v model.VIP, id uint32, noHealthy bool, snat netip.Addr) loader.VIPMeta {
	return loader.VIPMeta{ID: id, Mode: ForwardMode(v.Mode), Hash: SchedKind(v.Scheduler), NoHealthy: noHealthy, SNATAddr: snat,
		RateLimit: loader.RateLimit{Rate: v.MaxNewFlows, Burst: v.MaxNewFlowsBurst}, Persistence: time.Duration(v.Persistence)}
}

// sameMeta reports whether a VIP entry read from the maps (a) is the
// planned one (b). The SNAT address counts for fullnat only: the others
// have none, however the maps spell that.
func sameMeta(a, b loader.VIPMeta) bool {
	if b.Mode != loader.ModeFullNAT {
		a.SNATAddr, b.SNATAddr = netip.Addr{}, netip.Addr{}
	}
	a.SNATAddr, b.SNATAddr = a.SNATAddr.Unmap(), b.SNATAddr.Unmap()
	return a == b
}
