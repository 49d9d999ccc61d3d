package api

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/xdplb/xdplb/control/model"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/xdplb/xdplb/control/reconcile/reconciletest"
	"github.com/xdplb/xdplb/healthcheck"
	"github.com/xdplb/xdplb/loader"
)

func TestCollector(t *testing.T) {
	f := newRecFixture(t, nil)
	f.nw.setMAC("10.0.0.1", mac(1))
	f.nw.setMAC("10.0.0.2", mac(2))
	addVIP(t, f.store, vip1, be("10.0.0.1", 100), model.Backend{Address: be("10.0.0.2", 0).Address, Weight: 30, Drain: true})
	f.reconcile(t)
	f.dp.SetVIPCounters(1, loader.Counters{Packets: 10, Bytes: 1500, Flows: 3, ICMPErrors: 2})
	f.dp.SetBackendCounters(1, loader.Counters{Packets: 7, Bytes: 700, Flows: 2})
	f.dp.SetBackendCounters(2, loader.Counters{Packets: 3, Bytes: 800, Flows: 1})
	f.dp.SetActions(loader.ActionCount{Ifindex: 1, Action: "tx", Count: 9}, loader.ActionCount{Ifindex: 0, Action: "pass", Count: 4})
	f.dp.SetTxErrors(loader.TxErrorCount{Ifindex: 1, Count: 2})
	f.dp.SetDrops("no_backend", 5)
	f.dp.SetFlows(1, 6)
	f.dp.SetNATStats(loader.NATStats{Entries: 9, SNATPortsInUse: 4}, nil)
	f.dp.SetEvent("fib_no_neigh", 3)
	f.dp.SetEvent("frag_needed", 0)
	f.dp.SetConntrackSize(4096)

	c := NewCollector(f.dp, f.store, f.rec, "v1.2.3", nil)
	c.ifname = func(i int) string { return map[int]string{0: "other", 1: "lo"}[i] }
	want := `
# HELP xdplb_vip_packets_total Packets received for a VIP.
# TYPE xdplb_vip_packets_total counter
xdplb_vip_packets_total{vip="10.0.0.100:80/tcp"} 10
# HELP xdplb_vip_bytes_total Bytes received for a VIP.
# TYPE xdplb_vip_bytes_total counter
xdplb_vip_bytes_total{vip="10.0.0.100:80/tcp"} 1500
# HELP xdplb_vip_flows_total New flows scheduled for a VIP.
# TYPE xdplb_vip_flows_total counter
xdplb_vip_flows_total{vip="10.0.0.100:80/tcp"} 3
# HELP xdplb_vip_icmp_errors_total ICMP errors about a VIP's flows forwarded to their backend or translated back to their client.
# TYPE xdplb_vip_icmp_errors_total counter
xdplb_vip_icmp_errors_total{vip="10.0.0.100:80/tcp"} 2
# HELP xdplb_backend_packets_total Packets forwarded to a backend.
# TYPE xdplb_backend_packets_total counter
xdplb_backend_packets_total{backend="10.0.0.1",vip="10.0.0.100:80/tcp"} 7
xdplb_backend_packets_total{backend="10.0.0.2",vip="10.0.0.100:80/tcp"} 3
# HELP xdplb_backend_bytes_total Bytes forwarded to a backend.
# TYPE xdplb_backend_bytes_total counter
xdplb_backend_bytes_total{backend="10.0.0.1",vip="10.0.0.100:80/tcp"} 700
xdplb_backend_bytes_total{backend="10.0.0.2",vip="10.0.0.100:80/tcp"} 800
# HELP xdplb_backend_flows_total New flows scheduled to a backend.
# TYPE xdplb_backend_flows_total counter
xdplb_backend_flows_total{backend="10.0.0.1",vip="10.0.0.100:80/tcp"} 2
xdplb_backend_flows_total{backend="10.0.0.2",vip="10.0.0.100:80/tcp"} 1
# HELP xdplb_backend_up 1 if the backend takes new flows.
# TYPE xdplb_backend_up gauge
xdplb_backend_up{backend="10.0.0.1",vip="10.0.0.100:80/tcp"} 1
xdplb_backend_up{backend="10.0.0.2",vip="10.0.0.100:80/tcp"} 0
# HELP xdplb_backend_weight Configured weight of a backend.
# TYPE xdplb_backend_weight gauge
xdplb_backend_weight{backend="10.0.0.1",vip="10.0.0.100:80/tcp"} 100
xdplb_backend_weight{backend="10.0.0.2",vip="10.0.0.100:80/tcp"} 30
# HELP xdplb_vip_active_priority Worst (highest) priority of the backend pools taking a VIP's new flows: 0 on its primary pool; -1 when no pool takes them (its fallback, or dropped).
# TYPE xdplb_vip_active_priority gauge
xdplb_vip_active_priority{vip="10.0.0.100:80/tcp"} 0
# HELP xdplb_vip_info 1 for each configured VIP, labelled with its forwarding mode, its scheduler and its persistence in seconds (0: none).
# TYPE xdplb_vip_info gauge
xdplb_vip_info{mode="dr",persistence="0",scheduler="maglev",vip="10.0.0.100:80/tcp"} 1
# HELP xdplb_xdp_actions_total XDP verdicts returned, per interface.
# TYPE xdplb_xdp_actions_total counter
xdplb_xdp_actions_total{action="pass",iface="other"} 4
xdplb_xdp_actions_total{action="tx",iface="lo"} 9
# HELP xdplb_xdp_tx_errors_total Frames returned with XDP_TX or redirected that the interface's driver refused to send (lost), from its ethtool statistics; absent where the driver counts none.
# TYPE xdplb_xdp_tx_errors_total counter
xdplb_xdp_tx_errors_total{iface="lo"} 2
# HELP xdplb_drops_total Packets dropped by the XDP program, per reason.
# TYPE xdplb_drops_total counter
xdplb_drops_total{reason="no_backend"} 5
# HELP xdplb_conntrack_entries Entries in the connection table.
# TYPE xdplb_conntrack_entries gauge
xdplb_conntrack_entries 6
# HELP xdplb_conntrack_capacity Flows the connection table is sized for (--conntrack-size).
# TYPE xdplb_conntrack_capacity gauge
xdplb_conntrack_capacity 4096
# HELP xdplb_snat_ports_in_use Full-NAT source ports held by live flows, as of the last NAT table sweep.
# TYPE xdplb_snat_ports_in_use gauge
xdplb_snat_ports_in_use 4
# HELP xdplb_events_total Data-plane events that are not drops, per event.
# TYPE xdplb_events_total counter
xdplb_events_total{event="fib_no_neigh"} 3
xdplb_events_total{event="frag_needed"} 0
# HELP xdplb_reconciles_total Reconciler passes by result.
# TYPE xdplb_reconciles_total counter
xdplb_reconciles_total{result="error"} 0
xdplb_reconciles_total{result="ok"} 1
# HELP xdplb_build_info Version of the running daemon.
# TYPE xdplb_build_info gauge
xdplb_build_info{version="v1.2.3"} 1
# HELP xdplb_scrape_errors_total Errors reading the data plane while serving /metrics.
# TYPE xdplb_scrape_errors_total counter
xdplb_scrape_errors_total 0
`
	// Every family but the pass histogram (TestReconcileDuration).
	var names []string
	for _, f := range collectorFamilies {
		names = append(names, f.name)
	}
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), names...); err != nil {
		t.Fatal(err)
	}
	if n, err := testutil.GatherAndLint(registryWith(t, c)); err != nil || len(n) != 0 {
		t.Fatalf("lint: %v %v", n, err)
	}
}

