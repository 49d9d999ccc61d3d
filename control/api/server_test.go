package api

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/control/reconcile"
	"github.com/xdplb/xdplb/control/reconcile/reconciletest"

	"github.com/xdplb/xdplb/loader"
)

type apiFixture struct {
	*recFixture
	client *Client
	socket string
	hc     *http.Client
}

func newAPIFixture(t *testing.T) *apiFixture {
	t.Helper()
	return newAPIFixtureWithHealth(t, nil)
}

// newAPIFixtureWithHealth is newAPIFixture with the reconciler's Health.
func newAPIFixtureWithHealth(t *testing.T, h reconcile.Health) *apiFixture {
	t.Helper()
	f := newRecFixture(t, nil)
	f.rec = reconcile.NewReconciler(f.store, f.dp, f.nw, h, nil)
	// Short path: unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "xlb")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "run", "xdplb.sock")
	ctx, cancel := context.WithCancel(context.Background())
	ln, err := ListenUnix(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &Server{Store: f.store, Datapath: f.dp, Reconciler: f.rec, Version: "test", StartTime: time.Now(), VIPAddrs: fakeVIPAddrs{}}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	loop := make(chan struct{})
	go func() { f.rec.Run(ctx); close(loop) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		<-loop
	})
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	return &apiFixture{recFixture: f, client: NewClient(sock), socket: sock, hc: hc}
}

func (f *apiFixture) raw(t *testing.T, method, path, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://xdplb"+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := f.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return resp.StatusCode, b.String()
}

func TestServerSocket(t *testing.T) {
	f := newAPIFixture(t)
	fi, err := os.Stat(f.socket)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, want 0600", fi.Mode().Perm())
	}
	di, _ := os.Stat(filepath.Dir(f.socket))
	if di.Mode().Perm() != 0o755 {
		t.Fatalf("socket dir mode %v, want 0755", di.Mode().Perm())
	}
	// A second daemon must not take over a live socket.
	if _, err := ListenUnix(context.Background(), f.socket); !errors.Is(err, ErrDaemonRunning) {
		t.Fatalf("second listen: %v, want ErrDaemonRunning", err)
	}
}

func TestListenUnixRemovesStaleSocket(t *testing.T) {
	dir, err := os.MkdirTemp("", "xlb")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "s.sock")
	ln, err := ListenUnix(context.Background(), sock)
	if err != nil {
		t.Fatal(err)
	}
	ln.Close() // leaves the file behind, as a crashed daemon does
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("stale socket not left behind: %v", err)
	}
	ln, err = ListenUnix(context.Background(), sock)
	if err != nil {
		t.Fatalf("listen over stale socket: %v", err)
	}
	ln.Close()
}

