package main

import (
	"bytes"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/xdplb/xdplb/control/api"
)

// status shows the BGP speaker, when the daemon runs one: its routes and
// a line per session.
func TestStatusBGP(t *testing.T) {
	st := api.DaemonStatus{Version: "test", StartTime: time.Now(), Uptime: "1m0s", BGP: &api.BGPStatus{
		ASN: 65001, RouterID: netip.MustParseAddr("10.0.0.1"), HoldTime: "9s",
		Routes: []string{"10.0.0.100/32", "2001:db8::100/128"},
		Sessions: []api.BGPSession{
			{Peer: netip.MustParseAddr("192.0.2.254"), PeerASN: 65000, Port: 179, State: "established", Up: true,
				Uptime: "1h2m3s", Routes: 1, LocalAddr: netip.MustParseAddr("192.0.2.1")},
			{Peer: netip.MustParseAddr("2001:db8::fe"), PeerASN: 65001, Port: 1179, State: "active", LastError: "hold timer expired"},
		},
	}}
	var buf bytes.Buffer
	if err := writeStatus(&env{stdout: &buf}, st); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, re := range []string{`(?m)^bgp:\s+asn 65001, router id 10.0.0.1, hold time 9s$`,
		`(?m)^routes:\s+10.0.0.100/32, 2001:db8::100/128$`,
		`(?m)^PEER\s+ASN\s+STATE\s+UPTIME\s+ROUTES\s+LOCAL ADDR\s+LAST ERROR$`,
		`(?m)^192.0.2.254:179\s+65000\s+established\s+1h2m3s\s+1\s+192.0.2.1\s+-$`,
		`(?m)^\[2001:db8::fe\]:1179\s+65001\s+active\s+-\s+0\s+-\s+hold timer expired$`} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("status lacks %q:\n%s", re, out)
		}
	}
	// Without a speaker, no BGP part.
	buf.Reset()
	st.BGP = nil
	if err := writeStatus(&env{stdout: &buf}, st); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), "bgp") || strings.Contains(buf.String(), "PEER") {
		t.Errorf("status without bgp:\n%s", buf.String())
	}
}

// status counts the VIPs of each scheduler in use, in the order of
// model.Schedulers, and nothing for a daemon without VIPs.
func TestStatusSchedulers(t *testing.T) {
	for _, tc := range []struct {
		vips  int
		sched map[string]int
		want  string
	}{
		{12, map[string]int{"wrr": 2, "maglev": 9, "lc": 1}, `(?m)^vips:\s+12 \(maglev 9, wrr 2, lc 1\)$`},
		{0, map[string]int{}, `(?m)^vips:\s+0$`},
	} {
		var buf bytes.Buffer
		if err := writeStatus(&env{stdout: &buf}, api.DaemonStatus{Version: "test", VIPs: tc.vips, Schedulers: tc.sched}); err != nil {
			t.Fatal(err)
		}
		if !regexp.MustCompile(tc.want).MatchString(buf.String()) {
			t.Errorf("status lacks %q:\n%s", tc.want, buf.String())
		}
	}
}
