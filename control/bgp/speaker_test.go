package bgp

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
)

// The speaker's side of every test: AS 65001, router id 10.0.0.1.
const ourASN = 65001

var ourID = netip.MustParseAddr("10.0.0.1")

// router is a second GoBGP server standing for the upstream router: it
// has the speaker as its only neighbour, on loopback.
type router struct {
	t    *testing.T
	srv  *server.BgpServer
	port uint16 // where it listens; 0: it does not, it connects
	peer netip.Addr
}

// newRouter starts a router of AS asn that listens on an ephemeral port
// of addr for the speaker, which connects from addr too.
func newRouter(t *testing.T, addr netip.Addr, asn uint32) *router {
	t.Helper()
	port := freePort(t, addr)
	r := startRouter(t, asn, &api.Global{Asn: asn, RouterId: "10.0.0.2", ListenPort: int32(port),
		ListenAddresses: []string{addr.String()}})
	r.port, r.peer = port, addr
	r.addPeer(&api.Peer{Conf: &api.PeerConf{NeighborAddress: addr.String(), PeerAsn: ourASN},
		Transport: &api.Transport{PassiveMode: true}, AfiSafis: family(addr)})
	return r
}

func startRouter(t *testing.T, asn uint32, g *api.Global) *router {
	t.Helper()
	srv := server.NewBgpServer()
	go srv.Serve()
	if err := srv.StartBgp(t.Context(), &api.StartBgpRequest{Global: g}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	return &router{t: t, srv: srv}
}

func (r *router) addPeer(p *api.Peer) {
	r.t.Helper()
	if err := r.srv.AddPeer(r.t.Context(), &api.AddPeerRequest{Peer: p}); err != nil {
		r.t.Fatal(err)
	}
}

func family(a netip.Addr) []*api.AfiSafi {
	f := &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	if a.Is6() {
		f.Afi = api.Family_AFI_IP6
	}
	return []*api.AfiSafi{{Config: &api.AfiSafiConfig{Family: f, Enabled: true}}}
}

// freePort is a TCP port free on addr a moment ago.
func freePort(t *testing.T, addr netip.Addr) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

// routes is the router's table: each prefix with its best path's next hop.
func (r *router) routes() map[netip.Prefix]netip.Addr {
	r.t.Helper()
	out := map[netip.Prefix]netip.Addr{}
	for _, fam := range []bgp.Family{bgp.RF_IPv4_UC, bgp.RF_IPv6_UC} {
		err := r.srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: fam},
			func(prefix bgp.NLRI, paths []*apiutil.Path) {
				p, err := netip.ParsePrefix(prefix.String())
				if err != nil || len(paths) == 0 {
					r.t.Errorf("prefix %v, %d paths", prefix, len(paths))
					return
				}
				out[p] = nextHop(paths[0])
			})
		if err != nil {
			r.t.Fatal(err)
		}
	}
	return out
}

func nextHop(p *apiutil.Path) netip.Addr {
	for _, a := range p.Attrs {
		switch a := a.(type) {
		case *bgp.PathAttributeNextHop:
			return a.Value
		case *bgp.PathAttributeMpReachNLRI:
			return a.Nexthop
		}
	}
	return netip.Addr{}
}

// neighbor is the router's view of its session with the speaker.
func (r *router) neighbor() *api.Peer {
	r.t.Helper()
	var out *api.Peer
	if err := r.srv.ListPeer(r.t.Context(), &api.ListPeerRequest{}, func(p *api.Peer) { out = p }); err != nil {
		r.t.Fatal(err)
	}
	return out
}

// peer is the speaker's --bgp-peer for r.
func (r *router) peerConfig(asn uint32) Peer { return Peer{Addr: r.peer, ASN: asn, Port: r.port} }

// eventually fails t unless cond holds within 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// logBuffer is a slog text log the tests read.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuffer) has(substrs ...string) bool {
	for _, line := range strings.Split(l.String(), "\n") {
		all := true
		for _, s := range substrs {
			all = all && strings.Contains(line, s)
		}
		if all {
			return true
		}
	}
	return false
}

func startSpeaker(t *testing.T, cfg Config) (*Speaker, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	s, err := Start(t.Context(), cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Stop(ctx); err != nil {
			t.Error(err)
		}
	})
	return s, logs
}