func TestAPIRoundTrip(t *testing.T) {
	f := newAPIFixture(t)
	ctx := context.Background()
	f.nw.setMAC("10.0.0.1", mac(1))
	f.nw.setMAC("10.0.0.2", mac(2))
	v := model.VIP{Address: vip1.Addr, Port: 80, Protocol: model.TCP, Backends: []model.Backend{be("10.0.0.1", 100)}}
	if err := f.client.AddVIP(ctx, v, false); err != nil {
		t.Fatal(err)
	}
	// Applied before the call returned.
	if _, ok := dpVIPs(t, f.dp)[reconcile.VIPKeyOf(vip1)]; !ok {
		t.Fatal("vip not in the data plane after add")
	}
	err := f.client.AddVIP(ctx, v, false)
	if err == nil || !strings.Contains(err.Error(), "10.0.0.100:80/tcp") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("duplicate add: %v, want a one-line error naming the vip", err)
	}
	if code, body := f.raw(t, "POST", "/v1/vips", `{"address":"10.0.0.100","port":80,"protocol":"tcp","backends":[]}`); code != http.StatusConflict || !strings.Contains(body, `"error"`) {
		t.Fatalf("duplicate: %d %s", code, body)
	}
	vips, err := f.client.VIPs(ctx)
	if err != nil || len(vips) != 1 || vips[0].ID() != vip1 || vips[0].Mode != model.ModeDR {
		t.Fatalf("VIPs = %+v, %v", vips, err)
	}

	if err := f.client.AddBackend(ctx, vip1, be("10.0.0.2", 50)); err != nil {
		t.Fatal(err)
	}
	drain := true
	if err := f.client.SetBackend(ctx, vip1, netip.MustParseAddr("10.0.0.1"), 0, model.BackendPatch{Drain: &drain}); err != nil {
		t.Fatal(err)
	}
	f.dp.SetFlows(1, 4)
	bs, err := f.client.Backends(ctx, vip1)
	if err != nil {
		t.Fatal(err)
	}
	if len(bs) != 2 || bs[0].State != model.BackendDraining || bs[0].Flows != 4 || bs[0].MAC != mac(1).String() ||
		bs[1].State != model.BackendUp || bs[1].Weight != 50 {
		t.Fatalf("backends %+v", bs)
	}
	if err := f.client.DeleteBackend(ctx, vip1, netip.MustParseAddr("10.0.0.9"), 0, false); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("delete unknown backend: %v", err)
	}
	if err := f.client.DeleteBackend(ctx, vip1, netip.MustParseAddr("10.0.0.2"), 0, false); err != nil {
		t.Fatal(err)
	}

	st, err := f.client.State(ctx)
	if err != nil || len(st.VIPs) != 1 || len(st.VIPs[0].Backends) != 1 {
		t.Fatalf("state %+v %v", st, err)
	}
	vip2 := model.VIPID{Addr: netip.MustParseAddr("2001:db8::1"), Port: 443, Protocol: model.TCP}
	st.VIPs = append(st.VIPs, model.VIP{Address: vip2.Addr, Port: 443, Protocol: model.TCP, Backends: []model.Backend{}})
	if err := f.client.Apply(ctx, st, false); err != nil {
		t.Fatal(err)
	}
	if vips, _ := f.client.VIPs(ctx); len(vips) != 2 {
		t.Fatalf("after apply: %+v", vips)
	}
	if err := f.client.DeleteVIP(ctx, vip2, false); err != nil {
		t.Fatal(err)
	}
	if err := f.client.DeleteVIP(ctx, vip2, false); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("second delete: %v", err)
	}
	if code, _ := f.raw(t, "DELETE", "/v1/vips/"+strings.ReplaceAll(vip2.String(), "/", "%2F"), ""); code != http.StatusNotFound {
		t.Fatalf("delete unknown: %d", code)
	}
}

func TestAPIBadRequests(t *testing.T) {
	f := newAPIFixture(t)
	for _, tc := range []struct {
		name, method, path, body string
		code                     int
	}{
		{"bad json", "POST", "/v1/vips", `{"address":`, 400},
		{"unknown field", "POST", "/v1/vips", `{"address":"10.0.0.1","port":80,"protocol":"tcp","colour":"red"}`, 400},
		{"trailing data", "POST", "/v1/vips", `{"address":"10.0.0.1","port":80,"protocol":"tcp"} {}`, 400},
		{"invalid vip", "POST", "/v1/vips", `{"address":"10.0.0.1","port":0,"protocol":"tcp"}`, 400},
		{"bad vip in path", "DELETE", "/v1/vips/nonsense", ``, 400},
		{"unknown vip", "GET", "/v1/vips/10.9.9.9:80%2Ftcp/backends", ``, 404},
		{"too large", "PUT", "/v1/state", `{"vips":[` + strings.Repeat(" ", maxBody) + `]}`, 400},
		{"wrong method", "PATCH", "/v1/vips", `{}`, 405},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := f.raw(t, tc.method, tc.path, tc.body)
			if code != tc.code {
				t.Fatalf("%s %s: %d %s, want %d", tc.method, tc.path, code, body, tc.code)
			}
			if code != 405 && (!strings.HasPrefix(body, `{"error":`) || strings.Count(strings.TrimSpace(body), "\n") != 0) {
				t.Fatalf("body %q is not a one-line APIError", body)
			}
		})
	}
}

