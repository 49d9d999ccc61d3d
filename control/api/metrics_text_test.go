package api

import (
	"bufio"
	"bytes"
	"math"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/xdplb/xdplb/healthcheck"
	"github.com/xdplb/xdplb/loader"
)

// The text writer writes what client_golang would for the same samples:
// labels sorted, values escaped, HELP and TYPE.
func TestTextFamiliesAsClientGolang(t *testing.T) {
	f := newFamily("x_total", "Help with \\ and\nnewline.", prometheus.CounterValue, "vip", "backend")
	g := newFamily("y", "A gauge.", prometheus.GaugeValue)
	samples := []struct {
		f   *family
		v   float64
		lvs []string
	}{
		{f, 3, []string{"a", `b"q\` + "\n"}}, {g, 0.25, nil}, {f, 1e20, []string{"c", "d"}},
		// Around the integer path of appendValue: below and at a million,
		// fractions, negative zero, very large.
		{f, 999999, []string{"e", "1"}}, {f, 1e6, []string{"e", "2"}}, {f, 1234567, []string{"e", "3"}},
		{f, 0, []string{"e", "4"}}, {f, math.Copysign(0, -1), []string{"e", "9"}}, {f, 999999.5, []string{"e", "5"}},
		{f, 1 << 53, []string{"e", "6"}}, {f, -7, []string{"e", "7"}}, {f, 1, []string{"e", "8"}},
	}
	tf := newTextFamilies()
	reg := prometheus.NewPedanticRegistry()
	var ms []prometheus.Metric
	for _, s := range samples {
		tf.emit(s.f, s.v, s.lvs...)
		ms = append(ms, prometheus.MustNewConstMetric(s.f.desc, s.f.typ, s.v, s.lvs...))
	}
	reg.MustRegister(constCollector(ms))
	var got bytes.Buffer
	bw := bufio.NewWriter(&got)
	if err := tf.writeTo(bw); err != nil {
		t.Fatal(err)
	}
	bw.Flush()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	enc := expfmt.NewEncoder(&want, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			t.Fatal(err)
		}
	}
	// client_golang sorts series; ours come in emit order: compare sorted lines.
	if g, w := sortedLines(got.String()), sortedLines(want.String()); g != w {
		t.Errorf("text writer:\n%s\nclient_golang:\n%s", got.String(), want.String())
	}
}

type constCollector []prometheus.Metric

func (c constCollector) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(c, ch) }
func (c constCollector) Collect(ch chan<- prometheus.Metric) {
	for _, m := range c {
		ch <- m
	}
}

func sortedLines(s string) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	slicesSort(l)
	return strings.Join(l, "\n")
}

// /metrics serves the same series as the collectors' Collect (what the
// registry of a test or of another program would gather), parsed back.
func TestMetricsTextMatchesCollect(t *testing.T) {
	f := newHealthFixture(t, 251, "10.0.0.1", "10.0.0.2")
	f.dp.SetVIPCounters(1, loader.Counters{Packets: 10, Bytes: 1500, Flows: 3, ICMPErrors: 1})
	f.dp.SetBackendCounters(1, loader.Counters{Packets: 7, Bytes: 700, Flows: 2})
	f.dp.SetActions(loader.ActionCount{Ifindex: 1, Action: "tx", Count: 9})
	f.dp.SetDrops("no_backend", 5)
	f.dp.SetEvent("fib_no_neigh", 3)
	c := NewCollector(f.dp, f.store, f.rec, "v1", nil)
	c.ifname = func(int) string { return "lo" }
	hm := NewHealthMetrics(f.store)
	hm.ObserveProbe(healthcheck.TCP, 1e6, true)

	srv := NewMetricsServer(nil)
	if err := srv.Register(c, hm); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	p := expfmt.NewTextParser(model.UTF8Validation)
	served, err := p.TextToMetricFamilies(strings.NewReader(rec.Body.String()))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, rec.Body.String())
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c, hm)
	gathered, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range gathered {
		s, ok := served[mf.GetName()]
		if !ok {
			t.Errorf("/metrics lacks %s", mf.GetName())
			continue
		}
		var a, b bytes.Buffer
		expfmt.MetricFamilyToText(&a, mf)
		// Sort the served family's series as the registry does.
		expfmt.MetricFamilyToText(&b, s)
		if sortedLines(a.String()) != sortedLines(b.String()) {
			t.Errorf("%s served:\n%s\ncollected:\n%s", mf.GetName(), b.String(), a.String())
		}
	}
}

func slicesSort(l []string) { sort.Strings(l) }
