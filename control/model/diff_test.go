package model

import (
	"net/netip"
	"reflect"
	"testing"
	"time"
)

func TestDiffStates(t *testing.T) {
	on := true
	b := func(a string, port uint16, w uint32, drain bool) Backend {
		return Backend{Address: netip.MustParseAddr(a), Port: port, Weight: w, Drain: drain}
	}
	cur := State{VIPs: []VIP{
		{Address: netip.MustParseAddr("10.0.0.100"), Port: 80, Protocol: TCP,
			HealthCheck: &HealthCheck{Type: CheckHTTP, Path: "/healthz", Interval: Duration(time.Second)},
			Backends:    []Backend{b("10.0.0.11", 0, 100, false), b("10.0.0.12", 0, 100, false), b("10.0.0.13", 0, 100, false)}},
		{Address: netip.MustParseAddr("10.0.0.102"), Port: 53, Protocol: UDP, Backends: []Backend{b("10.0.0.21", 0, 100, false)}},
		{Address: netip.MustParseAddr("10.0.0.103"), Port: 80, Protocol: TCP, Backends: []Backend{b("10.0.0.31", 0, 100, false)}},
	}}
	next := State{VIPs: []VIP{
		{Address: netip.MustParseAddr("10.0.0.103"), Port: 80, Protocol: TCP, Backends: []Backend{b("10.0.0.31", 0, 100, false)}},
		{Address: netip.MustParseAddr("10.0.0.100"), Port: 80, Protocol: TCP, Scheduler: SchedSH, Announce: &on,
			HealthCheck: &HealthCheck{Type: CheckHTTP, Path: "/healthz", Interval: Duration(2 * time.Second)},
			Backends:    []Backend{b("10.0.0.13", 0, 100, false), b("10.0.0.11", 0, 50, true), b("10.0.0.14", 80, 100, false)}},
		{Address: netip.MustParseAddr("10.0.0.101"), Port: 443, Protocol: TCP, Mode: ModeFullNAT, SNATAddr: netip.MustParseAddr("10.0.2.1"),
			Backends: []Backend{b("10.0.1.5", 8443, 7, false)}},
	}}
	Normalize(&cur)
	Normalize(&next)
	got := DiffStates(cur, next)
	want := StateDiff{VIPs: []VIPChange{
		{VIP: "10.0.0.100:80/tcp", Change: Changed,
			Fields: []FieldChange{{"announce", "", "true"}, {"healthcheck.interval", "1s", "2s"}, {"scheduler", "maglev", "sh"}},
			Backends: []BackendChange{
				{Backend: "10.0.0.11", Change: Changed, Fields: []FieldChange{{"drain", "", "true"}, {"weight", "100", "50"}}},
				{Backend: "10.0.0.12", Change: Removed},
				// The VIP's own port is no port of its own.
				{Backend: "10.0.0.14", Change: Added, Fields: []FieldChange{{"weight", "", "100"}}},
			}},
		{VIP: "10.0.0.101:443/tcp", Change: Added,
			Fields:   []FieldChange{{"mode", "", "fullnat"}, {"scheduler", "", "maglev"}, {"snat_addr", "", "10.0.2.1"}},
			Backends: []BackendChange{{Backend: "10.0.1.5:8443", Change: Added, Fields: []FieldChange{{"weight", "", "7"}}}}},
		{VIP: "10.0.0.102:53/udp", Change: Removed, Backends: []BackendChange{{Backend: "10.0.0.21", Change: Removed}}},
	}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("diff:\n got %+v\nwant %+v", got, want)
	}
	if d := DiffStates(next, next); len(d.VIPs) != 0 || d.VIPs == nil {
		t.Errorf("diff of a state with itself: %+v", d)
	}
	if d := DiffStates(State{}, State{}); len(d.VIPs) != 0 {
		t.Errorf("diff of empty states: %+v", d)
	}
}
