package reconcile

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
)

// maglevCacheSize bounds the layouts a maglevCache keeps.
const maglevCacheSize = 16

// maglevCache remembers Maglev layouts by backend set. Many VIPs share
// one pool of backends, and their tables then differ only in the backend
// ids: the layout (which backend takes which slot) depends on the keys and
// weights alone, so it is built once and relabelled per VIP.
type maglevCache struct {
	layouts map[string][]uint32 // slot -> 1 + index in the sorted set, 0 empty
}

func newMaglevCache() *maglevCache { return &maglevCache{layouts: map[string][]uint32{}} }

// build returns BuildMaglev(backends, size), from the cache when it can.
func (c *maglevCache) build(backends []MaglevBackend, size uint32) []uint32 {
	bs := make([]MaglevBackend, 0, len(backends))
	for _, b := range backends {
		if b.Weight > 0 {
			bs = append(bs, b)
		}
	}
	slices.SortFunc(bs, func(a, b MaglevBackend) int { return cmp.Compare(a.Key, b.Key) })
	var k strings.Builder
	k.WriteString(strconv.FormatUint(uint64(size), 10))
	for i, b := range bs {
		if i > 0 && bs[i-1].Key == b.Key {
			// Equal keys are ordered by id: the layout depends on the ids.
			return BuildMaglev(backends, size)
		}
		k.WriteByte('|')
		k.WriteString(b.Key)
		k.WriteByte('/')
		k.WriteString(strconv.FormatUint(uint64(b.Weight), 10))
	}
	key := k.String()
	layout, ok := c.layouts[key]
	if !ok {
		idx := make([]MaglevBackend, len(bs))
		for i, b := range bs {
			idx[i] = MaglevBackend{ID: uint32(i + 1), Key: b.Key, Weight: b.Weight}
		}
		layout = BuildMaglev(idx, size)
		if len(c.layouts) >= maglevCacheSize {
			clear(c.layouts)
		}
		c.layouts[key] = layout
	}
	// ids[n] is the id of layout entry n, ids[0] the empty slot: one load
	// per slot and no branch (a whole apply relabels 65M slots).
	ids := make([]uint32, len(bs)+1)
	for i, b := range bs {
		ids[i+1] = b.ID
	}
	table := make([]uint32, len(layout))
	for i, n := range layout {
		table[i] = ids[n]
	}
	return table
}
