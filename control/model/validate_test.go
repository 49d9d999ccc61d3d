package model

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/xdplb/xdplb/healthcheck"
)

func boolp(b bool) *bool { return &b }

// validState is a normalized state that passes Validate; cases change one thing.
func validState() State {
	return State{VIPs: []VIP{
		{
			Address: netip.MustParseAddr("10.200.0.100"), Port: 80, Protocol: TCP,
			Mode: ModeDR, Scheduler: SchedMaglev,
			HealthCheck: &HealthCheck{Type: CheckHTTP, Path: "/healthz",
				Interval: Duration(time.Second), Timeout: Duration(500 * time.Millisecond), Rise: 2, Fall: 3},
			Backends: []Backend{
				{Address: netip.MustParseAddr("10.200.0.11"), Weight: 100},
				{Address: netip.MustParseAddr("10.200.0.12"), Weight: 0, Drain: true},
			},
		},
		{
			Address: netip.MustParseAddr("2001:db8::1"), Port: 53, Protocol: UDP,
			Mode: ModeDR, Scheduler: SchedSH, Announce: boolp(false),
			Backends: []Backend{{Address: netip.MustParseAddr("2001:db8::11"), Port: 53, Weight: 65535}},
		},
	}}
}

func TestValidateValid(t *testing.T) {
	cases := map[string]func(*State){
		"base":        func(*State) {},
		"empty":       func(s *State) { *s = State{} },
		"no backends": func(s *State) { s.VIPs[0].Backends = nil },
		"check none":  func(s *State) { s.VIPs[0].HealthCheck = &HealthCheck{Type: CheckNone} },
		"tcp check": func(s *State) {
			s.VIPs[0].HealthCheck = &HealthCheck{Type: CheckTCP, Port: 8080, Interval: Duration(100 * time.Millisecond), Timeout: 1, Rise: 1, Fall: 100}
		},
		"udp check":         func(s *State) { s.VIPs[0].HealthCheck.Type = CheckUDP; s.VIPs[0].HealthCheck.Path = "" },
		"http expect range": func(s *State) { s.VIPs[0].HealthCheck.Expect = "200-499" },
		"http expect one":   func(s *State) { s.VIPs[0].HealthCheck.Expect = "503" },
		"same addr two vips": func(s *State) {
			v := s.VIPs[0]
			v.Port = 443
			s.VIPs = append(s.VIPs, v)
		},
		"same addr port other proto": func(s *State) {
			v := s.VIPs[0]
			v.Protocol = UDP
			s.VIPs = append(s.VIPs, v)
		},
		"backend port = vip port": func(s *State) { s.VIPs[0].Backends[0].Port = 80 },
		"link-local backend": func(s *State) {
			s.VIPs[1].Backends[0].Address = netip.MustParseAddr("fe80::1")
		},
		"nat":                  func(s *State) { s.VIPs[0].Mode = ModeNAT },
		"fullnat":              func(s *State) { s.VIPs[0].Mode = ModeFullNAT },
		"nat backend port":     func(s *State) { s.VIPs[0].Mode = ModeNAT; s.VIPs[0].Backends[0].Port = 8080 },
		"fullnat backend port": func(s *State) { s.VIPs[1].Mode = ModeFullNAT; s.VIPs[1].Backends[0].Port = 5353 },
		"nat same addr two ports": func(s *State) {
			s.VIPs[0].Mode = ModeNAT
			b := s.VIPs[0].Backends[0]
			b.Port = 8080
			s.VIPs[0].Backends = append(s.VIPs[0].Backends, b)
		},
		"fullnat snat addr": func(s *State) {
			s.VIPs[0].Mode, s.VIPs[0].SNATAddr = ModeFullNAT, netip.MustParseAddr("10.200.1.1")
		},
		"fullnat snat addr v6": func(s *State) {
			s.VIPs[1].Mode, s.VIPs[1].SNATAddr = ModeFullNAT, netip.MustParseAddr("2001:db8:1::1")
		},
	}
	for name, mod := range cases {
		t.Run(name, func(t *testing.T) {
			s := validState()
			mod(&s)
			if err := Validate(s); err != nil {
				t.Fatalf("Validate: %v", err)
			}
		})
	}
}

