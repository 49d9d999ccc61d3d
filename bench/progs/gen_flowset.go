package progs

import (
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
)

//go:generate go tool bpf2go -tags linux -target bpfel -output-stem flowset -type fs_state flowset flowset.c -- -I/usr/include/x86_64-linux-gnu -O2 -g -Wall -Werror

// FlowSetHarness runs a target program on a frame whose source it first
// makes that of flow i of a set: i in order from a first one (InOrder), or
// drawn at random below n (Random). With a repeat count, a run in order
// visits flows first, first+1, ...; at random, the flows of a set placed
// before, in no order a cache or prefetcher could follow.
type FlowSetHarness struct {
	objs flowsetObjects
}

// LoadFlowSetHarness loads a harness that writes flow i's source port at
// sportOff and source IPv4 address at saddrOff (frame offsets), then
// tail-calls target. The caller closes the harness; target stays the
// caller's.
func LoadFlowSetHarness(target *ebpf.Program, sportOff, saddrOff uint32) (*FlowSetHarness, error) {
	spec, err := loadFlowset()
	if err != nil {
		return nil, fmt.Errorf("load flow-set harness spec: %w", err)
	}
	if err := spec.Variables[flowsetVarCfgSportOff].Set(sportOff); err != nil {
		return nil, fmt.Errorf("set port offset: %w", err)
	}
	if err := spec.Variables[flowsetVarCfgSaddrOff].Set(saddrOff); err != nil {
		return nil, fmt.Errorf("set address offset: %w", err)
	}
	h := &FlowSetHarness{}
	if err := spec.LoadAndAssign(&h.objs, nil); err != nil {
		return nil, fmt.Errorf("load flow-set harness: %w", err)
	}
	if err := h.objs.FsTarget.Put(uint32(0), target); err != nil {
		h.Close()
		return nil, fmt.Errorf("set flow-set harness target: %w", err)
	}
	return h, nil
}

// InOrder makes the next runs write flows first, first+1, ...
func (h *FlowSetHarness) InOrder(first uint64) error {
	return h.set(flowsetFsState{Next: first})
}

// Random makes every next run write a flow drawn from [0, n), a sequence
// that seed fixes.
func (h *FlowSetHarness) Random(n uint32, seed uint64) error {
	if n == 0 {
		return fmt.Errorf("flow set: no flows to draw from")
	}
	return h.set(flowsetFsState{Rng: seed, N: n, Random: 1})
}

// Next is the flow the next run in order writes.
func (h *FlowSetHarness) Next() (uint64, error) {
	var st flowsetFsState
	if err := h.objs.FsSt.Lookup(uint32(0), &st); err != nil {
		return 0, fmt.Errorf("read flow-set state: %w", err)
	}
	return st.Next, nil
}

func (h *FlowSetHarness) set(st flowsetFsState) error {
	if err := h.objs.FsSt.Put(uint32(0), &st); err != nil {
		return fmt.Errorf("set flow-set state: %w", err)
	}
	return nil
}

// Program is the harness to run.
func (h *FlowSetHarness) Program() *ebpf.Program { return h.objs.Flowset }

// Close releases the harness (not its target).
func (h *FlowSetHarness) Close() error { return h.objs.Close() }

// FlowSetSource is flow i's source as the harness writes it: port 32768 +
// i mod 2^15, address 100.64.0.0 + i / 2^15 (mod 2^22).
func FlowSetSource(i uint64) (netip.Addr, uint16) {
	a := uint32(0x64400000) | uint32(i>>15)&0x3fffff
	return netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)}), 0x8000 | uint16(i&0x7fff)
}
