package api

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/control/reconcile"
	"github.com/xdplb/xdplb/loader"
)

// connsFixture is an API with two VIPs in the maps: vip1 (DR, backends
// 10.0.0.1 and 10.0.0.2) and a fullnat one (backend 10.0.1.5:8080, SNAT
// 10.0.2.1); it returns the backend ids by address.
func connsFixture(t *testing.T) (*apiFixture, model.VIPID, map[netip.AddrPort]uint32) {
	t.Helper()
	f := newAPIFixture(t)
	ctx := t.Context()
	f.nw.setMAC("10.0.0.1", mac(1))
	f.nw.setMAC("10.0.0.2", mac(2))
	if err := f.client.AddVIP(ctx, model.VIP{Address: vip1.Addr, Port: 80, Protocol: model.TCP,
		Backends: []model.Backend{be("10.0.0.1", 100), be("10.0.0.2", 100)}}, false); err != nil {
		t.Fatal(err)
	}
	full := model.VIPID{Addr: netip.MustParseAddr("10.0.0.101"), Port: 443, Protocol: model.TCP}
	if err := f.client.AddVIP(ctx, model.VIP{Address: full.Addr, Port: 443, Protocol: model.TCP, Mode: model.ModeFullNAT,
		SNATAddr: netip.MustParseAddr("10.0.2.1"),
		Backends: []model.Backend{{Address: netip.MustParseAddr("10.0.1.5"), Port: 8080, Weight: 100}}}, false); err != nil {
		t.Fatal(err)
	}
	ids := map[netip.AddrPort]uint32{}
	for id, b := range dpBackends(t, f.dp) {
		port := b.Port
		if port == 0 {
			port = 80
		}
		ids[netip.AddrPortFrom(b.Addr, port)] = id
	}
	if len(ids) != 3 {
		t.Fatalf("backends in the maps: %v", ids)
	}
	return f, full, ids
}

func client(s string, port uint16) netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr(s), port)
}

// listConns is every entry Conns sends, and its end.
func listConns(t *testing.T, c *Client, f ConnsFilter) ([]Conn, ConnsEnd) {
	t.Helper()
	var out []Conn
	end, err := c.Conns(t.Context(), f, func(c Conn) error { out = append(out, c); return nil })
	if err != nil {
		t.Fatalf("conns %+v: %v", f, err)
	}
	return out, end
}

