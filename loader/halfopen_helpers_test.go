package loader

import (
	"testing"

	"github.com/cilium/ebpf"
)

// halfBucket reads the ct_half bucket of key k (halfIndex), under the
// bucket's lock, and returns it with its index.
func halfBucket(t testing.TB, d *Datapath, k xdplbFlowKey) (xdplbHalfBucket, uint32) {
	t.Helper()
	idx := halfIndex(ctHash(d.ct.seed, &k), halfOpenBuckets(d.opts.HalfOpenSize))
	var b xdplbHalfBucket
	must(t, d.objs.CtHalf.LookupWithFlags(idx, &b, ebpf.LookupLock))
	return b, idx
}

// halfWay is k's way in ct_half, if it has one.
func halfWay(t testing.TB, d *Datapath, k xdplbFlowKey) (xdplbHalfFlow, bool) {
	t.Helper()
	b, _ := halfBucket(t, d, k)
	for _, w := range b.Ways {
		if w.VipId != 0 && w.Key == k {
			return w, true
		}
	}
	return xdplbHalfFlow{}, false
}

// ageHalf moves the stamp of k's way ticks into the past.
func ageHalf(t testing.TB, d *Datapath, k xdplbFlowKey, ticks uint64) {
	t.Helper()
	now := tickNow(t, d)
	b, idx := halfBucket(t, d, k)
	for i, w := range b.Ways {
		if w.VipId != 0 && w.Key == k {
			b.Ways[i].Stamp = uint32(now - ticks)
			must(t, d.objs.CtHalf.Update(idx, &b, ebpf.UpdateLock))
			return
		}
	}
	t.Fatalf("age: flow from port %d has no way in ct_half", fromNetPort(k.Sport))
}

func tickNow(t testing.TB, d *Datapath) uint64 {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	n, err := d.ticks.now()
	must(t, err)
	return n
}

// flowEntry is k's entry as the program keeps it: the connection table's,
// or its way in ct_half read as one (half), stamp made a tick count.
func flowEntry(t testing.TB, d *Datapath, k xdplbFlowKey) (v flowVal, half, ok bool) {
	t.Helper()
	if v, ok := ctGet(t, d, k); ok {
		return v, false, true
	}
	w, ok := halfWay(t, d, k)
	if !ok {
		return flowVal{}, false, false
	}
	return flowVal{BackendId: w.BackendId, Flags: w.Flags, LastSeen: halfStamp(w.Stamp, tickNow(t, d))}, true, true
}