func TestAPIStatsAndStatus(t *testing.T) {
	f := newAPIFixture(t)
	ctx := context.Background()
	f.nw.setMAC("10.0.0.1", mac(1))
	if err := f.client.AddVIP(ctx, model.VIP{Address: vip1.Addr, Port: 80, Protocol: model.TCP, Backends: []model.Backend{be("10.0.0.1", 100)}}, false); err != nil {
		t.Fatal(err)
	}
	f.dp.SetVIPCounters(1, loader.Counters{Packets: 10, Bytes: 1000, Flows: 2})
	f.dp.SetBackendCounters(1, loader.Counters{Packets: 9, Bytes: 900, Flows: 2})
	f.dp.SetActions(loader.ActionCount{Ifindex: 1, Action: "tx", Count: 9}, loader.ActionCount{Ifindex: 0, Action: "pass", Count: 3})
	f.dp.SetDrops("no_backend", 1)

	// No driver counts what it refused: no tx_errors, not zeros.
	if code, body := f.raw(t, "GET", "/v1/stats", ""); code != 200 || !strings.Contains(body, `"tx_errors":[]`) {
		t.Fatalf("stats without driver counters: %d %s", code, body)
	}
	f.dp.SetTxErrors(loader.TxErrorCount{Ifindex: 1, Count: 4})
	f.dp.SetFeatures(loader.Features{Kernel: "6.1.0-57-amd64", BTF: true, BatchLookup: true, Mmapable: true})

	s, err := f.client.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.VIPs) != 1 || s.VIPs[0].VIP != "10.0.0.100:80/tcp" || s.VIPs[0].Packets != 10 || s.VIPs[0].Bytes != 1000 ||
		len(s.VIPs[0].Backends) != 1 || s.VIPs[0].Backends[0].Packets != 9 || s.VIPs[0].Backends[0].Flows != 2 {
		t.Fatalf("stats %+v", s)
	}
	if s.Drops["no_backend"] != 1 || len(s.Actions) != 2 || s.Time.IsZero() {
		t.Fatalf("stats %+v", s)
	}
	if want := []TxErrorStats{{Iface: IfaceName(1), Count: 4}}; !slices.Equal(s.TxErrors, want) {
		t.Fatalf("tx errors %+v, want %+v", s.TxErrors, want)
	}
	ds, err := f.client.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ds.Version != "test" || ds.VIPs != 1 || ds.Backends != 1 || len(ds.Interfaces) != 1 ||
		ds.Interfaces[0].XDPMode != "native" || ds.PinPath == "" || len(ds.Maps) != 2 {
		t.Fatalf("status %+v", ds)
	}
	if want := map[string]int{"maglev": 1}; !maps.Equal(ds.Schedulers, want) {
		t.Fatalf("status schedulers %v, want %v", ds.Schedulers, want)
	}
	if want := (KernelInfo{Release: "6.1.0-57-amd64", BTF: true, Count: "walk", BatchLookup: true, Mmapable: true}); ds.Kernel != want {
		t.Fatalf("status kernel %+v, want %+v", ds.Kernel, want)
	}
	if code, body := f.raw(t, "GET", "/v1/status", ""); code != 200 || !strings.Contains(body,
		`"kernel":{"release":"6.1.0-57-amd64","btf":true,"elem_count":false,"count":"walk","batch_lookup":true,"batch_update_tables":false,"mmapable":true}`) {
		t.Fatalf("status on the wire: %d %s", code, body)
	}
}

func TestClientDaemonDown(t *testing.T) {
	c := NewClient(filepath.Join(t.TempDir(), "none.sock"))
	_, err := c.VIPs(context.Background())
	if err == nil || !strings.Contains(err.Error(), "daemon not reachable") {
		t.Fatalf("err %v", err)
	}
}

