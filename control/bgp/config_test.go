package bgp

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestParsePeer(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Peer
		err  string
	}{
		{in: "192.0.2.1", want: Peer{Addr: netip.MustParseAddr("192.0.2.1")}},
		{in: "192.0.2.1,asn=65000", want: Peer{Addr: netip.MustParseAddr("192.0.2.1"), ASN: 65000}},
		{in: "2001:db8::1,port=1179,asn=4200000000", want: Peer{Addr: netip.MustParseAddr("2001:db8::1"), ASN: 4200000000, Port: 1179}},
		{in: " 192.0.2.1 , port=179 ", want: Peer{Addr: netip.MustParseAddr("192.0.2.1"), Port: 179}},
		{in: "", err: "want ADDR"},
		{in: "router1", err: "want ADDR"},
		{in: "192.0.2.1:179", err: "want ADDR"},
		{in: "192.0.2.1,asn=0", err: "asn"},
		{in: "192.0.2.1,asn=4294967296", err: "asn"},
		{in: "192.0.2.1,port=0", err: "port"},
		{in: "192.0.2.1,port=65536", err: "port"},
		{in: "192.0.2.1,asn=1,asn=2", err: "each once"},
		{in: "192.0.2.1,bfd", err: "want asn=N or port=N"},
		{in: "192.0.2.1,ttl=2", err: "unknown option"},
		{in: "0.0.0.0", err: "unicast"},
		{in: "ff02::1", err: "unicast"},
		{in: "::ffff:192.0.2.1", err: "unicast"},
		{in: "fe80::1%eth0", err: "link-local"},
	} {
		got, err := ParsePeer(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParsePeer(%q) = %v, %v: want an error with %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParsePeer(%q) = %+v, %v: want %+v", tc.in, got, err, tc.want)
		}
		if again, err := ParsePeer(got.String()); err != nil || again != got {
			t.Errorf("ParsePeer(%q) = %+v, %v: want %+v back", got.String(), again, err, got)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	id := netip.MustParseAddr("10.0.0.1")
	peer := Peer{Addr: netip.MustParseAddr("192.0.2.254")}
	ok := func() Config { return Config{ASN: 65001, RouterID: id, Peers: []Peer{peer}} }
	for _, tc := range []struct {
		name string
		cfg  func(*Config)
		err  string
	}{
		{name: "off", cfg: func(c *Config) { *c = Config{} }},
		{name: "defaults"},
		{name: "listen alone", cfg: func(c *Config) { *c = Config{ListenPort: 1179} }, err: "--bgp-listen-port needs"},
		{name: "no asn", cfg: func(c *Config) { c.ASN = 0 }, err: "--bgp-asn is required"},
		{name: "no router id", cfg: func(c *Config) { c.RouterID = netip.Addr{} }, err: "--bgp-router-id is required"},
		{name: "ipv6 router id", cfg: func(c *Config) { c.RouterID = netip.MustParseAddr("2001:db8::1") }, err: "want an IPv4"},
		{name: "zero router id", cfg: func(c *Config) { c.RouterID = netip.IPv4Unspecified() }, err: "want an IPv4"},
		{name: "no peer", cfg: func(c *Config) { c.Peers = nil }, err: "--bgp-peer is required"},
		{name: "peer twice", cfg: func(c *Config) { c.Peers = append(c.Peers, Peer{Addr: peer.Addr, Port: 1179}) }, err: "given twice"},
		{name: "hold 2s", cfg: func(c *Config) { c.HoldTime = 2 * time.Second }, err: "whole seconds from 3s"},
		{name: "hold 3.5s", cfg: func(c *Config) { c.HoldTime = 3500 * time.Millisecond }, err: "whole seconds"},
		{name: "hold 65536s", cfg: func(c *Config) { c.HoldTime = 65536 * time.Second }, err: "whole seconds"},
		{name: "hold 3s", cfg: func(c *Config) { c.HoldTime = 3 * time.Second }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok()
			if tc.cfg != nil {
				tc.cfg(&c)
			}
			err := c.Validate()
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Validate() = %v: want an error with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !c.Enabled() {
				return
			}
			// The defaults: our AS (iBGP), port 179, hold 9s unless given.
			if p := c.Peers[0]; p.ASN != 65001 || p.Port != DefaultPort {
				t.Errorf("peer %+v: want our AS and port 179", p)
			}
			if tc.name == "defaults" && c.HoldTime != DefaultHoldTime {
				t.Errorf("hold time %s, want %s", c.HoldTime, DefaultHoldTime)
			}
		})
	}
}
