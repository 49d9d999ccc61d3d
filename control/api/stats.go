package api

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/control/reconcile"
	"github.com/xdplb/xdplb/loader"
)

// snapshot reads the counters of every VIP and backend of st (a VIP's
// fallback last among its backends, marked), the XDP actions, what the
// drivers refused to send and the drops from dp, interfaces named by
// ifname: what `xdplb stats` shows and /metrics exports, read once, in one
// place. A read that fails leaves its part out
// and is reported; the rest is still there (the metrics serve it).
func snapshot(dp reconcile.Datapath, st model.State, ifname func(int) string) (Stats, error) {
	out := Stats{Time: time.Now(), VIPs: []VIPStats{}, Actions: []ActionStats{}, TxErrors: []TxErrorStats{}, Drops: map[string]uint64{}}
	vips, err := dp.VIPs()
	if err != nil {
		return out, fmt.Errorf("read vips: %w", err)
	}
	var errs []error
	vc, err := dp.VIPCounters()
	if err != nil {
		errs = append(errs, fmt.Errorf("read vip counters: %w", err))
	}
	vd, err := dp.VIPDropCounters()
	if err != nil {
		errs = append(errs, fmt.Errorf("read vip drop counters: %w", err))
	}
	bc, err := dp.BackendCountsByID()
	if err != nil {
		errs = append(errs, fmt.Errorf("read backend counters: %w", err))
	}
	type ref struct {
		vip  uint32
		addr netip.Addr
		port uint16
	}
	byRef := make(map[ref]*loader.BackendCount, len(bc))
	for i := range bc {
		mb := &bc[i]
		byRef[ref{mb.VIPID, mb.Addr.Unmap(), mb.Port}] = mb
	}
	for _, v := range st.VIPs {
		vs := VIPStats{VIP: v.ID().String(), Backends: []BackendStats{}}
		meta, inMaps := vips[reconcile.VIPKeyOf(v.ID())]
		if inMaps && vc != nil {
			c := vc[meta.ID]
			vs.CounterSet, vs.mapped, vs.id = CounterSet{Packets: c.Packets, Bytes: c.Bytes, Flows: c.Flows}, true, meta.ID
			vs.ICMPErrors = c.ICMPErrors
		}
		if inMaps && len(vd[meta.ID]) > 0 {
			vs.Drops = maps.Clone(vd[meta.ID])
		}
		bs := v.Backends
		if v.Fallback != nil {
			bs = append(slices.Clip(bs), v.Fallback.Backend())
		}
		for i, b := range bs {
			bst := BackendStats{Address: b.Address, Port: b.Port, Fallback: i == len(v.Backends)}
			if c, ok := byRef[ref{meta.ID, b.Address.Unmap(), b.Port}]; inMaps && ok {
				bst.CounterSet, bst.mapped, bst.id = CounterSet{Packets: c.Packets, Bytes: c.Bytes, Flows: c.Flows}, true, c.ID
			}
			vs.Backends = append(vs.Backends, bst)
		}
		out.VIPs = append(out.VIPs, vs)
	}
	if acts, err := dp.ActionCounters(); err != nil {
		errs = append(errs, fmt.Errorf("read action counters: %w", err))
	} else {
		for _, a := range acts {
			out.Actions = append(out.Actions, ActionStats{Iface: ifname(int(a.Ifindex)), Action: a.Action, Count: a.Count})
		}
		slices.SortStableFunc(out.Actions, func(a, b ActionStats) int { return strings.Compare(a.Iface, b.Iface) })
	}
	txErrs, err := dp.DriverTxErrors()
	if err != nil {
		errs = append(errs, fmt.Errorf("read driver tx errors: %w", err))
	}
	for _, e := range txErrs {
		out.TxErrors = append(out.TxErrors, TxErrorStats{Iface: ifname(int(e.Ifindex)), Count: e.Count})
	}
	slices.SortStableFunc(out.TxErrors, func(a, b TxErrorStats) int { return strings.Compare(a.Iface, b.Iface) })
	if drops, err := dp.DropCounters(); err != nil {
		errs = append(errs, fmt.Errorf("read drop counters: %w", err))
	} else {
		for k, n := range drops {
			out.Drops[k] = n
		}
	}
	return out, errors.Join(errs...)
}

