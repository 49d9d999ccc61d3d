package testutil

import (
	"net/netip"
	"time"

	"github.com/xdplb/xdplb/control/model"
)

// BoolPtr returns a pointer to b, for the optional flags of the model.
func BoolPtr(b bool) *bool { return &b }

// RoundTripState is a normalized state with every field set somewhere:
// IPv6, announce on and off, each check type's fields, weights 0 and
// 65535, drain, a backend port, each mode, a SNAT address, fallbacks with
// and without a port. Export, apply and the state file must all
// keep it as it is.
func RoundTripState() model.State {
	return model.State{VIPs: []model.VIP{
		{
			Address: netip.MustParseAddr("2001:db8::100"), Port: 443, Protocol: model.TCP, Mode: model.ModeDR, Scheduler: model.SchedSH,
			Announce: BoolPtr(false),
			HealthCheck: &model.HealthCheck{Type: model.CheckHTTP, Port: 8080, Path: "/healthz?full=1", Expect: "200-299",
				Interval: model.Duration(1500 * time.Millisecond), Timeout: model.Duration(250 * time.Millisecond), Rise: 4, Fall: 5},
			Backends: []model.Backend{
				{Address: netip.MustParseAddr("2001:db8::11"), Weight: 100},
				{Address: netip.MustParseAddr("2001:db8::12"), Weight: 0},
				{Address: netip.MustParseAddr("2001:db8::13"), Weight: 65535, Drain: true},
			},
		},
		{
			Address: netip.MustParseAddr("10.200.0.100"), Port: 80, Protocol: model.TCP, Mode: model.ModeDR, Scheduler: model.SchedMaglev,
			Announce:    BoolPtr(true),
			HealthCheck: &model.HealthCheck{Type: model.CheckTCP, Interval: model.Duration(time.Second), Timeout: model.Duration(500 * time.Millisecond), Rise: 2, Fall: 3},
			Fallback:    &model.Fallback{Address: netip.MustParseAddr("10.200.0.99")},
			Backends: []model.Backend{
				{Address: netip.MustParseAddr("10.200.0.11"), Weight: 100},
				{Address: netip.MustParseAddr("10.200.0.12"), Weight: 0, Drain: true},
			},
		},
		{
			Address: netip.MustParseAddr("10.200.0.100"), Port: 53, Protocol: model.UDP,
			Backends: []model.Backend{{Address: netip.MustParseAddr("10.200.0.11"), Port: 53, Weight: 1}},
		},
		{Address: netip.MustParseAddr("10.200.0.101"), Port: 80, Protocol: model.TCP, HealthCheck: &model.HealthCheck{Type: model.CheckNone}},
		{
			Address: netip.MustParseAddr("10.200.0.102"), Port: 80, Protocol: model.TCP, Mode: model.ModeNAT, Scheduler: model.SchedMaglev,
			Fallback: &model.Fallback{Address: netip.MustParseAddr("10.201.0.99"), Port: 8081},
			Backends: []model.Backend{{Address: netip.MustParseAddr("10.201.0.11"), Port: 8080, Weight: 100}},
		},
		{
			Address: netip.MustParseAddr("2001:db8::102"), Port: 53, Protocol: model.UDP, Mode: model.ModeFullNAT, Scheduler: model.SchedMaglev,
			SNATAddr: netip.MustParseAddr("2001:db8:1::1"),
			Backends: []model.Backend{{Address: netip.MustParseAddr("2001:db8:2::11"), Port: 5353, Weight: 100}},
		},
	}}
}
