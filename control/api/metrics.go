package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/control/reconcile"
	"github.com/xdplb/xdplb/control/state"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/xdplb/xdplb/healthcheck"
)

// DefaultMetricsAddr is where /metrics, /healthz and /readyz are served
// unless told otherwise.
const DefaultMetricsAddr = "127.0.0.1:9642"

var (
	descVIPPackets = prometheus.NewDesc("xdplb_vip_packets_total", "Packets received for a VIP.", []string{"vip"}, nil)
	descVIPBytes   = prometheus.NewDesc("xdplb_vip_bytes_total", "Bytes received for a VIP.", []string{"vip"}, nil)
	descVIPFlows   = prometheus.NewDesc("xdplb_vip_flows_total", "New flows scheduled for a VIP.", []string{"vip"}, nil)
	descVIPICMP    = prometheus.NewDesc("xdplb_vip_icmp_errors_total", "ICMP errors about a VIP's flows forwarded to their backend or translated back to their client.", []string{"vip"}, nil)
	descVIPDrops   = prometheus.NewDesc("xdplb_vip_drops_total", "New flows of a VIP dropped, per reason (also in xdplb_drops_total).", []string{"vip", "reason"}, nil)
	descBePackets  = prometheus.NewDesc("xdplb_backend_packets_total", "Packets forwarded to a backend.", []string{"vip", "backend"}, nil)
	descBeBytes    = prometheus.NewDesc("xdplb_backend_bytes_total", "Bytes forwarded to a backend.", []string{"vip", "backend"}, nil)
	descBeFlows    = prometheus.NewDesc("xdplb_backend_flows_total", "New flows scheduled to a backend.", []string{"vip", "backend"}, nil)
	descBeUp       = prometheus.NewDesc("xdplb_backend_up", "1 if the backend takes new flows.", []string{"vip", "backend"}, nil)
	descBeWeight   = prometheus.NewDesc("xdplb_backend_weight", "Configured weight of a backend.", []string{"vip", "backend"}, nil)
	descActions    = prometheus.NewDesc("xdplb_xdp_actions_total", "XDP verdicts returned, per interface.", []string{"iface", "action"}, nil)
	descTxErrors   = prometheus.NewDesc("xdplb_xdp_tx_errors_total", "Frames returned with XDP_TX or redirected that the interface's driver refused to send (lost), from its ethtool statistics; absent where the driver counts none.", []string{"iface"}, nil)
	descDrops      = prometheus.NewDesc("xdplb_drops_total", "Packets dropped by the XDP program, per reason.", []string{"reason"}, nil)
	descConntrack  = prometheus.NewDesc("xdplb_conntrack_entries", "Entries in the connection table.", nil, nil)
	descSNATPorts  = prometheus.NewDesc("xdplb_snat_ports_in_use", "Full-NAT source ports held by live flows, as of the last NAT table sweep.", nil, nil)
	descEvents     = prometheus.NewDesc("xdplb_events_total", "Data-plane events that are not drops, per event.", []string{"event"}, nil)
	descReconciles = prometheus.NewDesc("xdplb_reconciles_total", "Reconciler passes by result.", []string{"result"}, nil)
	descBuildInfo  = prometheus.NewDesc("xdplb_build_info", "Version of the running daemon.", []string{"version"}, nil)
	descScrapeErrs = prometheus.NewDesc("xdplb_scrape_errors_total", "Errors reading the data plane while serving /metrics.", nil, nil)
	// Backup pools (issue 24): see model.ActivePriority.
	descVIPPriority = prometheus.NewDesc("xdplb_vip_active_priority",
		"Worst (highest) priority of the backend pools taking a VIP's new flows: 0 on its primary pool; -1 when no pool takes them (its fallback, or dropped).",
		[]string{"vip"}, nil)
	// Schedulers (issue 13): which one each VIP has, and its persistence.
	descVIPInfo = prometheus.NewDesc("xdplb_vip_info",
		"1 for each configured VIP, labelled with its forwarding mode, its scheduler and its persistence in seconds (0: none).",
		[]string{"vip", "mode", "scheduler", "persistence"}, nil)
)

// The BGP speaker's (issue 17), from BGPCollector.
var (
	descBGPUp     = prometheus.NewDesc("xdplb_bgp_session_up", "1 if the BGP session to a peer is established, else 0.", []string{"peer"}, nil)
	descBGPRoutes = prometheus.NewDesc("xdplb_bgp_routes_announced", "VIP host routes the BGP speaker offers its peers (each established session of the route's family carries it).", nil, nil)
)

