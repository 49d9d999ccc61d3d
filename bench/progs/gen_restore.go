package progs

import (
	"fmt"

	"github.com/cilium/ebpf"
)

//go:generate go tool bpf2go -tags linux -target bpfel -output-stem restore restore restore.c -- -I/usr/include/x86_64-linux-gnu -O2 -g -Wall -Werror

// RestoreMax is the longest frame a restore harness takes.
const RestoreMax = 128

// RestoreHarness runs a target program on a frame it first writes back to
// what it was: with a repeat count, every run sees the same packet even
// when the target rewrites it.
type RestoreHarness struct {
	objs restoreObjects
}

// LoadRestoreHarness loads a harness that writes frame over the run's
// buffer (which must be as long) and then tail-calls target. The caller
// closes the harness; target stays the caller's.
func LoadRestoreHarness(target *ebpf.Program, frame []byte) (*RestoreHarness, error) {
	if len(frame) == 0 || len(frame) > RestoreMax {
		return nil, fmt.Errorf("restore harness: %d-byte frame, want 1 to %d", len(frame), RestoreMax)
	}
	spec, err := loadRestore()
	if err != nil {
		return nil, fmt.Errorf("load restore harness spec: %w", err)
	}
	if err := spec.Variables[restoreVarCfgLen].Set(uint32(len(frame))); err != nil {
		return nil, fmt.Errorf("set frame length: %w", err)
	}
	var buf [RestoreMax]byte
	copy(buf[:], frame)
	if err := spec.Variables[restoreVarCfgFrame].Set(buf); err != nil {
		return nil, fmt.Errorf("set frame: %w", err)
	}
	h := &RestoreHarness{}
	if err := spec.LoadAndAssign(&h.objs, nil); err != nil {
		return nil, fmt.Errorf("load restore harness: %w", err)
	}
	if err := h.objs.RsTarget.Put(uint32(0), target); err != nil {
		h.Close()
		return nil, fmt.Errorf("set restore harness target: %w", err)
	}
	return h, nil
}

// Program is the harness to run.
func (h *RestoreHarness) Program() *ebpf.Program { return h.objs.Restore }

// Close releases the harness (not its target).
func (h *RestoreHarness) Close() error { return h.objs.Close() }
