package loader

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/cilium/ebpf"
)

// The schedulers other than maglev and sh (bpf/sched_algo.h) read a VIP's
// backend set (map sched_sets): rr its members in turn, wrr a smooth
// weighted sequence of them, lc and wlc their open flows (map be_conns).
// random needs nothing but the lookup table.

// Sizes of struct sched_set (bpf/types.h, enum sched_limits).
const (
	// MaxSchedMembers is how many backends a VIP's set holds.
	MaxSchedMembers = len(xdplbSchedSet{}.Ids)
	// MaxWRRSequence is the longest wrr sequence: weights whose sum
	// (divided by their greatest common divisor) is larger are scaled
	// down to it, each keeping at least one turn.
	MaxWRRSequence = len(xdplbSchedSet{}.Seq)
)

// maxPersistence bounds VIPMeta.Persistence (model.MaxPersistence).
const maxPersistence = 24 * time.Hour

// persistSize is the persistence table's size for a connection table of
// ctSize flows: one client per eight flows, at least 1024.
func persistSize(ctSize uint32) uint32 { return max(ctSize/8, 1024) }

// SchedMember is one backend of a VIP's set: its id and weight (>= 1).
type SchedMember struct {
	ID     uint32
	Weight uint32
}

// SchedSet is a VIP's backend set as the maps hold it.
type SchedSet struct {
	Members []SchedMember
	// Sequence is the wrr walk, as indexes into Members.
	Sequence []uint16
}

// PutSchedSet makes members (in the order rr walks them) the backend set
// of VIP vipID, replacing the one it has at once: a packet sees the old
// set or the new one. Every member must have an entry (PutBackend) first.
func (d *Datapath) PutSchedSet(vipID uint32, members []SchedMember) error {
	if vipID == 0 || vipID >= d.opts.MaxVIPs {
		return fmt.Errorf("put scheduler set %d: %w: vip id outside 1..%d", vipID, ErrInvalid, d.opts.MaxVIPs-1)
	}
	if len(members) == 0 || len(members) > MaxSchedMembers {
		return fmt.Errorf("put scheduler set %d: %w: %d members, want 1-%d", vipID, ErrInvalid, len(members), MaxSchedMembers)
	}
	var s xdplbSchedSet
	weights := make([]uint32, len(members))
	for i, m := range members {
		if m.ID == 0 || m.ID >= d.opts.MaxBackends || m.Weight == 0 {
			return fmt.Errorf("put scheduler set %d: %w: member %d weight %d", vipID, ErrInvalid, m.ID, m.Weight)
		}
		s.Ids[i], s.Weights[i], weights[i] = m.ID, m.Weight, m.Weight
	}
	seq := WRRSequence(weights, MaxWRRSequence)
	copy(s.Seq[:], seq)
	s.Count, s.SeqLen = uint32(len(members)), uint32(len(seq))
	if err := d.objs.SchedSets.Put(vipID, &s); err != nil {
		return fmt.Errorf("put scheduler set %d: %w", vipID, err)
	}
	return nil
}

// SchedSet reads VIP vipID's backend set; false when it has none.
func (d *Datapath) SchedSet(vipID uint32) (SchedSet, bool, error) {
	var s xdplbSchedSet
	err := d.objs.SchedSets.Lookup(vipID, &s)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return SchedSet{}, false, nil
	}
	if err != nil {
		return SchedSet{}, false, fmt.Errorf("read scheduler set %d: %w", vipID, err)
	}
	n, l := min(int(s.Count), MaxSchedMembers), min(int(s.SeqLen), MaxWRRSequence)
	out := SchedSet{Members: make([]SchedMember, n), Sequence: slices.Clone(s.Seq[:l])}
	for i := range n {
		out.Members[i] = SchedMember{ID: s.Ids[i], Weight: s.Weights[i]}
	}
	return out, true, nil
}

// DeleteSchedSet removes VIP vipID's backend set; its rr, wrr, lc or wlc
// new flows then go by its lookup table (none: dropped, counted as the
// table says). Deleting an absent set is not an error.
func (d *Datapath) DeleteSchedSet(vipID uint32) error {
	err := d.objs.SchedSets.Delete(vipID)
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete scheduler set %d: %w", vipID, err)
	}
	return nil
}

