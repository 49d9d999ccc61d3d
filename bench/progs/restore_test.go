package progs

import (
	"bytes"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/xdplb/xdplb/internal/testutil"
)

func TestRestoreHarnessRestoresEveryRepeat(t *testing.T) {
	testutil.RequireRoot(t)
	floor, err := LoadFloor()
	if err != nil {
		t.Fatal(err)
	}
	defer floor.Close()
	in := make([]byte, 64)
	copy(in, []byte{1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 0x08, 0x00})
	for i := 14; i < len(in); i++ {
		in[i] = byte(i)
	}
	swapped := append(append(append([]byte(nil), in[6:12]...), in[0:6]...), in[12:]...)
	h, err := LoadRestoreHarness(floor, in)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()

	// The floor swaps the MACs: two plain repeats swap them back, two
	// restored ones leave them swapped once.
	for _, tt := range []struct {
		prog *ebpf.Program
		want []byte
	}{{floor, in}, {h.Program(), swapped}} {
		// A buffer of other bytes: the harness must write every one.
		run := bytes.Repeat([]byte{0xee}, len(in))
		if tt.prog == floor {
			run = bytes.Clone(in)
		}
		opts := ebpf.RunOptions{Data: run, DataOut: make([]byte, len(in)+256), Repeat: 2}
		v, err := tt.prog.Run(&opts)
		if err != nil {
			t.Fatal(err)
		}
		if v != xdpTX || !bytes.Equal(opts.DataOut, tt.want) {
			t.Fatalf("%v: verdict %d, output\n %x\nwant tx and\n %x", tt.prog, v, opts.DataOut, tt.want)
		}
	}
	if _, err := LoadRestoreHarness(floor, make([]byte, RestoreMax+1)); err == nil {
		t.Fatal("a frame longer than RestoreMax loaded")
	}
}