func (s *Speaker) session(t *testing.T, i int) Session {
	t.Helper()
	ss, err := s.Sessions(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return ss[i]
}

func addrs(s ...string) []netip.Addr {
	out := make([]netip.Addr, len(s))
	for i, a := range s {
		out[i] = netip.MustParseAddr(a)
	}
	return out
}

// TestSpeakerIBGP: over an iBGP session (a peer without asn=), a VIP
// route reaches the router as a /32 with the session's local address as
// its next hop, a withdrawal takes it away, and Stop withdraws the rest
// before it closes the session.
func TestSpeakerIBGP(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	r := newRouter(t, lo, ourASN)
	s, logs := startSpeaker(t, Config{ASN: ourASN, RouterID: ourID, Peers: []Peer{r.peerConfig(0)}})
	eventually(t, "the session", func() bool { return s.session(t, 0).Up() })
	if ss := s.session(t, 0); ss.Peer.ASN != ourASN || ss.Since.IsZero() || ss.LocalAddr != lo {
		t.Errorf("session %+v: want the peer in our AS, up since a time, from %s", ss, lo)
	}
	if !logs.has("bgp session up", "peer=127.0.0.1", "peer_asn=65001") {
		t.Errorf("no session up log:\n%s", logs)
	}

	vip1, vip2 := netip.MustParsePrefix("10.200.0.100/32"), netip.MustParsePrefix("10.200.0.101/32")
	if err := s.AnnounceRoutes(t.Context(), addrs("10.200.0.100", "10.200.0.101", "2001:db8::1")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "two routes at the router", func() bool { return len(r.routes()) == 2 })
	for p, nh := range r.routes() {
		if (p != vip1 && p != vip2) || nh != lo {
			t.Errorf("router has %s via %s: want %s and %s via %s (the IPv6 VIP needs an IPv6 peer)", p, nh, vip1, vip2, lo)
		}
	}
	eventually(t, "the session's route count", func() bool { return s.session(t, 0).Routes == 2 })
	if n := r.neighbor().GetAfiSafis()[0].GetState().GetAccepted(); n != 2 {
		t.Errorf("router accepted %d routes, want 2", n)
	}
	if !logs.has("bgp route announced", "vip=10.200.0.100", "prefix=10.200.0.100/32") {
		t.Errorf("no announce log:\n%s", logs)
	}

	// The VIP lost its last healthy backend.
	if err := s.AnnounceRoutes(t.Context(), addrs("10.200.0.101", "2001:db8::1")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the withdrawal", func() bool { _, ok := r.routes()[vip1]; return !ok })
	if _, ok := r.routes()[vip2]; !ok {
		t.Errorf("router lost %s too", vip2)
	}
	if !logs.has("bgp route withdrawn", "vip=10.200.0.100") {
		t.Errorf("no withdraw log:\n%s", logs)
	}
	if got := s.Routes(); len(got) != 2 || got[0] != vip2 || got[1].String() != "2001:db8::1/128" {
		t.Errorf("routes %v", got)
	}

	// Stop: the withdrawal reaches the router on the session, which then
	// closes.
	withdrawn := r.neighbor().GetState().GetMessages().GetReceived().GetWithdrawPrefix()
	if err := s.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := r.neighbor().GetState().GetMessages().GetReceived().GetWithdrawPrefix(); got != withdrawn+1 {
		t.Errorf("router received %d withdrawn prefixes on Stop, want 1: the route went with the session", got-withdrawn)
	}
	eventually(t, "the session's end", func() bool {
		return r.neighbor().GetState().GetSessionState() != api.PeerState_SESSION_STATE_ESTABLISHED
	})
	if len(r.routes()) != 0 {
		t.Errorf("router keeps %v", r.routes())
	}
	if err := s.AnnounceRoutes(t.Context(), addrs("10.200.0.100")); err != nil || len(s.Routes()) != 0 {
		t.Errorf("announce after Stop: %v, routes %v: want nothing done", err, s.Routes())
	}
}

// TestSpeakerEBGPIPv6: an eBGP session (asn=) over IPv6 carries the IPv6
// VIPs, with the session's local address as their next hop, and not the
// IPv4 ones; the hold time offered is the one negotiated.
func TestSpeakerEBGPIPv6(t *testing.T) {
	lo := netip.MustParseAddr("::1")
	r := newRouter(t, lo, 65002)
	s, _ := startSpeaker(t, Config{ASN: ourASN, RouterID: ourID, Peers: []Peer{r.peerConfig(65002)}, HoldTime: 3 * time.Second})
	eventually(t, "the session", func() bool { return s.session(t, 0).Up() })
	if err := s.AnnounceRoutes(t.Context(), addrs("2001:db8::100", "10.200.0.100")); err != nil {
		t.Fatal(err)
	}
	want := netip.MustParsePrefix("2001:db8::100/128")
	eventually(t, "the route at the router", func() bool { return len(r.routes()) > 0 })
	if got := r.routes(); len(got) != 1 || got[want] != lo {
		t.Errorf("router has %v: want %s via %s only", got, want, lo)
	}
	if h := r.neighbor().GetTimers().GetState().GetNegotiatedHoldTime(); h != 3 {
		t.Errorf("negotiated hold time %d s, want 3", h)
	}
	if err := s.AnnounceRoutes(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the withdrawal", func() bool { return len(r.routes()) == 0 })
}

// TestSpeakerSessionDown: a session the router ends is reported down,
// logged with its reason, and comes back by itself.
func TestSpeakerSessionDown(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	r := newRouter(t, lo, ourASN)
	s, logs := startSpeaker(t, Config{ASN: ourASN, RouterID: ourID, Peers: []Peer{r.peerConfig(0)}})
	eventually(t, "the session", func() bool { return s.session(t, 0).Up() })
	if err := s.AnnounceRoutes(t.Context(), addrs("10.200.0.100")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the route", func() bool { return len(r.routes()) == 1 })

	if err := r.srv.ShutdownPeer(t.Context(), &api.ShutdownPeerRequest{Address: lo.String(), Communication: "maintenance"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the session down", func() bool { ss := s.session(t, 0); return !ss.Up() && ss.LastError != "" })
	if ss := s.session(t, 0); ss.Routes != 0 {
		t.Errorf("session %+v: want no routes", ss)
	}
	eventually(t, "the down log", func() bool { return logs.has("bgp session down", "peer=127.0.0.1", "reason=") })
	if len(r.routes()) != 0 {
		t.Errorf("router keeps %v after the session ended", r.routes())
	}
	if r := s.session(t, 0).LastError; !strings.Contains(r, "administrative shutdown") {
		t.Errorf("last error %q: want the router's notification", r)
	}

	if err := r.srv.EnablePeer(t.Context(), &api.EnablePeerRequest{Address: lo.String()}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the session back with its route", func() bool { return len(r.routes()) == 1 })
}

// TestSpeakerListen: with a listen port, the router may open the session.
func TestSpeakerListen(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	port := freePort(t, lo)
	r := startRouter(t, 65002, &api.Global{Asn: 65002, RouterId: "10.0.0.2", ListenPort: -1})
	s, _ := startSpeaker(t, Config{ASN: ourASN, RouterID: ourID, ListenPort: port,
		// The router does not listen: only its own connection can make
		// the session.
		Peers: []Peer{{Addr: lo, ASN: 65002, Port: freePort(t, lo)}}})
	r.addPeer(&api.Peer{Conf: &api.PeerConf{NeighborAddress: lo.String(), PeerAsn: ourASN},
		Transport: &api.Transport{RemotePort: uint32(port)}, AfiSafis: family(lo),
		Timers: &api.Timers{Config: &api.TimersConfig{ConnectRetry: 1}}})
	eventually(t, "the session", func() bool { return s.session(t, 0).Up() })
	if err := s.AnnounceRoutes(t.Context(), addrs("10.200.0.100")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the route", func() bool { return r.routes()[netip.MustParsePrefix("10.200.0.100/32")] == lo })
}

// TestSpeakerNoPeer: sessions that never came up are idle or trying, and
// the routes wait for them.
func TestSpeakerNoPeer(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	s, _ := startSpeaker(t, Config{ASN: ourASN, RouterID: ourID, Peers: []Peer{{Addr: lo, Port: freePort(t, lo)}}})
	if err := s.AnnounceRoutes(t.Context(), addrs("10.200.0.100")); err != nil {
		t.Fatal(err)
	}
	ss := s.session(t, 0)
	if ss.Up() || ss.Routes != 0 || ss.Peer.Port == 0 {
		t.Errorf("session %+v", ss)
	}
	if got := s.Routes(); len(got) != 1 {
		t.Errorf("routes %v, want the one to announce", got)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := s.Stop(ctx); err != nil {
		t.Errorf("stop with no session up: %v", err)
	}
}
