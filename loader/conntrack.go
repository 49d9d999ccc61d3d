package loader

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"os"
	"path/filepath"
	"sync/atomic"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// The connection table (bpf/conntrack.h): buckets of ctBucketSlots slots
// in one BPF_F_MMAPABLE array (conntrack), the slots' full keys in another
// (ct_keys), a flow in one of two buckets chosen by its hash (ctHash) and
// found there by a fingerprint of it. The loader reads and writes both
// through a mapping: a walk of a million flows is a copy, not a syscall per
// entry, and needs no kernel element count.
const (
	ctBucketSlots  = len(xdplbCtBucket{}.Slots)
	ctSlotSize     = int(unsafe.Sizeof(xdplbCtSlot{}))
	ctBucketSize   = int(unsafe.Sizeof(xdplbCtBucket{}))
	ctKeySize      = int(unsafe.Sizeof(xdplbFlowKey{}))
	ctKeyBucketLen = int(unsafe.Sizeof(xdplbCtBucketKeys{}))
	ctFPShift      = uint64(xdplbCtLayoutCT_FP_SHIFT)
	ctBackendMask  = uint64(xdplbCtLayoutCT_BACKEND_MASK)
	// ctLoadPercent is the design load: --conntrack-size flows fill at
	// most this share of the slots. A simulation of the table (pairs of
	// lines, two choices) loses no live flow up to 70% and 0.02% at 80%.
	ctLoadPercent = 70
)

// ctBuckets is the connection table's size in buckets for size flows:
// enough slots that size flows fill ctLoadPercent of them.
func ctBuckets(size uint32) uint32 {
	slots := (uint64(size)*100 + ctLoadPercent - 1) / ctLoadPercent
	return uint32(max((slots+uint64(ctBucketSlots)-1)/uint64(ctBucketSlots), 1))
}

// ctTableBytes is the memory of a table of buckets buckets: slots and
// keys, in whole pages as the kernel allocates them.
func ctTableBytes(buckets uint32) uint64 {
	page := uint64(os.Getpagesize())
	round := func(n uint64) uint64 { return (n + page - 1) / page * page }
	return round(uint64(buckets)*uint64(ctBucketSize)) + round(uint64(buckets)*uint64(ctKeyBucketLen))
}

// flowVal is a tracked flow as the loader reads it, from either table:
// backend, flags (FLOW_F_*, a full-NAT flow's SNAT port) and the kernel
// tick of its last stamp.
type flowVal struct {
	BackendId uint32
	Flags     uint32
	LastSeen  uint64
}

// ctHash is flow_hash64 of bpf/conntrack.h: the key's five 64-bit words
// (little-endian, as the program loads them) folded in, then mixed.
func ctHash(seed uint64, k *xdplbFlowKey) uint64 {
	// The key's bytes as they lie in memory, C's layout (HostLayout).
	return ctHashBytes(seed, (*[40]byte)(unsafe.Pointer(k)))
}

// ctHashBytes is ctHash of a key's 40 bytes as they lie in memory.
func ctHashBytes(seed uint64, b *[40]byte) uint64 {
	h := seed
	for i := 0; i < 40; i += 8 {
		h = (h ^ binary.LittleEndian.Uint64(b[i:])) * 0x9e3779b97f4a7c15
		h = bits.RotateLeft64(h, 31)
	}
	return fmix64(h)
}

