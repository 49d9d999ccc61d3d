package daemon

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"

	xapi "github.com/xdplb/xdplb/control/api"
	xbgp "github.com/xdplb/xdplb/control/bgp"
	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/control/netstack"
	"github.com/xdplb/xdplb/control/reconcile/reconciletest"
	"github.com/xdplb/xdplb/loader"
)

// testRouter is a GoBGP server of AS 65000 on loopback standing for the
// upstream router, with the daemon's speaker (AS 65001) as its neighbour.
type testRouter struct {
	t    *testing.T
	srv  *server.BgpServer
	port uint16
}

func newTestRouter(t *testing.T) *testRouter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	srv := server.NewBgpServer()
	go srv.Serve()
	t.Cleanup(srv.Stop)
	err = srv.StartBgp(t.Context(), &api.StartBgpRequest{Global: &api.Global{Asn: 65000, RouterId: "10.0.0.2",
		ListenPort: int32(port), ListenAddresses: []string{"127.0.0.1"}}})
	if err == nil {
		err = srv.AddPeer(t.Context(), &api.AddPeerRequest{Peer: &api.Peer{
			Conf: &api.PeerConf{NeighborAddress: "127.0.0.1", PeerAsn: 65001}, Transport: &api.Transport{PassiveMode: true},
			AfiSafis: []*api.AfiSafi{{Config: &api.AfiSafiConfig{Family: &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}, Enabled: true}}},
		}})
	}
	if err != nil {
		t.Fatal(err)
	}
	return &testRouter{t: t, srv: srv, port: port}
}

// routes lists the router's IPv4 prefixes.
func (r *testRouter) routes() []string {
	var out []string
	err := r.srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: bgp.RF_IPv4_UC},
		func(prefix bgp.NLRI, _ []*apiutil.Path) { out = append(out, prefix.String()) })
	if err != nil {
		r.t.Error(err)
	}
	slices.Sort(out)
	return out
}

func (r *testRouter) withdrawnPrefixes() uint64 {
	var n uint64
	_ = r.srv.ListPeer(context.Background(), &api.ListPeerRequest{}, func(p *api.Peer) {
		n = p.GetState().GetMessages().GetReceived().GetWithdrawPrefix()
	})
	return n
}

// removeWatcher is the test data plane; it counts the router's routes
// when the daemon removes it.
type removeWatcher struct {
	*reconciletest.Datapath
	r      *testRouter
	routes atomic.Int64 // at Remove; -1: not removed
}

