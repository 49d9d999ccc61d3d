package bench

// A simulation of the connection table's live-flow loss (ct.go's cross
// check): flows into buckets of slots, two choices, as bpf/conntrack.h
// places them.

import "math/rand/v2"

// ctSimEvictions inserts flows into buckets buckets of slots slots each:
// every flow has two buckets drawn at random (they may be one), takes a
// slot of the one with more empty slots (the first of equals), and when
// both are full takes a live flow's slot, an eviction (which flow goes
// does not change the count: the table stays full there). It returns the
// evictions after each count of flows in at (ascending), cumulative.
func ctSimEvictions(buckets, slots int, at []int, seed uint64) []int {
	rng := rand.New(rand.NewPCG(seed, 14))
	fill := make([]uint8, buckets)
	out := make([]int, 0, len(at))
	evicted, inserted := 0, 0
	for _, n := range at {
		for ; inserted < n; inserted++ {
			a, b := rng.IntN(buckets), rng.IntN(buckets)
			if fill[b] < fill[a] {
				a = b
			}
			if int(fill[a]) == slots {
				evicted++
				continue
			}
			fill[a]++
		}
		out = append(out, evicted)
	}
	return out
}
