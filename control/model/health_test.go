package model

import (
	"net/netip"
	"testing"
)

func TestHealthTargetIDSplits(t *testing.T) {
	for _, tc := range []struct {
		vip          string
		addr         string
		port         uint16
		wantVIP, beN string
	}{
		{"10.0.0.100:80/tcp", "10.0.0.1", 0, "10.0.0.100:80/tcp", "10.0.0.1"},
		{"10.0.0.100:80/tcp", "::ffff:10.0.0.1", 8080, "10.0.0.100:80/tcp", "10.0.0.1:8080"},
		{"[2001:db8::1]:53/udp", "2001:db8::11", 5353, "[2001:db8::1]:53/udp", "[2001:db8::11]:5353"},
	} {
		id, err := ParseVIPID(tc.vip)
		if err != nil {
			t.Fatal(err)
		}
		v, b, ok := SplitHealthTargetID(HealthTargetID(id, netip.MustParseAddr(tc.addr), tc.port))
		if !ok || v != tc.wantVIP || b != tc.beN {
			t.Errorf("%s %s:%d: split to %q %q %v", tc.vip, tc.addr, tc.port, v, b, ok)
		}
	}
	if _, _, ok := SplitHealthTargetID("a"); ok {
		t.Error("an id of no backend split")
	}
}
