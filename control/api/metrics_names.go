package api

import (
	"sync"

	"github.com/xdplb/xdplb/control/model"
)

// A scrape of 1,000 VIPs x 32 backends names each backend in several
// families, and formatting the names (VIPID.String, BackendName,
// HealthTargetID) took a tenth of its CPU. The names only change with the
// state, so they are made once per state generation and kept here.

// vipNames are one VIP's label values: its own, and its backends' in the
// order of VIP.Backends, its fallback's last when it has one.
type vipNames struct {
	vip      string
	backends []string
	// targets are the health-check target ids (model.HealthTargetID) of
	// v.Backends, and targetBackends their backend halves; nil for a
	// VIP without a check.
	targets, targetBackends []string
}

// nameCache holds the names of the last state generation it was asked
// for; it is safe for concurrent scrapes.
type nameCache struct {
	mu   sync.Mutex
	gen  uint64
	vips []vipNames // by index in the state's VIPs; nil: none made yet
}

// of returns the names of st's VIPs, by index in st.VIPs; gen is st's
// generation (state.Store.Snapshot). The result must not be changed.
func (c *nameCache) of(st model.State, gen uint64) []vipNames {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.vips != nil && c.gen == gen && len(c.vips) == len(st.VIPs) {
		return c.vips
	}
	out := make([]vipNames, len(st.VIPs))
	for i := range st.VIPs {
		v := &st.VIPs[i]
		id := v.ID()
		n := vipNames{vip: id.String(), backends: make([]string, 0, len(v.Backends)+1)}
		for _, b := range v.Backends {
			n.backends = append(n.backends, model.BackendName(b.Address, b.Port))
		}
		if v.Fallback != nil {
			n.backends = append(n.backends, v.Fallback.String())
		}
		if _, checked := model.HealthSpec(v, model.Backend{}); checked {
			n.targets = make([]string, len(v.Backends))
			n.targetBackends = make([]string, len(v.Backends))
			for j, b := range v.Backends {
				n.targets[j] = model.HealthTargetID(id, b.Address, b.Port)
				_, n.targetBackends[j], _ = model.SplitHealthTargetID(n.targets[j])
			}
		}
		out[i] = n
	}
	c.gen, c.vips = gen, out
	return out
}