// SetOpenFlows writes the open flows of backends (by id) that lc and wlc
// compare; the program counts from there (a new flow +1, a FIN or RST -1).
func (d *Datapath) SetOpenFlows(counts map[uint32]int64) error {
	if len(counts) == 0 {
		return nil
	}
	ids := make([]uint32, 0, len(counts))
	vals := make([]int64, 0, len(counts))
	for id, n := range counts {
		if id == 0 || id >= d.opts.MaxBackends {
			return fmt.Errorf("set open flows: %w: backend id %d", ErrInvalid, id)
		}
		ids, vals = append(ids, id), append(vals, n)
	}
	_, err := d.objs.BeConns.BatchUpdate(ids, vals, nil)
	if errors.Is(err, ebpf.ErrNotSupported) {
		for i := range ids {
			if err = d.objs.BeConns.Put(ids[i], vals[i]); err != nil {
				break
			}
		}
	}
	if err != nil {
		return fmt.Errorf("set open flows: %w", err)
	}
	return nil
}

// OpenFlows reads the open-flow count lc and wlc see for backend id.
func (d *Datapath) OpenFlows(id uint32) (int64, error) {
	var n int64
	if err := d.objs.BeConns.Lookup(id, &n); err != nil {
		return 0, fmt.Errorf("read open flows %d: %w", id, err)
	}
	return n, nil
}

// persistToC is the vip_persist entry of a persistence (0: none).
func (d *Datapath) persistToC(p time.Duration) (xdplbPersistTimeout, error) {
	if p == 0 {
		return xdplbPersistTimeout{}, nil
	}
	hz, err := d.ticks.rate()
	if err != nil {
		return xdplbPersistTimeout{}, err
	}
	secs := uint64(p / time.Second)
	return xdplbPersistTimeout{Ticks: secs * hz, Secs: uint32(secs)}, nil
}

// WRRSequence is the smooth weighted round robin walk (nginx's) over
// weights, as indexes: over one walk member i comes weights[i]/g times
// (g their greatest common divisor), spread as evenly as the weights
// allow (95 and 5: nineteen of the first, then one of the second). A walk
// longer than maxLen is made of the weights scaled down to fit, each
// keeping at least one turn. Weights of 0 get none; all 0: empty.
func WRRSequence(weights []uint32, maxLen int) []uint16 {
	w := scaleWeights(weights, maxLen)
	total := int64(0)
	for _, x := range w {
		total += int64(x)
	}
	if total == 0 {
		return nil
	}
	seq := make([]uint16, 0, total)
	cur := make([]int64, len(w))
	for range total {
		best := -1
		for i, x := range w {
			if x == 0 {
				continue
			}
			cur[i] += int64(x)
			if best < 0 || cur[i] > cur[best] {
				best = i
			}
		}
		cur[best] -= total
		seq = append(seq, uint16(best))
	}
	return seq
}

// scaleWeights divides weights by their greatest common divisor, then, if
// they still sum to more than maxLen, scales them to about maxLen (each
// non-zero one at least 1; the sum may stay above maxLen by up to the
// number of weights rounded up, which is then taken off the largest).
func scaleWeights(weights []uint32, maxLen int) []uint32 {
	g := uint32(0)
	for _, x := range weights {
		g = gcd(g, x)
	}
	out := make([]uint32, len(weights))
	if g == 0 {
		return out
	}
	sum := uint64(0)
	for i, x := range weights {
		out[i] = x / g
		sum += uint64(out[i])
	}
	if sum <= uint64(maxLen) {
		return out
	}
	scaled := uint64(0)
	for i, x := range out {
		if x == 0 {
			continue
		}
		out[i] = max(1, uint32(math.Round(float64(x)*float64(maxLen)/float64(sum))))
		scaled += uint64(out[i])
	}
	for scaled > uint64(maxLen) {
		i := 0
		for j := range out {
			if out[j] > out[i] {
				i = j
			}
		}
		if out[i] <= 1 {
			break // more members than turns: cannot happen below MaxSchedMembers
		}
		out[i]--
		scaled--
	}
	return out
}

func gcd(a, b uint32) uint32 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