func TestValidateErrors(t *testing.T) {
	cases := []struct {
		name string
		mod  func(*State)
		want string // substring of the one-line error
	}{
		{"vip address missing", func(s *State) { s.VIPs[0].Address = netip.Addr{} }, "vip #1: address is missing"},
		{"vip unspecified", func(s *State) { s.VIPs[0].Address = netip.MustParseAddr("0.0.0.0") }, "vip 0.0.0.0:80/tcp: address is unspecified"},
		{"vip unspecified v6", func(s *State) { s.VIPs[1].Address = netip.MustParseAddr("::") }, "vip [::]:53/udp: address is unspecified"},
		{"vip loopback", func(s *State) { s.VIPs[0].Address = netip.MustParseAddr("127.0.0.1") }, "address is a loopback address"},
		{"vip multicast", func(s *State) { s.VIPs[0].Address = netip.MustParseAddr("224.0.0.1") }, "address is a multicast address"},
		{"vip multicast v6", func(s *State) { s.VIPs[1].Address = netip.MustParseAddr("ff02::1") }, "address is a multicast address"},
		{"vip broadcast", func(s *State) { s.VIPs[0].Address = netip.MustParseAddr("255.255.255.255") }, "address is the broadcast address"},
		{"vip zone", func(s *State) { s.VIPs[1].Address = netip.MustParseAddr("2001:db8::1%eth0") }, "must not have a zone"},
		{"vip port 0", func(s *State) { s.VIPs[0].Port = 0 }, "vip 10.200.0.100:0/tcp: port must be 1-65535"},
		{"protocol", func(s *State) { s.VIPs[0].Protocol = "sctp" }, `protocol "sctp": want tcp or udp`},
		{"duplicate vip", func(s *State) { s.VIPs = append(s.VIPs, s.VIPs[0]) }, "vip 10.200.0.100:80/tcp: duplicate vip"},
		{"duplicate vip mapped", func(s *State) {
			v := s.VIPs[0].Clone()
			v.Address = netip.MustParseAddr("::ffff:10.200.0.100")
			s.VIPs = append(s.VIPs, v)
		}, "duplicate vip"},
		{"snat with dr", func(s *State) { s.VIPs[0].SNATAddr = netip.MustParseAddr("10.200.1.1") },
			"vip 10.200.0.100:80/tcp: snat address 10.200.1.1: only a fullnat vip has one (mode is dr)"},
		{"snat with nat", func(s *State) { s.VIPs[0].Mode, s.VIPs[0].SNATAddr = ModeNAT, netip.MustParseAddr("10.200.1.1") },
			"snat address 10.200.1.1: only a fullnat vip has one (mode is nat)"},
		{"snat family", func(s *State) { s.VIPs[0].Mode, s.VIPs[0].SNATAddr = ModeFullNAT, netip.MustParseAddr("2001:db8::9") },
			"vip 10.200.0.100:80/tcp: snat address 2001:db8::9: address family differs from the vip's"},
		{"snat family v6", func(s *State) { s.VIPs[1].Mode, s.VIPs[1].SNATAddr = ModeFullNAT, netip.MustParseAddr("10.0.0.9") },
			"snat address 10.0.0.9: address family differs"},
		{"snat is vip", func(s *State) { s.VIPs[0].Mode, s.VIPs[0].SNATAddr = ModeFullNAT, s.VIPs[0].Address },
			"snat address 10.200.0.100: is the vip address"},
		{"snat loopback", func(s *State) { s.VIPs[0].Mode, s.VIPs[0].SNATAddr = ModeFullNAT, netip.MustParseAddr("127.0.0.1") },
			"snat address 127.0.0.1: address is a loopback address"},
		{"snat unspecified", func(s *State) { s.VIPs[1].Mode, s.VIPs[1].SNATAddr = ModeFullNAT, netip.MustParseAddr("::") },
			"snat address ::: address is unspecified"},
		{"snat multicast", func(s *State) { s.VIPs[0].Mode, s.VIPs[0].SNATAddr = ModeFullNAT, netip.MustParseAddr("224.0.0.5") },
			"snat address 224.0.0.5: address is a multicast address"},
		{"snat zone", func(s *State) { s.VIPs[1].Mode, s.VIPs[1].SNATAddr = ModeFullNAT, netip.MustParseAddr("fe80::1%eth0") },
			"address must not have a zone"},
		{"mode unknown", func(s *State) { s.VIPs[0].Mode = "tun" }, `unknown mode "tun"`},
		{"mode empty", func(s *State) { s.VIPs[0].Mode = "" }, `unknown mode ""`},
		{"persistence fraction", func(s *State) { s.VIPs[0].Persistence = Duration(1500 * time.Millisecond) }, "persistence 1.5s: want whole seconds"},
		{"persistence too long", func(s *State) { s.VIPs[0].Persistence = MaxPersistence + Duration(time.Second) }, "persistence 24h0m1s: want 1s-24h0m0s (0: none)"},
		{"group bad", func(s *State) { s.VIPs[0].Backends[0].Group = "v 2" }, `group "v 2": want letters, digits`},
		{"group long", func(s *State) { s.VIPs[0].Backends[0].Group = strings.Repeat("g", 33) }, "at most 32 characters"},
		{"rr too many backends", func(s *State) {
			s.VIPs[0].Scheduler = SchedRR
			for i := range MaxSchedBackends + 1 {
				s.VIPs[0].Backends = append(s.VIPs[0].Backends, Backend{Address: netip.AddrFrom4([4]byte{10, 201, byte(i >> 8), byte(i)}), Weight: 1})
			}
		}, "scheduler rr takes at most 1024 backends"},
		{"scheduler unknown", func(s *State) { s.VIPs[0].Scheduler = "hash" }, `unknown scheduler "hash"`},
		{"check type", func(s *State) { s.VIPs[0].HealthCheck.Type = "icmp" }, `vip 10.200.0.100:80/tcp: healthcheck: unknown type "icmp"`},
		{"check interval", func(s *State) { s.VIPs[0].HealthCheck.Interval = Duration(99 * time.Millisecond) }, "healthcheck: interval 99ms: want at least 100ms"},
		{"check timeout 0", func(s *State) { s.VIPs[0].HealthCheck.Timeout = 0 }, "healthcheck: timeout 0s"},
		{"check timeout = interval", func(s *State) { s.VIPs[0].HealthCheck.Timeout = Duration(time.Second) }, "healthcheck: timeout 1s: want more than 0 and less than the interval 1s"},
		{"check rise 0", func(s *State) { s.VIPs[0].HealthCheck.Rise = 0 }, "healthcheck: rise 0: want 1-100"},
		{"check rise 101", func(s *State) { s.VIPs[0].HealthCheck.Rise = 101 }, "healthcheck: rise 101"},
		{"check fall 0", func(s *State) { s.VIPs[0].HealthCheck.Fall = 0 }, "healthcheck: fall 0: want 1-100"},
		{"check fall 101", func(s *State) { s.VIPs[0].HealthCheck.Fall = 101 }, "healthcheck: fall 101"},
		{"check http path", func(s *State) { s.VIPs[0].HealthCheck.Path = "healthz" }, `healthcheck: path "healthz": must start with /`},
		{"check http empty path", func(s *State) { s.VIPs[0].HealthCheck.Path = "" }, `healthcheck: path "": must start with /`},
		{"check tcp with path", func(s *State) { s.VIPs[0].HealthCheck.Type = CheckTCP }, `healthcheck: path "/healthz": only http checks have a path`},
		{"check expect reversed", func(s *State) { s.VIPs[0].HealthCheck.Expect = "399-200" }, `healthcheck: expect 399-200: the first status must not be above the last`},
		{"check expect 600", func(s *State) { s.VIPs[0].HealthCheck.Expect = "200-600" }, `healthcheck: expect 200-600: want http statuses 100-599`},
		{"check expect 99", func(s *State) { s.VIPs[0].HealthCheck.Expect = "99" }, `healthcheck: expect 99: want http statuses 100-599`},
		{"check expect word", func(s *State) { s.VIPs[0].HealthCheck.Expect = "2xx" }, `healthcheck: expect "2xx": want an http status or a range like 200-399`},
		{"check tcp with expect", func(s *State) {
			s.VIPs[0].HealthCheck.Type, s.VIPs[0].HealthCheck.Path, s.VIPs[0].HealthCheck.Expect = CheckTCP, "", "200"
		}, `healthcheck: expect "200": only http checks expect a status`},
		{"check timeout above interval", func(s *State) { s.VIPs[0].HealthCheck.Timeout = Duration(2 * time.Second) }, "healthcheck: timeout 2s: want more than 0 and less than the interval 1s"},
		{"check interval 0", func(s *State) { s.VIPs[0].HealthCheck.Interval = 0 }, "healthcheck: interval 0s: want at least 100ms"},
		{"check udp timeout", func(s *State) {
			*s.VIPs[0].HealthCheck = HealthCheck{Type: CheckUDP, Interval: Duration(100 * time.Millisecond), Timeout: Duration(100 * time.Millisecond), Rise: 1, Fall: 1}
		}, "healthcheck: timeout 100ms: want more than 0 and less than the interval 100ms"},
		{"backend missing address", func(s *State) { s.VIPs[0].Backends[1].Address = netip.Addr{} }, "vip 10.200.0.100:80/tcp: backend #2: address is missing"},
		{"backend unspecified", func(s *State) { s.VIPs[0].Backends[0].Address = netip.MustParseAddr("0.0.0.0") }, "backend 0.0.0.0: address is unspecified"},
		{"backend loopback", func(s *State) { s.VIPs[1].Backends[0].Address = netip.MustParseAddr("::1") }, "vip [2001:db8::1]:53/udp: backend [::1]:53: address is a loopback address"},
		{"backend multicast", func(s *State) { s.VIPs[0].Backends[0].Address = netip.MustParseAddr("239.1.1.1") }, "backend 239.1.1.1: address is a multicast address"},
		{"backend broadcast", func(s *State) { s.VIPs[0].Backends[0].Address = netip.MustParseAddr("255.255.255.255") }, "backend 255.255.255.255: address is the broadcast address"},
		{"backend is vip", func(s *State) { s.VIPs[0].Backends[0].Address = s.VIPs[0].Address }, "backend 10.200.0.100: backend address is the vip address"},
		{"family v6 in v4", func(s *State) { s.VIPs[0].Backends[0].Address = netip.MustParseAddr("2001:db8::11") }, "vip 10.200.0.100:80/tcp: backend 2001:db8::11: address family differs from the vip's"},
		{"family v4 in v6", func(s *State) { s.VIPs[1].Backends[0].Address = netip.MustParseAddr("10.0.0.1") }, "address family differs"},
		{"dr port change", func(s *State) { s.VIPs[0].Backends[0].Port = 8080 }, "vip 10.200.0.100:80/tcp: backend 10.200.0.11:8080: dr mode cannot change the port"},
		{"dr port change v6", func(s *State) { s.VIPs[1].Backends[0].Port = 5353 }, "vip [2001:db8::1]:53/udp: backend [2001:db8::11]:5353: dr mode cannot change the port"},
		{"nat duplicate backend port 0 vs vip port", func(s *State) {
			s.VIPs[0].Mode = ModeNAT
			b := s.VIPs[0].Backends[0]
			b.Port = 80
			s.VIPs[0].Backends = append(s.VIPs[0].Backends, b)
		}, "backend 10.200.0.11:80: duplicate backend"},
		{"nat backend is vip", func(s *State) { s.VIPs[0].Mode = ModeNAT; s.VIPs[0].Backends[0].Address = s.VIPs[0].Address }, "backend address is the vip address"},
		{"fullnat family", func(s *State) {
			s.VIPs[0].Mode = ModeFullNAT
			s.VIPs[0].Backends[0].Address = netip.MustParseAddr("2001:db8::11")
		}, "backend 2001:db8::11: address family differs from the vip's"},
		{"weight", func(s *State) { s.VIPs[0].Backends[0].Weight = 65536 }, "backend 10.200.0.11: weight 65536: want 0-65535"},
		{"duplicate backend", func(s *State) { s.VIPs[0].Backends = append(s.VIPs[0].Backends, s.VIPs[0].Backends[0]) }, "backend 10.200.0.11: duplicate backend"},
		{"duplicate backend port 0 vs vip port", func(s *State) {
			b := s.VIPs[0].Backends[0]
			b.Port = 80
			s.VIPs[0].Backends = append(s.VIPs[0].Backends, b)
		}, "backend 10.200.0.11:80: duplicate backend"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := validState()
			tc.mod(&s)
			err := Validate(s)
			if err == nil {
				t.Fatalf("Validate: no error, want %q", tc.want)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q is not one line", err)
			}
			if again := Validate(s); again == nil || again.Error() != err.Error() {
				t.Errorf("not deterministic: %v then %v", err, again)
			}
		})
	}
}

