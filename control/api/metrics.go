package api

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/control/reconcile"
	"github.com/xdplb/xdplb/control/state"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/common/expfmt"

	"github.com/xdplb/xdplb/healthcheck"
)

// DefaultMetricsAddr is where /metrics, /healthz and /readyz are served
// unless told otherwise.
const DefaultMetricsAddr = "127.0.0.1:9642"

var (
	famVIPPackets = newFamily("xdplb_vip_packets_total", "Packets received for a VIP.", prometheus.CounterValue, "vip")
	famVIPBytes   = newFamily("xdplb_vip_bytes_total", "Bytes received for a VIP.", prometheus.CounterValue, "vip")
	famVIPFlows   = newFamily("xdplb_vip_flows_total", "New flows scheduled for a VIP.", prometheus.CounterValue, "vip")
	famVIPICMP    = newFamily("xdplb_vip_icmp_errors_total", "ICMP errors about a VIP's flows forwarded to their backend or translated back to their client.", prometheus.CounterValue, "vip")
	famVIPDrops   = newFamily("xdplb_vip_drops_total", "New flows of a VIP dropped, per reason (also in xdplb_drops_total).", prometheus.CounterValue, "vip", "reason")
	famBePackets  = newFamily("xdplb_backend_packets_total", "Packets forwarded to a backend.", prometheus.CounterValue, "vip", "backend")
	famBeBytes    = newFamily("xdplb_backend_bytes_total", "Bytes forwarded to a backend.", prometheus.CounterValue, "vip", "backend")
	famBeFlows    = newFamily("xdplb_backend_flows_total", "New flows scheduled to a backend.", prometheus.CounterValue, "vip", "backend")
	famBeUp       = newFamily("xdplb_backend_up", "1 if the backend takes new flows.", prometheus.GaugeValue, "vip", "backend")
	famBeWeight   = newFamily("xdplb_backend_weight", "Configured weight of a backend.", prometheus.GaugeValue, "vip", "backend")
	famActions    = newFamily("xdplb_xdp_actions_total", "XDP verdicts returned, per interface.", prometheus.CounterValue, "iface", "action")
	famTxErrors   = newFamily("xdplb_xdp_tx_errors_total", "Frames returned with XDP_TX or redirected that the interface's driver refused to send (lost), from its ethtool statistics; absent where the driver counts none.", prometheus.CounterValue, "iface")
	famDrops      = newFamily("xdplb_drops_total", "Packets dropped by the XDP program, per reason.", prometheus.CounterValue, "reason")
	famConntrack  = newFamily("xdplb_conntrack_entries", "Entries in the connection table.", prometheus.GaugeValue)
	famCTCapacity = newFamily("xdplb_conntrack_capacity", "Flows the connection table is sized for (--conntrack-size).", prometheus.GaugeValue)
	famSNATPorts  = newFamily("xdplb_snat_ports_in_use", "Full-NAT source ports held by live flows, as of the last NAT table sweep.", prometheus.GaugeValue)
	famEvents     = newFamily("xdplb_events_total", "Data-plane events that are not drops, per event.", prometheus.CounterValue, "event")
	famReconciles = newFamily("xdplb_reconciles_total", "Reconciler passes by result.", prometheus.CounterValue, "result")
	famBuildInfo  = newFamily("xdplb_build_info", "Version of the running daemon.", prometheus.GaugeValue, "version")
	famScrapeErrs = newFamily("xdplb_scrape_errors_total", "Errors reading the data plane while serving /metrics.", prometheus.CounterValue)
	// Backup pools (issue 24): see model.ActivePriority.
	famVIPPriority = newFamily("xdplb_vip_active_priority",
		"Worst (highest) priority of the backend pools taking a VIP's new flows: 0 on its primary pool; -1 when no pool takes them (its fallback, or dropped).",
		prometheus.GaugeValue, "vip")
	// Schedulers (issue 13): which one each VIP has, and its persistence.
	famVIPInfo = newFamily("xdplb_vip_info",
		"1 for each configured VIP, labelled with its forwarding mode, its scheduler and its persistence in seconds (0: none).",
		prometheus.GaugeValue, "vip", "mode", "scheduler", "persistence")
)

