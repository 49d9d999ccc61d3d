package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// fakeBGP is a BGP speaker's status, or its error.
type fakeBGP struct {
	st  BGPStatus
	err error
}

func (f fakeBGP) BGPStatus(context.Context) (BGPStatus, error) { return f.st, f.err }

var testBGP = BGPStatus{
	ASN: 65001, RouterID: netip.MustParseAddr("10.0.0.1"), HoldTime: "9s",
	Routes: []string{"10.0.0.100/32"},
	Sessions: []BGPSession{
		{Peer: netip.MustParseAddr("192.0.2.254"), PeerASN: 65000, Port: 179, State: "established", Up: true,
			Since: time.Unix(1e9, 0).UTC(), Uptime: "1m0s", Routes: 1, LocalAddr: netip.MustParseAddr("192.0.2.1")},
		{Peer: netip.MustParseAddr("2001:db8::fe"), PeerASN: 65000, Port: 179, State: "active", LastError: "hold timer expired"},
	},
}

// GET /v1/status carries the speaker's status when there is one; a
// speaker that cannot answer fails the request.
func TestStatusBGP(t *testing.T) {
	f := newRecFixture(t, nil)
	status := func(src BGPSource) (int, DaemonStatus, string) {
		srv := &Server{Store: f.store, Datapath: f.dp, Reconciler: f.rec, Version: "test", StartTime: time.Now(), BGP: src}
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/v1/status", nil))
		var ds DaemonStatus
		_ = json.Unmarshal(rec.Body.Bytes(), &ds)
		return rec.Code, ds, rec.Body.String()
	}
	if code, ds, body := status(nil); code != http.StatusOK || ds.BGP != nil || strings.Contains(body, `"bgp"`) {
		t.Fatalf("without bgp: %d %s", code, body)
	}
	code, ds, body := status(fakeBGP{st: testBGP})
	if code != http.StatusOK || ds.BGP == nil || ds.BGP.ASN != 65001 || len(ds.BGP.Sessions) != 2 ||
		ds.BGP.Sessions[0] != testBGP.Sessions[0] || ds.BGP.Sessions[1] != testBGP.Sessions[1] {
		t.Fatalf("with bgp: %d %s", code, body)
	}
	for _, key := range []string{`"router_id":"10.0.0.1"`, `"routes":["10.0.0.100/32"]`, `"routes_announced":1`, `"up":true`, `"local_addr":"192.0.2.1"`} {
		if !strings.Contains(body, key) {
			t.Errorf("status has no %s: %s", key, body)
		}
	}
	if code, _, body := status(fakeBGP{err: errors.New("server stopped")}); code != http.StatusInternalServerError || !strings.Contains(body, "bgp status: server stopped") {
		t.Errorf("failing speaker: %d %s", code, body)
	}
}

func TestBGPCollector(t *testing.T) {
	want := `
# HELP xdplb_bgp_routes_announced VIP host routes the BGP speaker offers its peers (each established session of the route's family carries it).
# TYPE xdplb_bgp_routes_announced gauge
xdplb_bgp_routes_announced 1
# HELP xdplb_bgp_session_up 1 if the BGP session to a peer is established, else 0.
# TYPE xdplb_bgp_session_up gauge
xdplb_bgp_session_up{peer="192.0.2.254"} 1
xdplb_bgp_session_up{peer="2001:db8::fe"} 0
`
	if err := testutil.CollectAndCompare(NewBGPCollector(fakeBGP{st: testBGP}, nil), strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(NewBGPCollector(fakeBGP{err: errors.New("down")}, nil)); n != 0 {
		t.Errorf("a failing speaker gave %d metrics", n)
	}
}
