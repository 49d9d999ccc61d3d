// Package e2e runs the real xdplb binary against real TCP clients and
// servers in network namespaces: native XDP on veth, DR forwarding, IPv4 and
// IPv6. Every test builds its own lab and removes it, also on failure.
package e2e

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/xdplb/xdplb/control/api"
	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/internal/lab"
	"github.com/xdplb/xdplb/internal/testutil"
)

// binary is the xdplb binary under test: built once by TestMain, or taken
// from XDPLB_BINARY (e.g. the bin/xdplb that `make build` just made).
var binary string

// upgrade is the upgrade build of TestHitlessRestartAndUpgrade when
// XDPLB_UPGRADE_BINARY names one; empty, the test builds it.
var upgrade string

var buildUpgradeTo = flag.String("build-upgrade", "",
	"build the upgrade binary of TestHitlessRestartAndUpgrade to this file and exit, running no test "+
		"(the VM runner does it on the host and passes the file as XDPLB_UPGRADE_BINARY)")

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	flag.Parse()
	if *buildUpgradeTo != "" {
		tmp, err := os.MkdirTemp("", "xdplb-upgrade-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			return 1
		}
		defer os.RemoveAll(tmp)
		if err := buildUpgrade(context.Background(), *buildUpgradeTo, tmp); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: build the upgrade binary:", err)
			return 1
		}
		return 0
	}
	upgrade = os.Getenv("XDPLB_UPGRADE_BINARY")
	binary = os.Getenv("XDPLB_BINARY")
	if binary == "" && (os.Geteuid() == 0 || os.Getenv("CI") == "true") {
		dir, err := os.MkdirTemp("", "xdplb-e2e-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			return 1
		}
		defer os.RemoveAll(dir)
		binary = filepath.Join(dir, "xdplb")
		if err := build(binary); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: build xdplb:", err)
			return 1
		}
	}
	return m.Run()
}

func build(out string) error {
	cmd := exec.Command(goBinary(), "build", "-o", out, "github.com/xdplb/xdplb/cmd/xdplb")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%w:\n%s", err, b)
	}
	return nil
}

// env is one test's lab with a running daemon.
type env struct {
	t       *testing.T
	ctx     context.Context
	lab     *lab.Lab
	servers map[string]*lab.Server // by backend name
	dir     string
	bpffs   string
	d       *lab.Daemon
	// nextPort is the client port of the next request: fixed ports make the
	// 5-tuples, and so the distribution, the same in every run.
	nextPort uint16
	// daemonArgs are more daemon flags, given at every start.
	daemonArgs []string
}

func setup(t *testing.T) *env {
	t.Helper()
	return setupLab(t, lab.Options{})
}

// setupLab builds the lab opts describe, starts the DR backends' servers
// (if it has any) and the daemon on every interface of the LB.
func setupLab(t *testing.T, opts lab.Options, daemonArgs ...string) *env {
	t.Helper()
	testutil.RequireRoot(t)
	// Every limit of the lab and of these tests grows by lab.Slowness on
	// a slow machine (XDPLB_TEST_SLOWNESS, set by the VM runner).
	ctx, cancel := context.WithTimeout(context.Background(), lab.Scale(90*time.Second))
	t.Cleanup(cancel)
	e := &env{t: t, ctx: ctx, servers: map[string]*lab.Server{}, daemonArgs: daemonArgs}

	l, err := lab.New(ctx, opts)
	if err != nil {
		t.Fatalf("build lab: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("remove lab %s: %v", l.Prefix, err)
		}
	})
	e.lab = l
	servers, err := l.ServeBackends()
	if err != nil {
		t.Fatalf("start backends: %v", err)
	}
	for _, s := range servers {
		e.servers[s.Name] = s
	}
	e.dir = t.TempDir()
	// Mounted here, outside the daemon's mount namespace, so pins survive a
	// daemon restart; the unmount (after the daemon stops) drops them.
	e.bpffs = testutil.MountBPFFS(t)
	e.start()
	t.Cleanup(func() {
		if e.d == nil {
			return
		}
		if t.Failed() {
			e.diagnose()
		}
		if err := e.d.Stop(); err != nil {
			t.Errorf("stop daemon: %v", err)
		}
		if t.Failed() {
			t.Logf("daemon log %s:\n%s", e.d.LogPath, e.d.Log())
		}
	})
	return e
}

