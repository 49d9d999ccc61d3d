package loader

import (
	"net/netip"
	"testing"

	"github.com/xdplb/xdplb/internal/testutil"
)

// BenchmarkPutLookupTable writes one full table of the default size, the
// cost of every lookup-table change the control plane makes.
func BenchmarkPutLookupTable(b *testing.B) {
	d, opts := defaultTableDatapath(b)
	table := make([]uint32, opts.LookupSize)
	for i := range table {
		table[i] = uint32(1 + i%32)
	}
	for i := 0; b.Loop(); i++ {
		if err := d.PutLookupTable(uint32(1+i%int(opts.MaxVIPs-1)), table); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPutLookupTables writes the tables of 1,000 VIPs of 32 backends
// each in one call: a full apply.
func BenchmarkPutLookupTables(b *testing.B) {
	testutil.RequireRoot(b)
	opts := testOptions(testutil.MountBPFFS(b))
	opts.LookupSize = DefaultLookupSize
	opts.MaxVIPs = 1001
	d, err := Load(opts)
	if err != nil {
		b.Fatalf("load: %v", err)
	}
	b.Cleanup(func() { d.Remove() })
	tables := make(map[uint32][]uint32)
	for id := uint32(1); id <= 1000; id++ {
		t := make([]uint32, opts.LookupSize)
		for i := range t {
			t[i] = 1 + (uint32(i)+id)%32
		}
		tables[id] = t
	}
	for b.Loop() {
		if err := d.PutLookupTables(tables); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPutVIPs writes 1,000 VIPs and deletes them again.
func BenchmarkPutVIPs(b *testing.B) {
	testutil.RequireRoot(b)
	opts := testOptions(testutil.MountBPFFS(b))
	opts.MaxVIPs = 1001
	d, err := Load(opts)
	if err != nil {
		b.Fatalf("load: %v", err)
	}
	b.Cleanup(func() { d.Remove() })
	keys := make([]VIPKey, 1000)
	for i := range keys {
		keys[i] = VIPKey{Addr: netip.AddrFrom4([4]byte{10, 1, byte(i / 250), byte(i % 250)}), Port: 80, Proto: ProtoTCP}
	}
	for b.Loop() {
		for i, k := range keys {
			if err := d.PutVIP(k, VIPMeta{ID: uint32(i + 1), Mode: ModeDR, Hash: HashMaglev}); err != nil {
				b.Fatal(err)
			}
		}
		for _, k := range keys {
			if err := d.DeleteVIP(k); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// defaultTableDatapath loads the program with lookup tables of the default
// size, the size the control plane writes; Remove runs at cleanup.
func defaultTableDatapath(b *testing.B) (*Datapath, Options) {
	b.Helper()
	testutil.RequireRoot(b)
	opts := testOptions(testutil.MountBPFFS(b))
	opts.LookupSize = DefaultLookupSize
	d, err := Load(opts)
	if err != nil {
		b.Fatalf("load: %v", err)
	}
	b.Cleanup(func() { d.Remove() })
	return d, opts
}
