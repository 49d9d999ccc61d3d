package lab

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Metrics scrapes the daemon's /metrics. The endpoint listens inside the
// daemon's namespace, so the connection is dialled from there.
func (d *Daemon) Metrics(ctx context.Context) (map[string]*dto.MetricFamily, error) {
	tr := &http.Transport{DisableKeepAlives: true, DialContext: d.Node.DialContext}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: Scale(5 * time.Second)}
	url := "http://" + d.MetricsAddr + "/metrics"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s in %s: %w", url, d.Node.NetNS, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("scrape %s: status %s: %s", url, resp.Status, strings.TrimSpace(string(b)))
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: parse: %w", url, err)
	}
	return mfs, nil
}

// MetricValue returns the value of the one series of the named counter,
// gauge or untyped metric whose labels include the given name/value pairs
// (e.g. "vip", "10.200.0.100:80/tcp"). It fails if no series or more than
// one matches.
func MetricValue(mfs map[string]*dto.MetricFamily, name string, labels ...string) (float64, error) {
	if len(labels)%2 != 0 {
		return 0, fmt.Errorf("metric %s: odd number of label arguments %q", name, labels)
	}
	mf, ok := mfs[name]
	if !ok {
		return 0, fmt.Errorf("metric %s not exported", name)
	}
	var (
		v     float64
		found int
	)
	for _, m := range mf.GetMetric() {
		if !hasLabels(m, labels) {
			continue
		}
		found++
		switch {
		case m.Counter != nil:
			v = m.GetCounter().GetValue()
		case m.Gauge != nil:
			v = m.GetGauge().GetValue()
		case m.Untyped != nil:
			v = m.GetUntyped().GetValue()
		default:
			return 0, fmt.Errorf("metric %s is a %s, not a single value", name, mf.GetType())
		}
	}
	if found != 1 {
		return 0, fmt.Errorf("metric %s: %d series match, want 1", Series(name, labels...), found)
	}
	return v, nil
}

func hasLabels(m *dto.Metric, pairs []string) bool {
	for i := 0; i < len(pairs); i += 2 {
		ok := false
		for _, lp := range m.GetLabel() {
			if lp.GetName() == pairs[i] && lp.GetValue() == pairs[i+1] {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// Series names a series as Prometheus writes it: name{label="value",...}.
func Series(name string, labels ...string) string {
	if len(labels) == 0 {
		return name
	}
	var parts []string
	for i := 0; i+1 < len(labels); i += 2 {
		parts = append(parts, fmt.Sprintf("%s=%q", labels[i], labels[i+1]))
	}
	return name + "{" + strings.Join(parts, ",") + "}"
}
