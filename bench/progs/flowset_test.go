package progs

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/xdplb/xdplb/internal/testutil"
)

// flowSetFrame is an IPv4 frame long enough for the harness's offsets.
func flowSetFrame() []byte {
	in := make([]byte, 64)
	in[12] = 0x08
	return in
}

const fsSportOff, fsSaddrOff = 34, 26 // IPv4: TCP source port, source address

func flowSetHarness(t *testing.T) *FlowSetHarness {
	t.Helper()
	testutil.RequireRoot(t)
	floor, err := LoadFloor()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { floor.Close() })
	h, err := LoadFlowSetHarness(floor, fsSportOff, fsSaddrOff)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func runSource(t *testing.T, h *FlowSetHarness) (netip.Addr, uint16) {
	t.Helper()
	opts := ebpf.RunOptions{Data: flowSetFrame(), DataOut: make([]byte, 64+256)}
	v, err := h.Program().Run(&opts)
	if err != nil || v != xdpTX {
		t.Fatalf("run: verdict %d, %v", v, err)
	}
	out := opts.DataOut
	return netip.AddrFrom4([4]byte(out[fsSaddrOff : fsSaddrOff+4])), binary.BigEndian.Uint16(out[fsSportOff:])
}

func TestFlowSetInOrder(t *testing.T) {
	h := flowSetHarness(t)
	const first = 3*32768 - 2 // crosses an address
	if err := h.InOrder(first); err != nil {
		t.Fatal(err)
	}
	for i := uint64(first); i < first+4; i++ {
		addr, port := runSource(t, h)
		wantAddr, wantPort := FlowSetSource(i)
		if addr != wantAddr || port != wantPort {
			t.Fatalf("flow %d: %v:%d, want %v:%d", i, addr, port, wantAddr, wantPort)
		}
	}
	if next, err := h.Next(); err != nil || next != first+4 {
		t.Fatalf("next %d, %v; want %d", next, err, first+4)
	}
}

func TestFlowSetRandomStaysInSet(t *testing.T) {
	h := flowSetHarness(t)
	const n = 5
	if err := h.Random(n, 42); err != nil {
		t.Fatal(err)
	}
	set := map[netip.AddrPort]bool{}
	for i := range uint64(n) {
		a, p := FlowSetSource(i)
		set[netip.AddrPortFrom(a, p)] = true
	}
	seen := map[netip.AddrPort]bool{}
	for range 200 {
		a, p := runSource(t, h)
		if !set[netip.AddrPortFrom(a, p)] {
			t.Fatalf("%v:%d is not one of the %d flows", a, p, n)
		}
		seen[netip.AddrPortFrom(a, p)] = true
	}
	if len(seen) != n {
		t.Fatalf("200 draws saw %d of %d flows", len(seen), n)
	}
}

func TestFlowSetSourcePure(t *testing.T) {
	a, p := FlowSetSource(0)
	if a != netip.MustParseAddr("100.64.0.0") || p != 32768 {
		t.Fatalf("flow 0: %v:%d", a, p)
	}
	a, p = FlowSetSource(32768 + 7)
	if a != netip.MustParseAddr("100.64.0.1") || p != 32768+7 {
		t.Fatalf("flow 32775: %v:%d", a, p)
	}
}
