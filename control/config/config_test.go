package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/internal/testutil"
)

// The example of ARCHITECTURE.md.
const exampleConfig = `
vips:
  - address: 10.200.0.100
    port: 80
    protocol: tcp
    mode: dr
    scheduler: maglev
    healthcheck: {type: http, path: /healthz, interval: 1s, timeout: 500ms, rise: 2, fall: 3}
    backends:
      - {address: 10.200.0.11, weight: 100}
      - {address: 10.200.0.12, weight: 100, drain: true}
`

func TestConfigParseExample(t *testing.T) {
	got, err := Parse([]byte(exampleConfig))
	if err != nil {
		t.Fatal(err)
	}
	want := model.State{VIPs: []model.VIP{{
		Address: netip.MustParseAddr("10.200.0.100"), Port: 80, Protocol: model.TCP, Mode: model.ModeDR, Scheduler: model.SchedMaglev,
		HealthCheck: &model.HealthCheck{Type: model.CheckHTTP, Path: "/healthz",
			Interval: model.Duration(time.Second), Timeout: model.Duration(500 * time.Millisecond), Rise: 2, Fall: 3},
		Backends: []model.Backend{
			{Address: netip.MustParseAddr("10.200.0.11"), Weight: 100},
			{Address: netip.MustParseAddr("10.200.0.12"), Weight: 100, Drain: true},
		},
	}}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
	if err := model.Validate(got); err != nil {
		t.Fatal(err)
	}
}

func TestConfigWeightDefault(t *testing.T) {
	got, err := Parse([]byte(`
defaults: &b {weight: 7}
vips:
  - address: 2001:db8::1
    port: 443
    protocol: tcp
    backends:
      - address: 2001:db8::11
      - address: 2001:db8::12
        weight: 0
      - {address: 2001:db8::13, weight: 5}
      - {<<: *b, address: 2001:db8::14}
  - {address: 10.0.0.1, port: 80, protocol: udp, backends: [{address: 10.0.0.2}]}
`))
	if err == nil {
		// "defaults" is no key of State: unknown keys are errors.
		t.Fatalf("unknown top-level key accepted: %+v", got)
	}
	got, err = Parse([]byte(`
vips:
  - address: 2001:db8::1
    port: 443
    protocol: tcp
    backends:
      - address: 2001:db8::11
      - address: 2001:db8::12
        weight: 0
      - {address: 2001:db8::13, weight: 5}
      - &b {address: 2001:db8::14, weight: 7}
      - {<<: *b, address: 2001:db8::15}
      - {<<: *b, address: 2001:db8::16, weight: 0}
  - {address: 10.0.0.1, port: 80, protocol: udp, backends: [{address: 10.0.0.2}]}
`))
	if err != nil {
		t.Fatal(err)
	}
	weights := map[string]uint32{}
	for _, v := range got.VIPs {
		for _, b := range v.Backends {
			weights[b.Address.String()] = b.Weight
		}
	}
	want := map[string]uint32{
		"2001:db8::11": model.DefaultWeight, "2001:db8::12": 0, "2001:db8::13": 5,
		"2001:db8::14": 7, "2001:db8::15": 7, "2001:db8::16": 0, "10.0.0.2": model.DefaultWeight,
	}
	if !reflect.DeepEqual(weights, want) {
		t.Fatalf("weights %v, want %v", weights, want)
	}
}

func TestConfigErrors(t *testing.T) {
	cases := map[string]string{
		"unknown vip key":     "vips:\n  - {address: 10.0.0.1, port: 80, protocol: tcp, sheduler: sh}\n",
		"unknown backend key": "vips:\n  - {address: 10.0.0.1, port: 80, protocol: tcp, backends: [{address: 10.0.0.2, wieght: 1}]}\n",
		"unknown check key":   "vips:\n  - {address: 10.0.0.1, port: 80, protocol: tcp, healthcheck: {type: tcp, intervall: 1s}}\n",
		"unknown top key":     "vip: []\n",
		"bad address":         "vips:\n  - {address: 10.0.0.300, port: 80, protocol: tcp}\n",
		"bad port":            "vips:\n  - {address: 10.0.0.1, port: 70000, protocol: tcp}\n",
		"bad duration":        "vips:\n  - {address: 10.0.0.1, port: 80, protocol: tcp, healthcheck: {type: tcp, interval: soon}}\n",
		"negative weight":     "vips:\n  - {address: 10.0.0.1, port: 80, protocol: tcp, backends: [{address: 10.0.0.2, weight: -1}]}\n",
		"not yaml":            "vips: [\n",
		"two documents":       "vips: []\n---\nvips: []\n",
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			s, err := Parse([]byte(in))
			if err == nil {
				t.Fatalf("no error, parsed %+v", s)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("multi-line error: %q", err)
			}
			t.Log(err)
		})
	}
}

