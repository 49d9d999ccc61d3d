package progs

import (
	"bytes"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/xdplb/xdplb/internal/testutil"
)

const (
	xdpPass = 2
	xdpTX   = 3
)

func TestFloorSwapsMACs(t *testing.T) {
	testutil.RequireRoot(t)
	prog, err := LoadFloor()
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()

	in := make([]byte, 64)
	copy(in, []byte{1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 0x08, 0x00})
	for i := 14; i < len(in); i++ {
		in[i] = byte(i)
	}
	opts := ebpf.RunOptions{Data: in, DataOut: make([]byte, len(in)+256)}
	v, err := prog.Run(&opts)
	if err != nil {
		t.Fatal(err)
	}
	want := append(append(append([]byte(nil), in[6:12]...), in[0:6]...), in[12:]...)
	if v != xdpTX || !bytes.Equal(opts.DataOut, want) {
		t.Fatalf("verdict %d out %x, want tx and %x", v, opts.DataOut, want)
	}
}
