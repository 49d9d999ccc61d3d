package reconcile

import (
	"slices"

	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/loader"
)

// opKind is one kind of map write.
type opKind uint8

const (
	opPutBackend opKind = iota
	opDeleteBackend
	opPutTable    // a known table gets the table of members
	opSyncTable   // an unknown table is read, and written (or deleted, for no members) where it differs
	opDeleteTable // a known table goes
	opPutTables   // the tables of the pass's new VIPs, in one map update
	opPutVIP
	opDeleteVIP
	opPutSet    // a VIP's backend set (rr, wrr, lc, wlc)
	opDeleteSet // a known set goes
)

// Phases of a VIP's operations. A failure in phase early or entry skips
// the VIP's later entry and late operations: a table is never published
// over backends that were not written, nor an entry over a table that was
// not. Late operations (entries going down, deletes) that fail are
// reported and do not stop the others.
const (
	phaseEarly = iota // backend entries the new table may name
	phaseEntry        // the table, the VIP entry
	phaseLate         // entries going down, deletes
)

// op is one map write, of the VIP vip (a zero vip: an orphan backend).
type op struct {
	kind    opKind
	phase   int
	vip     model.VIPID
	key     loader.VIPKey
	meta    loader.VIPMeta       // opPutVIP; opDeleteVIP: the entry deleted
	backend loader.Backend       // opPutBackend; opDeleteBackend: the entry deleted
	id      uint32               // the VIP id of a table op
	members []MaglevBackend      // opPutTable, opSyncTable
	set     []loader.SchedMember // opPutSet
	batch   []tableWrite         // opPutTables
	added   bool                 // opPutVIP of a VIP new to the maps
}

type tableWrite struct {
	id      uint32
	vip     model.VIPID
	members []MaglevBackend
}

