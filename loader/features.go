package loader

import (
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"golang.org/x/sys/unix"
)

// Features is what Load found in the running kernel and what the data
// plane does with it. Each is probed once, at load, by trying it (never
// read off the kernel's version), and the Datapath keeps the answers: a
// status call or a scrape never probes again. How each interface runs XDP
// is in its IfaceStatus.
type Features struct {
	// Kernel is the running kernel's release (uname -r), for operators;
	// nothing is decided on it.
	Kernel string
	// BTF: the kernel describes its own types (/sys/kernel/btf/vmlinux).
	// The element count's program needs them (CO-RE and its kfunc).
	BTF bool
	// ElemCount: the kernel loads bpf/count.c, a bpf_map iterator that
	// reads a hash map's element count with bpf_map_sum_elem_count (kernel
	// 6.6+). Then the NAT table's fill comes from the kernel at a cost
	// that does not grow with the fill; without it, it is that of the
	// daemon's last sweep. (The connection table is an array the loader
	// counts through its mapping, on any kernel.)
	ElemCount bool
	// BatchLookup: BPF_MAP_LOOKUP_BATCH works on the hash maps (probed on
	// the NAT table). Every walk of a hash table reads it in batches; Load
	// refuses a kernel without it.
	BatchLookup bool
	// BatchUpdateTables: BPF_MAP_UPDATE_BATCH works on the map of lookup
	// tables, so a whole apply swaps its tables in with one call (one RCU
	// grace period); without it, one update a table.
	BatchUpdateTables bool
	// Mmapable: arrays may be BPF_F_MMAPABLE: lookup tables are written
	// in place, and the connection table read, through a mapping; Load
	// refuses a kernel without it.
	Mmapable bool
}

// CountMethod says how the NAT table's fill is counted: "kernel"
// (bpf_map_sum_elem_count) or "walk" (the last sweep's).
func (f Features) CountMethod() string {
	if f.ElemCount {
		return "kernel"
	}
	return "walk"
}

// logArgs are the features as start-log attributes.
func (f Features) logArgs() []any {
	return []any{"kernel", f.Kernel, "btf", f.BTF, "elem_count", f.ElemCount, "count", f.CountMethod(),
		"batch_lookup", f.BatchLookup, "batch_update_tables", f.BatchUpdateTables, "mmapable", f.Mmapable}
}

// Features returns what Load found in the kernel.
func (d *Datapath) Features() Features { return d.features }

// kernelRelease is uname -r.
func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

// haveVmlinuxBTF reports whether the kernel exposes its BTF.
func haveVmlinuxBTF() bool {
	_, err := os.Stat("/sys/kernel/btf/vmlinux")
	return err == nil
}

// probeMmapable refuses a kernel without BPF_F_MMAPABLE arrays before
// anything is created: lookup tables cannot be written without them.
func probeMmapable() error {
	err := features.HaveMapFlag(features.BPF_F_MMAPABLE)
	if errors.Is(err, ebpf.ErrNotSupported) {
		return fmt.Errorf("kernel lacks BPF_F_MMAPABLE arrays, which lookup tables need: %w", err)
	}
	if err != nil {
		return fmt.Errorf("probe BPF_F_MMAPABLE: %w", err)
	}
	return nil
}

// probeBatchLookup tries BPF_MAP_LOOKUP_BATCH on the NAT table: one entry
// at most, so it costs the same at any fill.
func (d *Datapath) probeBatchLookup() error {
	keys := make([]xdplbFlowKey, 1)
	vals := make([]xdplbNatState, 1)
	var cursor ebpf.MapBatchCursor
	_, err := d.objs.NatFlows.BatchLookup(&cursor, keys, vals, nil)
	switch {
	case err == nil, errors.Is(err, ebpf.ErrKeyNotExist), errors.Is(err, unix.ENOSPC):
		// ENOSPC: the first bucket holds more entries than asked for,
		// which the kernel says only when it can batch.
		d.features.BatchLookup = true
		return nil
	case errors.Is(err, ebpf.ErrNotSupported):
		return fmt.Errorf("kernel lacks batch map lookups, which every table walk uses: %w", err)
	}
	return fmt.Errorf("probe batch lookup: %w", err)
}

// probeElemCount tries to count the NAT table with bpf/count.c,
// which also leaves its iterator pinned for the first count. An answering
// pin left by an earlier daemon is proof enough. A failure other than a
// missing kfunc or iterator is logged: the tables are walked then too.
func (d *Datapath) probeElemCount() {
	_, err := d.mapCount(d.objs.NatFlows, natCountPinName)
	if err == nil {
		d.features.ElemCount = true
		return
	}
	if !errors.Is(err, errNoCount) {
		d.log.Warn("element count probe failed: the NAT table's fill is its last sweep's", "err", err)
		return
	}
	d.log.Info("kernel has no element count (bpf_map_sum_elem_count, 6.6+): the NAT table's fill is its last sweep's", "err", err)
}