// xdplb_reconcile_duration_seconds counts the passes xdplb_reconciles_total
// counts, by result, from the first scrape (both results at 0 before any).
func TestReconcileDuration(t *testing.T) {
	f := newRecFixture(t, nil)
	c := NewCollector(f.dp, f.store, f.rec, "dev", nil)
	count := func(result string) uint64 {
		t.Helper()
		m := &dto.Metric{}
		h, err := c.passes.GetMetricWithLabelValues(result)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.(prometheus.Metric).Write(m); err != nil {
			t.Fatal(err)
		}
		return m.GetHistogram().GetSampleCount()
	}
	if n, err := testutil.GatherAndCount(registryWith(t, c), "xdplb_reconcile_duration_seconds"); err != nil || n != 2 {
		t.Fatalf("before any pass: %d series (%v), want 2 (ok and error)", n, err)
	}
	f.rec.SetPassObserver(c.ObservePass)
	f.nw.setMAC("10.0.0.1", mac(1))
	addVIP(t, f.store, vip1, be("10.0.0.1", 100))
	f.reconcile(t)
	f.dp.SetFailPut(errTest)
	f.nw.setMAC("10.0.0.2", mac(2))
	if err := f.store.AddBackend(vip1, be("10.0.0.2", 100)); err != nil {
		t.Fatal(err)
	}
	if err := f.rec.ReconcileChanged(context.Background()); err == nil {
		t.Fatal("reconcile: no error with a failing map write")
	}
	ok, failed := f.rec.Counts()
	if got := count("ok"); got != ok || ok != 1 {
		t.Errorf("ok passes observed %d, counted %d, want 1", got, ok)
	}
	if got := count("error"); got != failed || failed != 1 {
		t.Errorf("failed passes observed %d, counted %d, want 1", got, failed)
	}
}