// BGPCollector exposes the BGP speaker's sessions and routes, read at
// scrape time.
type BGPCollector struct {
	src BGPSource
	log *slog.Logger
}

// NewBGPCollector returns a collector of src.
func NewBGPCollector(src BGPSource, log *slog.Logger) *BGPCollector {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &BGPCollector{src: src, log: log}
}

// Describe implements prometheus.Collector.
func (c *BGPCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descBGPUp
	ch <- descBGPRoutes
}

// Collect implements prometheus.Collector. A speaker that cannot be read
// gives no metric (a scrape must not say a session is down when it does
// not know) and a warning.
func (c *BGPCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := c.src.BGPStatus(ctx)
	if err != nil {
		c.log.Warn("metrics scrape: bgp status", "err", err)
		return
	}
	for _, s := range st.Sessions {
		up := 0.0
		if s.Up {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(descBGPUp, prometheus.GaugeValue, up, s.Peer.String())
	}
	ch <- prometheus.MustNewConstMetric(descBGPRoutes, prometheus.GaugeValue, float64(len(st.Routes)))
}

// Collector exposes the data plane's counters; it reads the maps at scrape
// time, so it holds no copies that could drift.
type Collector struct {
	dp      reconcile.Datapath
	src     *state.Store
	rec     *reconcile.Reconciler
	version string
	ifname  func(int) string
	errs    atomic.Uint64
	log     *slog.Logger
}

// NewCollector returns a collector; rec may be nil (no reconcile counts).
func NewCollector(dp reconcile.Datapath, src *state.Store, rec *reconcile.Reconciler, version string, log *slog.Logger) *Collector {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Collector{dp: dp, src: src, rec: rec, version: version, ifname: IfaceName, log: log}
}

// IfaceName names an interface by index for labels; index 0 collects the
// interfaces beyond the counter array.
func IfaceName(ifindex int) string {
	if ifindex == 0 {
		return "other"
	}
	if ifi, err := net.InterfaceByIndex(ifindex); err == nil {
		return ifi.Name
	}
	return "if" + strconv.Itoa(ifindex)
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descVIPPackets, descVIPBytes, descVIPFlows, descVIPICMP, descVIPDrops, descBePackets, descBeBytes,
		descBeFlows, descBeUp, descBeWeight, descActions, descTxErrors, descDrops, descConntrack, descSNATPorts, descEvents,
		descReconciles, descBuildInfo, descScrapeErrs} {
		ch <- d
	}
	ch <- descVIPPriority
	ch <- descVIPInfo
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	if err := c.collect(ch); err != nil {
		c.errs.Add(1)
		c.log.Warn("metrics scrape", "err", err)
	}
	ch <- prometheus.MustNewConstMetric(descScrapeErrs, prometheus.CounterValue, float64(c.errs.Load()))
	ch <- prometheus.MustNewConstMetric(descBuildInfo, prometheus.GaugeValue, 1, c.version)
	if c.rec != nil {
		ok, failed := c.rec.Counts()
		ch <- prometheus.MustNewConstMetric(descReconciles, prometheus.CounterValue, float64(ok), "ok")
		ch <- prometheus.MustNewConstMetric(descReconciles, prometheus.CounterValue, float64(failed), "error")
	}
}