// collectorFamilies are the Collector's, in the order Describe gives them.
var collectorFamilies = []*family{famVIPPackets, famVIPBytes, famVIPFlows, famVIPICMP, famVIPDrops, famBePackets, famBeBytes,
	famBeFlows, famBeUp, famBeWeight, famActions, famTxErrors, famDrops, famConntrack, famCTCapacity, famSNATPorts, famEvents,
	famReconciles, famBuildInfo, famScrapeErrs, famVIPPriority, famVIPInfo}

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
	names   nameCache
	passes  *prometheus.HistogramVec // fed by ObservePass
}

// PassBuckets are the bounds of xdplb_reconcile_duration_seconds: from
// 1ms (a pass after the change of one VIP) to 10s (a full pass of
// thousands of VIPs on a busy host), about three per decade.
var PassBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// NewCollector returns a collector; rec may be nil (no reconcile counts).
// Give rec.SetPassObserver its ObservePass before rec's first pass.
func NewCollector(dp reconcile.Datapath, src *state.Store, rec *reconcile.Reconciler, version string, log *slog.Logger) *Collector {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	passes := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "xdplb_reconcile_duration_seconds",
		Help:    "Duration of reconciler passes, by result (as xdplb_reconciles_total counts them).",
		Buckets: PassBuckets,
	}, []string{"result"})
	// Both results from the first scrape, so that rate() sees a 0.
	passes.WithLabelValues("ok")
	passes.WithLabelValues("error")
	return &Collector{dp: dp, src: src, rec: rec, version: version, ifname: IfaceName, log: log, passes: passes}
}

// ObservePass is a reconcile.Reconciler pass observer.
func (c *Collector) ObservePass(ok bool, took time.Duration) {
	result := "error"
	if ok {
		result = "ok"
	}
	c.passes.WithLabelValues(result).Observe(took.Seconds())
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
	for _, f := range collectorFamilies {
		ch <- f.desc
	}
	c.passes.Describe(ch)
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	c.collectTo(chanEmit(ch))
	c.passes.Collect(ch)
}

// writeText writes the families as /metrics serves them (metrics_text.go).
func (c *Collector) writeText(w *bufio.Writer) error {
	t := newTextFamilies()
	c.collectTo(t.emit)
	return t.writeTo(w)
}

// viaRegistry: the pass histogram (a few series) goes through the
// registry; every other family of the Collector is written as text.
func (c *Collector) viaRegistry() prometheus.Collector { return c.passes }

func (c *Collector) collectTo(emit emitFunc) {
	if err := c.collect(emit); err != nil {
		c.errs.Add(1)
		c.log.Warn("metrics scrape", "err", err)
	}
	emit(famScrapeErrs, float64(c.errs.Load()))
	emit(famBuildInfo, 1, c.version)
	if c.rec != nil {
		ok, failed := c.rec.Counts()
		emit(famReconciles, float64(ok), "ok")
		emit(famReconciles, float64(failed), "error")
	}
}