func TestConns(t *testing.T) {
	f, full, ids := connsFixture(t)
	b1, b2 := netip.MustParseAddrPort("10.0.0.1:80"), netip.MustParseAddrPort("10.0.0.2:80")
	nat := netip.MustParseAddrPort("10.0.1.5:8080")
	vk, fk := reconcile.VIPKeyOf(vip1), reconcile.VIPKeyOf(full)
	f.dp.SetConns(
		loader.Conn{Client: client("192.0.2.10", 40001), VIP: vk, BackendID: ids[b1], Phase: loader.FlowEstablished, Idle: 3500 * time.Millisecond},
		loader.Conn{Client: client("192.0.2.11", 40002), VIP: vk, BackendID: ids[b2], Phase: loader.FlowHalfOpen},
		loader.Conn{Client: client("192.0.2.12", 40003), VIP: vk, BackendID: ids[b1], Phase: loader.FlowEnded, Closing: true},
		loader.Conn{Client: client("192.0.2.13", 40004), VIP: vk, BackendID: ids[b2], Phase: loader.FlowEnded, Idle: time.Hour},
		loader.Conn{Client: client("192.0.2.14", 40005), VIP: fk, BackendID: ids[nat], Phase: loader.FlowEstablished, SNATPort: 20001},
		// Its backend id is another VIP's: not its backend any more.
		loader.Conn{Client: client("192.0.2.15", 40006), VIP: vk, BackendID: ids[nat], Phase: loader.FlowEstablished},
	)

	all, end := listConns(t, f.client, ConnsFilter{})
	if len(all) != 6 || end != (ConnsEnd{Matched: 6}) {
		t.Fatalf("conns: %+v, end %+v", all, end)
	}
	want := []Conn{
		{Protocol: model.TCP, Client: client("192.0.2.10", 40001), VIP: "10.0.0.100:80/tcp", Backend: b1, State: "established", IdleSeconds: 3},
		{Protocol: model.TCP, Client: client("192.0.2.11", 40002), VIP: "10.0.0.100:80/tcp", Backend: b2, State: "half-open"},
		{Protocol: model.TCP, Client: client("192.0.2.12", 40003), VIP: "10.0.0.100:80/tcp", Backend: b1, State: "closing"},
		{Protocol: model.TCP, Client: client("192.0.2.13", 40004), VIP: "10.0.0.100:80/tcp", Backend: b2, State: "expired", IdleSeconds: 3600},
		{Protocol: model.TCP, Client: client("192.0.2.14", 40005), VIP: "10.0.0.101:443/tcp", Backend: nat, State: "established",
			SNATAddr: netip.MustParseAddr("10.0.2.1"), SNATPort: 20001},
		{Protocol: model.TCP, Client: client("192.0.2.15", 40006), VIP: "10.0.0.100:80/tcp", State: "established"},
	}
	for i := range want {
		if all[i] != want[i] {
			t.Errorf("conn %d = %+v\nwant %+v", i, all[i], want[i])
		}
	}

	for _, tc := range []struct {
		name    string
		f       ConnsFilter
		clients []uint16 // by client port
		end     ConnsEnd
	}{
		{"vip", ConnsFilter{VIP: &vip1}, []uint16{40001, 40002, 40003, 40004, 40006}, ConnsEnd{Matched: 5}},
		{"other vip", ConnsFilter{VIP: &full}, []uint16{40005}, ConnsEnd{Matched: 1}},
		{"backend", ConnsFilter{Backend: b1.Addr()}, []uint16{40001, 40003}, ConnsEnd{Matched: 2}},
		{"backend and port", ConnsFilter{Backend: b2.Addr(), BackendPort: 80}, []uint16{40002, 40004}, ConnsEnd{Matched: 2}},
		{"vip and backend", ConnsFilter{VIP: &full, Backend: nat.Addr(), BackendPort: 8080}, []uint16{40005}, ConnsEnd{Matched: 1}},
		{"limit", ConnsFilter{Limit: 2}, []uint16{40001, 40002}, ConnsEnd{Matched: 6, Omitted: 4}},
		{"limit of a filter", ConnsFilter{VIP: &vip1, Backend: b2.Addr(), Limit: 1}, []uint16{40002}, ConnsEnd{Matched: 2, Omitted: 1}},
		{"limit above", ConnsFilter{Backend: b1.Addr(), Limit: 5}, []uint16{40001, 40003}, ConnsEnd{Matched: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, end := listConns(t, f.client, tc.f)
			var ports []uint16
			for _, c := range got {
				ports = append(ports, c.Client.Port())
			}
			if fmt.Sprint(ports) != fmt.Sprint(tc.clients) || end != tc.end {
				t.Errorf("clients %v, end %+v; want %v, %+v", ports, end, tc.clients, tc.end)
			}
		})
	}

	// A VIP or backend that is not configured is an error, not "none".
	other := model.VIPID{Addr: netip.MustParseAddr("10.9.9.9"), Port: 80, Protocol: model.TCP}
	for _, tc := range []struct {
		f  ConnsFilter
		re string
	}{
		{ConnsFilter{VIP: &other}, "vip 10.9.9.9:80/tcp: not found"},
		{ConnsFilter{VIP: &vip1, Backend: nat.Addr()}, "vip 10.0.0.100:80/tcp: backend 10.0.1.5: not found"},
		{ConnsFilter{Backend: b1.Addr(), BackendPort: 81}, "backend 10.0.0.1:81: not found (no vip has it)"},
	} {
		_, err := f.client.Conns(t.Context(), tc.f, func(Conn) error { return nil })
		if err == nil || !strings.Contains(err.Error(), tc.re) {
			t.Errorf("conns %+v: %v, want %q", tc.f, err, tc.re)
		}
	}
	for _, q := range []string{"vip=10.0.0.100", "backend=nope", "limit=-1", "limit=x"} {
		if code, body := f.raw(t, "GET", "/v1/conns?"+q, ""); code != http.StatusBadRequest {
			t.Errorf("GET /v1/conns?%s: %d %s, want 400", q, code, body)
		}
	}

	// The caller stops the stream: its error comes back.
	stop := errors.New("enough")
	n := 0
	if _, err := f.client.Conns(t.Context(), ConnsFilter{}, func(Conn) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Errorf("stopped stream: %v after %d, want %v after 1", err, n, stop)
	}
}

// blockingConns is a data plane whose walk sends n entries and then
// waits for release before it ends.
type blockingConns struct {
	reconcile.Datapath
	conn    loader.Conn
	n       int
	release chan struct{}
}

func (b *blockingConns) Conns(fn func(loader.Conn) bool) error {
	for range b.n {
		if !fn(b.conn) {
			return nil
		}
	}
	<-b.release
	return errors.New("table gone")
}

// The connections reach the client while the walk is still going: every
// connsFlushEvery lines, not at its end. An error of the walk after the
// status line is in the end line, and the client returns it.
func TestConnsStream(t *testing.T) {
	f, _, ids := connsFixture(t)
	dp := &blockingConns{Datapath: f.dp, n: connsFlushEvery,
		conn:    loader.Conn{Client: client("192.0.2.10", 40001), VIP: reconcile.VIPKeyOf(vip1), BackendID: ids[netip.MustParseAddrPort("10.0.0.1:80")]},
		release: make(chan struct{})}
	sock := serveTest(t, &Server{Store: f.store, Datapath: dp, Reconciler: f.rec})
	got := 0
	_, err := NewClient(sock).Conns(t.Context(), ConnsFilter{Limit: 0}, func(Conn) error {
		if got++; got == connsFlushEvery {
			close(dp.release) // all of them arrived before the walk ended
		}
		return nil
	})
	if got != connsFlushEvery || err == nil || !strings.Contains(err.Error(), "read connection table: table gone") {
		t.Fatalf("%d connections, error %v; want %d and the walk's error", got, err, connsFlushEvery)
	}
}
