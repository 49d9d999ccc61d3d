package progs

import (
	"bytes"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/xdplb/xdplb/internal/testutil"
)

func TestNewFlowHarnessMakesNewTuples(t *testing.T) {
	testutil.RequireRoot(t)
	floor, err := LoadFloor()
	if err != nil {
		t.Fatal(err)
	}
	defer floor.Close()
	const sportOff, saddrOff = 34, 26 // IPv4: TCP source port, source address
	h, err := LoadNewFlowHarness(floor, sportOff, saddrOff)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()

	in := make([]byte, 64)
	copy(in, []byte{1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 0x08, 0x00})
	for i := 14; i < len(in); i++ {
		in[i] = byte(i)
	}
	swapped := append(append(append([]byte(nil), in[6:12]...), in[0:6]...), in[12:]...)
	seen := map[string]bool{}
	for run := range 3 {
		opts := ebpf.RunOptions{Data: in, DataOut: make([]byte, len(in)+256)}
		v, err := h.Program().Run(&opts)
		if err != nil {
			t.Fatal(err)
		}
		out := opts.DataOut
		if v != xdpTX || len(out) != len(in) {
			t.Fatalf("run %d: verdict %d, %d bytes; want tx (the floor's) and %d bytes", run, v, len(out), len(in))
		}
		// Only the tuple bytes the harness owns may differ from what the
		// floor alone makes of the frame.
		masked := bytes.Clone(out)
		copy(masked[sportOff:sportOff+2], swapped[sportOff:sportOff+2])
		copy(masked[saddrOff:saddrOff+4], swapped[saddrOff:saddrOff+4])
		if !bytes.Equal(masked, swapped) {
			t.Fatalf("run %d: output\n %x\nwant the floor's\n %x\nbut for the tuple", run, out, swapped)
		}
		tuple := string(out[saddrOff:saddrOff+4]) + string(out[sportOff:sportOff+2])
		if seen[tuple] {
			t.Fatalf("run %d: tuple %x repeats", run, tuple)
		}
		seen[tuple] = true
	}
}

func TestNewFlowHarnessRepeatsAreNew(t *testing.T) {
	testutil.RequireRoot(t)
	floor, err := LoadFloor()
	if err != nil {
		t.Fatal(err)
	}
	defer floor.Close()
	h, err := LoadNewFlowHarness(floor, 34, 26)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	in := make([]byte, 64)
	in[12] = 0x08
	// Repeat mode runs on one buffer: the sequence must advance once per
	// repeat, which the next single run shows.
	const repeat = 1000
	if v, _, err := h.Program().Benchmark(in, repeat, nil); err != nil || v != xdpTX {
		t.Fatalf("benchmark: verdict %d, %v", v, err)
	}
	var per []uint64
	if err := h.objs.NfSeq.Lookup(uint32(0), &per); err != nil {
		t.Fatal(err)
	}
	var seq uint64
	for _, n := range per {
		seq += n
	}
	if seq != repeat {
		t.Fatalf("sequence advanced %d times over %d repeats", seq, repeat)
	}
}
