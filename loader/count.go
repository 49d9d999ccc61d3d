package loader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// errNoCount: the kernel lacks bpf_map_sum_elem_count (before 6.6) or bpf
// iterators, so an element count must come from a walk.
var errNoCount = errors.New("map element count not available")

// countIterFunc makes the iterator that counts a map: newCountIter.
type countIterFunc func(*ebpf.Map) (*link.Iter, error)

// natCountPinName is the pinned iterator that counts the NAT table, beside
// the other pins. Reading the file runs it: an open, a read and a close,
// where loading it anew costs tens of ms (kernel BTF for the kfunc). It is
// tied to the table's map id and re-made when it does not answer for that
// map (a new table). It outlives the daemon like the other pins: give it a
// new name if bpf/count.c ever writes something else. (The connection
// table is an array, counted through its mapping: conntrackEntries.)
const natCountPinName = "iter_nat_count"

// natCount reads the NAT table's element count through the pinned
// iterator, making and pinning it first if needed.
func (d *Datapath) natCount() (int, error) {
	return d.mapCount(d.objs.NatFlows, natCountPinName)
}

// mapCount reads m's element count through the iterator pinned as name,
// making and pinning it first if needed. Load tries it once for the NAT
// table (Features.ElemCount); after that only a Datapath whose kernel can
// count calls it.
func (d *Datapath) mapCount(m *ebpf.Map, name string) (int, error) {
	pin := filepath.Join(d.pinDir, name)
	if b, err := os.ReadFile(pin); err == nil {
		if n, err := decodeCount(b); err == nil {
			return n, nil
		}
		// Stale: it counts no map of ours any more.
		if err := os.Remove(pin); err != nil && !errors.Is(err, os.ErrNotExist) {
			return 0, fmt.Errorf("remove stale count iterator: %w", err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("read count iterator: %w", err)
	}
	l, err := d.countIter(m)
	if err != nil {
		return 0, err
	}
	defer l.Close()
	// A concurrent scrape may have pinned one meanwhile: either serves.
	if err := l.Pin(pin); err != nil && !errors.Is(err, os.ErrExist) {
		d.log.Warn("pin count iterator", "pin", name, "err", err)
	}
	return readCountIter(l)
}

// newCountIter loads bpf/count.c for m and returns its iterator link. It
// wraps errNoCount when the kernel cannot count.
func newCountIter(m *ebpf.Map) (*link.Iter, error) {
	info, err := m.Info()
	if err != nil {
		return nil, fmt.Errorf("map info: %w", err)
	}
	id, ok := info.ID()
	if !ok {
		return nil, fmt.Errorf("map id: %w", errNoCount)
	}
	spec, err := loadCountElems()
	if err != nil {
		return nil, fmt.Errorf("load count spec: %w", err)
	}
	if err := spec.Variables[countElemsVarTargetMapId].Set(uint32(id)); err != nil {
		return nil, fmt.Errorf("set map id: %w", err)
	}
	var objs countElemsObjects
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		// A missing kfunc or iterator type fails the load.
		return nil, fmt.Errorf("load count program: %w: %w", errNoCount, err)
	}
	// The link holds the program; the map of .rodata is the program's.
	defer objs.Close()
	l, err := link.AttachIter(link.IterOptions{Program: objs.CountElems})
	if err != nil {
		return nil, fmt.Errorf("attach count iterator: %w: %w", errNoCount, err)
	}
	return l, nil
}

func readCountIter(l *link.Iter) (int, error) {
	it, err := l.Open()
	if err != nil {
		return 0, fmt.Errorf("open count iterator: %w", err)
	}
	defer it.Close()
	b, err := io.ReadAll(it)
	if err != nil {
		return 0, fmt.Errorf("read count iterator: %w", err)
	}
	return decodeCount(b)
}

// decodeCount reads the iterator's output: one __s64, or nothing when no
// map has the id it was made for (the map is gone).
func decodeCount(b []byte) (int, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("count iterator wrote %d bytes, want 8", len(b))
	}
	n := int64(binary.NativeEndian.Uint64(b))
	// Per-CPU counters summed while other CPUs insert and delete can
	// dip below zero for a moment.
	return int(max(n, 0)), nil
}
