package reconcile

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/xdplb/xdplb/loader"
)

const testMaglevSize = loader.DefaultLookupSize

func maglevBackends(n int, weight func(i int) uint32) []MaglevBackend {
	bs := make([]MaglevBackend, n)
	for i := range bs {
		addr := netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})
		bs[i] = MaglevBackend{ID: uint32(i + 1), Key: MaglevKey(addr, 80), Weight: weight(i)}
	}
	return bs
}

func countEntries(table []uint32) map[uint32]int {
	c := map[uint32]int{}
	for _, id := range table {
		c[id]++
	}
	return c
}

func TestMaglevEqualWeightsBalanced(t *testing.T) {
	for _, n := range []int{3, 10, 100} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			table := BuildMaglev(maglevBackends(n, func(int) uint32 { return 100 }), testMaglevSize)
			if len(table) != testMaglevSize {
				t.Fatalf("len %d, want %d", len(table), testMaglevSize)
			}
			counts := countEntries(table)
			if counts[0] != 0 {
				t.Fatalf("%d empty entries", counts[0])
			}
			want := float64(testMaglevSize) / float64(n)
			worst := 0.0
			for id := uint32(1); id <= uint32(n); id++ {
				dev := (float64(counts[id]) - want) / want
				worst = max(worst, dev, -dev)
				if dev > 0.01 || dev < -0.01 {
					t.Errorf("backend %d has %d entries, want %.0f ±1%%", id, counts[id], want)
				}
			}
			t.Logf("n=%d: worst deviation from size/n %.4f%%", n, worst*100)
		})
	}
}

func TestMaglevWeightsRespected(t *testing.T) {
	weights := []uint32{1, 2, 3}
	table := BuildMaglev(maglevBackends(3, func(i int) uint32 { return weights[i] }), testMaglevSize)
	counts := countEntries(table)
	for i, w := range weights {
		want := float64(testMaglevSize) * float64(w) / 6
		dev := (float64(counts[uint32(i+1)]) - want) / want
		t.Logf("weight %d: %d entries (want %.0f, deviation %.4f%%)", w, counts[uint32(i+1)], want, dev*100)
		if dev > 0.01 || dev < -0.01 {
			t.Errorf("weight %d: %d entries, want %.0f ±1%%", w, counts[uint32(i+1)], want)
		}
	}
}

func TestMaglevZeroWeightAndEmpty(t *testing.T) {
	bs := maglevBackends(4, func(i int) uint32 { return uint32(i % 2) }) // ids 2 and 4 have weight 1
	counts := countEntries(BuildMaglev(bs, 251))
	if counts[1] != 0 || counts[3] != 0 {
		t.Errorf("weight-0 backends got entries: %v", counts)
	}
	if counts[2]+counts[4] != 251 {
		t.Errorf("weighted backends hold %d of 251 entries", counts[2]+counts[4])
	}
	for name, in := range map[string][]MaglevBackend{
		"nil":          nil,
		"all weight 0": maglevBackends(3, func(int) uint32 { return 0 }),
	} {
		table := BuildMaglev(in, 13)
		if len(table) != 13 {
			t.Fatalf("%s: len %d", name, len(table))
		}
		for _, id := range table {
			if id != 0 {
				t.Fatalf("%s: table %v, want all 0", name, table)
			}
		}
	}
}

func TestMaglevMoreBackendsThanSlots(t *testing.T) {
	table := BuildMaglev(maglevBackends(20, func(int) uint32 { return 1 }), 7)
	counts := countEntries(table)
	if counts[0] != 0 || len(counts) != 7 {
		t.Errorf("table %v: want 7 distinct backends", table)
	}
}

