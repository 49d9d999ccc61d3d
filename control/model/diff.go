package model

import (
	"encoding/json"
	"maps"
	"net/netip"
	"slices"
	"strconv"
)

// What a VIP or a backend undergoes in a StateDiff.
const (
	Added   = "added"
	Removed = "removed"
	Changed = "changed"
)

// FieldChange is one setting of a VIP or backend that differs: its key as
// the config file writes it ("scheduler", "healthcheck.interval") and its
// value before and after, "" where it is unset.
type FieldChange struct {
	Field string `json:"field"`
	Old   string `json:"old,omitempty"`
	New   string `json:"new,omitempty"`
}

// BackendChange is a backend added, removed or changed. An added one lists
// its settings as changes from unset; a removed one lists none.
type BackendChange struct {
	Backend string        `json:"backend"` // as BackendName writes it
	Change  string        `json:"change"`  // Added, Removed or Changed
	Fields  []FieldChange `json:"fields,omitempty"`
}

// VIPChange is a VIP added, removed or changed: its own settings (an added
// VIP's from unset) and its backends'. A removed VIP lists its backends as
// removed.
type VIPChange struct {
	VIP      string          `json:"vip"`
	Change   string          `json:"change"`
	Fields   []FieldChange   `json:"fields,omitempty"`
	Backends []BackendChange `json:"backends,omitempty"`
}

// StateDiff is what replacing one state by another changes, VIPs in the
// order of a normalized state, backends in their VIP's order; empty when
// nothing changes.
type StateDiff struct {
	VIPs []VIPChange `json:"vips"`
}

// DiffStates compares two normalized states. Settings are compared by
// their JSON form, so that every setting a VIP or backend has, now or
// later, is compared under the name the config file gives it.
func DiffStates(cur, next State) StateDiff {
	type item struct {
		id VIPID
		c  VIPChange
	}
	var items []item
	old := make(map[VIPID]*VIP, len(cur.VIPs))
	for i := range cur.VIPs {
		old[cur.VIPs[i].ID()] = &cur.VIPs[i]
	}
	for i := range next.VIPs {
		v := &next.VIPs[i]
		o, ok := old[v.ID()]
		delete(old, v.ID())
		if ok {
			if c := diffVIP(o, v); len(c.Fields) > 0 || len(c.Backends) > 0 {
				items = append(items, item{v.ID(), c})
			}
			continue
		}
		c := VIPChange{VIP: v.ID().String(), Change: Added, Fields: diffFields(nil, vipFields(v))}
		for _, b := range v.Backends {
			c.Backends = append(c.Backends, BackendChange{Backend: BackendName(b.Address, b.Port), Change: Added,
				Fields: diffFields(nil, backendFields(b))})
		}
		items = append(items, item{v.ID(), c})
	}
	for id, v := range old {
		c := VIPChange{VIP: id.String(), Change: Removed}
		for _, b := range v.Backends {
			c.Backends = append(c.Backends, BackendChange{Backend: BackendName(b.Address, b.Port), Change: Removed})
		}
		items = append(items, item{id, c})
	}
	slices.SortFunc(items, func(a, b item) int { return CompareVIPID(a.id, b.id) })
	out := StateDiff{VIPs: make([]VIPChange, 0, len(items))}
	for _, it := range items {
		out.VIPs = append(out.VIPs, it.c)
	}
	return out
}

// diffVIP compares two configs of the same VIP.
func diffVIP(o, v *VIP) VIPChange {
	c := VIPChange{VIP: v.ID().String(), Change: Changed, Fields: diffFields(vipFields(o), vipFields(v))}
	type ref struct {
		addr netip.Addr
		port uint16
	}
	had := make(map[ref]Backend, len(o.Backends))
	for _, b := range o.Backends {
		had[ref{b.Address, b.Port}] = b
	}
	type item struct {
		at Backend
		c  BackendChange
	}
	var items []item
	for _, b := range v.Backends {
		name := BackendName(b.Address, b.Port)
		ob, ok := had[ref{b.Address, b.Port}]
		delete(had, ref{b.Address, b.Port})
		switch {
		case !ok:
			items = append(items, item{b, BackendChange{Backend: name, Change: Added, Fields: diffFields(nil, backendFields(b))}})
		case ob != b:
			items = append(items, item{b, BackendChange{Backend: name, Change: Changed, Fields: diffFields(backendFields(ob), backendFields(b))}})
		}
	}
	for _, b := range had {
		items = append(items, item{b, BackendChange{Backend: BackendName(b.Address, b.Port), Change: Removed}})
	}
	slices.SortFunc(items, func(x, y item) int {
		return compareAddrPort(x.at.Address, x.at.Port, y.at.Address, y.at.Port)
	})
	for _, it := range items {
		c.Backends = append(c.Backends, it.c)
	}
	return c
}

// vipFields are a VIP's settings but its key and backends, by config key.
func vipFields(v *VIP) map[string]string {
	x := *v
	x.Backends = nil
	f := fields(x)
	for _, k := range []string{"address", "port", "protocol", "backends"} {
		delete(f, k)
	}
	return f
}

// backendFields are a backend's settings but its address and port.
func backendFields(b Backend) map[string]string {
	f := fields(b)
	delete(f, "address")
	delete(f, "port")
	return f
}

// fields flattens v's JSON form into "key" and "key.sub" → value.
func fields(v any) map[string]string {
	b, err := json.Marshal(v)
	if err != nil {
		return map[string]string{"": err.Error()}
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return map[string]string{"": err.Error()}
	}
	out := map[string]string{}
	flatten("", m, out)
	return out
}

func flatten(prefix string, m map[string]any, out map[string]string) {
	for k, v := range m {
		if prefix != "" {
			k = prefix + "." + k
		}
		switch x := v.(type) {
		case map[string]any:
			flatten(k, x, out)
		case nil:
		case string:
			out[k] = x
		case bool:
			out[k] = strconv.FormatBool(x)
		case float64:
			out[k] = strconv.FormatFloat(x, 'f', -1, 64)
		default: // lists: their JSON
			b, _ := json.Marshal(x)
			out[k] = string(b)
		}
	}
}

// diffFields lists the keys whose values differ, sorted.
func diffFields(old, cur map[string]string) []FieldChange {
	keys := map[string]bool{}
	for k := range old {
		keys[k] = true
	}
	for k := range cur {
		keys[k] = true
	}
	var out []FieldChange
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		if old[k] != cur[k] {
			out = append(out, FieldChange{Field: k, Old: old[k], New: cur[k]})
		}
	}
	return out
}