func TestAPIBackendWeightDefault(t *testing.T) {
	f := newAPIFixture(t)
	if code, body := f.raw(t, "POST", "/v1/vips", `{"address":"10.0.0.100","port":80,"protocol":"tcp","backends":[]}`); code != 201 {
		t.Fatalf("add vip: %d %s", code, body)
	}
	for _, tc := range []struct{ body string }{
		{`{"address":"10.0.0.1"}`},
		{`{"address":"10.0.0.2","weight":0}`},
		{`{"address":"10.0.0.3","weight":7}`},
	} {
		if code, body := f.raw(t, "POST", "/v1/vips/10.0.0.100:80%2Ftcp/backends", tc.body); code != 201 {
			t.Fatalf("add backend %s: %d %s", tc.body, code, body)
		}
	}
	v, err := f.store.VIP(model.VIPID{Addr: netip.MustParseAddr("10.0.0.100"), Port: 80, Protocol: model.TCP})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]uint32{}
	for _, b := range v.Backends {
		got[b.Address.String()] = b.Weight
	}
	want := map[string]uint32{"10.0.0.1": model.DefaultWeight, "10.0.0.2": 0, "10.0.0.3": 7}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("backend %s weight %d, want %d", k, got[k], w)
		}
	}
}

// A fullnat VIP's backends list their mode, the SNAT address found for
// the VIP, their port and egress interface, and why one is unresolved;
// stats carry the VIP's ICMP errors.
func TestAPINATBackendsAndStats(t *testing.T) {
	f := newAPIFixture(t)
	ctx := context.Background()
	f.nw.SetRouted("10.0.1.2", false)
	v := model.VIP{Address: vip1.Addr, Port: 80, Protocol: model.TCP, Mode: model.ModeFullNAT, Backends: []model.Backend{
		{Address: netip.MustParseAddr("10.0.1.1"), Port: 8080, Weight: 100},
		{Address: netip.MustParseAddr("10.0.1.2"), Port: 8080, Weight: 100},
	}}
	if err := f.client.AddVIP(ctx, v, false); err != nil {
		t.Fatal(err)
	}
	bs, err := f.client.Backends(ctx, vip1)
	if err != nil {
		t.Fatal(err)
	}
	if len(bs) != 2 {
		t.Fatalf("backends %+v", bs)
	}
	for _, b := range bs {
		if b.Mode != model.ModeFullNAT || b.SNATAddr != reconciletest.Primary4 || b.Port != 8080 || b.MAC != "" {
			t.Errorf("backend %+v", b)
		}
	}
	if bs[0].State != model.BackendUp || bs[0].Iface != "eth0" || bs[0].Reason != "" {
		t.Errorf("routed backend %+v", bs[0])
	}
	if bs[1].State != model.BackendUnresolved || !strings.Contains(bs[1].Reason, "10.0.1.2 is not routed") {
		t.Errorf("unrouted backend %+v", bs[1])
	}
	code, body := f.raw(t, "GET", "/v1/vips/10.0.0.100:80%2Ftcp/backends", "")
	if code != 200 || !strings.Contains(body, `"mode":"fullnat","snat_addr":"192.0.2.1","iface":"eth0"`) {
		t.Fatalf("backends json %d %s", code, body)
	}

	f.dp.SetVIPCounters(1, loader.Counters{Packets: 10, ICMPErrors: 3})
	s, err := f.client.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.VIPs) != 1 || s.VIPs[0].ICMPErrors != 3 {
		t.Fatalf("stats %+v", s)
	}
	if _, body := f.raw(t, "GET", "/v1/stats", ""); !strings.Contains(body, `"icmp_errors":3`) {
		t.Fatalf("stats json %s", body)
	}
}

