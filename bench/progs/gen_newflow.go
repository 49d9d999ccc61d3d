package progs

import (
	"fmt"

	"github.com/cilium/ebpf"
)

//go:generate go tool bpf2go -tags linux -target bpfel -output-stem newflow newflow newflow.c -- -I/usr/include/x86_64-linux-gnu -O2 -g -Wall -Werror

// NewFlowHarness runs a target program on a frame whose 5-tuple it first
// makes new: with a repeat count every run is a flow not seen before.
type NewFlowHarness struct {
	objs newflowObjects
}

// LoadNewFlowHarness loads a harness that writes a per-run source port at
// sportOff and the last 4 bytes of the source address at saddrOff (frame
// offsets), then tail-calls target. The caller closes the harness; target
// stays the caller's.
func LoadNewFlowHarness(target *ebpf.Program, sportOff, saddrOff uint32) (*NewFlowHarness, error) {
	spec, err := loadNewflow()
	if err != nil {
		return nil, fmt.Errorf("load new-flow harness spec: %w", err)
	}
	if err := spec.Variables[newflowVarCfgSportOff].Set(sportOff); err != nil {
		return nil, fmt.Errorf("set port offset: %w", err)
	}
	if err := spec.Variables[newflowVarCfgSaddrOff].Set(saddrOff); err != nil {
		return nil, fmt.Errorf("set address offset: %w", err)
	}
	h := &NewFlowHarness{}
	if err := spec.LoadAndAssign(&h.objs, nil); err != nil {
		return nil, fmt.Errorf("load new-flow harness: %w", err)
	}
	if err := h.objs.NfTarget.Put(uint32(0), target); err != nil {
		h.Close()
		return nil, fmt.Errorf("set new-flow harness target: %w", err)
	}
	return h, nil
}

// Program is the harness to run.
func (h *NewFlowHarness) Program() *ebpf.Program { return h.objs.Newflow }

// Close releases the harness (not its target).
func (h *NewFlowHarness) Close() error { return h.objs.Close() }