func TestConfigEmpty(t *testing.T) {
	for _, in := range []string{"", "# nothing\n", "vips: []\n", "vips:\n"} {
		s, err := Parse([]byte(in))
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if !reflect.DeepEqual(s, model.State{VIPs: []model.VIP{}}) {
			t.Fatalf("%q: %+v", in, s)
		}
	}
}

func TestConfigDurations(t *testing.T) {
	s, err := Parse([]byte("vips:\n  - {address: 10.0.0.1, port: 80, protocol: tcp, healthcheck: {type: tcp, interval: 2, timeout: 1.5s}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	hc := s.VIPs[0].HealthCheck
	if hc.Interval != model.Duration(2*time.Second) || hc.Timeout != model.Duration(1500*time.Millisecond) {
		t.Fatalf("interval %v timeout %v", hc.Interval, hc.Timeout)
	}
}

// roundTripState covers what export must keep: IPv6, drain, weight 0,
// backend ports, announce, every health-check field.
func TestConfigRoundTrip(t *testing.T) {
	in := testutil.RoundTripState()
	want := in.Clone()
	model.Normalize(&want)
	if err := model.Validate(want); err != nil {
		t.Fatalf("test state invalid: %v", err)
	}
	out, err := Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, testutil.RoundTripState()) {
		t.Fatal("MarshalState changed its argument")
	}
	for _, s := range []string{"[2001:db8::100]", "2001:db8::100", "interval: 1.5s", "timeout: 250ms", "expect: 200-299", "fallback:", "address: 10.200.0.99", "address: 10.201.0.99\n      port: 8081", "weight: 0", "drain: true", "announce: false"} {
		if s == "[2001:db8::100]" {
			if strings.Contains(string(out), s) {
				t.Errorf("address written with brackets:\n%s", out)
			}
			continue
		}
		if !strings.Contains(string(out), s) {
			t.Errorf("export lacks %q:\n%s", s, out)
		}
	}
	got, err := Parse(out)
	if err != nil {
		t.Fatalf("parse export: %v\n%s", err, out)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip:\n got %+v\nwant %+v\nyaml:\n%s", got, want, out)
	}
	again, err := Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	if string(again) != string(out) {
		t.Fatalf("export not stable:\n%s\nvs\n%s", out, again)
	}
	t.Logf("export:\n%s", out)
}

func TestConfigLoad(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "xdplb.yaml")
	if err := os.WriteFile(p, []byte(exampleConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.VIPs) != 1 || len(s.VIPs[0].Backends) != 2 {
		t.Fatalf("loaded %+v", s)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Fatal("missing file: no error")
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("vips: [{adress: 10.0.0.1}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(bad); err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "adress") {
		t.Fatalf("bad file: %v, want the path and the bad key", err)
	}
}

// The scheduler, persistence and backend groups survive export and apply.
func TestSchedulerPersistenceGroupRoundTrip(t *testing.T) {
	in := `vips:
  - address: 10.200.0.100
    port: 80
    protocol: tcp
    scheduler: wrr
    persistence: 5m0s
    backends:
      - {address: 10.200.0.11, weight: 95, group: v1}
      - {address: 10.200.0.12, weight: 5, group: v2}
`
	st, err := Parse([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	v := st.VIPs[0]
	if v.Scheduler != model.SchedWRR || v.Persistence != model.Duration(5*time.Minute) ||
		v.Backends[0].Group != "v1" || v.Backends[1].Group != "v2" {
		t.Fatalf("parsed %+v", v)
	}
	out, err := Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"scheduler: wrr", "persistence: 5m0s", "group: v2"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("export lacks %q:\n%s", want, out)
		}
	}
	back, err := Parse(out)
	if err != nil {
		t.Fatal(err)
	}
	if !model.EqualState(&st, &back) {
		t.Errorf("round trip changed the state:\n%s", out)
	}
}