func TestMaglevRemovalDisruption(t *testing.T) {
	for _, n := range []int{3, 10, 100} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			all := maglevBackends(n, func(int) uint32 { return 100 })
			before := BuildMaglev(all, testMaglevSize)
			removed := all[n/2]
			rest := append(append([]MaglevBackend{}, all[:n/2]...), all[n/2+1:]...)
			after := BuildMaglev(rest, testMaglevSize)

			moved, keptMoved := 0, 0
			for i := range before {
				if before[i] == after[i] {
					continue
				}
				moved++
				if before[i] != removed.ID {
					keptMoved++ // an entry of a surviving backend changed hands
				}
				if after[i] == removed.ID {
					t.Fatalf("slot %d still points at the removed backend", i)
				}
			}
			frac := float64(moved) / testMaglevSize
			extra := float64(keptMoved) / testMaglevSize
			t.Logf("n=%d: moved %.4f of entries (1/n = %.4f), of which %.4f belonged to surviving backends",
				n, frac, 1/float64(n), extra)
			// Maglev trades a little disruption for balance; the paper
			// measures a few percent at most on top of 1/n.
			if frac > 1/float64(n)+0.03 {
				t.Errorf("moved %.4f of entries, want <= 1/n + 0.03 = %.4f", frac, 1/float64(n)+0.03)
			}
			if extra > 0.01 {
				t.Errorf("%.4f of entries moved between surviving backends, want <= 0.01", extra)
			}
			if frac < 1/float64(n)-0.01 {
				t.Errorf("moved %.4f of entries, want about 1/n = %.4f: removed backend's entries must move", frac, 1/float64(n))
			}

			// Adding it back restores the exact previous table.
			again := BuildMaglev(append(rest, removed), testMaglevSize)
			for i := range before {
				if again[i] != before[i] {
					t.Fatalf("slot %d: %d after re-adding, %d before", i, again[i], before[i])
				}
			}
		})
	}
}

func TestMaglevOrderIndependent(t *testing.T) {
	bs := maglevBackends(50, func(i int) uint32 { return uint32(1 + i%5) })
	want := BuildMaglev(bs, 1009)
	r := rand.New(rand.NewPCG(1, 2))
	for k := 0; k < 5; k++ {
		shuffled := append([]MaglevBackend{}, bs...)
		r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		got := BuildMaglev(shuffled, 1009)
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("shuffle %d: slot %d is %d, want %d", k, i, got[i], want[i])
			}
		}
	}
}

func TestMaglevDependsOnKeys(t *testing.T) {
	// Two LBs that number backends differently still send each slot to the
	// same backend key.
	a := maglevBackends(10, func(int) uint32 { return 1 })
	b := append([]MaglevBackend{}, a...)
	for i := range b {
		b[i].ID += 1000
	}
	ta, tb := BuildMaglev(a, 1009), BuildMaglev(b, 1009)
	for i := range ta {
		if tb[i] != ta[i]+1000 {
			t.Fatalf("slot %d: %d vs %d", i, ta[i], tb[i])
		}
	}
}

func TestMaglevNotPrimePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("no panic for size 65536")
		}
	}()
	BuildMaglev(maglevBackends(2, func(int) uint32 { return 1 }), 65536)
}

func TestMaglevBuildFast(t *testing.T) {
	bs := maglevBackends(1000, func(int) uint32 { return 100 })
	BuildMaglev(bs, testMaglevSize) // warm up
	start := time.Now()
	BuildMaglev(bs, testMaglevSize)
	d := time.Since(start)
	t.Logf("1000 backends x %d: %v", testMaglevSize, d)
	if d > 100*time.Millisecond && !raceEnabled {
		t.Errorf("build took %v, want well under 100ms", d)
	}
}

func BenchmarkBuildMaglev(b *testing.B) {
	bs := maglevBackends(1000, func(int) uint32 { return 100 })
	for b.Loop() {
		BuildMaglev(bs, testMaglevSize)
	}
}

// TestMaglevTablesStable pins the tables themselves: a faster build must
// place every slot as before, or an upgrade moves flows.
func TestMaglevTablesStable(t *testing.T) {
	var bs []MaglevBackend
	for j := range 1000 {
		a := netip.AddrFrom4([4]byte{10, 201, 8 + byte(j>>8), byte(j)})
		bs = append(bs, MaglevBackend{ID: uint32(j + 1), Key: MaglevKey(a, 80), Weight: uint32(1 + j%7*9)})
	}
	var h uint64
	for _, size := range []uint32{loader.DefaultLookupSize, 251, 65521} {
		for _, n := range []int{1, 3, 1000} {
			for _, id := range BuildMaglev(bs[:n], size) {
				h = h*31 + uint64(id)
			}
		}
	}
	if h != 0x3a939a788171a28e {
		t.Fatalf("tables changed: checksum %#x", h)
	}
}