type failingCounters struct{ *reconciletest.Datapath }

func (failingCounters) DropCounters() (map[string]uint64, error) { return nil, errTest }

func TestCollectorCountsItsErrors(t *testing.T) {
	f := newRecFixture(t, nil)
	c := NewCollector(failingCounters{f.dp}, f.store, f.rec, "dev", nil)
	for range 2 {
		testutil.CollectAndCount(c)
	}
	// Two scrapes above and the one of CollectAndCompare.
	want := `
# HELP xdplb_scrape_errors_total Errors reading the data plane while serving /metrics.
# TYPE xdplb_scrape_errors_total counter
xdplb_scrape_errors_total 3
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "xdplb_scrape_errors_total"); err != nil {
		t.Fatal(err)
	}
}

// A data plane without NAT stats or event counters (their reads fail)
// leaves those families out; the scrape is no failure, and the rest is
// all there.
func TestCollectorWithoutNAT(t *testing.T) {
	f := newRecFixture(t, nil)
	f.nw.setMAC("10.0.0.1", mac(1))
	addVIP(t, f.store, vip1, be("10.0.0.1", 100))
	f.reconcile(t)
	f.dp.SetNATStats(loader.NATStats{SNATPortsInUse: 4}, errTest)
	f.dp.SetEventsErr(errTest)
	var logs bytes.Buffer
	c := NewCollector(f.dp, f.store, f.rec, "dev", slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	n, err := testutil.GatherAndCount(registryWith(t, c))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := testutil.GatherAndCount(registryWith(t, c), "xdplb_snat_ports_in_use", "xdplb_events_total"); got != 0 {
		t.Fatalf("%d nat and event series from a data plane without them", got)
	}
	if got, _ := testutil.GatherAndCount(registryWith(t, c), "xdplb_vip_packets_total", "xdplb_conntrack_entries"); got != 2 || n < 10 {
		t.Fatalf("%d series in all, %d of the others: the scrape lost more than the nat families", n, got)
	}
	want := `
# HELP xdplb_scrape_errors_total Errors reading the data plane while serving /metrics.
# TYPE xdplb_scrape_errors_total counter
xdplb_scrape_errors_total 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "xdplb_scrape_errors_total"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "level=DEBUG") || strings.Contains(logs.String(), "level=WARN") {
		t.Fatalf("want debug lines only:\n%s", logs.String())
	}
}

