package bench

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/xdplb/xdplb/bench/progs"
	"github.com/xdplb/xdplb/internal/testutil"
)

// The generator writes the template over whatever the frame holds, and in
// new-flow mode gives each frame its own source port and address with a
// valid IPv4 checksum.
func TestVethGenerator(t *testing.T) {
	testutil.RequireRoot(t)
	w := &vethWire{
		Gen: &vethNode{MAC: vethGenMAC},
		LB:  &vethNode{MAC: vethLBMAC},
	}
	frame := vethFrame(w)
	if vethIPChecksum(frame[14:34]) != 0 {
		t.Fatalf("template IPv4 checksum does not verify: %x", frame[14:34])
	}
	garbage := bytes.Repeat([]byte{0xee}, len(frame))
	run := func(p *ebpf.Program) []byte {
		t.Helper()
		opts := ebpf.RunOptions{Data: garbage, DataOut: make([]byte, len(garbage)+256)}
		v, err := p.Run(&opts)
		if err != nil {
			t.Fatal(err)
		}
		if v != 3 { // XDP_TX
			t.Fatalf("verdict %d, want XDP_TX", v)
		}
		return opts.DataOut[:len(garbage)]
	}

	one, err := progs.LoadGenerator(frame[:progs.GenHeaderLen], false)
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	if out := run(one); !bytes.Equal(out[:progs.GenHeaderLen], frame[:progs.GenHeaderLen]) {
		t.Fatalf("one-flow header\n got %x\nwant %x", out[:progs.GenHeaderLen], frame[:progs.GenHeaderLen])
	}

	newFlows, err := progs.LoadGenerator(frame[:progs.GenHeaderLen], true)
	if err != nil {
		t.Fatal(err)
	}
	defer newFlows.Close()
	seen := map[string]bool{}
	for range 4 {
		out := run(newFlows)
		if vethIPChecksum(out[14:34]) != 0 {
			t.Fatalf("new-flow IPv4 checksum does not verify: %x", out[14:34])
		}
		if !bytes.Equal(out[:24], frame[:24]) || !bytes.Equal(out[30:34], frame[30:34]) || !bytes.Equal(out[36:42], frame[36:42]) {
			t.Fatalf("new-flow frame changed more than source address, port and IPv4 checksum:\n got %x\nwant %x", out[:42], frame[:42])
		}
		tuple := string(out[26:30]) + string(out[34:36])
		if seen[tuple] {
			t.Fatalf("source %x port %d repeated", out[26:30], binary.BigEndian.Uint16(out[34:36]))
		}
		seen[tuple] = true
	}
}
