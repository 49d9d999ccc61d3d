package loader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// batchChunk is how many entries one batch syscall moves.
const batchChunk = 4096

// VIPs returns every VIP in the data plane.
func (d *Datapath) VIPs() (map[VIPKey]VIPMeta, error) {
	out := make(map[VIPKey]VIPMeta)
	var k xdplbVipKey
	var m xdplbVipMeta
	it := d.objs.Vips.Iterate()
	for it.Next(&k, &m) {
		meta, limited := vipMetaFromC(m)
		if limited {
			var r xdplbVipRate
			if err := d.objs.VipRates.Lookup(meta.ID, &r); err != nil {
				return nil, fmt.Errorf("read rate limit of vip %d: %w", meta.ID, err)
			}
			meta.RateLimit = RateLimit{Rate: r.Rate, Burst: r.Burst}
		}
		if m.Flags&uint16(xdplbVipFlagsVIP_F_PERSIST) != 0 {
			var pt xdplbPersistTimeout
			if err := d.objs.VipPersist.Lookup(meta.ID, &pt); err != nil {
				return nil, fmt.Errorf("read persistence of vip %d: %w", meta.ID, err)
			}
			meta.Persistence = time.Duration(pt.Secs) * time.Second
		}
		if meta.Mode == ModeFullNAT {
			var a [16]byte
			if err := d.objs.VipSnat.Lookup(meta.ID, &a); err != nil {
				return nil, fmt.Errorf("read snat address of vip %d: %w", meta.ID, err)
			}
			if a != ([16]byte{}) {
				meta.SNATAddr = addrFrom16(a)
			}
		}
		out[vipKeyFromC(k)] = meta
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterate vips: %w", err)
	}
	return out, nil
}

// snatToC is the vip_snat value of m: its SNAT address for full NAT, all
// zero (none) otherwise.
func snatToC(m VIPMeta) ([16]byte, error) {
	if m.Mode != ModeFullNAT {
		if m.SNATAddr.IsValid() {
			return [16]byte{}, fmt.Errorf("%w: snat address %s on a vip that is not full nat", ErrInvalid, m.SNATAddr)
		}
		return [16]byte{}, nil
	}
	if !m.SNATAddr.IsValid() {
		return [16]byte{}, fmt.Errorf("%w: full nat needs a snat address", ErrInvalid)
	}
	return addr16(m.SNATAddr)
}

