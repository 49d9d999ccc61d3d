package control

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

// randomState has VIPs of every shape the fast codec writes, and some it
// leaves to yaml.v3 (IPv6, health checks).
func randomState(r *rand.Rand, vips int, slow bool) State {
	st := State{VIPs: []VIP{}}
	words := []string{"tcp", "udp"}
	for i := range vips {
		v := VIP{Address: netip.AddrFrom4([4]byte{10, byte(r.IntN(256)), byte(i >> 8), byte(i)}),
			Port: uint16(r.IntN(65536)), Protocol: Protocol(words[r.IntN(2)])}
		if r.IntN(2) == 0 {
			v.Mode, v.Scheduler = ModeDR, []Scheduler{SchedMaglev, SchedSH, SchedRR}[r.IntN(3)]
		}
		if r.IntN(3) == 0 {
			a := r.IntN(2) == 0
			v.Announce = &a
		}
		for j := range r.IntN(5) {
			b := Backend{Address: netip.AddrFrom4([4]byte{10, 1, byte(i), byte(j)}), Weight: uint32(r.IntN(3)) * uint32(r.Uint32()>>r.IntN(32))}
			if r.IntN(3) == 0 {
				b.Port = uint16(r.IntN(65536))
			}
			b.Drain = r.IntN(4) == 0
			v.Backends = append(v.Backends, b)
		}
		if slow && r.IntN(4) == 0 {
			v.HealthCheck = &HealthCheck{Type: CheckHTTP, Path: "/healthz", Interval: DefaultCheckInterval}
		}
		if slow && r.IntN(4) == 0 {
			v.Address = netip.MustParseAddr(fmt.Sprintf("2001:db8::%x", i+1))
			for j := range v.Backends {
				v.Backends[j].Address = netip.MustParseAddr(fmt.Sprintf("2001:db8:1::%x", j+1))
			}
		}
		st.VIPs = append(st.VIPs, v)
	}
	Normalize(&st)
	return st
}

// The fast codec writes what yaml.v3 writes, and reads what yaml.v3 reads.
func TestFastYAMLMatchesYAMLv3(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := range 300 {
		st := randomState(r, 1+n%7, n%2 == 1)
		want, err := marshalStateYAML(st)
		if err != nil {
			t.Fatal(err)
		}
		got, err := MarshalState(st)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Fatalf("state %d: MarshalState\n%s\nyaml.v3\n%s", n, got, want)
		}
		fast, ok := parseStateFast(want)
		slowOnly := strings.Contains(string(want), "healthcheck") || strings.Contains(string(want), "2001:")
		if ok == slowOnly {
			t.Fatalf("state %d: fast parse took it: %v\n%s", n, ok, want)
		}
		slow, err := parseStateYAML(want)
		if err != nil {
			t.Fatal(err)
		}
		if ok && !reflect.DeepEqual(fast, slow) {
			t.Fatalf("state %d: fast parse\n%+v\nyaml.v3\n%+v", n, fast, slow)
		}
		if !reflect.DeepEqual(slow, st) {
			t.Fatalf("state %d: round trip\n%+v\nwant %+v", n, slow, st)
		}
	}
}

// Inputs in another shape go to yaml.v3, which reads them, or refuses them
// as before.
func TestFastYAMLFallsBack(t *testing.T) {
	head := "vips:\n  - address: 10.0.0.1\n    port: 80\n    protocol: tcp\n"
	cases := map[string]string{
		"comment":          head + "    # hi\n    backends: []\n",
		"flow backends":    head + "    backends:\n      - {address: 10.0.1.1, weight: 5}\n",
		"quoted":           head + "    mode: \"dr\"\n    backends: []\n",
		"no weight":        head + "    backends:\n      - address: 10.0.1.1\n",
		"weight 0":         head + "    backends:\n      - address: 10.0.1.1\n        weight: 0\n",
		"octal-looking":    head + "    backends:\n      - address: 10.0.1.1\n        weight: 010\n",
		"duplicate key":    head + "    port: 81\n    backends: []\n",
		"unknown key":      head + "    color: red\n    backends: []\n",
		"no final newline": head + "    backends: []",
		"indent 4":         "vips:\n    - address: 10.0.0.1\n      port: 80\n      protocol: tcp\n",
		"port too big":     head + "    backends:\n      - address: 10.0.1.1\n        port: 70000\n",
		"bool word":        "vips:\n  - address: 10.0.0.1\n    port: 80\n    protocol: yes\n",
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			got, gotErr := ParseState([]byte(in))
			want, wantErr := parseStateYAML([]byte(in))
			if (gotErr == nil) != (wantErr == nil) || gotErr == nil && !reflect.DeepEqual(got, want) {
				t.Fatalf("ParseState %+v, %v; yaml.v3 %+v, %v", got, gotErr, want, wantErr)
			}
		})
	}
}