func TestMetricsServer(t *testing.T) {
	f := newRecFixture(t, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	s := NewMetricsServer(nil)
	go func() { done <- s.Serve(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + ln.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	// Before the data plane: alive, not ready, the process's own metrics.
	if code, body := get("/healthz"); code != 200 {
		t.Errorf("/healthz: %d %s", code, body)
	}
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "not ready") {
		t.Errorf("/readyz before SetReady: %d %s", code, body)
	}
	code, body := get("/metrics")
	if code != 200 || strings.Contains(body, "xdplb_build_info") {
		t.Fatalf("/metrics before the data plane: %d %s", code, body)
	}
	// The Go runtime and process collectors, in its own registry (not
	// the global one, which would serve them too).
	for _, name := range []string{"go_goroutines", "go_memstats_heap_alloc_bytes", "process_start_time_seconds", "process_open_fds"} {
		if !strings.Contains(body, "\n"+name+" ") {
			t.Errorf("/metrics lacks %s", name)
		}
	}

	hm := NewHealthMetrics(nil)
	hm.ObserveProbe(healthcheck.TCP, 3*time.Millisecond, true)
	hm.ObserveTransition(healthcheck.Transition{ID: model.HealthTargetID(vip1, netip.MustParseAddr("10.0.0.1"), 0)})
	if err := s.Register(NewCollector(f.dp, f.store, f.rec, "v9", nil), hm); err != nil {
		t.Fatal(err)
	}
	s.SetReady(true)
	if code, body := get("/readyz"); code != 200 {
		t.Errorf("/readyz after SetReady: %d %s", code, body)
	}
	_, body = get("/metrics")
	for _, line := range []string{`xdplb_build_info{version="v9"} 1`, `xdplb_healthcheck_duration_seconds_count{type="tcp"} 1`,
		`xdplb_healthcheck_transitions_total{backend="10.0.0.1",to="down",vip="10.0.0.100:80/tcp"} 1`, "go_goroutines "} {
		if !strings.Contains(body, line) {
			t.Errorf("/metrics lacks %q", line)
		}
	}
	if n, err := testutil.GatherAndLint(s.reg); err != nil || len(n) != 0 {
		t.Errorf("lint: %v %v", n, err)
	}
	if err := s.Register(hm); err == nil {
		t.Error("a collector registered twice")
	}
	s.SetReady(false)
	if code, _ := get("/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz after SetReady(false): %d", code)
	}
	if code, _ := get("/nosuch"); code != http.StatusNotFound {
		t.Errorf("/nosuch: %d", code)
	}
}

func registryWith(t *testing.T, c *Collector) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	return reg
}

