package api

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/control/reconcile"
)

// snapshot reads the counters of every VIP and backend of st (a VIP's
// fallback last among its backends, marked), the XDP
// actions and the drops from dp, interfaces named by ifname: what `xdplb
// stats` shows and /metrics exports, read once, in one place. A read that fails leaves its part out
// and is reported; the rest is still there (the metrics serve it).
func snapshot(dp reconcile.Datapath, st model.State, ifname func(int) string) (Stats, error) {
	out := Stats{Time: time.Now(), VIPs: []VIPStats{}, Actions: []ActionStats{}, Drops: map[string]uint64{}}
	vips, err := dp.VIPs()
	if err != nil {
		return out, fmt.Errorf("read vips: %w", err)
	}
	var errs []error
	vc, err := dp.VIPCounters()
	if err != nil {
		errs = append(errs, fmt.Errorf("read vip counters: %w", err))
	}
	bes, err := dp.Backends()
	if err != nil {
		errs = append(errs, fmt.Errorf("read backends: %w", err))
	}
	bc, err := dp.BackendCounters()
	if err != nil {
		errs = append(errs, fmt.Errorf("read backend counters: %w", err))
	}
	type ref struct {
		vip  uint32
		addr netip.Addr
		port uint16
	}
	byRef := make(map[ref]uint32, len(bes))
	for id, mb := range bes {
		byRef[ref{mb.VIPID, mb.Addr.Unmap(), mb.Port}] = id
	}
	for _, v := range st.VIPs {
		vs := VIPStats{VIP: v.ID().String(), Backends: []BackendStats{}}
		meta, inMaps := vips[reconcile.VIPKeyOf(v.ID())]
		if inMaps && vc != nil {
			c := vc[meta.ID]
			vs.CounterSet, vs.mapped = CounterSet{Packets: c.Packets, Bytes: c.Bytes, Flows: c.Flows}, true
			vs.ICMPErrors = c.ICMPErrors
		}
		bs := v.Backends
		if v.Fallback != nil {
			bs = append(slices.Clip(bs), v.Fallback.Backend())
		}
		for i, b := range bs {
			bst := BackendStats{Address: b.Address, Port: b.Port, Fallback: i == len(v.Backends)}
			if id, ok := byRef[ref{meta.ID, b.Address.Unmap(), b.Port}]; inMaps && ok && bc != nil {
				c := bc[id]
				bst.CounterSet, bst.mapped = CounterSet{Packets: c.Packets, Bytes: c.Bytes, Flows: c.Flows}, true
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
	if drops, err := dp.DropCounters(); err != nil {
		errs = append(errs, fmt.Errorf("read drop counters: %w", err))
	} else {
		for k, n := range drops {
			out.Drops[k] = n
		}
	}
	return out, errors.Join(errs...)
}
