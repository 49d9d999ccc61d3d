package config

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/xdplb/xdplb/control/model"
)

// randomState has VIPs of every shape the fast codec writes, and some it
// leaves to yaml.v3 (IPv6, health checks). It sets no SNAT address, which
// yaml.v3 cannot write from the model (see TestRoundTripNAT).
func randomState(r *rand.Rand, vips int, slow bool) model.State {
	st := model.State{VIPs: []model.VIP{}}
	words := []string{"tcp", "udp"}
	for i := range vips {
		v := model.VIP{Address: netip.AddrFrom4([4]byte{10, byte(r.IntN(256)), byte(i >> 8), byte(i)}),
			Port: uint16(r.IntN(65536)), Protocol: model.Protocol(words[r.IntN(2)])}
		if r.IntN(2) == 0 {
			v.Mode = []model.Mode{model.ModeDR, model.ModeNAT, model.ModeFullNAT}[r.IntN(3)]
			v.Scheduler = model.Schedulers()[r.IntN(len(model.Schedulers()))]
		}
		if r.IntN(3) == 0 {
			v.Persistence = model.Duration(time.Duration(1+r.IntN(3600)) * time.Second)
		}
		if r.IntN(3) == 0 {
			a := r.IntN(2) == 0
			v.Announce = &a
		}
		if r.IntN(3) == 0 {
			v.MaxNewFlows = 1 + r.Uint32N(100000)
			if r.IntN(2) == 0 {
				v.MaxNewFlowsBurst = 1 + r.Uint32N(100000)
			}
		}
		for j := range r.IntN(5) {
			b := model.Backend{Address: netip.AddrFrom4([4]byte{10, 1, byte(i), byte(j)}), Weight: uint32(r.IntN(3)) * uint32(r.Uint32()>>r.IntN(32))}
			if r.IntN(3) == 0 {
				b.Port = uint16(r.IntN(65536))
			}
			b.Drain = r.IntN(4) == 0
			if r.IntN(3) == 0 {
				b.Group = []string{"v1", "v2", "blue", "green"}[r.IntN(4)]
			}
			if r.IntN(3) == 0 {
				b.MaxConns = 1 + r.Uint32N(10000)
				if r.IntN(2) == 0 {
					b.MaxConnsMin = r.Uint32N(b.MaxConns)
				}
			}
			v.Backends = append(v.Backends, b)
		}
		if slow && r.IntN(4) == 0 {
			v.HealthCheck = &model.HealthCheck{Type: model.CheckHTTP, Path: "/healthz", Interval: model.DefaultCheckInterval}
		}
		if slow && r.IntN(4) == 0 {
			v.Address = netip.MustParseAddr(fmt.Sprintf("2001:db8::%x", i+1))
			for j := range v.Backends {
				v.Backends[j].Address = netip.MustParseAddr(fmt.Sprintf("2001:db8:1::%x", j+1))
			}
		}
		st.VIPs = append(st.VIPs, v)
	}
	model.Normalize(&st)
	return st
}

// Export and apply round-trip any state, and export writes what yaml.v3
// writes of the model's own types, so files written by older versions read
// the same.
func TestRoundTripRandomStates(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := range 300 {
		st := randomState(r, 1+n%7, n%2 == 1)
		got, err := Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		enc := yaml.NewEncoder(&buf)
		enc.SetIndent(2)
		if err := enc.Encode(st); err != nil {
			t.Fatal(err)
		}
		if string(got) != buf.String() {
			t.Fatalf("state %d: Marshal\n%s\nyaml.v3 of the model\n%s", n, got, buf.String())
		}
		back, err := Parse(got)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(back, st) {
			t.Fatalf("state %d: round trip\n%+v\nwant %+v", n, back, st)
		}
	}
}

