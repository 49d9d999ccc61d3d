package loader

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/xdplb/xdplb/internal/testutil"
)

// fillConntrack puts n distinct flows, numbered from first, into the
// connection table in batches.
func fillConntrack(tb testing.TB, d *Datapath, first, n int) {
	tb.Helper()
	keys := make([]xdplbFlowKey, 0, batchChunk)
	vals := make([]xdplbFlowVal, 0, batchChunk)
	flush := func() {
		if len(keys) == 0 {
			return
		}
		if _, err := d.objs.Conntrack.BatchUpdate(keys, vals, nil); err != nil {
			tb.Fatalf("batch update: %v", err)
		}
		keys, vals = keys[:0], vals[:0]
	}
	for i := first; i < first+n; i++ {
		keys = append(keys, ctFlowKey(i))
		vals = append(vals, xdplbFlowVal{BackendId: uint32(i % 7), LastSeen: 1})
		if len(keys) == batchChunk {
			flush()
		}
	}
	flush()
}

// ctFlowKey is the i-th of a family of distinct TCP flows.
func ctFlowKey(i int) xdplbFlowKey {
	k := xdplbFlowKey{Sport: uint16(i), Dport: 80 << 8, Proto: uint8(ProtoTCP)}
	k.Src[10], k.Src[11] = 0xff, 0xff
	binary.BigEndian.PutUint32(k.Src[12:], 0x0a000000|uint32(i>>16))
	k.Dst[10], k.Dst[11] = 0xff, 0xff
	copy(k.Dst[12:], []byte{10, 0, 0, 100})
	return k
}

// TestConntrackEntriesCount checks the kernel's element count against a
// walk through inserts, deletes, updates of existing flows and LRU
// eviction of a full table.
func TestConntrackEntriesCount(t *testing.T) {
	d := newDatapath(t)
	if _, err := mapElemCount(d.objs.Conntrack); err != nil {
		requireCount(t, err)
	}
	size := int(d.objs.Conntrack.MaxEntries())
	check := func(step string, want int) {
		t.Helper()
		walked, err := d.walkConntrackCount()
		must(t, err)
		got, err := d.ConntrackEntries()
		must(t, err)
		if got != walked || (want >= 0 && got != want) {
			t.Errorf("%s: ConntrackEntries %d, walk %d, want %d", step, got, walked, want)
		}
	}
	check("empty", 0)
	fillConntrack(t, d, 0, 1000)
	check("1000 inserted", 1000)
	fillConntrack(t, d, 0, 1000) // the same flows again: updates, not inserts
	check("1000 updated", 1000)
	for i := range 300 {
		k := ctFlowKey(i)
		must(t, d.objs.Conntrack.Delete(&k))
	}
	check("300 deleted", 700)
	// More flows than the table holds: the LRU evicts, and the count
	// follows the walk (a full LRU may hold slightly fewer than its size).
	fillConntrack(t, d, 1000, 2*size)
	check("overfilled", -1)
	if n, err := d.ConntrackEntries(); err != nil || n == 0 || n > size {
		t.Errorf("overfilled: %d entries (%v), want 1-%d", n, err, size)
	}
}

// TestMapElemCountOtherMap: the counter reads the map it is given, not
// whichever hash map comes first.
func TestMapElemCountOtherMap(t *testing.T) {
	testutil.RequireRoot(t)
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 4, MaxEntries: 64})
	must(t, err)
	defer m.Close()
	for i := range uint32(5) {
		must(t, m.Put(i, i))
	}
	n, err := mapElemCount(m)
	if err != nil {
		requireCount(t, err)
	}
	if n != 5 {
		t.Errorf("count %d, want 5", n)
	}
}

// TestConntrackCountStalePin: a pinned counter whose map is gone (a table
// replaced while the pin stayed) is re-made, not trusted.
func TestConntrackCountStalePin(t *testing.T) {
	d := newDatapath(t)
	other, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 4, MaxEntries: 8})
	must(t, err)
	must(t, other.Put(uint32(1), uint32(1)))
	l, err := newCountIter(other)
	if err != nil {
		requireCount(t, err)
	}
	must(t, l.Pin(filepath.Join(d.PinPath(), countPinName)))
	must(t, l.Close())
	must(t, other.Close()) // the map goes; the pinned counter now answers nothing
	fillConntrack(t, d, 0, 10)
	for i := range 2 { // the second read goes through the new pin
		if n, err := d.ConntrackEntries(); err != nil || n != 10 {
			t.Errorf("read %d: %d entries (%v), want 10", i, n, err)
		}
	}
}

// requireCount skips a test on a kernel that cannot count map elements
// (before 6.6), but fails on any other error and under CI=true.
func requireCount(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, errNoCount) || os.Getenv("CI") == "true" {
		t.Fatalf("element count: %v", err)
	}
	t.Skipf("kernel cannot count map elements: %v", err)
}

// BenchmarkConntrackEntries is the cost of xdplb_conntrack_entries on a
// full default-size table (1M entries): the kernel's count against a walk.
func BenchmarkConntrackEntries(b *testing.B) {
	testutil.RequireRoot(b)
	opts := testOptions(testutil.MountBPFFS(b))
	opts.ConntrackSize = DefaultConntrackSize
	d, err := Load(opts)
	must(b, err)
	b.Cleanup(func() { _ = d.Remove() })
	fillConntrack(b, d, 0, int(opts.ConntrackSize))
	walked, err := d.walkConntrackCount()
	must(b, err)
	b.Logf("table holds %d entries", walked)
	b.Run("count", func(b *testing.B) {
		for b.Loop() {
			n, err := d.ConntrackEntries()
			if err != nil || n != walked {
				b.Fatalf("%d entries (%v), want %d", n, err, walked)
			}
		}
	})
	b.Run("walk", func(b *testing.B) {
		for b.Loop() {
			if n, err := d.walkConntrackCount(); err != nil || n != walked {
				b.Fatalf("%d entries (%v), want %d", n, err, walked)
			}
		}
	})
}

// mapElemCount returns the number of elements of m from the per-CPU
// counters the kernel keeps for hash maps (LRU ones included), through a
// bpf_map iterator (bpf/count.c) loaded for this one call.
func mapElemCount(m *ebpf.Map) (int, error) {
	l, err := newCountIter(m)
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return readCountIter(l)
}