func TestValidateFirstProblemInOrder(t *testing.T) {
	s := validState()
	s.VIPs[0].Port = 0
	s.VIPs[1].Protocol = "icmp"
	err := Validate(s)
	if err == nil || !strings.Contains(err.Error(), "port must be") {
		t.Fatalf("got %v, want the first vip's problem", err)
	}
}

func TestValidateLimits(t *testing.T) {
	s := validState() // 2 vips, 3 backends
	cases := []struct {
		maxVIPs, maxBackends uint32
		want                 string
	}{
		{0, 0, ""},
		{3, 4, ""},
		{2, 0, "2 vips: at most 1 fit"},
		{0, 3, "3 backends in all vips: at most 2 fit"},
	}
	for _, tc := range cases {
		err := ValidateLimits(s, tc.maxVIPs, tc.maxBackends)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("limits %d/%d: %v", tc.maxVIPs, tc.maxBackends, err)
		case tc.want != "" && (err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("limits %d/%d: got %v, want %q", tc.maxVIPs, tc.maxBackends, err, tc.want)
		}
	}
}

func TestNormalize(t *testing.T) {
	s := State{VIPs: []VIP{
		{
			Address: netip.MustParseAddr("::ffff:10.0.0.2"), Port: 80, Protocol: "TCP",
			HealthCheck: &HealthCheck{Type: "HTTP"},
			Backends: []Backend{
				{Address: netip.MustParseAddr("10.0.1.2"), Port: 80, Weight: 0},
				{Address: netip.MustParseAddr("::ffff:10.0.1.1"), Weight: 7},
			},
		},
		{Address: netip.MustParseAddr("10.0.0.1"), Port: 443, Protocol: UDP, Mode: "DR", Scheduler: "SH",
			HealthCheck: &HealthCheck{Type: CheckTCP, Interval: Duration(200 * time.Millisecond)}},
		{Address: netip.MustParseAddr("10.0.0.1"), Port: 443, Protocol: TCP,
			HealthCheck: &HealthCheck{Type: CheckNone, Interval: Duration(time.Second), Rise: 2, Port: 9}},
		{Address: netip.MustParseAddr("2001:db8::1"), Port: 80, Protocol: TCP, Announce: boolp(true),
			HealthCheck: &HealthCheck{}},
		{Address: netip.MustParseAddr("10.0.0.1"), Port: 80, Protocol: TCP,
			HealthCheck: &HealthCheck{Type: CheckUDP, Interval: Duration(3 * time.Second), Timeout: Duration(2 * time.Second), Rise: 5, Fall: 6, Port: 53}},
	}}
	Normalize(&s)
	want := State{VIPs: []VIP{
		{Address: netip.MustParseAddr("10.0.0.1"), Port: 80, Protocol: TCP, Mode: ModeDR, Scheduler: SchedMaglev,
			HealthCheck: &HealthCheck{Type: CheckUDP, Interval: Duration(3 * time.Second), Timeout: Duration(2 * time.Second), Rise: 5, Fall: 6, Port: 53},
			Backends:    []Backend{}},
		{Address: netip.MustParseAddr("10.0.0.1"), Port: 443, Protocol: TCP, Mode: ModeDR, Scheduler: SchedMaglev,
			HealthCheck: &HealthCheck{Type: CheckNone}, Backends: []Backend{}},
		{Address: netip.MustParseAddr("10.0.0.1"), Port: 443, Protocol: UDP, Mode: ModeDR, Scheduler: SchedSH,
			HealthCheck: &HealthCheck{Type: CheckTCP, Interval: Duration(200 * time.Millisecond), Timeout: Duration(100 * time.Millisecond), Rise: 2, Fall: 3},
			Backends:    []Backend{}},
		{Address: netip.MustParseAddr("10.0.0.2"), Port: 80, Protocol: TCP, Mode: ModeDR, Scheduler: SchedMaglev,
			HealthCheck: &HealthCheck{Type: CheckHTTP, Path: "/", Interval: DefaultCheckInterval, Timeout: DefaultCheckTimeout, Rise: 2, Fall: 3},
			Backends: []Backend{
				{Address: netip.MustParseAddr("10.0.1.1"), Weight: 7},
				{Address: netip.MustParseAddr("10.0.1.2"), Weight: 0},
			}},
		{Address: netip.MustParseAddr("2001:db8::1"), Port: 80, Protocol: TCP, Mode: ModeDR, Scheduler: SchedMaglev,
			Announce: boolp(true), HealthCheck: &HealthCheck{Type: CheckNone}, Backends: []Backend{}},
	}}
	if !reflect.DeepEqual(s, want) {
		t.Fatalf("Normalize:\n got %+v\nwant %+v", s, want)
	}
	if err := Validate(s); err != nil {
		t.Fatalf("normalized state invalid: %v", err)
	}
	// Idempotent.
	again := s.Clone()
	Normalize(&again)
	if !reflect.DeepEqual(again, s) {
		t.Fatal("Normalize is not idempotent")
	}

	var empty State
	Normalize(&empty)
	if empty.VIPs == nil || len(empty.VIPs) != 0 {
		t.Fatalf("empty state: %#v", empty)
	}
}