func (c *Collector) collect(emit emitFunc) error {
	counter := func(f *family, v uint64, labels ...string) { emit(f, float64(v), labels...) }
	st, gen := c.src.Snapshot()
	names := c.names.of(st, gen)
	snap, err := snapshot(c.dp, st, c.ifname)
	errs := []error{err}
	// snapshot gives the VIPs of st in its order, each with its backends
	// and its fallback last, as names has them.
	for i, vs := range snap.VIPs {
		if vs.mapped {
			counter(famVIPPackets, vs.Packets, vs.VIP)
			counter(famVIPBytes, vs.Bytes, vs.VIP)
			counter(famVIPFlows, vs.Flows, vs.VIP)
			counter(famVIPICMP, vs.ICMPErrors, vs.VIP)
			for reason, n := range vs.Drops {
				counter(famVIPDrops, n, vs.VIP, reason)
			}
		}
		for j, bs := range vs.Backends {
			if bs.mapped {
				l := names[i].backends[j]
				counter(famBePackets, bs.Packets, vs.VIP, l)
				counter(famBeBytes, bs.Bytes, vs.VIP, l)
				counter(famBeFlows, bs.Flows, vs.VIP, l)
			}
		}
	}
	// What the reconciler decided, taken once: not a lock per backend,
	// each of which could wait for a whole pass.
	var dec *reconcile.Decisions
	if c.rec != nil {
		d := c.rec.Decisions()
		dec = &d
	}
	for i, v := range st.VIPs {
		vid := names[i].vip
		for j, b := range v.Backends {
			l := names[i].backends[j]
			emit(famBeWeight, float64(b.Weight), vid, l)
			up := 0.0
			if dec != nil {
				if bi, ok := dec.Backend(v.ID(), b.Address, b.Port); ok && bi.State == model.BackendUp {
					up = 1
				}
			}
			emit(famBeUp, up, vid, l)
		}
	}
	collectPools(emit, st, names, dec)
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
		counter(famActions, sum[k], k[0], k[1])
	}
	// Their own metric, not an action: they are a part of tx and
	// redirect, and a label value of xdplb_xdp_actions_total would be
	// counted twice by every sum over its actions.
	for _, e := range snap.TxErrors {
		counter(famTxErrors, e.Count, e.Iface)
	}
	for reason, n := range snap.Drops {
		counter(famDrops, n, reason)
	}
	if n, err := c.dp.ConntrackEntries(); err != nil {
		errs = append(errs, fmt.Errorf("count conntrack entries: %w", err))
	} else {
		emit(famConntrack, float64(n))
	}
	emit(famCTCapacity, float64(c.dp.ConntrackSize()))
	c.collectNAT(emit)
	return errors.Join(errs...)
}

// collectPools exports each VIP's info and the active priority of each
// VIP the reconciler planned (dec nil: no reconciler).
func collectPools(emit emitFunc, st model.State, names []vipNames, dec *reconcile.Decisions) {
	for i, v := range st.VIPs {
		emit(famVIPInfo, 1, names[i].vip, string(v.Mode), string(v.Scheduler),
			strconv.FormatInt(int64(time.Duration(v.Persistence)/time.Second), 10))
	}
	if dec == nil {
		return
	}
	for i, v := range st.VIPs {
		if pools, ok := dec.ActivePools(v.ID()); ok {
			emit(famVIPPriority, float64(model.ActivePriority(pools)), names[i].vip)
		}
	}
}

// collectNAT exports the NAT table's gauge and the data plane's events.
// A data plane may lack them: a read that fails leaves its family out and
// is logged at debug, and the scrape goes on as if it had none.
func (c *Collector) collectNAT(emit emitFunc) {
	if st, err := c.dp.NATStats(); err != nil {
		c.log.Debug("metrics: no nat stats", "err", err)
	} else {
		emit(famSNATPorts, float64(st.SNATPortsInUse))
	}
	events, err := c.dp.EventCounters()
	if err != nil {
		c.log.Debug("metrics: no event counters", "err", err)
		return
	}
	for name, n := range events {
		emit(famEvents, float64(n), name)
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
	names    nameCache    // of src's state

	mu          sync.Mutex
	transitions map[string]*transitionCount // by target id
	scrapes     uint64                      // scrapes of transitions, with src
}

// transitionCount counts a target's transitions: to down, to up.
type transitionCount struct {
	n    [2]uint64
	seen uint64 // the last scrape that found the target checked
}

var famTransitions = newFamily("xdplb_healthcheck_transitions_total",
	"Backends that went up or down by their health checks.", prometheus.CounterValue, "vip", "backend", "to")

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
		transitions: map[string]*transitionCount{},
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
		n = new(transitionCount)
		m.transitions[t.ID] = n
	}
	n.n[boolIndex(t.Up)]++
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
	ch <- famTransitions.desc
}

// Collect implements prometheus.Collector.
func (m *HealthMetrics) Collect(ch chan<- prometheus.Metric) {
	m.duration.Collect(ch)
	m.collectTransitions(chanEmit(ch))
}

// writeText writes the transitions (two series per checked backend) as
// /metrics serves them; the histogram goes through the registry.
func (m *HealthMetrics) writeText(w *bufio.Writer) error {
	t := newTextFamilies()
	m.collectTransitions(t.emit)
	return t.writeTo(w)
}

