package loader

import (
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf"
)

// The half-open table (bpf/types.h, struct half_bucket): flows that saw
// only their opening, kept apart from the connection table so that a flood
// of openings never evicts an established flow, in buckets of halfWays
// ways with their own eviction (early drop, bpf/conntrack.h). Its size is
// Options.HalfOpenSize, a quarter of --conntrack-size by default.
// Half-open flows are short lived (an opening is answered within a round
// trip), so under a flood a flow keeps its way for about its VIP's share
// of the table over the flood's rate: 0.16 s for a VIP flooded at 100,000
// SYN/s with --conntrack-size 65536, 2.6 s with the default size, many
// round trips either way, and other VIPs' flows keep theirs (isolation).

// halfWays is HALF_WAYS of bpf/types.h, read off the generated bucket.
const halfWays = uint32(len(xdplbHalfBucket{}.Ways))

// halfOpenBuckets is the half-open table's size in buckets for size
// flows: whole buckets, at least one.
func halfOpenBuckets(size uint32) uint32 {
	return max((size+halfWays-1)/halfWays, 1)
}

// halfIndex is a flow's bucket of ct_half (half_bucket_of) from its
// flow_hash64 h, in a table of n buckets.
func halfIndex(h uint64, n uint32) uint32 { return hashRange(uint32(h>>16), n) }

// halfOpenTicks is the half-open timeout in kernel ticks, as the program
// compares it with the 32-bit stamps of ct_half.
func halfOpenTicks(c *tickClock, timeout time.Duration) (uint64, error) {
	hz, err := c.rate()
	if err != nil {
		return 0, err
	}
	return uint64(timeout.Seconds() * float64(hz)), nil
}

// halfStamp turns a way's 32-bit stamp into the kernel ticks of now's
// clock (flow_val.last_seen's): the way was stamped within 2^32 ticks of
// now, so the difference of the low halves is its age. A stamp ahead of
// now (written during the walk) reads as now.
func halfStamp(stamp uint32, now uint64) uint64 {
	age := uint32(now) - stamp
	if age > 1<<31 {
		return now
	}
	return now - uint64(age)
}

// walkHalf calls fn for every way in use of the half-open table, as a
// connection-table entry (its stamp made a full tick count at now), until
// fn returns false. Each bucket is read under its lock, so no way is read
// half written; the table changes between buckets.
func (d *Datapath) walkHalf(now uint64, fn func(xdplbFlowKey, flowVal) bool) error {
	const chunk = 256
	keys := make([]uint32, chunk)
	vals := make([]xdplbHalfBucket, chunk)
	opts := &ebpf.BatchOptions{ElemFlags: uint64(ebpf.LookupLock)}
	var cursor ebpf.MapBatchCursor
	for {
		n, err := d.objs.CtHalf.BatchLookup(&cursor, keys, vals, opts)
		for i := range n {
			for _, w := range vals[i].Ways {
				if w.VipId == 0 {
					continue
				}
				v := flowVal{BackendId: w.BackendId, Flags: w.Flags, LastSeen: halfStamp(w.Stamp, now)}
				if !fn(w.Key, v) {
					return nil
				}
			}
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read half-open flows: %w", err)
		}
	}
}

// halfCount is the number of ways in use of the half-open table, expired
// ones included until they are taken again (map half_count).
func (d *Datapath) halfCount() (int, error) {
	var per []int64
	if err := d.objs.HalfCount.Lookup(uint32(0), &per); err != nil {
		return 0, fmt.Errorf("read half-open count: %w", err)
	}
	var n int64
	for _, c := range per {
		n += c
	}
	return int(max(n, 0)), nil
}

// markNATEstablished marks every NAT translation established (and its
// backend as having answered), once, on an upgrade from a build before
// the half-open table: that build did not mark them, and unmarked they
// would be half-open ones, reclaimed after Options.HalfOpenTimeout idle
// where an established flow has 15 minutes. A translation that was a
// half-open flow's keeps its old timeout this once. Run before the new
// program is attached: the old one may still refresh a stamp meanwhile,
// which this can set back by up to a second.
func (d *Datapath) markNATEstablished() error {
	mark := uint32(xdplbNatFlagsNAT_F_ESTABLISHED | xdplbNatFlagsNAT_F_REPLIED)
	var keys []xdplbFlowKey
	var vals []xdplbNatState
	err := iterate(d.objs.NatFlows, func(k xdplbFlowKey, v xdplbNatState) {
		if v.Flags&mark != mark {
			v.Flags |= mark
			keys, vals = append(keys, k), append(vals, v)
		}
	})
	if err != nil {
		return fmt.Errorf("read nat flows: %w", err)
	}
	for i, k := range keys {
		err := d.objs.NatFlows.Update(k, vals[i], ebpf.UpdateExist)
		if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("mark nat flows established: %w", err)
		}
	}
	if len(keys) > 0 {
		d.log.Info("NAT translations of an earlier build marked established", "count", len(keys))
	}
	return nil
}