// baseline is what `xdplb stats --zero` took: the counters then, which
// Server.Stats subtracts from what it reads. It lives in the daemon, not
// in the maps, so that the metrics, read from the same counters, only
// ever grow as Prometheus expects; a daemon restart forgets it.
type baseline struct {
	mu   sync.Mutex
	base *Stats // nil: never zeroed
}

func (b *baseline) set(st Stats) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.base = &st
}

// apply returns st less the baseline, and since when it counts.
func (b *baseline) apply(st Stats) Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.base == nil {
		return st
	}
	return subtract(st, *b.base)
}

// subtract returns cur less base, counter set by counter set. A VIP or
// backend is matched by its name and its id in the maps: one deleted and
// added again (its counters start at zero) is not, unless it took the
// same id; a set that went below base (a reload of the program, or a
// reused id) counts from zero, not from base.
func subtract(cur, base Stats) Stats {
	type vipRef struct {
		vip string
		id  uint32
	}
	type backendRef struct {
		vip  vipRef
		addr netip.Addr
		port uint16
		id   uint32
	}
	vips := map[vipRef]VIPStats{}
	backends := map[backendRef]CounterSet{}
	for _, v := range base.VIPs {
		if !v.mapped {
			continue
		}
		vr := vipRef{v.VIP, v.id}
		vips[vr] = v
		for _, b := range v.Backends {
			if b.mapped {
				backends[backendRef{vr, b.Address, b.Port, b.id}] = b.CounterSet
			}
		}
	}
	out := cur
	out.Since = base.Time
	out.VIPs = make([]VIPStats, len(cur.VIPs))
	for i, v := range cur.VIPs {
		vr := vipRef{v.VIP, v.id}
		if bv, ok := vips[vr]; ok && v.mapped {
			if v.CounterSet.covers(bv.CounterSet) && v.ICMPErrors >= bv.ICMPErrors {
				v.CounterSet = v.CounterSet.minus(bv.CounterSet)
				v.ICMPErrors -= bv.ICMPErrors
			}
			v.Drops = subtractDrops(v.Drops, bv.Drops)
		}
		v.Backends = slices.Clone(v.Backends)
		for j, b := range v.Backends {
			if bb, ok := backends[backendRef{vr, b.Address, b.Port, b.id}]; ok && b.mapped && b.CounterSet.covers(bb) {
				v.Backends[j].CounterSet = b.CounterSet.minus(bb)
			}
		}
		out.VIPs[i] = v
	}
	type actionRef struct{ iface, action string }
	acts := map[actionRef]uint64{}
	for _, a := range base.Actions {
		acts[actionRef{a.Iface, a.Action}] = a.Count
	}
	out.Actions = slices.Clone(cur.Actions)
	for i, a := range out.Actions {
		if n := acts[actionRef{a.Iface, a.Action}]; a.Count >= n {
			out.Actions[i].Count -= n
		}
	}
	// A driver's counter that went below the zero (the interface was
	// created again) counts from its own start, as the maps' do.
	txErrs := map[string]uint64{}
	for _, e := range base.TxErrors {
		txErrs[e.Iface] = e.Count
	}
	out.TxErrors = slices.Clone(cur.TxErrors)
	for i, e := range out.TxErrors {
		if n := txErrs[e.Iface]; e.Count >= n {
			out.TxErrors[i].Count -= n
		}
	}
	out.Drops = subtractDrops(cur.Drops, base.Drops)
	if out.Drops == nil {
		out.Drops = map[string]uint64{}
	}
	return out
}

// subtractDrops is cur less base, reason by reason; a counter that went
// below its base counts from zero. Reasons at zero are kept as they were:
// the totals list every reason, a VIP's only those that counted.
func subtractDrops(cur, base map[string]uint64) map[string]uint64 {
	if cur == nil {
		return nil
	}
	out := make(map[string]uint64, len(cur))
	for r, n := range cur {
		if b := base[r]; n >= b {
			n -= b
		}
		out[r] = n
	}
	return out
}

// covers reports whether every counter of c is at least b's.
func (c CounterSet) covers(b CounterSet) bool {
	return c.Packets >= b.Packets && c.Bytes >= b.Bytes && c.Flows >= b.Flows
}

func (c CounterSet) minus(b CounterSet) CounterSet {
	return CounterSet{Packets: c.Packets - b.Packets, Bytes: c.Bytes - b.Bytes, Flows: c.Flows - b.Flows}
}
