package loader

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
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
		out[vipKeyFromC(k)] = vipMetaFromC(m)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterate vips: %w", err)
	}
	return out, nil
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
	if m.Mode != ModeDR {
		return fmt.Errorf("put vip %s: %w: forwarding mode %d not supported", k, ErrInvalid, m.Mode)
	}
	if m.Hash != HashMaglev && m.Hash != HashSource {
		return fmt.Errorf("put vip %s: %w: hash kind %d", k, ErrInvalid, m.Hash)
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	cur, err := d.VIPs()
	if err != nil {
		return fmt.Errorf("put vip %s: %w", k, err)
	}
	for other, om := range cur {
		if om.ID == m.ID && other != k.canonical() {
			return fmt.Errorf("put vip %s: %w: id %d already used by %s", k, ErrInvalid, m.ID, other)
		}
	}
	if old, ok := cur[k.canonical()]; !ok || old.ID != m.ID {
		if err := d.zeroCounters(d.objs.VipStats, m.ID); err != nil {
			return fmt.Errorf("put vip %s: %w", k, err)
		}
	}
	// The address, the pre-filter bit and the id's key first: from the
	// moment the VIP exists, fragments to it are ours to drop, its packets
	// get past the filter and its flows take the established path.
	if err := d.objs.VipAddrs.Put(ck.Addr, uint32(countAddr(cur, k.canonical())+1)); err != nil {
		return fmt.Errorf("put vip %s: address: %w", k, err)
	}
	old, existed := cur[k.canonical()]
	cur[k.canonical()] = m
	if err := d.writeVIPFilter(cur); err != nil {
		return fmt.Errorf("put vip %s: %w", k, err)
	}
	if err := d.setVIPKey(m.ID, ck); err != nil {
		return fmt.Errorf("put vip %s: %w", k, err)
	}
	if err := d.objs.Vips.Put(ck, vipMetaToC(m)); err != nil {
		return fmt.Errorf("put vip %s: %w", k, err)
	}
	// Renumbered: the old id is free, and flows still naming its backends
	// are placed again, as before the established path skipped the VIP map.
	if existed && old.ID != m.ID {
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

// countAddr counts the VIPs other than except on except's address.
func countAddr(vips map[VIPKey]VIPMeta, except VIPKey) int {
	n := 0
	for k := range vips {
		if k != except && k.Addr == except.Addr {
			n++
		}
	}
	return n
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
	// Free the id first: the VIP's established flows stop with it.
	var m xdplbVipMeta
	err = d.objs.Vips.Lookup(ck, &m)
	switch {
	case err == nil:
		if err := d.setVIPKey(m.VipId, xdplbVipKey{}); err != nil {
			return fmt.Errorf("delete vip %s: %w", k, err)
		}
	case !errors.Is(err, ebpf.ErrKeyNotExist):
		return fmt.Errorf("delete vip %s: %w", k, err)
	}
	if err := d.objs.Vips.Delete(ck); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete vip %s: %w", k, err)
	}
	cur, err := d.VIPs()
	if err != nil {
		return fmt.Errorf("delete vip %s: %w", k, err)
	}
	if err := d.writeVIPFilter(cur); err != nil {
		return fmt.Errorf("delete vip %s: %w", k, err)
	}
	n := countAddr(cur, k.canonical())
	if n == 0 {
		err = d.objs.VipAddrs.Delete(ck.Addr)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			err = nil
		}
	} else {
		err = d.objs.VipAddrs.Put(ck.Addr, uint32(n))
	}
	if err != nil {
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
	// An array entry cannot be deleted; all-zero means flags without VALID.
	if err := d.objs.Backends.Put(id, xdplbBackend{}); err != nil {
		return fmt.Errorf("delete backend %d: %w", id, err)
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

// PutLookupTable builds a new table for vipID and swaps it in with one map
// update, so the program sees either the old or the new table, never a mix.
func (d *Datapath) PutLookupTable(vipID uint32, table []uint32) error {
	if vipID == 0 || vipID >= d.opts.MaxVIPs {
		return fmt.Errorf("put lookup table %d: %w: vip id outside 1..%d", vipID, ErrInvalid, d.opts.MaxVIPs-1)
	}
	if uint32(len(table)) != d.opts.LookupSize {
		return fmt.Errorf("put lookup table %d: %w: %d entries, want %d", vipID, ErrInvalid, len(table), d.opts.LookupSize)
	}
	for i, id := range table {
		if id >= d.opts.MaxBackends {
			return fmt.Errorf("put lookup table %d: %w: slot %d holds backend id %d", vipID, ErrInvalid, i, id)
		}
	}
	inner, err := ebpf.NewMap(d.innerSpec)
	if err != nil {
		return fmt.Errorf("put lookup table %d: create: %w", vipID, err)
	}
	defer inner.Close() // the outer map keeps its own reference
	if err := fillArray(inner, table); err != nil {
		return fmt.Errorf("put lookup table %d: fill: %w", vipID, err)
	}
	if err := d.objs.Lookup.Put(vipID, inner); err != nil {
		return fmt.Errorf("put lookup table %d: swap: %w", vipID, err)
	}
	return nil
}

func fillArray(m *ebpf.Map, vals []uint32) error {
	keys := make([]uint32, len(vals))
	for i := range keys {
		keys[i] = uint32(i)
	}
	for start := 0; start < len(vals); start += batchChunk * 4 {
		end := min(start+batchChunk*4, len(vals))
		_, err := m.BatchUpdate(keys[start:end], vals[start:end], nil)
		if errors.Is(err, ebpf.ErrNotSupported) {
			return putEach(m, keys[start:], vals[start:])
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func putEach(m *ebpf.Map, keys, vals []uint32) error {
	for i := range keys {
		if err := m.Put(keys[i], vals[i]); err != nil {
			return err
		}
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
	err = readArray(inner, func(slot uint32, id uint32) {
		if slot < uint32(len(out)) {
			out[slot] = id
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
