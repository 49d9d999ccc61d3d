package config

import (
	"bytes"
	"net/netip"
	"reflect"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/xdplb/xdplb/control/model"
)

// Backup pools: a primary AZ and a backup AZ, as docs/operations.md shows
// them.
const poolsConfig = `vips:
  - address: 10.200.0.100
    port: 80
    protocol: tcp
    mode: dr
    scheduler: maglev
    failover_below: 50
    backends:
      - address: 10.200.0.11
        weight: 100
      - address: 10.200.0.12
        weight: 100
      - address: 10.201.0.11
        weight: 100
        priority: 1
      - address: 10.202.0.11
        weight: 50
        priority: 2
`

// A backend's priority and a VIP's failover_below read from the file,
// export writes them where set, as yaml.v3 writes the model, and the two
// round-trip.
func TestRoundTripPools(t *testing.T) {
	st, err := Parse([]byte(poolsConfig))
	if err != nil {
		t.Fatal(err)
	}
	v := st.VIPs[0]
	if v.FailoverBelow != 50 || v.Backends[0].Priority != 0 || v.Backends[2].Priority != 1 || v.Backends[3].Priority != 2 {
		t.Fatalf("parsed %+v", v)
	}
	if err := model.Validate(st); err != nil {
		t.Fatal(err)
	}
	out, err := Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != poolsConfig {
		t.Fatalf("export\n%s\nwant\n%s", out, poolsConfig)
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(st); err != nil {
		t.Fatal(err)
	}
	if buf.String() != string(out) {
		t.Fatalf("export\n%s\nyaml.v3 of the model\n%s", out, buf.String())
	}
	back, err := Parse(out)
	if err != nil || !reflect.DeepEqual(back, st) {
		t.Fatalf("round trip: %v\n%+v\nwant %+v", err, back, st)
	}

	// Out of range: parsed as written, refused by validation.
	bad := model.State{VIPs: []model.VIP{{Address: netip.MustParseAddr("10.200.0.100"), Port: 80, Protocol: model.TCP,
		FailoverBelow: 150, Backends: []model.Backend{}}}}
	out, err = Marshal(bad)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := Parse(out); err != nil || model.Validate(st) == nil {
		t.Fatalf("failover_below 150: parse %v, want a validation error", err)
	}
}
