package api

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xdplb/xdplb/loader"

	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/control/reconcile"
	"github.com/xdplb/xdplb/control/reconcile/reconciletest"
	"github.com/xdplb/xdplb/control/state"
)

const testTableSize = 251

var vip1 = model.VIPID{Addr: netip.MustParseAddr("10.0.0.100"), Port: 80, Protocol: model.TCP}

func be(a string, w uint32) model.Backend {
	return model.Backend{Address: netip.MustParseAddr(a), Weight: w}
}

var mac = reconciletest.MAC

func addVIP(t *testing.T, s *state.Store, id model.VIPID, backends ...model.Backend) {
	t.Helper()
	if err := s.AddVIP(model.VIP{Address: id.Addr, Port: id.Port, Protocol: id.Protocol, Backends: backends}); err != nil {
		t.Fatal(err)
	}
}

// recFixture is a store, a fake data plane and network, and a reconciler
// over them.
type recFixture struct {
	store  *state.Store
	dp     *reconciletest.Datapath
	nw     *fakeNetwork
	rec    *reconcile.Reconciler
	health *fakeHealth
}

// fakeNetwork and fakeHealth keep the test's spelling of the shared fakes.
type fakeNetwork struct{ *reconciletest.Network }

func (n fakeNetwork) setMAC(a string, m []byte) { n.SetMAC(a, m) }

type fakeHealth struct{ *reconciletest.Health }

func newFakeHealth() *fakeHealth { return &fakeHealth{reconciletest.NewHealth()} }

func (h *fakeHealth) set(vip model.VIPID, addr string, up bool, reason string) {
	h.Set(vip, addr, up, reason)
}

func newRecFixture(t *testing.T, dp *reconciletest.Datapath) *recFixture {
	t.Helper()
	st, err := state.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if dp == nil {
		dp = reconciletest.NewDatapath(testTableSize, 16, 64)
	}
	nw := &fakeNetwork{reconciletest.NewNetwork()}
	return &recFixture{store: st, dp: dp, nw: nw, rec: reconcile.NewReconciler(st, dp, nw, nil, nil)}
}

func (f *recFixture) reconcile(t *testing.T) []string {
	t.Helper()
	if err := f.rec.Reconcile(context.Background()); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	return f.dp.TakeWrites()
}

// newHealthFixture is a reconciler with fakeHealth over one VIP (vip1) of
// the given backends, each resolved, reconciled once.
func newHealthFixture(t *testing.T, tableSize uint32, backends ...string) *recFixture {
	t.Helper()
	f := newRecFixture(t, reconciletest.NewDatapath(tableSize, 16, 64))
	f.health = newFakeHealth()
	f.rec = reconcile.NewReconciler(f.store, f.dp, f.nw, f.health, nil)
	var bs []model.Backend
	for i, a := range backends {
		f.nw.setMAC(a, mac(byte(i+1)))
		bs = append(bs, be(a, 100))
	}
	addVIP(t, f.store, vip1, bs...)
	f.reconcile(t)
	return f
}

type testErr string

func (e testErr) Error() string { return string(e) }

const errTest = testErr("injected failure")

// dpBackends is what the data plane's backend map holds, by id.
func dpBackends(t *testing.T, dp reconcile.Datapath) map[uint32]loader.Backend {
	t.Helper()
	bs, err := dp.Backends()
	if err != nil {
		t.Fatal(err)
	}
	return bs
}

// dpVIPs is what the data plane's VIP map holds.
func dpVIPs(t *testing.T, dp reconcile.Datapath) map[loader.VIPKey]loader.VIPMeta {
	t.Helper()
	vips, err := dp.VIPs()
	if err != nil {
		t.Fatal(err)
	}
	return vips
}

// serveTest serves srv on a socket of its own until the test ends, and
// returns the socket's path.
func serveTest(t *testing.T, srv *Server) string {
	t.Helper()
	// Short path: unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "xlb")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "s.sock")
	ctx, cancel := context.WithCancel(context.Background())
	ln, err := ListenUnix(ctx, sock)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		os.RemoveAll(dir)
	})
	return sock
}

// rawRequest sends one request to the API on sock and returns the
// answer's status and body.
func rawRequest(t *testing.T, sock, method, path, body string) (int, string) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequest(method, "http://xdplb"+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}