func (c *Collector) collect(ch chan<- prometheus.Metric) error {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	st, _ := c.src.Snapshot()
	snap, err := snapshot(c.dp, st, c.ifname)
	errs := []error{err}
	for _, vs := range snap.VIPs {
		if vs.mapped {
			counter(descVIPPackets, vs.Packets, vs.VIP)
			counter(descVIPBytes, vs.Bytes, vs.VIP)
			counter(descVIPFlows, vs.Flows, vs.VIP)
			counter(descVIPICMP, vs.ICMPErrors, vs.VIP)
			for reason, n := range vs.Drops {
				counter(descVIPDrops, n, vs.VIP, reason)
			}
		}
		for _, bs := range vs.Backends {
			if bs.mapped {
				l := model.BackendName(bs.Address, bs.Port)
				counter(descBePackets, bs.Packets, vs.VIP, l)
				counter(descBeBytes, bs.Bytes, vs.VIP, l)
				counter(descBeFlows, bs.Flows, vs.VIP, l)
			}
		}
	}
	for _, v := range st.VIPs {
		for _, b := range v.Backends {
			l := model.BackendName(b.Address, b.Port)
			ch <- prometheus.MustNewConstMetric(descBeWeight, prometheus.GaugeValue, float64(b.Weight), v.ID().String(), l)
			up := 0.0
			if c.rec != nil {
				if bi, ok := c.rec.Backend(v.ID(), b.Address, b.Port); ok && bi.State == model.BackendUp {
					up = 1
				}
			}
			ch <- prometheus.MustNewConstMetric(descBeUp, prometheus.GaugeValue, up, v.ID().String(), l)
		}
	}
	c.collectPools(ch, st)
	sum := map[[2]string]uint64{} // two ifindexes may share a name label ("other")
	var order [][2]string
	for _, a := range snap.Actions {
		k := [2]string{a.Iface, a.Action}
		if _, ok := sum[k]; !ok {
			order = append(order, k)
		}
		sum[k] += a.Count
	}
	for _, k := range order {
		counter(descActions, sum[k], k[0], k[1])
	}
	// Their own metric, not an action: they are a part of tx and
	// redirect, and a label value of xdplb_xdp_actions_total would be
	// counted twice by every sum over its actions.
	for _, e := range snap.TxErrors {
		counter(descTxErrors, e.Count, e.Iface)
	}
	for reason, n := range snap.Drops {
		counter(descDrops, n, reason)
	}
	if n, err := c.dp.ConntrackEntries(); err != nil {
		errs = append(errs, fmt.Errorf("count conntrack entries: %w", err))
	} else {
		ch <- prometheus.MustNewConstMetric(descConntrack, prometheus.GaugeValue, float64(n))
	}
	c.collectNAT(ch)
	return errors.Join(errs...)
}

// collectNAT exports the NAT table's gauge and the data plane's events.
// A data plane may lack them: a read that fails leaves its family out and
// is logged at debug, and the scrape goes on as if it had none.
// collectPools exports the active priority of each VIP the reconciler
// planned.
func (c *Collector) collectPools(ch chan<- prometheus.Metric, st model.State) {
	for _, v := range st.VIPs {
		ch <- prometheus.MustNewConstMetric(descVIPInfo, prometheus.GaugeValue, 1, v.ID().String(), string(v.Mode), string(v.Scheduler),
			strconv.FormatInt(int64(time.Duration(v.Persistence)/time.Second), 10))
	}
	if c.rec == nil {
		return
	}
	for _, v := range st.VIPs {
		if pools, ok := c.rec.ActivePools(v.ID()); ok {
			ch <- prometheus.MustNewConstMetric(descVIPPriority, prometheus.GaugeValue, float64(model.ActivePriority(pools)), v.ID().String())
		}
	}
}

func (c *Collector) collectNAT(ch chan<- prometheus.Metric) {
	if st, err := c.dp.NATStats(); err != nil {
		c.log.Debug("metrics: no nat stats", "err", err)
	} else {
		ch <- prometheus.MustNewConstMetric(descSNATPorts, prometheus.GaugeValue, float64(st.SNATPortsInUse))
	}
	events, err := c.dp.EventCounters()
	if err != nil {
		c.log.Debug("metrics: no event counters", "err", err)
		return
	}
	for name, n := range events {
		ch <- prometheus.MustNewConstMetric(descEvents, prometheus.CounterValue, float64(n), name)
	}
}

// ProbeBuckets are the bounds of xdplb_healthcheck_duration_seconds: from
// 100µs (a TCP connect on the same segment) to 5s (the longest sensible
// timeout), about three per decade.
var ProbeBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}

// HealthMetrics counts what the health checker does; it is fed by the
// healthcheck.Manager's OnProbe and OnTransition hooks, as the events
// happen, since there is no map to read at scrape time.
type HealthMetrics struct {
	duration *prometheus.HistogramVec
	src      *state.Store // nil: no pruning, no series before a transition

	mu          sync.Mutex
	transitions map[string]*[2]uint64 // by target id: to down, to up
}

var descTransitions = prometheus.NewDesc("xdplb_healthcheck_transitions_total",
	"Backends that went up or down by their health checks.", []string{"vip", "backend", "to"}, nil)