// The SNAT address is normalized, compared and encoded like the other
// fields: unmapped, part of EqualVIP, left out of JSON when unset.
func TestSNATAddrField(t *testing.T) {
	v := VIP{Address: netip.MustParseAddr("10.0.0.1"), Port: 80, Protocol: TCP, Mode: ModeFullNAT,
		SNATAddr: netip.MustParseAddr("::ffff:10.0.9.1"),
		Backends: []Backend{{Address: netip.MustParseAddr("10.0.1.1"), Port: 8080, Weight: 1}}}
	NormalizeVIP(&v)
	if v.SNATAddr != netip.MustParseAddr("10.0.9.1") {
		t.Fatalf("snat address %s, want it unmapped", v.SNATAddr)
	}
	if err := ValidateVIP(&v, 0); err != nil {
		t.Fatal(err)
	}
	other := v.Clone()
	if !EqualVIP(&v, &other) {
		t.Fatal("clone differs")
	}
	other.SNATAddr = netip.MustParseAddr("10.0.9.2")
	if EqualVIP(&v, &other) || SameTargets(&v, &other) {
		t.Fatal("vips with different snat addresses compare equal")
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"mode":"fullnat","snat_addr":"10.0.9.1"`) || !strings.Contains(string(b), `"port":8080`) {
		t.Fatalf("json %s", b)
	}
	var back VIP
	if err := json.Unmarshal(b, &back); err != nil || !EqualVIP(&back, &v) {
		t.Fatalf("json round trip: %+v %v", back, err)
	}
	v.Mode, v.SNATAddr = ModeNAT, netip.Addr{}
	if b, _ := json.Marshal(v); strings.Contains(string(b), "snat_addr") {
		t.Fatalf("unset snat address in json: %s", b)
	}
}

func TestModeIsNAT(t *testing.T) {
	for m, want := range map[Mode]bool{ModeDR: false, ModeNAT: true, ModeFullNAT: true, "": false} {
		if m.IsNAT() != want {
			t.Errorf("%q.IsNAT() = %v", m, !want)
		}
	}
}

// An http check's expected statuses: one spelling after Normalize, in the
// probe's Spec as a range, the default when unset.
func TestCheckExpect(t *testing.T) {
	v := VIP{Address: netip.MustParseAddr("10.0.0.1"), Port: 80, Protocol: TCP,
		HealthCheck: &HealthCheck{Type: CheckHTTP, Expect: " 200 - 204 "},
		Backends:    []Backend{{Address: netip.MustParseAddr("10.0.1.1"), Weight: 1}}}
	NormalizeVIP(&v)
	if v.HealthCheck.Expect != "200-204" {
		t.Fatalf("expect %q, want 200-204", v.HealthCheck.Expect)
	}
	if err := ValidateVIP(&v, 0); err != nil {
		t.Fatal(err)
	}
	spec, ok := HealthSpec(&v, v.Backends[0])
	if !ok || spec.Expect != (healthcheck.StatusRange{Lo: 200, Hi: 204}) {
		t.Fatalf("spec %+v", spec)
	}
	v.HealthCheck.Expect = ""
	if spec, _ := HealthSpec(&v, v.Backends[0]); spec.Expect != (healthcheck.StatusRange{}) {
		t.Fatalf("spec without expect %+v: want the zero range (the default)", spec)
	}
}

// A fallback is checked as a backend of its VIP's mode, and is none of its
// backends.
func TestValidateFallback(t *testing.T) {
	fb := func(a string, port uint16) func(*VIP) {
		return func(v *VIP) { v.Fallback = &Fallback{Address: netip.MustParseAddr(a), Port: port} }
	}
	for _, tc := range []struct {
		name string
		mod  func(*VIP)
		want string // "": valid
	}{
		{"dr", fb("10.200.0.99", 0), ""},
		{"dr vip port", fb("10.200.0.99", 80), ""},
		{"dr other port", fb("10.200.0.99", 8080), "vip 10.200.0.100:80/tcp: fallback 10.200.0.99:8080: dr mode cannot change the port"},
		{"nat other port", func(v *VIP) { v.Mode = ModeNAT; fb("10.200.0.99", 8080)(v) }, ""},
		{"family", fb("2001:db8::99", 0), "fallback 2001:db8::99: address family differs"},
		{"vip address", fb("10.200.0.100", 0), "fallback 10.200.0.100: is the vip address"},
		{"loopback", fb("127.0.0.1", 0), "fallback 127.0.0.1: address is a loopback address"},
		{"a backend", fb("10.200.0.11", 0), "fallback 10.200.0.11: is a backend of the vip too"},
		{"a backend by vip port", fb("10.200.0.12", 80), "fallback 10.200.0.12: is a backend of the vip too"},
		{"no address", func(v *VIP) { v.Fallback = &Fallback{} }, "fallback invalid IP: address is missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := validState()
			tc.mod(&s.VIPs[0])
			Normalize(&s)
			err := Validate(s)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want %q", err, tc.want)
			}
		})
	}
	// The fallback counts against the backend map.
	s := validState()
	fb("10.200.0.99", 0)(&s.VIPs[0])
	if err := CheckCapacity(s, 0, 5); err != nil {
		t.Fatal(err)
	}
	if err := CheckCapacity(s, 0, 4); err == nil {
		t.Fatal("4 entries (3 backends, 1 fallback) fit in 3 ids")
	}
	// Compared, cloned and normalized like the other fields.
	v := s.VIPs[0].Clone()
	v.Fallback.Port = 80
	NormalizeVIP(&v)
	if v.Fallback.Port != 0 || !EqualVIP(&v, &s.VIPs[0]) {
		t.Fatalf("fallback %+v: want the vip port written as 0", v.Fallback)
	}
	v.Fallback.Address = netip.MustParseAddr("10.200.0.98")
	if EqualVIP(&v, &s.VIPs[0]) || s.VIPs[0].Fallback.Address == v.Fallback.Address {
		t.Fatal("clone shares the fallback, or EqualVIP ignores it")
	}
}

func TestVIPPatch(t *testing.T) {
	str := func(s string) *string { return &s }
	dur := func(d time.Duration) *Duration { x := Duration(d); return &x }
	base := func() VIP { return validState().VIPs[0] } // http /healthz, 1s, 500ms, 2, 3
	for _, tc := range []struct {
		name  string
		patch VIPPatch
		check func(*VIP) string // "" when right
		err   string
	}{
		{"nothing", VIPPatch{}, func(v *VIP) string {
			if b := base(); !EqualVIP(v, &b) {
				return "changed"
			}
			return ""
		}, ""},
		{"interval only", VIPPatch{HealthCheck: &HealthCheckPatch{Interval: dur(2 * time.Second)}}, func(v *VIP) string {
			if hc := v.HealthCheck; hc.Type != CheckHTTP || hc.Path != "/healthz" || hc.Interval != Duration(2*time.Second) || hc.Rise != 2 {
				return fmt.Sprintf("%+v", hc)
			}
			return ""
		}, ""},
		{"http to tcp drops the path", VIPPatch{HealthCheck: &HealthCheckPatch{Type: str("tcp")}}, func(v *VIP) string {
			if hc := v.HealthCheck; hc.Type != CheckTCP || hc.Path != "" || hc.Interval != Duration(time.Second) {
				return fmt.Sprintf("%+v", hc)
			}
			return ""
		}, ""},
		{"none", VIPPatch{HealthCheck: &HealthCheckPatch{Type: str("none")}}, func(v *VIP) string {
			if *v.HealthCheck != (HealthCheck{Type: CheckNone}) {
				return fmt.Sprintf("%+v", v.HealthCheck)
			}
			return ""
		}, ""},
		{"none with a setting", VIPPatch{HealthCheck: &HealthCheckPatch{Type: str("none"), Rise: new(int)}}, nil, "a check of type none takes no other setting"},
		{"options", VIPPatch{Mode: new(Mode), Scheduler: new(Scheduler), Announce: new(bool),
			Fallback: &Fallback{Address: netip.MustParseAddr("10.200.0.99")}}, func(v *VIP) string {
			if v.Mode != "" || v.Scheduler != "" || v.Announce == nil || *v.Announce || v.Fallback == nil || v.Fallback.Address != netip.MustParseAddr("10.200.0.99") {
				return fmt.Sprintf("%+v", v)
			}
			return ""
		}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := base()
			err := tc.patch.Apply(&v)
			if tc.err != "" {
				if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Apply = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if msg := tc.check(&v); msg != "" {
				t.Fatal(msg)
			}
		})
	}
	// Settings of a check the VIP does not have need its type; an
	// invalid fallback address removes the fallback.
	v := base()
	v.HealthCheck = nil
	v.Fallback = &Fallback{Address: netip.MustParseAddr("10.200.0.99")}
	err := VIPPatch{HealthCheck: &HealthCheckPatch{Rise: new(int)}}.Apply(&v)
	if err == nil || !strings.Contains(err.Error(), "vip 10.200.0.100:80/tcp: healthcheck: the vip has no check to change: give its type too") {
		t.Fatalf("Apply = %v", err)
	}
	if err := (VIPPatch{Fallback: &Fallback{}}).Apply(&v); err != nil || v.Fallback != nil {
		t.Fatalf("fallback removal: %v, %+v", err, v.Fallback)
	}
	if !(VIPPatch{HealthCheck: &HealthCheckPatch{}}).IsZero() || (VIPPatch{Announce: new(bool)}).IsZero() {
		t.Fatal("IsZero")
	}
	// The wire form: an unset SNAT address is "", and reads back as set
	// to none.
	none := netip.Addr{}
	b, err := json.Marshal(VIPPatch{SNATAddr: &none})
	if err != nil || string(b) != `{"snat_addr":""}` {
		t.Fatalf("json %s %v", b, err)
	}
	var back VIPPatch
	if err := json.Unmarshal(b, &back); err != nil || back.SNATAddr == nil || back.SNATAddr.IsValid() {
		t.Fatalf("json back %+v %v", back, err)
	}
}

// DiffStates (apply --dry-run) names a fallback and an http check's
// statuses by their config keys.
func TestDiffStatesFallbackExpect(t *testing.T) {
	cur := validState()
	Normalize(&cur)
	next := cur.Clone()
	next.VIPs[0].Fallback = &Fallback{Address: netip.MustParseAddr("10.200.0.99")}
	next.VIPs[0].HealthCheck.Expect = "200-204"
	d := DiffStates(cur, next)
	if len(d.VIPs) != 1 || !reflect.DeepEqual(d.VIPs[0].Fields, []FieldChange{
		{Field: "fallback.address", New: "10.200.0.99"},
		{Field: "healthcheck.expect", New: "200-204"},
	}) {
		t.Fatalf("diff %+v", d)
	}
}

// The choices that help and messages offer (Modes, Schedulers) are all
// accepted, and the defaults are among them, first.
func TestChoicesAreAccepted(t *testing.T) {
	for _, m := range Modes() {
		s := validState()
		s.VIPs[0].Mode = m
		if err := Validate(s); err != nil {
			t.Errorf("mode %s offered but refused: %v", m, err)
		}
	}
	for _, sc := range Schedulers() {
		s := validState()
		s.VIPs[0].Scheduler = sc
		if err := Validate(s); err != nil {
			t.Errorf("scheduler %s offered but refused: %v", sc, err)
		}
	}
	if Modes()[0] != DefaultMode || Schedulers()[0] != DefaultScheduler {
		t.Errorf("defaults %s, %s are not first in %v, %v", DefaultMode, DefaultScheduler, Modes(), Schedulers())
	}
	var v VIP
	NormalizeVIP(&v)
	if v.Mode != DefaultMode || v.Scheduler != DefaultScheduler {
		t.Errorf("normalized to %s, %s", v.Mode, v.Scheduler)
	}
	s := validState()
	s.VIPs[0].Scheduler = "hash"
	if err := Validate(s); err == nil || !strings.HasSuffix(err.Error(), "want "+OneOf(Schedulers())) {
		t.Errorf("hash: %v: want the accepted schedulers named", err)
	}
}

func TestOneOf(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want string
	}{{nil, ""}, {[]string{"a"}, "a"}, {[]string{"a", "b"}, "a or b"}, {[]string{"a", "b", "c"}, "a, b or c"}} {
		if got := OneOf(tc.in); got != tc.want {
			t.Errorf("OneOf(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// The limits: a rate limit and a connection cap take their defaults from
// Normalize, are refused out of range with a message that names the
// setting, and are set and removed by patches.
func TestLimits(t *testing.T) {
	st := validState()
	st.VIPs[0].MaxNewFlows = 1000
	st.VIPs[0].Backends[0].MaxConns = 100
	st.VIPs[1].Backends[0].MaxConns = 1
	Normalize(&st)
	if v := st.VIPs[0]; v.MaxNewFlowsBurst != 1000 || v.Backends[0].MaxConnsMin != 75 {
		t.Fatalf("defaults: burst %d, min %d; want 1000 and 75", v.MaxNewFlowsBurst, v.Backends[0].MaxConnsMin)
	}
	if min := st.VIPs[1].Backends[0].MaxConnsMin; min != 0 {
		t.Fatalf("min of a cap of 1: %d, want 0", min)
	}
	if err := Validate(st); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		change func(*State)
		want   string
	}{
		"burst without rate": {func(s *State) { s.VIPs[0].MaxNewFlows = 0 }, "max_new_flows_burst 1000 without max_new_flows"},
		"rate too high":      {func(s *State) { s.VIPs[0].MaxNewFlows = MaxNewFlowsRate + 1 }, "max_new_flows 10000001: want 1-10000000"},
		"burst too high":     {func(s *State) { s.VIPs[0].MaxNewFlowsBurst = MaxNewFlowsBurst + 1 }, "max_new_flows_burst 100000001: want 1-100000000"},
		"min without max":    {func(s *State) { s.VIPs[0].Backends[0].MaxConns = 0 }, "backend 10.200.0.11: max_conns_min 75 without max_conns"},
		"min at max":         {func(s *State) { s.VIPs[0].Backends[0].MaxConnsMin = 100 }, "max_conns_min 100: want below max_conns 100"},
	} {
		t.Run(name, func(t *testing.T) {
			s := st.Clone()
			tc.change(&s)
			err := Validate(s)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate: %v, want %q", err, tc.want)
			}
		})
	}

	// Patches set both halves: a new cap without a lower mark takes the
	// default of the new cap, not the old mark; 0 removes.
	v := st.VIPs[0].Clone()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(VIPPatch{MaxNewFlows: &NewFlowLimit{Rate: 20}}.Apply(&v))
	BackendPatch{MaxConns: &ConnCap{Max: 40}}.Apply(&v.Backends[0])
	NormalizeVIP(&v)
	if v.MaxNewFlows != 20 || v.MaxNewFlowsBurst != 20 || v.Backends[0].MaxConns != 40 || v.Backends[0].MaxConnsMin != 30 {
		t.Fatalf("after patches: %+v", v)
	}
	if (VIPPatch{MaxNewFlows: &NewFlowLimit{}}).IsZero() {
		t.Fatal("a patch removing the rate limit is zero")
	}
	must(VIPPatch{MaxNewFlows: &NewFlowLimit{}}.Apply(&v))
	BackendPatch{MaxConns: &ConnCap{}}.Apply(&v.Backends[0])
	NormalizeVIP(&v)
	if v.MaxNewFlows != 0 || v.MaxNewFlowsBurst != 0 || v.Backends[0].MaxConns != 0 || v.Backends[0].MaxConnsMin != 0 {
		t.Fatalf("after removing patches: %+v", v)
	}
	if err := ValidateVIP(&v, 0); err != nil {
		t.Fatal(err)
	}
	// A limit changes neither the targets nor the JSON keys' names.
	w := v.Clone()
	w.MaxNewFlows, w.MaxNewFlowsBurst = 5, 5
	if !SameTargets(&v, &w) || EqualVIP(&v, &w) {
		t.Fatal("a rate limit changes the targets, or not the vip")
	}
	d := DiffStates(State{VIPs: []VIP{v}}, State{VIPs: []VIP{w}})
	if len(d.VIPs) != 1 || fmt.Sprint(d.VIPs[0].Fields) != "[{max_new_flows  5} {max_new_flows_burst  5}]" {
		t.Fatalf("diff %+v", d)
	}
}