func fmix64(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

func hashRange(x, n uint32) uint32 { return uint32(uint64(x) * uint64(n) >> 32) }

// ctRef is a flow's two buckets and fingerprint (ct_ref_of).
type ctRef struct {
	idx [2]uint32
	fp  uint64
}

func ctRefOf(h uint64, buckets uint32) ctRef {
	return ctRef{
		idx: [2]uint32{hashRange(uint32(h), buckets), hashRange(uint32(h>>32), buckets)},
		fp:  fmix64(h^0x5bd1e9955bd1e995)>>(ctFPShift+1) | 1<<(63-ctFPShift),
	}
}

// ctLimits are the idle limits in ticks that decide whether a slot is
// free (ct_class_of): nat_config's.
type ctLimits struct{ tcp, udp, closing uint64 }

// Slot classes (enum ct_class).
const (
	ctLive    = 1
	ctClosing = 2
	ctFree    = 3
)

// ctTable is a connection table in memory: the kernel's, through a
// mapping, or a model's (tests) on the heap.
type ctTable struct {
	slots   []byte // buckets of ctBucketSize
	keys    []byte // buckets of ctKeyBucketLen
	buckets uint32
	seed    uint64
}

func (t *ctTable) slot(pos int) *xdplbCtSlot {
	return (*xdplbCtSlot)(unsafe.Pointer(&t.slots[pos*ctSlotSize]))
}

func (t *ctTable) key(pos int) *xdplbFlowKey {
	b, i := pos/ctBucketSlots, pos%ctBucketSlots
	return (*xdplbFlowKey)(unsafe.Pointer(&t.keys[b*ctKeyBucketLen+i*ctKeySize]))
}

func (t *ctTable) tag(pos int) uint64 { return atomic.LoadUint64(&t.slot(pos).Tag) }

// find is the position of the key's flow (ct_find), or -1.
func (t *ctTable) find(r ctRef) int {
	for _, b := range r.idx {
		for i := range ctBucketSlots {
			pos := int(b)*ctBucketSlots + i
			if t.tag(pos)>>ctFPShift == r.fp {
				return pos
			}
		}
	}
	return -1
}

func (t *ctTable) classOf(pos int, now uint32, l ctLimits) int {
	s := t.slot(pos)
	if t.tag(pos) == 0 {
		return ctFree
	}
	meta := atomic.LoadUint32(&s.Meta)
	idle := l.tcp
	if meta&uint32(xdplbFlowFlagsFLOW_F_UDP) != 0 {
		idle = l.udp
	}
	closing := meta&uint32(xdplbFlowFlagsFLOW_F_CLOSING) != 0
	if closing {
		idle = min(idle, l.closing)
	}
	if uint64(now-atomic.LoadUint32(&s.Stamp)) > idle {
		return ctFree
	}
	if closing {
		return ctClosing
	}
	return ctLive
}

// emptySlot is ct_empty_slot: the first empty slot of the bucket with more
// of them (the first of equals), or -1 when both are full.
func (t *ctTable) emptySlot(r ctRef) int {
	var n [2]int
	first := [2]int{-1, -1}
	for j, b := range r.idx {
		for i := range ctBucketSlots {
			if t.tag(int(b)*ctBucketSlots+i) == 0 {
				n[j]++
				if first[j] < 0 {
					first[j] = int(b)*ctBucketSlots + i
				}
			}
		}
	}
	switch {
	case n[0] == 0 && n[1] == 0:
		return -1
	case n[1] > n[0]:
		return first[1]
	}
	return first[0]
}

// victim is ct_victim: the position an insert takes once both buckets are
// full, its tag as read and its class.
func (t *ctTable) victim(r ctRef, now uint32, l ctLimits) (pos int, tag uint64, class int) {
	var nfree [2]int
	for j, b := range r.idx {
		for i := range ctBucketSlots {
			if t.classOf(int(b)*ctBucketSlots+i, now, l) == ctFree {
				nfree[j]++
			}
		}
	}
	var best uint64
	pos, class = int(r.idx[0])*ctBucketSlots, ctFree
	for j, b := range r.idx {
		pref := uint64(0)
		if (j == 0 && nfree[0] >= nfree[1]) || (j == 1 && nfree[1] > nfree[0]) {
			pref = 1
		}
		for i := range ctBucketSlots {
			p := int(b)*ctBucketSlots + i
			tg := t.tag(p)
			c := t.classOf(p, now, l)
			score := uint64(c)<<34 | uint64(now-atomic.LoadUint32(&t.slot(p).Stamp))
			if c == ctFree {
				score |= pref << 33
				if tg == 0 {
					score |= 1 << 32
				}
			}
			if score > best {
				best, pos, tag, class = score, p, tg, c
			}
		}
	}
	return pos, tag, class
}

// ctInsert is the result of an insert: where the flow went, and whether a
// live flow lost its slot for it.
type ctInsert struct {
	pos         int
	evictedLive bool
}

// insert is conntrack_insert: records the flow with meta (FLOW_F_*, the
// SNAT port; FLOW_F_UDP is added for UDP) stamped now. ok is false when
// another writer took the chosen slot first.
func (t *ctTable) insert(k *xdplbFlowKey, bid, meta, now uint32, l ctLimits) (res ctInsert, ok bool) {
	r := ctRefOf(ctHash(t.seed, k), t.buckets)
	tag := r.fp<<ctFPShift | uint64(bid)&ctBackendMask
	if Protocol(k.Proto) == ProtoUDP {
		meta |= uint32(xdplbFlowFlagsFLOW_F_UDP)
	}
	if pos := t.find(r); pos >= 0 {
		s := t.slot(pos)
		atomic.StoreUint64(&s.Tag, tag)
		atomic.StoreUint32(&s.Stamp, now)
		atomic.StoreUint32(&s.Meta, meta)
		return ctInsert{pos: pos}, true
	}
	pos, old, class := t.emptySlot(r), uint64(0), ctFree
	if pos < 0 {
		pos, old, class = t.victim(r, now, l)
	}
	s := t.slot(pos)
	if !atomic.CompareAndSwapUint64(&s.Tag, old, tag) {
		return ctInsert{}, false
	}
	atomic.StoreUint32(&s.Stamp, now)
	atomic.StoreUint32(&s.Meta, meta)
	*t.key(pos) = *k
	return ctInsert{pos: pos, evictedLive: class == ctLive}, true
}

// lookup is the key's flow, as the program finds it.
func (t *ctTable) lookup(k *xdplbFlowKey) (s xdplbCtSlot, pos int, ok bool) {
	pos = t.find(ctRefOf(ctHash(t.seed, k), t.buckets))
	if pos < 0 {
		return xdplbCtSlot{}, -1, false
	}
	p := t.slot(pos)
	return xdplbCtSlot{Tag: atomic.LoadUint64(&p.Tag), Stamp: atomic.LoadUint32(&p.Stamp), Meta: atomic.LoadUint32(&p.Meta)}, pos, true
}

// delete frees the key's slot (conntrack_delete); false: there was none.
func (t *ctTable) delete(k *xdplbFlowKey) bool {
	pos := t.find(ctRefOf(ctHash(t.seed, k), t.buckets))
	if pos < 0 {
		return false
	}
	s := t.slot(pos)
	return atomic.CompareAndSwapUint64(&s.Tag, atomic.LoadUint64(&s.Tag), 0)
}

// walk calls fn with every slot in use, as a key and a flowVal whose
// stamp is made a full tick count at now (halfStamp), in the table's
// order, until fn returns false. The table changes under the walk: a slot
// taken meanwhile may be seen with its former key for a moment.
func (t *ctTable) walk(now uint64, fn func(xdplbFlowKey, flowVal) bool) {
	n := int(t.buckets) * ctBucketSlots
	for pos := range n {
		tag := t.tag(pos)
		if tag == 0 {
			continue
		}
		s := t.slot(pos)
		v := flowVal{
			BackendId: uint32(tag & ctBackendMask),
			Flags:     atomic.LoadUint32(&s.Meta) &^ uint32(xdplbFlowFlagsFLOW_F_UDP),
			LastSeen:  halfStamp(atomic.LoadUint32(&s.Stamp), now),
		}
		if !fn(*t.key(pos), v) {
			return
		}
	}
}

// count is the slots in use, finished flows included until their slot is
// taken again.
func (t *ctTable) count() int {
	n := 0
	for pos := range int(t.buckets) * ctBucketSlots {
		if t.tag(pos) != 0 {
			n++
		}
	}
	return n
}

// mapCT maps the kernel's table (the Datapath's maps) for Go.
func mapCT(slots, keys *ebpf.Map, seed uint64) (*ctTable, error) {
	if slots.MaxEntries() != keys.MaxEntries() {
		return nil, fmt.Errorf("conntrack has %d buckets, ct_keys %d", slots.MaxEntries(), keys.MaxEntries())
	}
	t := &ctTable{buckets: slots.MaxEntries(), seed: seed}
	var err error
	if t.slots, err = mmapArray(slots, ctBucketSize); err != nil {
		return nil, fmt.Errorf("map conntrack: %w", err)
	}
	if t.keys, err = mmapArray(keys, ctKeyBucketLen); err != nil {
		unix.Munmap(t.slots)
		return nil, fmt.Errorf("map ct_keys: %w", err)
	}
	return t, nil
}

func mmapArray(m *ebpf.Map, valueSize int) ([]byte, error) {
	if int(m.ValueSize()) != valueSize {
		return nil, fmt.Errorf("value size %d, want %d", m.ValueSize(), valueSize)
	}
	page := os.Getpagesize()
	size := (int(m.MaxEntries())*valueSize + page - 1) / page * page
	b, err := unix.Mmap(m.FD(), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, err
	}
	return b[:int(m.MaxEntries())*valueSize], nil
}

func (t *ctTable) unmap() error {
	if t == nil || t.slots == nil {
		return nil
	}
	err := errors.Join(unix.Munmap(t.slots[:cap(t.slots)]), unix.Munmap(t.keys[:cap(t.keys)]))
	t.slots, t.keys = nil, nil
	return err
}

// newCTSeed is a table's random hash seed (never 0, which marks none).
func newCTSeed() (uint64, error) {
	var b [8]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			return 0, fmt.Errorf("conntrack seed: %w", err)
		}
		if s := binary.NativeEndian.Uint64(b[:]); s != 0 {
			return s, nil
		}
	}
}