// diagnose logs what tells why packets did not make it: the data plane's
// counters, every interface's counters and the TCP counters of each node
// (TcpInCsumErrors on a backend means broken checksums after XDP_TX).
func (e *env) diagnose() {
	if out, err := e.d.CLI(context.Background(), "stats", "--interval", "10ms"); err == nil {
		e.t.Logf("xdplb stats:\n%s", out)
	}
	for _, n := range append([]*lab.Node{e.lab.Switch}, e.lab.Nodes()...) {
		out, err := n.Exec(context.Background(), "sh", "-c",
			"ip -s link; ip neigh; grep -A1 '^Tcp:' /proc/net/snmp")
		if err != nil {
			out = err.Error()
		}
		e.t.Logf("%s:\n%s", n.NetNS, out)
	}
	if e.lab.LB.Back != nil {
		e.natDiagnose()
	}
}

// start starts the daemon (again) with the env's state dir and bpffs.
func (e *env) start() {
	e.t.Helper()
	e.startBinary(binary)
}

// stop stops the daemon and expects a clean exit.
func (e *env) stop() {
	e.t.Helper()
	d := e.d
	e.d = nil
	if err := d.Stop(); err != nil {
		e.t.Fatalf("stop daemon: %v\nlog:\n%s", err, d.Log())
	}
}