func (w *removeWatcher) Remove() error {
	w.routes.Store(int64(len(w.r.routes())))
	return w.Datapath.Remove()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// testNetwork is the fake network stack with what the daemon asks of it
// beyond what the reconciler does: every backend is behind eth0, with
// the MAC the test set (none: unresolved).
type testNetwork struct{ *reconciletest.Network }

func (testNetwork) CheckState(model.State) error       { return nil }
func (testNetwork) CheckVIPAddress(netip.Addr) error   { return nil }
func (testNetwork) Watch(ctx context.Context)          { <-ctx.Done() }
func (testNetwork) ResolveNATNextHops(context.Context) {}
func (testNetwork) Close()                             {}

// The daemon's speaker announces a VIP's route while the VIP has a
// usable backend, withdraws it when the last one goes (it is no longer
// resolved; deleted) and on vip del, shows its session in status, and on
// a stop with --detach-on-exit withdraws its routes before the data
// plane goes. (Health checks that fail are the reconciler's tests: a
// check here would probe an address off loopback.)
func TestDaemonBGP(t *testing.T) {
	r := newTestRouter(t)
	cfg := daemonConfig(t)
	cfg.DetachOnExit = true
	cfg.BGP = xbgp.Config{ASN: 65001, RouterID: netip.MustParseAddr("10.0.0.1"),
		Peers: []xbgp.Peer{{Addr: netip.MustParseAddr("127.0.0.1"), ASN: 65000, Port: r.port}}}
	log, logs := newTestLogger()
	cfg.Logger = log
	dp := &removeWatcher{Datapath: newTestDatapath(), r: r}
	dp.routes.Store(-1)
	nw := testNetwork{reconciletest.NewNetwork()}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- runWith(ctx, cfg, func(loader.Options) (DatapathCloser, error) { return dp, nil },
			func(netstack.Options) (Network, error) { return nw, nil })
	}()
	c := xapi.NewClient(cfg.SocketPath)
	defer c.Close()
	status := func() xapi.DaemonStatus {
		st, err := c.Status(context.Background())
		if err != nil {
			t.Fatalf("status: %v", err)
		}
		return st
	}
	waitFor(t, "the daemon", func() bool { _, err := c.Status(context.Background()); return err == nil })
	waitFor(t, "the bgp session", func() bool { return status().BGP.Sessions[0].Up })

	vip := model.VIPID{Addr: netip.MustParseAddr("192.0.2.10"), Port: 80, Protocol: model.TCP}
	b1, b2 := netip.MustParseAddr("10.1.0.1"), netip.MustParseAddr("10.1.0.2")
	nw.SetMAC(b1.String(), reconciletest.MAC(1))
	nw.SetMAC(b2.String(), reconciletest.MAC(2))
	if err := c.AddVIP(ctx, model.VIP{Address: vip.Addr, Port: 80, Protocol: model.TCP,
		Backends: []model.Backend{{Address: b1, Weight: 100}, {Address: b2, Weight: 100}}}, false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the route at the router", func() bool { return slices.Equal(r.routes(), []string{"192.0.2.10/32"}) })
	bs := status().BGP
	if !slices.Equal(bs.Routes, []string{"192.0.2.10/32"}) || bs.ASN != 65001 || bs.HoldTime != "9s" {
		t.Errorf("bgp status %+v", bs)
	}
	waitFor(t, "the session's route count", func() bool { return status().BGP.Sessions[0].Routes == 1 })
	if s := status().BGP.Sessions[0]; s.State != "established" || s.LocalAddr != netip.MustParseAddr("127.0.0.1") || s.PeerASN != 65000 {
		t.Errorf("session %+v", s)
	}

	// One backend left: still routed; none usable: withdrawn; back.
	if err := c.DeleteBackend(ctx, vip, b1, 0, false); err != nil {
		t.Fatal(err)
	}
	nw.SetMAC(b2.String(), nil)
	waitFor(t, "the withdrawal", func() bool { return len(r.routes()) == 0 })
	nw.SetMAC(b2.String(), reconciletest.MAC(2))
	waitFor(t, "the route again", func() bool { return len(r.routes()) == 1 })

	// vip del: the route of another VIP goes with it.
	other := model.VIP{Address: netip.MustParseAddr("192.0.2.11"), Port: 53, Protocol: model.UDP,
		Backends: []model.Backend{{Address: b2, Weight: 100}}}
	if err := c.AddVIP(ctx, other, false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the other VIP's route", func() bool { return len(r.routes()) == 2 })
	if err := c.DeleteVIP(ctx, other.ID(), false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the other VIP's withdrawal", func() bool { return slices.Equal(r.routes(), []string{"192.0.2.10/32"}) })

	withdrawn := r.withdrawnPrefixes()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("daemon exit: %v", err)
	}
	if !dp.Removed() || dp.routes.Load() != 0 {
		t.Errorf("data plane removed %v with %d routes at the router: want removed after the withdrawal", dp.Removed(), dp.routes.Load())
	}
	if got := r.withdrawnPrefixes(); got != withdrawn+1 {
		t.Errorf("router was sent %d withdrawals at stop, want 1", got-withdrawn)
	}
	for _, want := range []string{`msg="bgp session up" peer=127.0.0.1`, `msg="bgp route announced" vip=192.0.2.10`,
		`msg="bgp route withdrawn" vip=192.0.2.10`, `msg="bgp route withdrawn" vip=192.0.2.11`, `msg="bgp routes withdrawn before stop" routes=1`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log has no %s:\n%s", want, logs)
		}
	}
}

// A partial BGP config stops the daemon before it touches anything.
func TestDaemonBGPConfigErrors(t *testing.T) {
	cfg := daemonConfig(t)
	cfg.BGP = xbgp.Config{ASN: 65001}
	err := RunWith(context.Background(), cfg, func(loader.Options) (DatapathCloser, error) {
		t.Fatal("data plane opened despite a bad bgp config")
		return nil, nil
	})
	if err == nil || !strings.Contains(err.Error(), "--bgp-router-id is required") {
		t.Fatalf("err %v", err)
	}
}
