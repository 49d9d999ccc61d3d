package loader

import (
	"encoding/binary"
	"reflect"
	"testing"

	"github.com/cilium/ebpf"
)

// innerID is the id of the table map vipID's entry holds.
func innerID(t testing.TB, d *Datapath, vipID uint32) ebpf.MapID {
	t.Helper()
	var m *ebpf.Map
	must(t, d.objs.Lookup.Lookup(vipID, &m))
	defer m.Close()
	info, err := m.Info()
	must(t, err)
	id, ok := info.ID()
	if !ok {
		t.Fatal("no map id")
	}
	return id
}

// A VIP that has a table keeps its map: the slots are written in place,
// and new flows follow the new slots at once while established flows stay.
func TestPutLookupTableInPlace(t *testing.T) {
	d := newDatapath(t)
	size := d.LookupTableSize()
	must(t, d.PutVIP(vip4UDP, VIPMeta{ID: 1, Mode: ModeDR, Hash: HashMaglev}))
	for _, id := range []uint32{10, 11, 12} {
		must(t, d.PutBackend(backendAt(vip4UDP, id)))
	}
	must(t, d.PutLookupTable(1, fill(size, 10)))
	first := innerID(t, d, 1)
	est := flow{src: client4, dst: vipAddr4, dport: 53, sport: 40000, proto: ProtoUDP}
	sendTo(t, d, est, 10)

	steps := []struct {
		name  string
		table []uint32
		to    uint32 // where a new flow goes (every slot names it), 0: check the table only
	}{
		{"every slot to 11", fill(size, 11), 11},
		{"half the slots back to 10", fill(size, 10, 11), 0},
		{"every slot to 12", fill(size, 12), 12},
		{"same table again", fill(size, 12), 12},
	}
	for i, st := range steps {
		must(t, d.PutLookupTable(1, st.table))
		if id := innerID(t, d, 1); id != first {
			t.Fatalf("%s: table map %d replaced by %d, want written in place", st.name, first, id)
		}
		got, err := d.LookupTable(1)
		must(t, err)
		if !reflect.DeepEqual(got, st.table) {
			t.Fatalf("%s: table reads back differently", st.name)
		}
		if st.to != 0 {
			f := est
			f.sport = uint16(41000 + i)
			sendTo(t, d, f, st.to)
		}
		sendTo(t, d, est, 10) // established: keeps its backend
	}

	// Deleted, the next table is a new map again.
	must(t, d.DeleteLookupTable(1))
	must(t, d.PutLookupTable(1, fill(size, 11)))
	if id := innerID(t, d, 1); id == first {
		t.Errorf("table after delete reuses map %d", id)
	}
	f := est
	f.sport = 42000
	sendTo(t, d, f, 11)
}

// writeSlots writes exactly the slots that differ.
func TestWriteSlots(t *testing.T) {
	old := []uint32{1, 2, 3, 4, 5, 6, 7}
	next := []uint32{1, 9, 3, 9, 5, 6, 0}
	mem := make([]byte, len(old)*tableStride)
	put := func(tbl []uint32) {
		for i, id := range tbl {
			binary.NativeEndian.PutUint32(mem[i*tableStride:], id)
		}
	}
	read := func() []uint32 {
		out := make([]uint32, len(old))
		for i := range out {
			out[i] = binary.NativeEndian.Uint32(mem[i*tableStride:])
		}
		return out
	}
	put(old)
	// Bytes between slots are padding that is never written.
	for i := range old {
		mem[i*tableStride+4] = 0xee
	}
	if n := writeSlots(mem, next); n != 3 {
		t.Errorf("wrote %d slots, want 3", n)
	}
	if got := read(); !reflect.DeepEqual(got, next) {
		t.Errorf("slots %v, want %v", got, next)
	}
	for i := range old {
		if mem[i*tableStride+4] != 0xee {
			t.Errorf("padding after slot %d written", i)
		}
	}
	if n := writeSlots(mem, next); n != 0 {
		t.Errorf("same table again wrote %d slots, want 0", n)
	}
}

// BenchmarkPutLookupTableInPlace is a weight change on a VIP that has a
// table: the default-size table alternates between two layouts that
// differ in about 1/32 of the slots.
func BenchmarkPutLookupTableInPlace(b *testing.B) {
	d, opts := defaultTableDatapath(b)
	tables := [2][]uint32{make([]uint32, opts.LookupSize), make([]uint32, opts.LookupSize)}
	for i := range tables[0] {
		tables[0][i] = uint32(1 + i%32)
		tables[1][i] = tables[0][i]
		if i%32 == 7 {
			tables[1][i] = 8
		}
	}
	if err := d.PutLookupTable(1, tables[1]); err != nil {
		b.Fatal(err)
	}
	for i := 0; b.Loop(); i++ {
		if err := d.PutLookupTable(1, tables[i%2]); err != nil {
			b.Fatal(err)
		}
	}
}
