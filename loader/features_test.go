package loader

import (
	"fmt"
	"testing"
)

// TestFeatures: Load names the kernel and what it found, and Status
// reports the same. The element count's probe is held against the kernel
// version here (only here: the loader never decides on versions), so that
// a probe broken into saying no on 6.6+ cannot leave the kernel's way of
// counting untested.
func TestFeatures(t *testing.T) {
	d := newDatapath(t)
	f := d.Features()
	t.Logf("features: %+v", f)
	if f.Kernel == "" || f.Kernel != kernelRelease() {
		t.Errorf("kernel %q, want uname's %q", f.Kernel, kernelRelease())
	}
	// Load refuses a kernel without these.
	if !f.BatchLookup || !f.Mmapable {
		t.Errorf("batch lookup %v, mmapable %v after a successful load", f.BatchLookup, f.Mmapable)
	}
	if f.ElemCount && !f.BTF {
		t.Errorf("element count without BTF")
	}
	if wantCount := kernelAtLeast(t, f.Kernel, 6, 6); f.ElemCount != wantCount {
		t.Errorf("kernel %s: element count %v, want %v (bpf_map_sum_elem_count is in 6.6+)", f.Kernel, f.ElemCount, wantCount)
	}
	if f.CountMethod() != map[bool]string{true: "kernel", false: "walk"}[f.ElemCount] {
		t.Errorf("count method %q with element count %v", f.CountMethod(), f.ElemCount)
	}
	st, err := d.Status()
	must(t, err)
	if st.Features != f {
		t.Errorf("status features %+v, want %+v", st.Features, f)
	}

	// What a test sets is what the Datapath uses and says.
	d.features.ElemCount = false
	if st, err = d.Status(); err != nil || st.Features.CountMethod() != "walk" {
		t.Errorf("status after forcing the walk: %+v (%v)", st.Features, err)
	}
}

// kernelAtLeast reports whether release (uname -r) is major.minor or later.
func kernelAtLeast(t *testing.T, release string, major, minor int) bool {
	t.Helper()
	var ma, mi int
	if _, err := fmt.Sscanf(release, "%d.%d", &ma, &mi); err != nil {
		t.Fatalf("kernel release %q: %v", release, err)
	}
	return ma > major || ma == major && mi >= minor
}