// fakeVIPAddrs plays the host of the API tests: 10.0.0.250 is one of its
// addresses, 10.0.0.255 a subnet's broadcast address.
type fakeVIPAddrs struct{}

func (fakeVIPAddrs) CheckVIPAddress(a netip.Addr) error {
	switch a.String() {
	case "10.0.0.250":
		return model.OwnAddressf("10.0.0.250 is an address of this host (on eth0)")
	case "10.0.0.255":
		return model.Invalidf("10.0.0.255 is the broadcast address of 10.0.0.0/24 on eth0")
	}
	return nil
}

// A VIP on an address of the LB host is refused unless forced, by vip add
// and by apply alike; a broadcast VIP is refused even forced; a VIP on an
// address another VIP already has is not vetted again.
func TestAPIVIPOnOwnAddress(t *testing.T) {
	f := newAPIFixture(t)
	ctx := context.Background()
	own := model.VIP{Address: netip.MustParseAddr("10.0.0.250"), Port: 22, Protocol: model.TCP}
	bcast := model.VIP{Address: netip.MustParseAddr("10.0.0.255"), Port: 80, Protocol: model.TCP}
	for _, tc := range []struct {
		name string
		do   func() error
		want string
		own  bool
	}{
		{"add own", func() error { return f.client.AddVIP(ctx, own, false) }, "vip 10.0.0.250:22/tcp: 10.0.0.250 is an address of this host (on eth0)", true},
		{"add broadcast", func() error { return f.client.AddVIP(ctx, bcast, false) }, "vip 10.0.0.255:80/tcp: 10.0.0.255 is the broadcast address of 10.0.0.0/24 on eth0", false},
		{"add broadcast forced", func() error { return f.client.AddVIP(ctx, bcast, true) }, "vip 10.0.0.255:80/tcp: 10.0.0.255 is the broadcast address of 10.0.0.0/24 on eth0", false},
		{"apply own", func() error { return f.client.Apply(ctx, model.State{VIPs: []model.VIP{own}}, false) }, "vip 10.0.0.250:22/tcp: 10.0.0.250 is an address of this host (on eth0)", true},
		{"dry run own", func() error {
			_, err := f.client.DryRun(ctx, model.State{VIPs: []model.VIP{own}}, false)
			return err
		}, "vip 10.0.0.250:22/tcp: 10.0.0.250 is an address of this host (on eth0)", true},
	} {
		err := tc.do()
		if err == nil || err.Error() != tc.want {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
		if len(f.store.State().VIPs) != 0 {
			t.Fatalf("%s: refused, yet the state changed: %+v", tc.name, f.store.State())
		}
	}
	code, body := f.raw(t, http.MethodPost, "/v1/vips", `{"address":"10.0.0.250","port":22,"protocol":"tcp"}`)
	if code != http.StatusBadRequest {
		t.Errorf("own address over the API: %d %s, want 400", code, body)
	}

	if d, err := f.client.DryRun(ctx, model.State{VIPs: []model.VIP{own}}, true); err != nil || len(d.VIPs) != 1 {
		t.Fatalf("forced dry run: %+v %v", d, err)
	}
	if err := f.client.AddVIP(ctx, own, true); err != nil {
		t.Fatalf("forced add: %v", err)
	}
	// The address is the VIP's now: another port on it needs no force,
	// and an apply that keeps it neither.
	second := own
	second.Port = 80
	if err := f.client.AddVIP(ctx, second, false); err != nil {
		t.Fatalf("second VIP on a taken address: %v", err)
	}
	if err := f.client.Apply(ctx, model.State{VIPs: []model.VIP{second}}, false); err != nil {
		t.Fatalf("apply keeping the address: %v", err)
	}
	if err := f.client.Apply(ctx, model.State{VIPs: []model.VIP{}}, false); err != nil {
		t.Fatal(err)
	}
	if err := f.client.Apply(ctx, model.State{VIPs: []model.VIP{own}}, true); err != nil {
		t.Fatalf("forced apply: %v", err)
	}
}