func (m *HealthMetrics) viaRegistry() prometheus.Collector { return m.duration }

func (m *HealthMetrics) collectTransitions(emit emitFunc) {
	if m.src == nil {
		m.mu.Lock()
		defer m.mu.Unlock()
		for id, n := range m.transitions {
			vip, backend, ok := model.SplitHealthTargetID(id)
			if !ok {
				vip = id
			}
			emitTransitions(emit, n, vip, backend)
		}
		return
	}
	names := m.names.of(m.src.Snapshot())
	m.mu.Lock()
	defer m.mu.Unlock()
	m.scrapes++
	for _, vn := range names {
		// targets is nil for a VIP without a check.
		for j, id := range vn.targets {
			n := m.transitions[id]
			if n == nil {
				n = new(transitionCount)
				m.transitions[id] = n
			}
			n.seen = m.scrapes
			emitTransitions(emit, n, vn.vip, vn.targetBackends[j])
		}
	}
	// A target no longer checked (its backend, or its VIP's check, gone).
	maps.DeleteFunc(m.transitions, func(_ string, n *transitionCount) bool { return n.seen != m.scrapes })
}

func emitTransitions(emit emitFunc, n *transitionCount, vip, backend string) {
	emit(famTransitions, float64(n.n[0]), vip, backend, "down")
	emit(famTransitions, float64(n.n[1]), vip, backend, "up")
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

	mu   sync.Mutex
	text []textCollector // written after the registry's families
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
// Ours (Collector, HealthMetrics) write their large families as text
// themselves (metrics_text.go); the rest goes through the registry.
func (s *MetricsServer) Register(cs ...prometheus.Collector) error {
	for _, c := range cs {
		tc, ok := c.(textCollector)
		if !ok {
			if err := s.reg.Register(c); err != nil {
				return fmt.Errorf("register collector: %w", err)
			}
			continue
		}
		s.mu.Lock()
		dup := slices.Contains(s.text, tc)
		s.mu.Unlock()
		if dup {
			return fmt.Errorf("register collector: %T registered twice", c)
		}
		if r := tc.viaRegistry(); r != nil {
			if err := s.reg.Register(r); err != nil {
				return fmt.Errorf("register collector: %w", err)
			}
		}
		s.mu.Lock()
		s.text = append(s.text, tc)
		s.mu.Unlock()
	}
	return nil
}

// SetReady sets what /readyz answers.
func (s *MetricsServer) SetReady(ready bool) { s.ready.Store(ready) }

// Handler serves the three paths.
func (s *MetricsServer) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", s.serveMetrics)
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

// serveMetrics writes the registry's families and then our own, in the
// text format (version 0.0.4), whatever format the scraper prefers: every
// Prometheus reads it. It is not compressed: gzip would cost more CPU than
// the scrape itself, and a scrape stays on the LB's own network.
func (s *MetricsServer) serveMetrics(w http.ResponseWriter, _ *http.Request) {
	mfs, err := s.reg.Gather()
	if err != nil {
		s.log.Warn("metrics handler", "err", err)
		http.Error(w, "gather metrics: "+err.Error(), http.StatusInternalServerError)
		return
	}
	s.mu.Lock()
	text := slices.Clone(s.text)
	s.mu.Unlock()
	format := expfmt.NewFormat(expfmt.TypeTextPlain)
	w.Header().Set("Content-Type", string(format))
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := expfmt.NewEncoder(bw, format)
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			s.log.Debug("metrics handler: write", "err", err)
			return
		}
	}
	for _, tc := range text {
		if err := tc.writeText(bw); err != nil {
			s.log.Debug("metrics handler: write", "err", err)
			return
		}
	}
	if err := bw.Flush(); err != nil {
		s.log.Debug("metrics handler: write", "err", err)
	}
}

// Serve serves Handler on ln until ctx is done.
func (s *MetricsServer) Serve(ctx context.Context, ln net.Listener) error {
	return serveUntilDone(ctx, ln, s.Handler(), "metrics")
}
