package reconcile

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/loader"
)

// mirror is what the maps hold, as the reconciler last read or wrote
// them. A full pass reads the VIP and backend maps into it again; the
// lookup tables are too big to read on every pass, so it remembers, by VIP
// id, the backends each table was built from (nil: no table), and a table
// it does not know (a fresh daemon) is read once, when it is to be synced.
type mirror struct {
	vips     map[loader.VIPKey]loader.VIPMeta
	backends map[uint32]loader.Backend
	byVIP    map[uint32][]uint32 // backend ids by VIP id, ascending
	byRef    map[backendRef]uint32
	tables   map[uint32][]MaglevBackend
	// sets are the backend sets of rr, wrr, lc and wlc VIPs as written,
	// by VIP id (nil: known to have none); a set it does not know is
	// written when wanted, and one left by a VIP that changed its
	// scheduler while no daemon ran stays, unread (the VIP's scheduler
	// decides whether the data plane reads it).
	sets map[uint32][]loader.SchedMember
}

func newMirror() *mirror {
	return &mirror{
		vips:     map[loader.VIPKey]loader.VIPMeta{},
		backends: map[uint32]loader.Backend{},
		byVIP:    map[uint32][]uint32{},
		byRef:    map[backendRef]uint32{},
		tables:   map[uint32][]MaglevBackend{},
		sets:     map[uint32][]loader.SchedMember{},
	}
}

// read replaces the VIPs and backends of m by what dp holds. Known tables
// stay known while their VIP id is in use.
func (m *mirror) read(dp Datapath) error {
	vips, err := dp.VIPs()
	if err != nil {
		return fmt.Errorf("read vips: %w", err)
	}
	backends, err := dp.Backends()
	if err != nil {
		return fmt.Errorf("read backends: %w", err)
	}
	m.vips, m.backends = vips, backends
	m.byVIP = make(map[uint32][]uint32, len(vips))
	m.byRef = make(map[backendRef]uint32, len(backends))
	for _, id := range slices.Sorted(maps.Keys(backends)) {
		b := backends[id]
		m.byVIP[b.VIPID] = append(m.byVIP[b.VIPID], id)
		m.byRef[refOf(b)] = id
	}
	ids := make(map[uint32]bool, len(vips))
	for _, meta := range vips {
		ids[meta.ID] = true
	}
	maps.DeleteFunc(m.tables, func(id uint32, _ []MaglevBackend) bool { return !ids[id] })
	maps.DeleteFunc(m.sets, func(id uint32, _ []loader.SchedMember) bool { return !ids[id] })
	return nil
}

func (m *mirror) putBackend(b loader.Backend) {
	if old, ok := m.backends[b.ID]; ok {
		m.dropFromVIP(old.VIPID, b.ID)
		delete(m.byRef, refOf(old))
	}
	m.backends[b.ID] = b
	m.byRef[refOf(b)] = b.ID
	ids := m.byVIP[b.VIPID]
	if i, found := slices.BinarySearch(ids, b.ID); !found {
		m.byVIP[b.VIPID] = slices.Insert(ids, i, b.ID)
	}
}

func (m *mirror) deleteBackend(id uint32) {
	if b, ok := m.backends[id]; ok {
		m.dropFromVIP(b.VIPID, id)
		delete(m.byRef, refOf(b))
		delete(m.backends, id)
	}
}

func (m *mirror) dropFromVIP(vip, id uint32) {
	ids := m.byVIP[vip]
	if i, found := slices.BinarySearch(ids, id); found {
		ids = slices.Delete(ids, i, i+1)
	}
	if len(ids) == 0 {
		delete(m.byVIP, vip)
	} else {
		m.byVIP[vip] = ids
	}
}

// vipsByID is the VIP keys of m, by VIP id: deletes are deterministic.
func (m *mirror) vipsByID() []loader.VIPKey {
	keys := slices.Collect(maps.Keys(m.vips))
	slices.SortFunc(keys, func(a, b loader.VIPKey) int { return cmp.Compare(m.vips[a].ID, m.vips[b].ID) })
	return keys
}

// backendRef names a backend of a VIP as the maps know it: the port is
// the one in the map (0 means the VIP's port).
type backendRef struct {
	VIP  uint32
	Addr netip.Addr
	Port uint16
}

func refOf(b loader.Backend) backendRef { return backendRef{b.VIPID, b.Addr.Unmap(), b.Port} }

// entry is the backend entry of ref, if the maps have one.
func (m *mirror) entry(ref backendRef) (loader.Backend, bool) {
	id, ok := m.byRef[ref]
	if !ok {
		return loader.Backend{}, false
	}
	return m.backends[id], true
}

// ids allocates the VIP and backend ids of one pass: ids in the maps are
// in use, and so is every id the pass hands out, even when the pass
// deletes its entry later (a freed id is reused by a later pass only). The
// sets of ids in use are built on the first allocation: most passes
// allocate nothing, and the maps hold tens of thousands of backends.
type ids struct {
	m                    *mirror
	vips, backends       *idAllocator
	vipUsed, backendUsed map[uint32]bool
	maxVIPs, maxBackends uint32
}

func (r *Reconciler) newIDs() *ids {
	return &ids{m: r.maps, vips: &r.vipIDs, backends: &r.backendIDs, maxVIPs: r.dp.MaxVIPs(), maxBackends: r.dp.MaxBackends()}
}

func (a *ids) vip() (uint32, error) {
	if a.vipUsed == nil {
		a.vipUsed = make(map[uint32]bool, len(a.m.vips))
		for _, meta := range a.m.vips {
			a.vipUsed[meta.ID] = true
		}
	}
	return a.vips.alloc(a.vipUsed, a.maxVIPs)
}

func (a *ids) backend() (uint32, error) {
	if a.backendUsed == nil {
		a.backendUsed = make(map[uint32]bool, len(a.m.backends))
		for id := range a.m.backends {
			a.backendUsed[id] = true
		}
	}
	return a.backends.alloc(a.backendUsed, a.maxBackends)
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
