package reconcile

import (
	"net/netip"

	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/loader"
)

// vipPlan is what the maps should hold for one VIP.
type vipPlan struct {
	v      model.VIP
	key    loader.VIPKey
	exists bool           // the VIP has an entry in the maps
	cur    loader.VIPMeta // that entry
	meta   loader.VIPMeta // the entry it should have
	// backends are the VIP's backends in config order; those with an
	// entry make up the VIP's backend entries.
	backends []backendPlan
	members  []MaglevBackend // the lookup table's backends; none: no table
	active   int             // backends not drained
	err      error           // no id could be had: nothing is written for the VIP
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
	res      model.Resolution
	info     BackendInfo
}

// backendKey names a backend of a VIP as the configuration does.
type backendKey struct {
	VIP  model.VIPID
	Addr netip.Addr
	Port uint16
}

// planVIP decides what the maps should hold for v: given the health of its
// backends (up), where they are (res, by address) and what the maps hold
// now (m); new VIPs and backends take their ids from a.
//
// A backend is usable (in the table) when it is resolved, not drained and
// passes its checks. One that fails its checks keeps its entry, marked Down
// (its flows are placed again by the data plane); a drained one keeps its
// entry as is (its flows continue); an unresolved one keeps the entry it
// has (last known MAC) for its open flows, and only a resolved backend
// takes a new id: one that stays unresolved must not move the allocator on
// every pass. When every configured, not drained backend fails, the VIP
// has no table and is marked NoHealthy.
func planVIP(v model.VIP, m *mirror, a *ids, up func(model.VIPID, model.Backend) bool,
	res func(netip.Addr) model.Resolution) vipPlan {
	vid := v.ID()
	p := vipPlan{v: v, key: VIPKeyOf(vid)}
	p.cur, p.exists = m.vips[p.key]
	id := p.cur.ID
	if !p.exists {
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
		p.backends = append(p.backends, backendPlan{b: b, key: backendKey{vid, addr, b.Port}, up: up(vid, b), res: res(addr)})
		bp := &p.backends[len(p.backends)-1]
		bp.old, bp.had = m.entry(backendRef{id, addr, b.Port})
		drained := b.Drained()
		if !drained {
			p.active++
			if bp.up {
				healthy++
			}
		}
		resolved := bp.res.Err == nil && bp.res.MAC != nil
		bp.info = BackendInfo{ID: bp.old.ID, State: model.BackendState(drained, bp.up, resolved)}
		switch {
		case resolved:
			bid := bp.old.ID
			if !bp.had {
				var err error
				if bid, err = a.backend(); err != nil {
					p.err = err
					return p
				}
			}
			nb := bp.res.Neighbour
			bp.entry = loader.Backend{ID: bid, VIPID: id, Addr: addr, Port: b.Port,
				MAC: nb.MAC, SrcMAC: nb.SrcMAC, Ifindex: uint32(nb.Ifindex), Down: !bp.up}
			bp.hasEntry = true
			bp.info = BackendInfo{ID: bid, State: bp.info.State, MAC: nb.MAC, Iface: nb.Iface}
			if bp.info.State == model.BackendUp {
				p.members = append(p.members, MaglevBackend{ID: bid, Key: MaglevKey(addr, v.BackendPort(b)), Weight: b.Weight})
			}
		case bp.had:
			bp.entry, bp.hasEntry = bp.old, true
			bp.entry.Down = !bp.up // it follows the checks
		}
	}
	p.meta = vipMeta(v, id, p.active > 0 && healthy == 0)
	return p
}

func vipMeta(v model.VIP, id uint32, noHealthy bool) loader.VIPMeta {
	h := loader.HashMaglev
	if v.Scheduler == model.SchedSH {
		h = loader.HashSource
	}
	return loader.VIPMeta{ID: id, Mode: loader.ModeDR, Hash: h, NoHealthy: noHealthy}
}
