package loader

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/xdplb/xdplb/internal/testutil"
)

// TestPutLookupTables runs with one batch update where the kernel has it
// for the map of tables (Features.BatchUpdateTables), and one update a
// table as without it.
func TestPutLookupTables(t *testing.T) {
	for _, batch := range []bool{true, false} {
		t.Run(map[bool]string{true: "batch", false: "one by one"}[batch], func(t *testing.T) {
			d := newDatapath(t)
			if batch && !d.Features().BatchUpdateTables {
				t.Logf("kernel %s has no batch update for the map of tables: one by one only", d.Features().Kernel)
				return
			}
			d.features.BatchUpdateTables = batch
			testPutLookupTables(t, d)
		})
	}
}

func testPutLookupTables(t *testing.T, d *Datapath) {
	want := map[uint32][]uint32{1: fill(testLookupSize, 1, 2, 3), 2: fill(testLookupSize, 4), 7: make([]uint32, testLookupSize)}
	must(t, d.PutLookupTables(want))
	for id, w := range want {
		got, err := d.LookupTable(id)
		must(t, err)
		if !reflect.DeepEqual(got, w) {
			t.Errorf("table %d: got %v, want %v", id, got, w)
		}
	}
	must(t, d.PutLookupTable(2, fill(testLookupSize, 5, 6))) // replaces one
	if got, err := d.LookupTable(2); err != nil || !reflect.DeepEqual(got, fill(testLookupSize, 5, 6)) {
		t.Errorf("table 2 after replace: %v (%v)", got, err)
	}
	if err := d.PutLookupTables(map[uint32][]uint32{3: fill(testLookupSize, 64)}); !errors.Is(err, ErrInvalid) {
		t.Errorf("backend id out of range: %v, want ErrInvalid", err)
	}
	if tbl, err := d.LookupTable(3); err != nil || tbl != nil {
		t.Errorf("table of a refused batch: %v (%v)", tbl, err)
	}
}

// A lookup map pinned by a build whose tables were not BPF_F_MMAPABLE
// takes no table of this one: Load says so instead of failing later.
func TestLoadRefusesNonMmapableLookupPin(t *testing.T) {
	testutil.RequireRoot(t)
	opts := testOptions(testutil.MountBPFFS(t))
	dir := filepath.Join(opts.BPFFS, pinSubdir)
	must(t, os.MkdirAll(dir, 0o700))
	old, err := ebpf.NewMap(&ebpf.MapSpec{
		Type: ebpf.ArrayOfMaps, KeySize: 4, ValueSize: 4, MaxEntries: opts.MaxVIPs,
		InnerMap: &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: opts.LookupSize},
	})
	must(t, err)
	defer old.Close()
	must(t, old.Pin(filepath.Join(dir, "lookup")))
	defer os.RemoveAll(dir)
	if _, err := Load(opts); !errors.Is(err, ErrIncompatiblePin) {
		t.Fatalf("load over a non-mmapable lookup pin: %v, want ErrIncompatiblePin", err)
	}
}