// PutVIP adds or updates a VIP. A VIP new to the data plane starts with
// zeroed counters, since its id may have belonged to a deleted VIP.
func (d *Datapath) PutVIP(k VIPKey, m VIPMeta) error {
	ck, err := vipKeyToC(k)
	if err != nil {
		return fmt.Errorf("put vip %s: %w", k, err)
	}
	if m.ID == 0 || m.ID >= d.opts.MaxVIPs {
		return fmt.Errorf("put vip %s: %w: id %d outside 1..%d", k, ErrInvalid, m.ID, d.opts.MaxVIPs-1)
	}
	if m.Mode != ModeDR && !m.Mode.IsNAT() {
		return fmt.Errorf("put vip %s: %w: forwarding mode %d", k, ErrInvalid, m.Mode)
	}
	snat, err := snatToC(m)
	if err != nil {
		return fmt.Errorf("put vip %s: %w", k, err)
	}
	if m.SNATAddr.IsValid() && m.SNATAddr.Unmap().Is4() != k.Addr.Unmap().Is4() {
		return fmt.Errorf("put vip %s: %w: snat address %s is of another family", k, ErrInvalid, m.SNATAddr)
	}
	if m.Hash < HashMaglev || m.Hash >= HashKind(xdplbSchedKindSCHED_KIND_MAX) {
		return fmt.Errorf("put vip %s: %w: scheduler %d", k, ErrInvalid, m.Hash)
	}
	if m.Persistence < 0 || m.Persistence%time.Second != 0 || m.Persistence > maxPersistence {
		return fmt.Errorf("put vip %s: %w: persistence %s: want whole seconds up to %s", k, ErrInvalid, m.Persistence, maxPersistence)
	}
	if m.NoHealthy && m.BackendsFull {
		return fmt.Errorf("put vip %s: %w: no healthy backend and every backend full at once", k, ErrInvalid)
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	var rate xdplbVipRate
	if m.RateLimit != (RateLimit{}) {
		hz, err := d.ticks.rate()
		if err != nil {
			return fmt.Errorf("put vip %s: %w", k, err)
		}
		if rate, err = rateToC(m.RateLimit, hz); err != nil {
			return fmt.Errorf("put vip %s: %w", k, err)
		}
	}
	k = k.canonical()
	if other, ok := d.vipIDs[m.ID]; ok && other != k {
		return fmt.Errorf("put vip %s: %w: id %d already used by %s", k, ErrInvalid, m.ID, other)
	}
	old, existed := d.vipIndex[k]
	if !existed || old.ID != m.ID {
		if err := d.zeroCounters(d.objs.VipStats, m.ID); err != nil {
			return fmt.Errorf("put vip %s: %w", k, err)
		}
		if err := d.zeroICMPCounter(m.ID); err != nil {
			return fmt.Errorf("put vip %s: %w", k, err)
		}
		if err := d.zeroVIPDrops(m.ID); err != nil {
			return fmt.Errorf("put vip %s: %w", k, err)
		}
	}
	// The address, the pre-filter bit and the id's key first: from the
	// moment the VIP exists, fragments to it are ours to drop, its packets
	// get past the filter and its flows take the established path.
	if !existed {
		if err := d.setAddrCount(ck.Addr, d.addrCount[ck.Addr]+1); err != nil {
			return fmt.Errorf("put vip %s: address: %w", k, err)
		}
		if err := d.addFilterBit(vipFilterBit(ck)); err != nil {
			return fmt.Errorf("put vip %s: %w", k, err)
		}
		// Recorded now: a failure below leaves a counted address and a
		// set bit, which the next put or delete of k accounts for.
		d.vipIndex[k] = m
		d.vipIDs[m.ID] = k
	}
	if err := d.setVIPKey(m.ID, ck); err != nil {
		return fmt.Errorf("put vip %s: %w", k, err)
	}
	// Before the meta: the address a full-NAT flow is sent from exists
	// as soon as the VIP says full NAT.
	if !existed || old.ID != m.ID || old.SNATAddr != m.SNATAddr {
		if err := d.objs.VipSnat.Put(m.ID, snat); err != nil {
			return fmt.Errorf("put vip %s: snat address: %w", k, err)
		}
	}
	// Before the meta too: the flag finds its limit written. A change
	// starts the bucket full; one that changes nothing keeps its state,
	// across daemon restarts as well.
	if !existed || old.ID != m.ID || old.RateLimit != m.RateLimit {
		if err := d.objs.VipRates.Put(m.ID, rate); err != nil {
			return fmt.Errorf("put vip %s: rate limit: %w", k, err)
		}
	}
	// And the persistence, for the flag to find.
	if !existed || old.ID != m.ID || old.Persistence != m.Persistence {
		pt, err := d.persistToC(m.Persistence)
		if err != nil {
			return fmt.Errorf("put vip %s: %w", k, err)
		}
		if err := d.objs.VipPersist.Put(m.ID, pt); err != nil {
			return fmt.Errorf("put vip %s: persistence: %w", k, err)
		}
	}
	if err := d.objs.Vips.Put(ck, vipMetaToC(m)); err != nil {
		return fmt.Errorf("put vip %s: %w", k, err)
	}
	d.vipIndex[k] = m
	d.vipIDs[m.ID] = k
	// Renumbered: the old id is free, and flows still naming its backends
	// are placed again, as before the established path skipped the VIP map.
	if existed && old.ID != m.ID {
		delete(d.vipIDs, old.ID)
		if err := d.setVIPKey(old.ID, xdplbVipKey{}); err != nil {
			return fmt.Errorf("put vip %s: %w", k, err)
		}
	}
	return nil
}

// canonical is the key as VIPs() returns it (IPv4 unmapped).
func (k VIPKey) canonical() VIPKey {
	k.Addr = k.Addr.Unmap()
	return k
}

// DeleteVIP removes a VIP; deleting an absent VIP is not an error. Its
// lookup table and backends are separate entries (DeleteLookupTable,
// DeleteBackend).
func (d *Datapath) DeleteVIP(k VIPKey) error {
	ck, err := vipKeyToC(k)
	if err != nil {
		return fmt.Errorf("delete vip %s: %w", k, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	k = k.canonical()
	m, ok := d.vipIndex[k]
	if !ok {
		return nil
	}
	// Free the id first: the VIP's established flows stop with it.
	if err := d.setVIPKey(m.ID, xdplbVipKey{}); err != nil {
		return fmt.Errorf("delete vip %s: %w", k, err)
	}
	if m.SNATAddr.IsValid() {
		if err := d.objs.VipSnat.Put(m.ID, [16]byte{}); err != nil {
			return fmt.Errorf("delete vip %s: snat address: %w", k, err)
		}
	}
	if err := d.objs.Vips.Delete(ck); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete vip %s: %w", k, err)
	}
	delete(d.vipIndex, k)
	delete(d.vipIDs, m.ID)
	if err := d.clearFilterBit(vipFilterBit(ck)); err != nil {
		return fmt.Errorf("delete vip %s: %w", k, err)
	}
	if err := d.setAddrCount(ck.Addr, d.addrCount[ck.Addr]-1); err != nil {
		return fmt.Errorf("delete vip %s: address: %w", k, err)
	}
	return nil
}

// Backends returns every valid backend by id, down ones included.
func (d *Datapath) Backends() (map[uint32]Backend, error) {
	out := make(map[uint32]Backend)
	err := readArray(d.objs.Backends, func(id uint32, b xdplbBackend) {
		if b.valid() {
			out[id] = backendFromC(id, b)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("read backends: %w", err)
	}
	return out, nil
}

// PutBackend adds or updates a backend. A backend new to its id (the slot
// was empty or held another backend) starts with zeroed counters; marking
// it down or up keeps them. Down takes effect on the next packet: the
// backend's flows are placed again from the VIP's lookup table. A table
// slot naming a down backend drops new flows as backend_invalid, so when a
// backend goes down write the table without it first, and when it comes
// back mark it up before the table names it again.
func (d *Datapath) PutBackend(b Backend) error {
	cb, err := d.backendToC(b)
	if err != nil {
		return fmt.Errorf("put backend %d: %w", b.ID, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	var old xdplbBackend
	if err := d.objs.Backends.Lookup(b.ID, &old); err != nil {
		return fmt.Errorf("put backend %d: %w", b.ID, err)
	}
	if !old.valid() || old.VipId != cb.VipId || old.Addr != cb.Addr || old.Port != cb.Port {
		if err := d.zeroCounters(d.objs.BackendStats, b.ID); err != nil {
			return fmt.Errorf("put backend %d: %w", b.ID, err)
		}
		if err := d.objs.BeConns.Put(b.ID, int64(0)); err != nil {
			return fmt.Errorf("put backend %d: open flows: %w", b.ID, err)
		}
	}
	// The program's next hop for the id is an old address's.
	if old.Addr != cb.Addr {
		if err := d.objs.BackendNh.Put(b.ID, xdplbNextHop{}); err != nil {
			return fmt.Errorf("put backend %d: forget next hop: %w", b.ID, err)
		}
	}
	// The reply bit before the entry, so the first reply finds it set; a
	// bit left set by a failure below is only a false positive.
	if err := d.setReplyBit(b.ID, replyFilterBit(cb.Addr), b.Mode.IsNAT()); err != nil {
		return fmt.Errorf("put backend %d: %w", b.ID, err)
	}
	if err := d.objs.Backends.Put(b.ID, cb); err != nil {
		return fmt.Errorf("put backend %d: %w", b.ID, err)
	}
	return nil
}

// DeleteBackend invalidates a backend: flows pinned to it are scheduled
// again on their next packet.
func (d *Datapath) DeleteBackend(id uint32) error {
	if id == 0 || id >= d.opts.MaxBackends {
		return fmt.Errorf("delete backend %d: %w: id outside 1..%d", id, ErrInvalid, d.opts.MaxBackends-1)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	// An array entry cannot be deleted; all-zero means flags without VALID.
	if err := d.objs.Backends.Put(id, xdplbBackend{}); err != nil {
		return fmt.Errorf("delete backend %d: %w", id, err)
	}
	if err := d.setReplyBit(id, 0, false); err != nil {
		return fmt.Errorf("delete backend %d: %w", id, err)
	}
	if err := d.objs.BackendNh.Put(id, xdplbNextHop{}); err != nil {
		return fmt.Errorf("delete backend %d: forget next hop: %w", id, err)
	}
	return nil
}

func (d *Datapath) zeroCounters(m *ebpf.Map, id uint32) error {
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return err
	}
	if err := m.Put(id, make([]xdplbLbCounters, cpus)); err != nil {
		return fmt.Errorf("reset counters %d: %w", id, err)
	}
	return nil
}

// zeroVIPDrops zeroes the drop counters of VIP id, every reason, in one
// batch.
func (d *Datapath) zeroVIPDrops(id uint32) error {
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return err
	}
	n := uint32(xdplbDropReasonDROP_REASON_MAX)
	keys := make([]uint32, n)
	for r := range n {
		keys[r] = id*n + r
	}
	vals := make([]uint64, int(n)*cpus)
	_, err = d.objs.VipDrops.BatchUpdate(keys, vals, nil)
	if errors.Is(err, ebpf.ErrNotSupported) {
		for _, key := range keys {
			if err = d.objs.VipDrops.Put(key, vals[:cpus]); err != nil {
				break
			}
		}
	}
	if err != nil {
		return fmt.Errorf("reset drop counters of vip %d: %w", id, err)
	}
	return nil
}

func (d *Datapath) zeroICMPCounter(id uint32) error {
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return err
	}
	if err := d.objs.VipIcmp.Put(id, make([]uint64, cpus)); err != nil {
		return fmt.Errorf("reset icmp counter %d: %w", id, err)
	}
	return nil
}

// PutLookupTable makes table vipID's lookup table. A VIP without a table
// gets a new one, filled before it is inserted. A VIP with one has the
// slots that differ written in place, through the table's memory: a swap
// would wait for an RCU grace period in the kernel (~12 ms at HZ=250),
// which is most of what a weight or health change costs.
//
// In place, the program may see a mix of the old and the new table while
// the write runs: every slot flips with one atomic 32-bit store, and the
// program reads one slot per new flow, so each flow is placed by the old or
// the new value of its slot, as a flow arriving just before or just after a
// swap would be. Every value in the mix is usable as long as the caller
// keeps the reconciler's order: a backend's entry is written before any
// slot names it, the slots that leave a backend are written before it is
// marked down or deleted, and an id is not reused at once.
func (d *Datapath) PutLookupTable(vipID uint32, table []uint32) error {
	if err := d.checkLookupTable(vipID, table); err != nil {
		return err
	}
	var cur *ebpf.Map
	err := d.objs.Lookup.Lookup(vipID, &cur)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		inner, err := d.newLookupTable(vipID, table)
		if err != nil {
			return err
		}
		defer inner.Close() // the outer map keeps its own reference
		if err := d.objs.Lookup.Put(vipID, inner); err != nil {
			return fmt.Errorf("put lookup table %d: insert: %w", vipID, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("put lookup table %d: %w", vipID, err)
	}
	defer cur.Close()
	if cur.MaxEntries() != uint32(len(table)) {
		return fmt.Errorf("put lookup table %d: %w: map holds %d slots, table has %d", vipID, ErrIncompatiblePin, cur.MaxEntries(), len(table))
	}
	err = withTableMemory(cur, unix.PROT_READ|unix.PROT_WRITE, func(mem []byte) { writeSlots(mem, table) })
	if err != nil {
		return fmt.Errorf("put lookup table %d: write: %w", vipID, err)
	}
	return nil
}

// PutLookupTables writes the tables of several VIPs, meant for VIPs new to
// the data plane (a whole apply): every table is built and filled first,
// then all are inserted by one batch update, so the kernel waits for at
// most one RCU grace period (for VIPs that had a table) instead of one per
// table; one update each where the kernel has no batch update for this map
// (Features.BatchUpdateTables). Each VIP sees its old table or its new
// one, never a mix; on error, tables of VIPs before the failing one may
// already be in.
func (d *Datapath) PutLookupTables(tables map[uint32][]uint32) error {
	ids := slices.Sorted(maps.Keys(tables))
	inners := make([]*ebpf.Map, 0, len(ids))
	defer func() {
		for _, m := range inners {
			m.Close()
		}
	}()
	fds := make([]uint32, 0, len(ids))
	for _, id := range ids {
		inner, err := d.newLookupTable(id, tables[id])
		if err != nil {
			return err
		}
		inners = append(inners, inner)
		fds = append(fds, uint32(inner.FD()))
	}
	if !d.features.BatchUpdateTables {
		for i, id := range ids {
			if err := d.objs.Lookup.Put(id, inners[i]); err != nil {
				return fmt.Errorf("put lookup table %d: swap: %w", id, err)
			}
		}
		return nil
	}
	for start := 0; start < len(ids); start += batchChunk {
		end := min(start+batchChunk, len(ids))
		_, err := d.objs.Lookup.BatchUpdate(ids[start:end], fds[start:end], nil)
		if err != nil {
			return fmt.Errorf("put lookup tables: swap: %w", err)
		}
	}
	return nil
}

// checkLookupTable refuses a table the program could not use.
func (d *Datapath) checkLookupTable(vipID uint32, table []uint32) error {
	if vipID == 0 || vipID >= d.opts.MaxVIPs {
		return fmt.Errorf("put lookup table %d: %w: vip id outside 1..%d", vipID, ErrInvalid, d.opts.MaxVIPs-1)
	}
	if table == nil {
		return nil // the caller checks the table as it writes it
	}
	if uint32(len(table)) != d.opts.LookupSize {
		return fmt.Errorf("put lookup table %d: %w: %d entries, want %d", vipID, ErrInvalid, len(table), d.opts.LookupSize)
	}
	for i, id := range table {
		if id >= d.opts.MaxBackends {
			return fmt.Errorf("put lookup table %d: %w: slot %d holds backend id %d", vipID, ErrInvalid, i, id)
		}
	}
	return nil
}

// newLookupTable checks a table and creates a filled inner map for it; the
// caller inserts it and closes it.
func (d *Datapath) newLookupTable(vipID uint32, table []uint32) (*ebpf.Map, error) {
	if err := d.checkLookupTable(vipID, nil); err != nil {
		return nil, err
	}
	if uint32(len(table)) != d.opts.LookupSize {
		return nil, fmt.Errorf("put lookup table %d: %w: %d entries, want %d", vipID, ErrInvalid, len(table), d.opts.LookupSize)
	}
	inner, err := ebpf.NewMap(d.innerSpec)
	if err != nil {
		return nil, fmt.Errorf("put lookup table %d: create: %w", vipID, err)
	}
	bad := -1
	err = withTableMemory(inner, unix.PROT_READ|unix.PROT_WRITE, func(mem []byte) {
		// Checked while filling: one pass over the table, not two (a
		// whole apply fills 1,000 of them). Nobody sees the map yet.
		slots := unsafe.Slice((*uint32)(unsafe.Pointer(&mem[0])), len(mem)/4)
		for i, id := range table {
			if id >= d.opts.MaxBackends {
				bad = i
				return
			}
			slots[i*tableStride/4] = id
		}
	})
	if err == nil && bad >= 0 {
		err = fmt.Errorf("%w: slot %d holds backend id %d", ErrInvalid, bad, table[bad])
	}
	if err != nil {
		inner.Close()
		return nil, fmt.Errorf("put lookup table %d: fill: %w", vipID, err)
	}
	return inner, nil
}

// writeSlots stores in mem, the memory of a table in use, the slots of
// table that differ from it, each with one atomic store, and returns how
// many it wrote. Slots that stay are not written: their cache lines stay
// shared with the CPUs that read them.
func writeSlots(mem []byte, table []uint32) int {
	n := 0
	for i, id := range table {
		// Aligned: the mapping starts on a page, slots are tableStride
		// apart.
		slot := (*uint32)(unsafe.Pointer(&mem[i*tableStride]))
		if atomic.LoadUint32(slot) != id {
			atomic.StoreUint32(slot, id)
			n++
		}
	}
	return n
}

// tableStride is the distance between two slots of a mmapped lookup table:
// an ARRAY map lays its values out on 8-byte boundaries, whatever their size.
const tableStride = 8

// withTableMemory maps a lookup table (BPF_F_MMAPABLE, bpf/maps.h) and
// calls fn with its slots, tableStride bytes apart. One mmap and a copy
// replace the batch update, which costs ~20 ms for a 65537-slot table. The
// mapping is ours and removed at once: Map.Memory would keep it, and with
// it the table's kernel memory, until the garbage collector runs.
func withTableMemory(m *ebpf.Map, prot int, fn func([]byte)) error {
	size := int(m.MaxEntries()) * tableStride
	mem, err := unix.Mmap(m.FD(), 0, size, prot, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("mmap: %w", err)
	}
	fn(mem)
	if err := unix.Munmap(mem); err != nil {
		return fmt.Errorf("munmap: %w", err)
	}
	return nil
}

// LookupTable returns vipID's table, or nil when it has none.
func (d *Datapath) LookupTable(vipID uint32) ([]uint32, error) {
	var inner *ebpf.Map
	err := d.objs.Lookup.Lookup(vipID, &inner)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("lookup table %d: %w", vipID, err)
	}
	defer inner.Close()
	out := make([]uint32, inner.MaxEntries())
	err = withTableMemory(inner, unix.PROT_READ, func(mem []byte) {
		for i := range out {
			out[i] = binary.NativeEndian.Uint32(mem[i*tableStride:])
		}
	})
	if err != nil {
		return nil, fmt.Errorf("lookup table %d: %w", vipID, err)
	}
	return out, nil
}

// DeleteLookupTable removes vipID's table; new flows to the VIP are then
// dropped as DROP_NO_BACKEND, or DROP_NO_HEALTHY_BACKEND while the VIP is
// marked NoHealthy. Deleting an absent table is not an error.
func (d *Datapath) DeleteLookupTable(vipID uint32) error {
	err := d.objs.Lookup.Delete(vipID)
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete lookup table %d: %w", vipID, err)
	}
	return nil
}

// readArray calls fn for every entry of an ARRAY map, in batches.
func readArray[V any](m *ebpf.Map, fn func(uint32, V)) error {
	keys := make([]uint32, batchChunk)
	vals := make([]V, batchChunk)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			fn(keys[i], vals[i])
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if errors.Is(err, ebpf.ErrNotSupported) {
			return iterate(m, fn)
		}
		if err != nil {
			return err
		}
	}
}

func iterate[K, V any](m *ebpf.Map, fn func(K, V)) error {
	var k K
	var v V
	it := m.Iterate()
	for it.Next(&k, &v) {
		fn(k, v)
	}
	return it.Err()
}

// readPerCPU calls fn for every entry of a per-CPU ARRAY map with the
// values of all CPUs.
func readPerCPU[V any](m *ebpf.Map, fn func(uint32, []V)) error {
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return err
	}
	chunk := batchChunk / cpus
	if chunk == 0 {
		chunk = 1
	}
	keys := make([]uint32, chunk)
	vals := make([]V, chunk*cpus)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			fn(keys[i], vals[i*cpus:(i+1)*cpus])
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if errors.Is(err, ebpf.ErrNotSupported) {
			return iterate(m, fn)
		}
		if err != nil {
			return err
		}
	}
}