func (e *env) cli(args ...string) string {
	e.t.Helper()
	out, err := e.d.CLI(e.ctx, args...)
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

func (e *env) stats() api.Stats {
	e.t.Helper()
	st, err := e.d.Stats(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	return st
}

// metrics scrapes the daemon's /metrics (inside the LB namespace).
func (e *env) metrics() map[string]*dto.MetricFamily {
	e.t.Helper()
	mfs, err := e.d.Metrics(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	return mfs
}

// addVIP configures vip in DR mode with every backend (by the address of
// the family given) and waits until the daemon has all of them up.
func (e *env) addVIP(vip string, addrOf func(*lab.Node) netip.Addr) {
	e.t.Helper()
	e.cli("vip", "add", vip, "--mode", "dr")
	for _, be := range e.lab.Backends {
		e.cli("backend", "add", vip, addrOf(be).String())
	}
	if _, err := e.d.WaitBackendsUp(e.ctx, vip, len(e.lab.Backends), 15*time.Second); err != nil {
		e.t.Fatal(err)
	}
}

// load sends n requests to target and fails the test unless all succeed.
func (e *env) load(target netip.AddrPort, n int) lab.LoadResult {
	e.t.Helper()
	if e.nextPort == 0 {
		e.nextPort = firstClientPort
	}
	res := e.lab.Client.Load(e.ctx, target, lab.LoadOptions{Requests: n, Parallel: 8, Timeout: 3 * time.Second,
		MaxFailures: 20, FirstPort: e.nextPort})
	e.nextPort += uint16(n)
	e.t.Logf("%d requests to %s in %s: %d ok, by backend %v", res.Requests, target, res.Duration.Round(time.Millisecond), res.OK, res.ByBackend)
	if res.OK != n {
		e.t.Fatalf("%d of %d requests to %s succeeded (%d failed); first failures:\n  %s",
			res.OK, n, target, res.Failed, strings.Join(res.Failures, "\n  "))
	}
	return res
}

func TestDRIPv4(t *testing.T) {
	testDR(t, lab.VIP4, func(n *lab.Node) netip.Addr { return n.IPv4 }, "ip")
}

func TestDRIPv6(t *testing.T) {
	testDR(t, lab.VIP6, func(n *lab.Node) netip.Addr { return n.IPv6 }, "ip6")
}

const (
	firstClientPort = 20000 // below the ephemeral range, so no clash with other sockets
	connections     = 600
	tolerance       = 0.15 // of an even split
	ethHeader       = 14   // the data plane counts whole frames, nft counts IP packets
)

func testDR(t *testing.T, vipAddr netip.Addr, addrOf func(*lab.Node) netip.Addr, nftFamily string) {
	e := setup(t)
	target := netip.AddrPortFrom(vipAddr, lab.HTTPPort)
	vip := target.String() + "/tcp"
	e.addVIP(vip, addrOf)

	// Kernel counters of what the client sends to the VIP and of what each
	// backend receives for it: the reference for the XDP counters.
	match := fmt.Sprintf("%s daddr %s tcp dport %d", nftFamily, vipAddr, lab.HTTPPort)
	if err := e.lab.Client.AddCounters(e.ctx, lab.CounterRule{Name: "tovip", Hook: "output", Match: match}); err != nil {
		t.Fatal(err)
	}
	for _, be := range e.lab.Backends {
		if err := be.AddCounters(e.ctx, lab.CounterRule{Name: "tovip", Hook: "input", Match: match}); err != nil {
			t.Fatal(err)
		}
	}
	before := e.stats()
	metricsBefore := e.metrics()
	res := e.load(target, connections)

	// Distribution, seen by the client and by the servers.
	even := float64(connections) / float64(len(e.lab.Backends))
	for _, be := range e.lab.Backends {
		got := res.ByBackend[be.Name]
		if d := float64(got) - even; d > tolerance*even || d < -tolerance*even {
			t.Errorf("%s answered %d of %d connections, want %.0f +- %.0f", be.Name, got, connections, even, tolerance*even)
		}
		if served := e.servers[be.Name].Served(); served != uint64(got) {
			t.Errorf("%s served %d requests but the client saw %d answers from it", be.Name, served, got)
		}
	}
	if len(res.ByBackend) != len(e.lab.Backends) {
		t.Errorf("answers from %v, want exactly the backends", res.Names())
	}
	// Each connection is a new 5-tuple, so a new flow.
	if res.LocalPorts != connections {
		t.Errorf("client used %d distinct source ports for %d connections: flows would not be new", res.LocalPorts, connections)
	}

	// Counters settle once the last FINs and ACKs have passed: wait until
	// the client's and the data plane's packet counts agree (bounded).
	var (
		client lab.Counter
		vs     api.VIPStats
		after  api.Stats
	)
	deadline := time.Now().Add(3 * time.Second)
	for {
		var err error
		if client, err = e.lab.Client.ReadCounter(e.ctx, "tovip"); err != nil {
			t.Fatal(err)
		}
		after = e.stats()
		vs = diffVIP(t, before, after, vip)
		if vs.Packets == client.Packets || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("client sent %d packets (%d IP bytes) to %s; XDP counted packets %d bytes %d flows %d",
		client.Packets, client.Bytes, vip, vs.Packets, vs.Bytes, vs.Flows)

	if vs.Flows != connections {
		t.Errorf("VIP flows = %d, want %d (one per connection)", vs.Flows, connections)
	}
	if vs.Packets != client.Packets {
		t.Errorf("VIP packets = %d, but the client sent %d packets to the VIP", vs.Packets, client.Packets)
	}
	// Sanity of the reference itself: SYN, ACK, request and FIN at least (the
	// ACK of the answer may ride on the FIN), a handful more at most.
	if client.Packets < 4*connections || client.Packets > 10*connections {
		t.Errorf("client sent %d packets for %d connections, want 4-10 per connection", client.Packets, connections)
	}
	if want := client.Bytes + ethHeader*client.Packets; vs.Bytes != want {
		t.Errorf("VIP bytes = %d, want %d (the client's %d IP bytes + %d Ethernet headers)", vs.Bytes, want, client.Bytes, client.Packets)
	}

	var sum api.CounterSet
	for _, bs := range vs.Backends {
		be := backendByAddr(e.lab, addrOf, bs.Address)
		if be == nil {
			t.Errorf("stats name backend %s, which is not one of ours", bs.Address)
			continue
		}
		sum.Packets += bs.Packets
		sum.Bytes += bs.Bytes
		sum.Flows += bs.Flows
		if want := uint64(res.ByBackend[be.Name]); bs.Flows != want {
			t.Errorf("%s: backend flows = %d, but it answered %d connections", be.Name, bs.Flows, want)
		}
		got, err := be.ReadCounter(e.ctx, "tovip")
		if err != nil {
			t.Fatal(err)
		}
		if bs.Packets != got.Packets {
			t.Errorf("%s: backend packets = %d, but it received %d packets for the VIP", be.Name, bs.Packets, got.Packets)
		}
		if want := got.Bytes + ethHeader*got.Packets; bs.Bytes != want {
			t.Errorf("%s: backend bytes = %d, want %d from its own count", be.Name, bs.Bytes, want)
		}
	}
	if sum != vs.CounterSet {
		t.Errorf("backends sum to %+v, VIP counted %+v", sum, vs.CounterSet)
	}

	// Every VIP packet left by XDP_TX on the LB interface, and none was dropped.
	tx := actionDelta(before, after, e.lab.LB.Iface, "tx")
	if tx != vs.Packets {
		t.Errorf("XDP_TX on %s = %d, want %d (every VIP packet)", e.lab.LB.Iface, tx, vs.Packets)
	}
	for reason, n := range after.Drops {
		if n != before.Drops[reason] {
			t.Errorf("drops %s: %d -> %d", reason, before.Drops[reason], n)
		}
	}

	e.checkMetrics(metricsBefore, vip, client, res, addrOf)
}

// checkMetrics scrapes /metrics once more and holds it against what the
// client and the backends saw since before was scraped: counters by how much
// they grew, gauges by their value now.
func (e *env) checkMetrics(before map[string]*dto.MetricFamily, vip string, client lab.Counter,
	res lab.LoadResult, addrOf func(*lab.Node) netip.Addr) {
	t := e.t
	t.Helper()
	after := e.metrics()
	value := func(name string, labels ...string) (float64, bool) {
		v, err := lab.MetricValue(after, name, labels...)
		if err != nil {
			t.Errorf("/metrics: %v", err)
		}
		return v, err == nil
	}
	grew := func(want uint64, why, name string, labels ...string) float64 {
		now, ok := value(name, labels...)
		if !ok {
			return 0
		}
		was, _ := lab.MetricValue(before, name, labels...) // a series not yet exported was 0
		if got := now - was; got != float64(want) {
			t.Errorf("%s grew by %.0f (%.0f -> %.0f), want %d (%s)", lab.Series(name, labels...), got, was, now, want, why)
		}
		return now - was
	}
	is := func(want float64, name string, labels ...string) {
		if got, ok := value(name, labels...); ok && got != want {
			t.Errorf("%s = %.0f, want %.0f", lab.Series(name, labels...), got, want)
		}
	}

	packets := grew(client.Packets, "packets the client sent to the VIP", "xdplb_vip_packets_total", "vip", vip)
	grew(client.Bytes+ethHeader*client.Packets, "the client's IP bytes plus Ethernet headers", "xdplb_vip_bytes_total", "vip", vip)
	grew(connections, "one flow per connection", "xdplb_vip_flows_total", "vip", vip)
	for _, be := range e.lab.Backends {
		addr := addrOf(be).String()
		grew(uint64(res.ByBackend[be.Name]), "connections "+be.Name+" answered", "xdplb_backend_flows_total", "vip", vip, "backend", addr)
		is(1, "xdplb_backend_up", "vip", vip, "backend", addr)
		is(100, "xdplb_backend_weight", "vip", vip, "backend", addr)
	}
	grew(client.Packets, "every VIP packet leaves by XDP_TX", "xdplb_xdp_actions_total", "iface", e.lab.LB.Iface, "action", "tx")

	drops := after["xdplb_drops_total"].GetMetric()
	if len(drops) == 0 {
		t.Errorf("/metrics: no xdplb_drops_total series")
	}
	for _, m := range drops {
		if v := m.GetCounter().GetValue(); v != 0 {
			t.Errorf("%s = %.0f, want 0", lab.Series("xdplb_drops_total", labelPairs(m)...), v)
		}
	}
	conntrack, ok := value("xdplb_conntrack_entries")
	if ok && conntrack < connections {
		t.Errorf("xdplb_conntrack_entries = %.0f, want >= %d (one per connection)", conntrack, connections)
	}
	reconciles, ok := value("xdplb_reconciles_total", "result", "ok")
	if ok && reconciles <= 0 {
		t.Errorf(`xdplb_reconciles_total{result="ok"} = %.0f, want > 0`, reconciles)
	}
	is(0, "xdplb_reconciles_total", "result", "error")
	is(1, "xdplb_build_info")
	var build []string
	for _, m := range after["xdplb_build_info"].GetMetric() {
		build = labelPairs(m)
	}
	t.Logf("/metrics: %s grew by %.0f, conntrack entries %.0f, %.0f reconciles ok, %d drop reasons, %s",
		lab.Series("xdplb_vip_packets_total", "vip", vip), packets, conntrack, reconciles, len(drops),
		lab.Series("xdplb_build_info", build...))
}

// labelPairs returns a series' labels as name, value, name, value, ...
func labelPairs(m *dto.Metric) []string {
	var out []string
	for _, lp := range m.GetLabel() {
		out = append(out, lp.GetName(), lp.GetValue())
	}
	return out
}

// diffVIP returns the VIP's counters in after minus those in before.
func diffVIP(t *testing.T, before, after api.Stats, vip string) api.VIPStats {
	t.Helper()
	cur, ok := lab.VIPStats(after, vip)
	if !ok {
		t.Fatalf("stats have no VIP %s: %+v", vip, after.VIPs)
	}
	prev, _ := lab.VIPStats(before, vip)
	out := cur
	out.CounterSet = sub(cur.CounterSet, prev.CounterSet)
	out.Backends = nil
	for _, b := range cur.Backends {
		for _, p := range prev.Backends {
			if p.Address == b.Address && p.Port == b.Port {
				b.CounterSet = sub(b.CounterSet, p.CounterSet)
			}
		}
		out.Backends = append(out.Backends, b)
	}
	return out
}

func sub(a, b api.CounterSet) api.CounterSet {
	return api.CounterSet{Packets: a.Packets - b.Packets, Bytes: a.Bytes - b.Bytes, Flows: a.Flows - b.Flows}
}

func actionDelta(before, after api.Stats, iface, action string) uint64 {
	count := func(st api.Stats) uint64 {
		var n uint64
		for _, a := range st.Actions {
			if a.Iface == iface && a.Action == action {
				n += a.Count
			}
		}
		return n
	}
	return count(after) - count(before)
}

func backendByAddr(l *lab.Lab, addrOf func(*lab.Node) netip.Addr, a netip.Addr) *lab.Node {
	for _, be := range l.Backends {
		if addrOf(be) == a.Unmap() {
			return be
		}
	}
	return nil
}

// The daemon restarted with the same state dir restores the VIP, and the
// pinned program keeps forwarding while the daemon is down.
func TestRestartRestoresState(t *testing.T) {
	e := setup(t)
	target := netip.AddrPortFrom(lab.VIP4, lab.HTTPPort)
	vip := target.String() + "/tcp"
	e.addVIP(vip, func(n *lab.Node) netip.Addr { return n.IPv4 })
	e.load(target, 60)

	e.stop()
	t.Log("daemon stopped; traffic must still flow through the pinned program")
	e.load(target, 30)

	e.start()
	var vips []model.VIP
	if err := e.d.CLIJSON(e.ctx, &vips, "vip", "list"); err != nil {
		t.Fatal(err)
	}
	if len(vips) != 1 || vips[0].ID().String() != vip {
		t.Fatalf("after restart vip list = %+v, want just %s", vips, vip)
	}
	got := map[netip.Addr]bool{}
	for _, b := range vips[0].Backends {
		got[b.Address] = true
	}
	for _, be := range e.lab.Backends {
		if !got[be.IPv4] {
			t.Errorf("after restart %s lacks backend %s (has %+v)", vip, be.IPv4, vips[0].Backends)
		}
	}
	if len(vips[0].Backends) != len(e.lab.Backends) {
		t.Errorf("after restart %s has %d backends, want %d", vip, len(vips[0].Backends), len(e.lab.Backends))
	}
	if _, err := e.d.WaitBackendsUp(e.ctx, vip, len(e.lab.Backends), 15*time.Second); err != nil {
		t.Fatal(err)
	}
	res := e.load(target, 60)
	if len(res.ByBackend) != len(e.lab.Backends) {
		t.Errorf("after restart only %v answered", res.Names())
	}
}

// Traffic that is not for a VIP reaches the LB's own kernel while the XDP
// program is attached.
func TestNonVIPTrafficPasses(t *testing.T) {
	e := setup(t)
	vip := netip.AddrPortFrom(lab.VIP4, lab.HTTPPort).String() + "/tcp"
	e.addVIP(vip, func(n *lab.Node) netip.Addr { return n.IPv4 })
	if _, err := e.lab.ServeName(e.lab.LB, "lb", 8080); err != nil {
		t.Fatal(err)
	}

	var status api.DaemonStatus
	if err := e.d.CLIJSON(e.ctx, &status, "status"); err != nil {
		t.Fatal(err)
	}
	attached := false
	for _, i := range status.Interfaces {
		if i.Name == e.lab.LB.Iface && i.XDPMode == "native" && i.ProgramID != 0 {
			attached = true
		}
	}
	if !attached {
		t.Fatalf("status does not show native XDP on %s: %+v", e.lab.LB.Iface, status.Interfaces)
	}

	before := e.stats()
	for _, a := range []netip.Addr{e.lab.LB.IPv4, e.lab.LB.IPv6} {
		got, err := e.lab.Client.Get(e.ctx, netip.AddrPortFrom(a, 8080), 3*time.Second)
		if err != nil || got != "lb" {
			t.Errorf("client -> lb's own %s:8080 = %q, %v; want %q", a, got, err, "lb")
		}
	}
	after := e.stats()
	if pass := actionDelta(before, after, e.lab.LB.Iface, "pass"); pass == 0 {
		t.Errorf("XDP_PASS on %s did not grow: the requests did not go through the program", e.lab.LB.Iface)
	}
	if vs := diffVIP(t, before, after, vip); vs.Packets != 0 {
		t.Errorf("VIP counted %d packets of non-VIP traffic", vs.Packets)
	}
}