// Inputs in every YAML shape parse, or are refused, as yaml.v3 decides.
func TestParseShapes(t *testing.T) {
	head := "vips:\n  - address: 10.0.0.1\n    port: 80\n    protocol: tcp\n"
	cases := map[string]struct {
		in      string
		wantErr bool
		weight  uint32 // of the first backend, when there is one
	}{
		"comment":          {in: head + "    # hi\n    backends: []\n"},
		"flow backends":    {in: head + "    backends:\n      - {address: 10.0.1.1, weight: 5}\n", weight: 5},
		"quoted":           {in: head + "    mode: \"dr\"\n    backends: []\n"},
		"no weight":        {in: head + "    backends:\n      - address: 10.0.1.1\n", weight: model.DefaultWeight},
		"weight 0":         {in: head + "    backends:\n      - address: 10.0.1.1\n        weight: 0\n", weight: 0},
		"octal-looking":    {in: head + "    backends:\n      - address: 10.0.1.1\n        weight: 010\n", weight: 8},
		"duplicate key":    {in: head + "    port: 81\n    backends: []\n", wantErr: true},
		"unknown key":      {in: head + "    color: red\n    backends: []\n", wantErr: true},
		"no final newline": {in: head + "    backends: []"},
		"indent 4":         {in: "vips:\n    - address: 10.0.0.1\n      port: 80\n      protocol: tcp\n"},
		"port too big":     {in: head + "    backends:\n      - address: 10.0.1.1\n        port: 70000\n", wantErr: true},
		"bool word":        {in: "vips:\n  - address: 10.0.0.1\n    port: 80\n    protocol: yes\n"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := Parse([]byte(tc.in))
			if (err != nil) != tc.wantErr {
				t.Fatalf("Parse: %+v, %v; want error: %v", got, err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if len(got.VIPs) != 1 || got.VIPs[0].Port != 80 {
				t.Fatalf("Parse: %+v", got)
			}
			if bs := got.VIPs[0].Backends; len(bs) > 0 && bs[0].Weight != tc.weight {
				t.Fatalf("weight %d, want %d", bs[0].Weight, tc.weight)
			}
		})
	}
}

// A NAT state keeps its modes, SNAT addresses and backend ports through
// export and apply, and export writes snat_addr only where it is set.
func TestRoundTripNAT(t *testing.T) {
	st := model.State{VIPs: []model.VIP{
		{Address: netip.MustParseAddr("10.0.0.100"), Port: 80, Protocol: model.TCP, Mode: model.ModeNAT,
			Backends: []model.Backend{{Address: netip.MustParseAddr("10.0.1.5"), Port: 8080, Weight: 100}}},
		{Address: netip.MustParseAddr("10.0.0.100"), Port: 443, Protocol: model.TCP, Mode: model.ModeFullNAT,
			SNATAddr: netip.MustParseAddr("10.0.2.1"),
			Backends: []model.Backend{{Address: netip.MustParseAddr("10.0.1.5"), Port: 8443, Weight: 100}, {Address: netip.MustParseAddr("10.0.1.6"), Weight: 0}}},
		{Address: netip.MustParseAddr("2001:db8::100"), Port: 53, Protocol: model.UDP, Mode: model.ModeFullNAT,
			Backends: []model.Backend{{Address: netip.MustParseAddr("2001:db8:1::5"), Port: 5353, Weight: 7}}},
		{Address: netip.MustParseAddr("2001:db8::100"), Port: 80, Protocol: model.TCP, Mode: model.ModeFullNAT,
			SNATAddr: netip.MustParseAddr("2001:db8:2::1"), Backends: []model.Backend{}},
	}}
	model.Normalize(&st)
	if err := model.Validate(st); err != nil {
		t.Fatal(err)
	}
	out, err := Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	want := `vips:
  - address: 10.0.0.100
    port: 80
    protocol: tcp
    mode: nat
    scheduler: maglev
    backends:
      - address: 10.0.1.5
        port: 8080
        weight: 100
  - address: 10.0.0.100
    port: 443
    protocol: tcp
    mode: fullnat
    snat_addr: 10.0.2.1
    scheduler: maglev
    backends:
      - address: 10.0.1.5
        port: 8443
        weight: 100
      - address: 10.0.1.6
        weight: 0
  - address: 2001:db8::100
    port: 53
    protocol: udp
    mode: fullnat
    scheduler: maglev
    backends:
      - address: 2001:db8:1::5
        port: 5353
        weight: 7
  - address: 2001:db8::100
    port: 80
    protocol: tcp
    mode: fullnat
    snat_addr: 2001:db8:2::1
    scheduler: maglev
    backends: []
`
	if string(out) != want {
		t.Fatalf("Marshal:\n%s\nwant\n%s", out, want)
	}
	back, err := Parse(out)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, st) {
		t.Fatalf("round trip\n%+v\nwant %+v", back, st)
	}
	// Written by hand: a mapped SNAT address reads unmapped.
	in := "vips:\n  - {address: 10.0.0.1, port: 80, protocol: tcp, mode: FullNAT, snat_addr: \"::ffff:10.0.2.1\", backends: [{address: 10.0.1.1, port: 8080}]}\n"
	got, err := Parse([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if v := got.VIPs[0]; v.Mode != model.ModeFullNAT || v.SNATAddr != netip.MustParseAddr("10.0.2.1") || v.Backends[0].Port != 8080 {
		t.Fatalf("parsed %+v", v)
	}
	if _, err := Parse([]byte("vips:\n  - {address: 10.0.0.1, port: 80, protocol: tcp, snat_addr: nope}\n")); err == nil {
		t.Fatal("malformed snat_addr accepted")
	}
}

// The limits an operator sets round-trip through export and apply, with
// their defaults written out: a burst of the rate, a lower mark of 3/4 of
// the cap. Export leaves them out where there are none.
func TestRoundTripLimits(t *testing.T) {
	in := `vips:
  - address: 10.0.0.100
    port: 80
    protocol: tcp
    max_new_flows: 1000
    backends:
      - {address: 10.0.1.5, max_conns: 100}
      - {address: 10.0.1.6, max_conns: 10, max_conns_min: 2}
      - {address: 10.0.1.7}
  - address: 10.0.0.100
    port: 443
    protocol: tcp
    max_new_flows: 50
    max_new_flows_burst: 500
    backends: []
`
	st, err := Parse([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if err := model.Validate(st); err != nil {
		t.Fatal(err)
	}
	out, err := Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	want := `vips:
  - address: 10.0.0.100
    port: 80
    protocol: tcp
    mode: dr
    scheduler: maglev
    max_new_flows: 1000
    max_new_flows_burst: 1000
    backends:
      - address: 10.0.1.5
        weight: 100
        max_conns: 100
        max_conns_min: 75
      - address: 10.0.1.6
        weight: 100
        max_conns: 10
        max_conns_min: 2
      - address: 10.0.1.7
        weight: 100
  - address: 10.0.0.100
    port: 443
    protocol: tcp
    mode: dr
    scheduler: maglev
    max_new_flows: 50
    max_new_flows_burst: 500
    backends: []
`
	if string(out) != want {
		t.Fatalf("Marshal:\n%s\nwant\n%s", out, want)
	}
	back, err := Parse(out)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, st) {
		t.Fatalf("round trip\n%+v\nwant %+v", back, st)
	}
}