func TestHealthMetrics(t *testing.T) {
	hm := NewHealthMetrics(nil)
	for _, d := range []time.Duration{50 * time.Microsecond, 300 * time.Microsecond, 2 * time.Millisecond, 600 * time.Millisecond} {
		hm.ObserveProbe(healthcheck.TCP, d, true)
	}
	hm.ObserveProbe(healthcheck.HTTP, 6*time.Second, false) // beyond the last bucket: +Inf only
	id := func(a string) string { return model.HealthTargetID(vip1, netip.MustParseAddr(a), 0) }
	hm.ObserveTransition(healthcheck.Transition{ID: id("10.0.0.1"), Up: false, Reason: "timeout"})
	hm.ObserveTransition(healthcheck.Transition{ID: id("10.0.0.2"), Up: false, Reason: "timeout"})
	hm.ObserveTransition(healthcheck.Transition{ID: id("10.0.0.1"), Up: true, Reason: "ok"})
	hm.ObserveTransition(healthcheck.Transition{ID: id("10.0.0.1"), Up: false, Reason: "refused"})

	want := `
# HELP xdplb_healthcheck_transitions_total Backends that went up or down by their health checks.
# TYPE xdplb_healthcheck_transitions_total counter
xdplb_healthcheck_transitions_total{backend="10.0.0.1",to="down",vip="10.0.0.100:80/tcp"} 2
xdplb_healthcheck_transitions_total{backend="10.0.0.1",to="up",vip="10.0.0.100:80/tcp"} 1
xdplb_healthcheck_transitions_total{backend="10.0.0.2",to="down",vip="10.0.0.100:80/tcp"} 1
xdplb_healthcheck_transitions_total{backend="10.0.0.2",to="up",vip="10.0.0.100:80/tcp"} 0
`
	if err := testutil.CollectAndCompare(hm, strings.NewReader(want), "xdplb_healthcheck_transitions_total"); err != nil {
		t.Error(err)
	}
	want = `
# HELP xdplb_healthcheck_duration_seconds Duration of health-check probes, by check type, failed ones included.
# TYPE xdplb_healthcheck_duration_seconds histogram
xdplb_healthcheck_duration_seconds_bucket{type="http",le="0.0001"} 0
xdplb_healthcheck_duration_seconds_bucket{type="http",le="0.00025"} 0
xdplb_healthcheck_duration_seconds_bucket{type="http",le="0.0005"} 0
xdplb_healthcheck_duration_seconds_bucket{type="http",le="0.001"} 0
xdplb_healthcheck_duration_seconds_bucket{type="http",le="0.0025"} 0
xdplb_healthcheck_duration_seconds_bucket{type="http",le="0.005"} 0
xdplb_healthcheck_duration_seconds_bucket{type="http",le="0.01"} 0
xdplb_healthcheck_duration_seconds_bucket{type="http",le="0.025"} 0
xdplb_healthcheck_duration_seconds_bucket{type="http",le="0.05"} 0
xdplb_healthcheck_duration_seconds_bucket{type="http",le="0.1"} 0
xdplb_healthcheck_duration_seconds_bucket{type="http",le="0.25"} 0
xdplb_healthcheck_duration_seconds_bucket{type="http",le="0.5"} 0
xdplb_healthcheck_duration_seconds_bucket{type="http",le="1"} 0
xdplb_healthcheck_duration_seconds_bucket{type="http",le="2.5"} 0
xdplb_healthcheck_duration_seconds_bucket{type="http",le="5"} 0
xdplb_healthcheck_duration_seconds_bucket{type="http",le="+Inf"} 1
xdplb_healthcheck_duration_seconds_sum{type="http"} 6
xdplb_healthcheck_duration_seconds_count{type="http"} 1
xdplb_healthcheck_duration_seconds_bucket{type="tcp",le="0.0001"} 1
xdplb_healthcheck_duration_seconds_bucket{type="tcp",le="0.00025"} 1
xdplb_healthcheck_duration_seconds_bucket{type="tcp",le="0.0005"} 2
xdplb_healthcheck_duration_seconds_bucket{type="tcp",le="0.001"} 2
xdplb_healthcheck_duration_seconds_bucket{type="tcp",le="0.0025"} 3
xdplb_healthcheck_duration_seconds_bucket{type="tcp",le="0.005"} 3
xdplb_healthcheck_duration_seconds_bucket{type="tcp",le="0.01"} 3
xdplb_healthcheck_duration_seconds_bucket{type="tcp",le="0.025"} 3
xdplb_healthcheck_duration_seconds_bucket{type="tcp",le="0.05"} 3
xdplb_healthcheck_duration_seconds_bucket{type="tcp",le="0.1"} 3
xdplb_healthcheck_duration_seconds_bucket{type="tcp",le="0.25"} 3
xdplb_healthcheck_duration_seconds_bucket{type="tcp",le="0.5"} 3
xdplb_healthcheck_duration_seconds_bucket{type="tcp",le="1"} 4
xdplb_healthcheck_duration_seconds_bucket{type="tcp",le="2.5"} 4
xdplb_healthcheck_duration_seconds_bucket{type="tcp",le="5"} 4
xdplb_healthcheck_duration_seconds_bucket{type="tcp",le="+Inf"} 4
xdplb_healthcheck_duration_seconds_sum{type="tcp"} 0.6023499999999999
xdplb_healthcheck_duration_seconds_count{type="tcp"} 4
`
	if err := testutil.CollectAndCompare(hm, strings.NewReader(want), "xdplb_healthcheck_duration_seconds"); err != nil {
		t.Error(err)
	}
}

// TestCollectorBackendUpFollowsHealth: xdplb_backend_up is 1 only for a
// backend that takes new flows: not when down, not when drained.
func TestCollectorBackendUpFollowsHealth(t *testing.T) {
	f := newHealthFixture(t, testTableSize, "10.0.0.1", "10.0.0.2", "10.0.0.3")
	drain := true
	if err := f.store.SetBackend(vip1, netip.MustParseAddr("10.0.0.3"), 0, model.BackendPatch{Drain: &drain}); err != nil {
		t.Fatal(err)
	}
	f.health.set(vip1, "10.0.0.2", false, "timeout")
	f.reconcile(t)
	want := `
# HELP xdplb_backend_up 1 if the backend takes new flows.
# TYPE xdplb_backend_up gauge
xdplb_backend_up{backend="10.0.0.1",vip="10.0.0.100:80/tcp"} 1
xdplb_backend_up{backend="10.0.0.2",vip="10.0.0.100:80/tcp"} 0
xdplb_backend_up{backend="10.0.0.3",vip="10.0.0.100:80/tcp"} 0
`
	c := NewCollector(f.dp, f.store, f.rec, "dev", nil)
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "xdplb_backend_up"); err != nil {
		t.Error(err)
	}
}