// diff is the ordered list of writes that make the maps (m) hold plans
// (held ones aside), with the VIPs of removed (in the order given)
// deleted; full: m was just read whole, and backends of a VIP id without
// an entry, left by an interrupted pass, are deleted too. It writes only what differs, so a
// second diff after applying the first is empty.
//
// Write order, so that no packet finds a VIP without its table, nor a
// table slot that names a missing or down backend:
//   - removed VIPs first: entry, then table, then backends;
//   - each VIP: its new and changed backend entries, then its lookup
//     table, then its entry; backends that left it are deleted last, once
//     the new table no longer points at them, and so are the Down flags of
//     backends that just failed (written after the table that drops
//     them). A VIP without a table has its entry written first, so that
//     packets of new flows are counted under the right reason as soon as
//     the table is gone;
//   - the tables of new VIPs in one batch after all VIPs (one RCU grace
//     period for them all), then their entries: a VIP is never visible
//     before its table;
//   - orphan backends last.
func diff(m *mirror, plans []vipPlan, removed []loader.VIPKey, full bool) []op {
	var ops []op
	for _, k := range removed {
		meta := m.vips[k]
		vid := VIPIDOf(k)
		ops = append(ops, op{kind: opDeleteVIP, phase: phaseEntry, vip: vid, key: k, meta: meta},
			op{kind: opDeleteTable, phase: phaseLate, vip: vid, id: meta.ID})
		if m.sets[meta.ID] != nil {
			ops = append(ops, op{kind: opDeleteSet, phase: phaseLate, vip: vid, id: meta.ID})
		}
		for _, bid := range m.byVIP[meta.ID] {
			ops = append(ops, op{kind: opDeleteBackend, phase: phaseLate, vip: vid, backend: m.backends[bid]})
		}
	}
	var batch []tableWrite
	var entries []op // of the batched VIPs
	planned := make(map[uint32]bool, len(plans))
	for i := range plans {
		p := &plans[i]
		if p.err != nil || p.held { // held: in removed, when in the maps
			continue
		}
		vid, id := p.v.ID(), p.meta.ID
		planned[id] = true
		kept := make(map[uint32]bool, len(p.backends)+1)
		var late []op
		for _, bp := range p.planned() {
			if !bp.hasEntry {
				continue
			}
			kept[bp.entry.ID] = true
			if bp.had && sameBackend(bp.old, bp.entry) {
				continue
			}
			o := op{kind: opPutBackend, phase: phaseEarly, vip: vid, backend: bp.entry}
			if bp.entry.Down && bp.had && !bp.old.Down {
				o.phase = phaseLate
				late = append(late, o)
				continue
			}
			ops = append(ops, o)
		}
		entry := op{kind: opPutVIP, phase: phaseEntry, vip: vid, key: p.key, meta: p.meta, added: !p.exists}
		putEntry := !p.exists || !sameMeta(p.cur, p.meta)
		// The set before the entry that makes the VIP use it, after the
		// entries it names; a set no longer wanted goes after a pass's
		// table (its VIP then falls back to the table).
		cur, known := m.sets[id]
		switch {
		case p.set != nil && (!known || !slices.Equal(cur, p.set)):
			ops = append(ops, op{kind: opPutSet, phase: phaseEntry, vip: vid, id: id, set: p.set})
		case p.set == nil && cur != nil:
			late = append(late, op{kind: opDeleteSet, phase: phaseLate, vip: vid, id: id})
		}
		last, known := m.tables[id]
		switch {
		case len(p.members) == 0:
			if putEntry {
				ops = append(ops, entry)
			}
			if !known {
				ops = append(ops, op{kind: opSyncTable, phase: phaseEntry, vip: vid, id: id})
			} else if last != nil {
				ops = append(ops, op{kind: opDeleteTable, phase: phaseEntry, vip: vid, id: id})
			}
		case !p.exists && len(late) == 0:
			batch = append(batch, tableWrite{id: id, vip: vid, members: p.members})
			entries = append(entries, entry)
		default:
			if !known {
				ops = append(ops, op{kind: opSyncTable, phase: phaseEntry, vip: vid, id: id, members: p.members})
			} else if !slices.Equal(last, p.members) {
				ops = append(ops, op{kind: opPutTable, phase: phaseEntry, vip: vid, id: id, members: p.members})
			}
			if putEntry {
				ops = append(ops, entry)
			}
		}
		ops = append(ops, late...)
		for _, e := range p.retained {
			kept[e.ID] = true
			if old, ok := m.backends[e.ID]; !ok || !sameBackend(old, e) {
				ops = append(ops, op{kind: opPutBackend, phase: phaseEarly, vip: vid, backend: e})
			}
		}
		for _, bid := range m.byVIP[id] {
			if !kept[bid] {
				ops = append(ops, op{kind: opDeleteBackend, phase: phaseLate, vip: vid, backend: m.backends[bid]})
			}
		}
	}
	if len(batch) > 0 {
		ops = append(ops, op{kind: opPutTables, phase: phaseEntry, batch: batch})
		ops = append(ops, entries...)
	}
	if full {
		for _, id := range m.orphans(planned) {
			ops = append(ops, op{kind: opDeleteBackend, phase: phaseLate, backend: m.backends[id]})
		}
	}
	return ops
}

// orphans are the backends, by id, of VIP ids that have no VIP entry and
// are not planned.
func (m *mirror) orphans(planned map[uint32]bool) []uint32 {
	inUse := make(map[uint32]bool, len(m.vips))
	for _, meta := range m.vips {
		inUse[meta.ID] = true
	}
	var out []uint32
	for vip, bids := range m.byVIP {
		if !inUse[vip] && !planned[vip] {
			out = append(out, bids...)
		}
	}
	slices.Sort(out)
	return out
}

// sameBackend reports whether an entry read from the maps (a) is the
// planned one (b). A NAT entry's MACs and interface are unused (the next
// hop comes from the FIB), however the maps spell them.
func sameBackend(a, b loader.Backend) bool {
	if a.ID != b.ID || a.VIPID != b.VIPID || a.Addr != b.Addr || a.Port != b.Port || a.Mode != b.Mode || a.Down != b.Down ||
		a.NoNew != b.NoNew {
		return false
	}
	return b.Mode.IsNAT() ||
		a.Ifindex == b.Ifindex && slices.Equal(a.MAC, b.MAC) && slices.Equal(a.SrcMAC, b.SrcMAC)
}