// ctPins is what Load found of the connection table's pins: the seed of
// the table it keeps, or a table of an earlier layout to carry over.
type ctPins struct {
	seed   uint64
	legacy *ebpf.Map // an LRU hash conntrack of a build before this table, unpinned, to migrate
}

// The pins of the connection table: conntrack, ct_keys and ct_seed go
// together, and the count iterator of the LRU table is no longer used.
var ctPinNames = []string{xdplbMapConntrack, xdplbMapCtKeys, xdplbMapCtSeed}

const legacyCountPin = "iter_ct_count"

// prepareCTPins decides, before the maps are loaded, what becomes of a
// pinned connection table: one of this layout with its seed is kept; one
// of the LRU layout (conntrack an LRU hash) is unpinned and returned for
// migrateLegacyCT; a table without its seed cannot be read and is
// started anew; one of this layout but another size is left for Load to
// refuse (ErrIncompatiblePin).
func prepareCTPins(spec *ebpf.CollectionSpec, pinDir string, log *slog.Logger) (ctPins, error) {
	var out ctPins
	removeStale := func(names ...string) error {
		for _, n := range names {
			if err := os.Remove(filepath.Join(pinDir, n)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("remove pinned %s: %w", n, err)
			}
		}
		return nil
	}
	if err := removeStale(legacyCountPin); err != nil {
		return out, err
	}
	m, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, xdplbMapConntrack), nil)
	switch {
	case errors.Is(err, os.ErrNotExist):
		// A new table: any keys or seed pinned are of none.
		if err := removeStale(xdplbMapCtKeys, xdplbMapCtSeed); err != nil {
			return out, err
		}
		out.seed, err = newCTSeed()
		return out, err
	case err != nil:
		return out, fmt.Errorf("load pinned conntrack: %w", err)
	}
	if m.Type() == ebpf.LRUHash {
		if err := removeStale(xdplbMapConntrack, xdplbMapCtKeys, xdplbMapCtSeed); err != nil {
			m.Close()
			return out, err
		}
		out.legacy = m
		out.seed, err = newCTSeed()
		return out, err
	}
	defer m.Close()
	if spec.Maps[xdplbMapConntrack].Compatible(m) != nil {
		out.seed, err = newCTSeed() // refused at load
		return out, err
	}
	if s, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, xdplbMapCtSeed), nil); err == nil {
		var seed uint64
		lerr := s.Lookup(uint32(0), &seed)
		s.Close()
		if lerr == nil && seed != 0 {
			out.seed = seed
			return out, nil
		}
	}
	log.Warn("conntrack: the pinned connection table has no seed and cannot be read: started anew; flows are placed again from the lookup tables")
	if err := removeStale(ctPinNames...); err != nil {
		return out, err
	}
	out.seed, err = newCTSeed()
	return out, err
}