// With the store, every checked backend has both directions from the
// first scrape, at 0; a backend removed, or a VIP's check, loses its
// series; a VIP without a check has none.
func TestHealthMetricsFollowState(t *testing.T) {
	f := newRecFixture(t, nil)
	check := &model.HealthCheck{Type: model.CheckTCP}
	vip2 := model.VIPID{Addr: netip.MustParseAddr("2001:db8::100"), Port: 53, Protocol: model.UDP}
	for _, v := range []model.VIP{
		{Address: vip1.Addr, Port: vip1.Port, Protocol: vip1.Protocol, Mode: model.ModeNAT, HealthCheck: check,
			Backends: []model.Backend{be("10.0.0.1", 100), {Address: netip.MustParseAddr("10.0.0.2"), Port: 8080, Weight: 100}}},
		{Address: vip2.Addr, Port: vip2.Port, Protocol: vip2.Protocol, HealthCheck: check, Backends: []model.Backend{be("2001:db8::1", 100)}},
		{Address: netip.MustParseAddr("10.0.0.101"), Port: 80, Protocol: model.TCP, Backends: []model.Backend{be("10.0.0.1", 100)}},
	} {
		if err := f.store.AddVIP(v); err != nil {
			t.Fatal(err)
		}
	}
	hm := NewHealthMetrics(f.store)
	hm.ObserveTransition(healthcheck.Transition{ID: model.HealthTargetID(vip2, netip.MustParseAddr("2001:db8::1"), 0), Up: false})
	want := `
# HELP xdplb_healthcheck_transitions_total Backends that went up or down by their health checks.
# TYPE xdplb_healthcheck_transitions_total counter
xdplb_healthcheck_transitions_total{backend="10.0.0.1",to="down",vip="10.0.0.100:80/tcp"} 0
xdplb_healthcheck_transitions_total{backend="10.0.0.1",to="up",vip="10.0.0.100:80/tcp"} 0
xdplb_healthcheck_transitions_total{backend="10.0.0.2:8080",to="down",vip="10.0.0.100:80/tcp"} 0
xdplb_healthcheck_transitions_total{backend="10.0.0.2:8080",to="up",vip="10.0.0.100:80/tcp"} 0
xdplb_healthcheck_transitions_total{backend="2001:db8::1",to="down",vip="[2001:db8::100]:53/udp"} 1
xdplb_healthcheck_transitions_total{backend="2001:db8::1",to="up",vip="[2001:db8::100]:53/udp"} 0
`
	if err := testutil.CollectAndCompare(hm, strings.NewReader(want), "xdplb_healthcheck_transitions_total"); err != nil {
		t.Error(err)
	}
	if err := f.store.DeleteBackend(vip1, netip.MustParseAddr("10.0.0.2"), 8080); err != nil {
		t.Fatal(err)
	}
	if err := f.store.DeleteVIP(vip2); err != nil {
		t.Fatal(err)
	}
	want = `
# HELP xdplb_healthcheck_transitions_total Backends that went up or down by their health checks.
# TYPE xdplb_healthcheck_transitions_total counter
xdplb_healthcheck_transitions_total{backend="10.0.0.1",to="down",vip="10.0.0.100:80/tcp"} 0
xdplb_healthcheck_transitions_total{backend="10.0.0.1",to="up",vip="10.0.0.100:80/tcp"} 0
`
	if err := testutil.CollectAndCompare(hm, strings.NewReader(want), "xdplb_healthcheck_transitions_total"); err != nil {
		t.Error(err)
	}
}

// The label values a scrape keeps between scrapes (nameCache) follow the
// state: a backend added after a scrape has its name
// in the next one.
func TestCollectorNamesFollowState(t *testing.T) {
	f := newHealthFixture(t, testTableSize, "10.0.0.1")
	c := NewCollector(f.dp, f.store, f.rec, "dev", nil)
	want := `
# HELP xdplb_backend_weight Configured weight of a backend.
# TYPE xdplb_backend_weight gauge
xdplb_backend_weight{backend="10.0.0.1",vip="10.0.0.100:80/tcp"} 100
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "xdplb_backend_weight"); err != nil {
		t.Error(err)
	}
	if err := f.store.AddBackend(vip1, model.Backend{Address: netip.MustParseAddr("10.0.0.2"), Port: 80, Weight: 50}); err != nil {
		t.Fatal(err)
	}
	want += `xdplb_backend_weight{backend="10.0.0.2",vip="10.0.0.100:80/tcp"} 50
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "xdplb_backend_weight"); err != nil {
		t.Error(err)
	}
}
