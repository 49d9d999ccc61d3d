package loader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/xdplb/xdplb/internal/testutil"
)

// fillConntrack puts n distinct flows, numbered from first, into the
// connection table, as the program would insert them.
func fillConntrack(tb testing.TB, d *Datapath, first, n int) {
	tb.Helper()
	for i := first; i < first+n; i++ {
		ctPut(tb, d, ctFlowKey(i), flowVal{BackendId: uint32(1 + i%7), Flags: established, LastSeen: 1})
	}
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

// countWays runs test once for each way this kernel offers to count
// table entries, each on a Datapath of its own: with the kernel's element
// count where Load found it (Features.ElemCount), and by walking always,
// the answer of a kernel without it (before 6.6) set by hand. canCount
// says whether the kernel can count, whichever way the test runs.
func countWays(t *testing.T, test func(t *testing.T, d *Datapath, canCount bool)) {
	t.Helper()
	d := newDatapath(t)
	canCount := d.Features().ElemCount
	if canCount {
		t.Run("kernel", func(t *testing.T) { test(t, d, true) })
		d = newDatapath(t)
	} else {
		t.Logf("kernel %s has no element count (bpf_map_sum_elem_count, 6.6+): counted by walking only", d.Features().Kernel)
	}
	d.features.ElemCount = false
	t.Run("walk", func(t *testing.T) { test(t, d, canCount) })
}

// TestConntrackEntriesCount checks the count against a walk through
// inserts, deletes, updates of existing flows and eviction from a full
// table. The connection table is counted through its mapping on every
// kernel, so both ways count it alike.
func TestConntrackEntriesCount(t *testing.T) {
	countWays(t, func(t *testing.T, d *Datapath, _ bool) {
		slots := int(d.ConntrackSlots())
		check := func(step string, want int) {
			t.Helper()
			walked := walkConntrackCount(d)
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
			if !ctDel(t, d, ctFlowKey(i)) {
				t.Fatalf("flow %d not found to delete", i)
			}
		}
		check("300 deleted", 700)
		// More flows than the table holds: inserts evict, and the count
		// follows the walk: every slot in use.
		fillConntrack(t, d, 1000, 2*slots)
		check("overfilled", slots)
	})
}

// TestMapElemCountOtherMap: each table's count is that table's, not
// whichever hash map comes first, both ways: the connection table, the NAT
// table beside it and, where the kernel counts, a map of no Datapath.
func TestMapElemCountOtherMap(t *testing.T) {
	countWays(t, func(t *testing.T, d *Datapath, _ bool) {
		m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 4, MaxEntries: 64})
		must(t, err)
		defer m.Close()
		for i := range uint32(5) {
			must(t, m.Put(i, i))
		}
		fillConntrack(t, d, 0, 10)
		now, err := d.ticks.now()
		must(t, err)
		for i := range 3 { // live translations: a sweep keeps them
			must(t, d.objs.NatFlows.Put(ctFlowKey(i), xdplbNatState{LastSeen: now}))
		}
		if n, err := d.ConntrackEntries(); err != nil || n != 10 {
			t.Errorf("conntrack: %d entries (%v), want 10", n, err)
		}
		st, err := d.Status()
		must(t, err)
		for _, f := range st.Maps {
			if want := map[string]int{xdplbMapConntrack: 10, xdplbMapNatFlows: 3}[f.Name]; want != 0 && f.Entries != want {
				t.Errorf("status: %s has %d entries, want %d", f.Name, f.Entries, want)
			}
		}
		if !d.Features().ElemCount {
			return
		}
		if n, err := mapElemCount(m); err != nil || n != 5 {
			t.Errorf("count of a map of no datapath: %d (%v), want 5", n, err)
		}
	})
}

// TestNATCountStalePin: a pinned counter whose map is gone (a table
// replaced while the pin stayed) is re-made, not trusted; a Datapath that
// walks does not read it. Only a kernel that counts can leave one.
func TestNATCountStalePin(t *testing.T) {
	countWays(t, func(t *testing.T, d *Datapath, canCount bool) {
		pin := filepath.Join(d.PinPath(), natCountPinName)
		if canCount {
			other, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 4, MaxEntries: 8})
			must(t, err)
			must(t, other.Put(uint32(1), uint32(1)))
			l, err := newCountIter(other)
			must(t, err)
			// In place of the counter Load made.
			if err := os.Remove(pin); err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Fatal(err)
			}
			must(t, l.Pin(pin))
			must(t, l.Close())
			must(t, other.Close()) // the map goes; the pinned counter now answers nothing
		}
		now, err := d.ticks.now()
		must(t, err)
		for i := range 10 { // live translations: a sweep keeps them
			must(t, d.objs.NatFlows.Put(ctFlowKey(i), xdplbNatState{LastSeen: now}))
		}
		for i := range 2 { // the second read goes through the new pin
			st, err := d.Status()
			must(t, err)
			for _, f := range st.Maps {
				if f.Name == xdplbMapNatFlows && f.Entries != 10 {
					t.Errorf("read %d: %d nat flows, want 10", i, f.Entries)
				}
			}
		}
	})
}

// TestCountProbedOnce: Load asks the kernel once whether it can count,
// and the Datapath remembers the answer: where it cannot (before 6.6),
// neither ConntrackEntries nor Status tries to load the counter again
// (each did, ~0.8 s a status call in a slow VM); where it can, the NAT
// table gets its counter once, at the probe (the connection table needs
// none).
func TestCountProbedOnce(t *testing.T) {
	testutil.RequireRoot(t)
	for _, fail := range []bool{true, false} {
		t.Run(map[bool]string{true: "failing", false: "kernel"}[fail], func(t *testing.T) {
			var attempts atomic.Int32
			iter := func(m *ebpf.Map) (*link.Iter, error) {
				attempts.Add(1)
				if fail {
					return nil, fmt.Errorf("load count program: %w: refused by the test", errNoCount)
				}
				return newCountIter(m)
			}
			d, err := loadWith(testOptions(testutil.MountBPFFS(t)), iter)
			must(t, err)
			t.Cleanup(func() { must(t, d.Remove()) })
			if fail && d.Features().ElemCount {
				t.Fatal("Features.ElemCount after a probe that failed")
			}
			fillConntrack(t, d, 0, 10)
			for i := range 5 {
				if n, err := d.ConntrackEntries(); err != nil || n != 10 {
					t.Errorf("call %d: %d entries (%v), want 10", i, n, err)
				}
				if _, err := d.Status(); err != nil {
					t.Errorf("call %d: status: %v", i, err)
				}
			}
			want := int32(1) // the probe at load, which pins the NAT table's counter
			if n := attempts.Load(); n != want {
				t.Errorf("count program loaded %d times by Load and 5 counts and status calls, want %d (element count %v)",
					n, want, d.Features().ElemCount)
			}
		})
	}
}

// BenchmarkConntrackEntries is the cost of xdplb_conntrack_entries on a
// default-size table (1M flows) through its mapping, and of a walk that
// reads every flow's key.
func BenchmarkConntrackEntries(b *testing.B) {
	testutil.RequireRoot(b)
	opts := testOptions(testutil.MountBPFFS(b))
	opts.ConntrackSize = DefaultConntrackSize
	d, err := Load(opts)
	must(b, err)
	b.Cleanup(func() { _ = d.Remove() })
	fillConntrack(b, d, 0, int(opts.ConntrackSize))
	walked := walkConntrackCount(d)
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
			if n := walkConntrackCount(d); n != walked {
				b.Fatalf("%d entries, want %d", n, walked)
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
