package reconcile

import (
	"cmp"
	"fmt"
	"github.com/xdplb/xdplb/loader"
	"net/netip"
	"slices"
)

// MaglevBackend is one backend as the Maglev table builder sees it.
type MaglevBackend struct {
	ID     uint32 // written into the table (the data plane's backend id)
	Key    string // stable name, see MaglevKey: it alone decides the backend's slots
	Weight uint32 // share of the table; 0: no slots
}

// MaglevKey is the key of a backend: "ADDR:PORT" with the port it really
// receives on (the VIP's port when the backend has none). Keys, not ids, feed
// the hashes, so every LB with the same config builds the same table.
func MaglevKey(addr netip.Addr, port uint16) string {
	return netip.AddrPortFrom(addr.Unmap(), port).String()
}

// BuildMaglev builds a lookup table of size entries (size must be prime)
// with the population of the Maglev paper (Eisenbud et al., NSDI 2016): each
// backend walks its own permutation of the slots, given by an offset and a
// skip from two hashes of its key, and takes its next free slot in turn.
// Weights are honoured as in Katran: a backend takes a turn each time its
// accumulated weight reaches the largest weight, so its share of the table
// is proportional to its weight.
//
// The result depends only on the set of (Key, Weight, ID), not on the order
// of backends. Removing one backend moves little more than its own slots.
// Backends with weight 0 get no slot; with none left the table is all 0
// (the data plane's "no backend").
//
// Changing the hashes below reshuffles every flow of an upgraded LB: keep them.
func BuildMaglev(backends []MaglevBackend, size uint32) []uint32 {
	if !loader.IsPrime(size) {
		// Only a prime size makes every skip a full permutation; anything
		// else could loop forever. Sizes are validated at flag parsing.
		panic(fmt.Sprintf("maglev table size %d is not prime", size))
	}
	table := make([]uint32, size)
	bs := make([]MaglevBackend, 0, len(backends))
	var maxW uint64
	for _, b := range backends {
		if b.Weight > 0 {
			bs = append(bs, b)
			maxW = max(maxW, uint64(b.Weight))
		}
	}
	if len(bs) == 0 {
		return table
	}
	slices.SortFunc(bs, func(a, b MaglevBackend) int {
		if c := cmp.Compare(a.Key, b.Key); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})

	n := len(bs)
	next := make([]uint32, n) // next slot each backend tries
	skip := make([]uint32, n)
	acc := make([]uint64, n) // accumulated weight
	for i, b := range bs {
		next[i] = uint32(hashKey(b.Key, seedOffset) % uint64(size))
		if size > 1 {
			skip[i] = uint32(hashKey(b.Key, seedSkip)%uint64(size-1)) + 1
		}
	}
	// One bit per slot: the walks probe the slots at random, and a bitmap
	// of a big table stays in the L1 cache where a []bool does not.
	taken := make([]uint64, (size+63)/64)
	filled := uint32(0)
	for {
		for i := range bs {
			acc[i] += uint64(bs[i].Weight)
			if acc[i] < maxW {
				continue
			}
			acc[i] -= maxW
			c := next[i]
			for taken[c/64]&(1<<(c%64)) != 0 {
				c += skip[i]
				if c >= size {
					c -= size
				}
			}
			taken[c/64] |= 1 << (c % 64)
			table[c] = bs[i].ID
			c += skip[i]
			if c >= size {
				c -= size
			}
			next[i] = c
			filled++
			if filled == size {
				return table
			}
		}
	}
}

// Seeds of the two key hashes (offset and skip must be independent).
const (
	seedOffset = 0
	seedSkip   = 0x9e3779b97f4a7c15
)

// hashKey is FNV-1a 64 with a seeded basis, then the splitmix64 finalizer:
// FNV alone barely spreads keys that differ in their last byte only
// ("10.0.0.1:80", "10.0.0.2:80"), and the finalizer fixes that.
func hashKey(key string, seed uint64) uint64 {
	h := uint64(14695981039346656037) ^ seed
	for i := 0; i < len(key); i++ {
		h ^= uint64(key[i])
		h *= 1099511628211
	}
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}