// legacyFlowVal is the value of the LRU connection table (struct flow_val
// of the builds before this table).
type legacyFlowVal struct {
	BackendID uint32
	Flags     uint32
	LastSeen  uint64
}

// migrateLegacyCT copies the flows of an LRU connection table into this
// one, each with its backend, flags and stamp: a full-NAT flow keeps its
// SNAT port, and a flow whose backend set changed since it was placed
// keeps its backend. The old program forwards until the link is updated;
// a flow it places meanwhile is placed again by the new one, from the same
// Maglev table. Returns the flows carried over.
func (d *Datapath) migrateLegacyCT(old *ebpf.Map) (int, error) {
	if old.KeySize() != uint32(ctKeySize) || old.ValueSize() != uint32(unsafe.Sizeof(legacyFlowVal{})) {
		return 0, fmt.Errorf("conntrack of an earlier build: key %d value %d bytes, not the LRU layout", old.KeySize(), old.ValueSize())
	}
	l := d.ctLimits()
	n := 0
	var k xdplbFlowKey
	var v legacyFlowVal
	it := old.Iterate()
	for it.Next(&k, &v) {
		if v.BackendID == 0 || uint64(v.BackendID) > ctBackendMask {
			continue
		}
		if _, ok := d.ct.insert(&k, v.BackendID, v.Flags, uint32(v.LastSeen), l); ok {
			n++
		}
	}
	if err := it.Err(); err != nil {
		return n, fmt.Errorf("read conntrack of an earlier build: %w", err)
	}
	return n, nil
}

// ctLimits are the program's idle limits (nat_params, as written at load).
func (d *Datapath) ctLimits() ctLimits {
	return ctLimits{tcp: d.natParams.TcpIdleTicks, udp: d.natParams.UdpIdleTicks, closing: d.natParams.ClosingTicks}
}

// ConntrackBytes is the connection table's memory: slots and full keys.
func (d *Datapath) ConntrackBytes() uint64 { return ctTableBytes(d.ct.buckets) }

// ConntrackSlots is the connection table's slots: the most flows it can
// hold (ConntrackSize, the design load, fills ctLoadPercent of them).
func (d *Datapath) ConntrackSlots() uint32 { return d.ct.buckets * uint32(ctBucketSlots) }
