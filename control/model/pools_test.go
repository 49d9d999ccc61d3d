package model

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// A backend's priority is 0-MaxPriority and a VIP's failover_below a
// percentage; both at their bounds are valid.
func TestValidatePools(t *testing.T) {
	s := validState()
	s.VIPs[0].Backends[0].Priority = MaxPriority
	s.VIPs[0].FailoverBelow = MaxFailoverBelow
	Normalize(&s)
	if err := Validate(s); err != nil {
		t.Fatalf("valid pools: %v", err)
	}
	for _, tc := range []struct {
		name string
		mod  func(*State)
		want string
	}{
		{"priority", func(s *State) { s.VIPs[0].Backends[0].Priority = MaxPriority + 1 },
			"vip 10.200.0.100:80/tcp: backend 10.200.0.11: priority 256: want 0-255"},
		{"failover_below", func(s *State) { s.VIPs[0].FailoverBelow = 101 },
			"vip 10.200.0.100:80/tcp: failover_below 101: want a percentage, 0-100"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := validState()
			tc.mod(&s)
			Normalize(&s)
			err := Validate(s)
			if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want %q", err, tc.want)
			}
		})
	}
}

// The patches of `backend set --priority` and `vip set --failover-below`
// change only their setting; a VIP differing only in failover_below is
// another config (the reconciler's pass after a change plans it again).
func TestPoolPatches(t *testing.T) {
	v := validState().VIPs[0]
	prio, pct := uint32(2), uint32(50)
	b := v.Backends[0]
	BackendPatch{Priority: &prio}.Apply(&b)
	if want := (Backend{Address: v.Backends[0].Address, Weight: v.Backends[0].Weight, Priority: 2}); b != want {
		t.Fatalf("backend %+v, want %+v", b, want)
	}
	w := v.Clone()
	p := VIPPatch{FailoverBelow: &pct}
	if p.IsZero() {
		t.Fatal("a failover_below patch is zero")
	}
	if err := p.Apply(&w); err != nil || w.FailoverBelow != 50 {
		t.Fatalf("Apply: %v, failover_below %d", err, w.FailoverBelow)
	}
	if EqualVIP(&v, &w) || !SameTargets(&v, &w) {
		t.Fatal("a failover_below change: want another config with the same targets")
	}
	w.FailoverBelow = 0
	if !EqualVIP(&v, &w) {
		t.Fatal("EqualVIP after undoing the patch")
	}
	w.Backends = append([]Backend{}, w.Backends...)
	w.Backends[0].Priority = 1
	if EqualVIP(&v, &w) || !SameTargets(&v, &w) {
		t.Fatal("a priority change: want another config with the same targets")
	}
}

// apply --dry-run names the pool settings by their config keys.
func TestDiffStatesPools(t *testing.T) {
	cur := validState()
	Normalize(&cur)
	next := cur.Clone()
	next.VIPs[0].FailoverBelow = 50
	next.VIPs[0].Backends[0].Priority = 1
	d := DiffStates(cur, next)
	if len(d.VIPs) != 1 || !reflect.DeepEqual(d.VIPs[0].Fields, []FieldChange{{Field: "failover_below", New: "50"}}) ||
		!reflect.DeepEqual(d.VIPs[0].Backends, []BackendChange{{Backend: "10.200.0.11", Change: Changed,
			Fields: []FieldChange{{Field: "priority", New: "1"}}}}) {
		t.Fatalf("diff %+v", d)
	}
}

// How the active pools are shown and exported.
func TestActivePriority(t *testing.T) {
	for _, tc := range []struct {
		pools []uint32
		prio  int
		s     string
	}{{nil, -1, "none"}, {[]uint32{0}, 0, "0"}, {[]uint32{0, 2}, 2, "0+2"}} {
		if p, s := ActivePriority(tc.pools), PoolsString(tc.pools); p != tc.prio || s != tc.s {
			t.Errorf("%v: priority %d %q, want %d %q", tc.pools, p, s, tc.prio, tc.s)
		}
	}
}