// NewHealthMetrics returns the health-check metrics, all at zero. With
// src, every checked backend of its state has both directions of
// xdplb_healthcheck_transitions_total from the first scrape, at 0 so that
// rate() and alerts see a 0 rather than no series, and a backend gone
// from it (or whose VIP has no check any more) loses its series.
func NewHealthMetrics(src *state.Store) *HealthMetrics {
	return &HealthMetrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "xdplb_healthcheck_duration_seconds",
			Help:    "Duration of health-check probes, by check type, failed ones included.",
			Buckets: ProbeBuckets,
		}, []string{"type"}),
		src:         src,
		transitions: map[string]*[2]uint64{},
	}
}

// ObserveProbe is a healthcheck.Options.OnProbe.
func (m *HealthMetrics) ObserveProbe(k healthcheck.Kind, d time.Duration, _ bool) {
	m.duration.WithLabelValues(string(k)).Observe(d.Seconds())
}

// ObserveTransition is a healthcheck.Options.OnTransition; t.ID is a
// model.HealthTargetID.
func (m *HealthMetrics) ObserveTransition(t healthcheck.Transition) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := m.transitions[t.ID]
	if n == nil {
		n = new([2]uint64)
		m.transitions[t.ID] = n
	}
	n[boolIndex(t.Up)]++
}

func boolIndex(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Describe implements prometheus.Collector.
func (m *HealthMetrics) Describe(ch chan<- *prometheus.Desc) {
	m.duration.Describe(ch)
	ch <- descTransitions
}

// Collect implements prometheus.Collector.
func (m *HealthMetrics) Collect(ch chan<- prometheus.Metric) {
	m.duration.Collect(ch)
	var checked map[string]bool
	if m.src != nil {
		checked = checkedTargets(m.src.State())
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if checked != nil {
		for id := range m.transitions {
			if !checked[id] {
				delete(m.transitions, id)
			}
		}
		for id := range checked {
			if m.transitions[id] == nil {
				m.transitions[id] = new([2]uint64)
			}
		}
	}
	for id, n := range m.transitions {
		vip, backend, ok := model.SplitHealthTargetID(id)
		if !ok {
			vip = id
		}
		ch <- prometheus.MustNewConstMetric(descTransitions, prometheus.CounterValue, float64(n[0]), vip, backend, "down")
		ch <- prometheus.MustNewConstMetric(descTransitions, prometheus.CounterValue, float64(n[1]), vip, backend, "up")
	}
}

// checkedTargets are the health-check targets of st, by
// model.HealthTargetID: the backends of the VIPs that have a check.
func checkedTargets(st model.State) map[string]bool {
	ids := map[string]bool{}
	for i := range st.VIPs {
		v := &st.VIPs[i]
		for _, b := range v.Backends {
			if _, ok := model.HealthSpec(v, b); ok {
				ids[model.HealthTargetID(v.ID(), b.Address, b.Port)] = true
			}
		}
	}
	return ids
}

// MetricsServer serves /metrics, /healthz and /readyz on one listener,
// from the daemon's start: /healthz answers 200 while the process serves,
// /readyz 503 until SetReady (the data plane loaded and the first
// reconcile applied), then 200. /metrics serves the Go runtime and process
// collectors and whatever is registered, the data plane's counters once
// they exist. It uses its own registry: the process-global one holds
// nothing of ours.
type MetricsServer struct {
	reg   *prometheus.Registry
	ready atomic.Bool
	log   *slog.Logger
}

// NewMetricsServer returns a server of the Go runtime and process
// collectors, not ready.
func NewMetricsServer(log *slog.Logger) *MetricsServer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return &MetricsServer{reg: reg, log: log}
}

// Register adds collectors to /metrics; it may be called while serving.
func (s *MetricsServer) Register(cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := s.reg.Register(c); err != nil {
			return fmt.Errorf("register collector: %w", err)
		}
	}
	return nil
}

// SetReady sets what /readyz answers.
func (s *MetricsServer) SetReady(ready bool) { s.ready.Store(ready) }

// Handler serves the three paths.
func (s *MetricsServer) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{ErrorLog: slogErrorLog{s.log}}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !s.ready.Load() {
			http.Error(w, "not ready: the data plane is loading or its first reconcile is not applied", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	return mux
}

// Serve serves Handler on ln until ctx is done.
func (s *MetricsServer) Serve(ctx context.Context, ln net.Listener) error {
	return serveUntilDone(ctx, ln, s.Handler(), "metrics")
}

type slogErrorLog struct{ log *slog.Logger }

func (l slogErrorLog) Println(v ...any) {
	if l.log != nil {
		l.log.Warn("metrics handler", "err", fmt.Sprint(v...))
	}
}
