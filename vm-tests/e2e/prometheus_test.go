package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xdplb/xdplb/internal/lab"
	"github.com/xdplb/xdplb/internal/testutil"
)

// monitoringDir holds the alert rules and the dashboard the test loads.
var monitoringDir = filepath.Join("..", "..", "docs", "monitoring")

// promServer is a Prometheus of the test's own, in the LB's namespace (where
// the daemon's /metrics listens on loopback), on 127.0.0.1 there.
type promServer struct {
	t    *testing.T
	addr string
	http *http.Client
	proc *lab.Process
}

// startPrometheus starts Debian's prometheus inside n's namespace on a free
// loopback port, with a temporary config and storage: the daemon at
// target scraped every second as job "xdplb", docs/monitoring/alerts.yaml
// evaluated every second. It is stopped (SIGTERM, then SIGKILL) when the
// test ends, whichever way; if the test process dies, the kernel sends it
// SIGTERM (lab.StartProcess).
func startPrometheus(t *testing.T, ctx context.Context, n *lab.Node, bin, target string) *promServer {
	t.Helper()
	rules, err := filepath.Abs(filepath.Join(monitoringDir, "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - %s
scrape_configs:
  - job_name: xdplb
    static_configs:
      - targets: [%q]
`, rules, target)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var port int
	err = n.Do(func() error {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		port = l.Addr().(*net.TCPAddr).Port
		return l.Close()
	})
	if err != nil {
		t.Fatalf("free port in %s: %v", n.NetNS, err)
	}
	p := &promServer{t: t, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		http: &http.Client{Transport: &http.Transport{DialContext: n.DialContext, DisableKeepAlives: true}, Timeout: lab.Scale(10 * time.Second)}}
	p.proc, err = n.StartProcess(lab.ProcessOptions{LogPath: filepath.Join(dir, "prometheus.log")}, bin,
		"--config.file", filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path", filepath.Join(dir, "data"),
		"--web.listen-address", p.addr,
		"--log.level", "warn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.proc.Stop(); err != nil {
			t.Errorf("stop prometheus: %v", err)
		}
		if t.Failed() {
			t.Logf("prometheus log:\n%s", p.proc.LogTail(40))
		}
	})
	deadline := time.Now().Add(lab.Scale(30 * time.Second))
	for {
		if code, _, err := p.get(ctx, "/-/ready"); err == nil && code == http.StatusOK {
			return p
		}
		if p.proc.Exited() || time.Now().After(deadline) {
			t.Fatalf("prometheus not ready at %s in %s; log:\n%s", p.addr, n.NetNS, p.proc.LogTail(40))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (p *promServer) get(ctx context.Context, path string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.addr+path, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := p.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// promSample is one series of an instant query's answer.
type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

func (s promSample) float() float64 {
	v, _ := s.Value[1].(string)
	f, _ := strconv.ParseFloat(v, 64)
	return f
}

// query evaluates expr now through the HTTP API.
func (p *promServer) query(ctx context.Context, expr string) ([]promSample, error) {
	code, b, err := p.get(ctx, "/api/v1/query?query="+url.QueryEscape(expr))
	if err != nil {
		return nil, err
	}
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string       `json:"resultType"`
			Result     []promSample `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("query %q: %d %s: %w", expr, code, b, err)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("query %q: %s", expr, r.Error)
	}
	if r.Data.ResultType != "vector" {
		return nil, fmt.Errorf("query %q: a %s, want a vector", expr, r.Data.ResultType)
	}
	return r.Data.Result, nil
}

// scalar is the value of the one series expr gives.
func (p *promServer) scalar(ctx context.Context, expr string) (float64, error) {
	res, err := p.query(ctx, expr)
	if err != nil {
		return 0, err
	}
	if len(res) != 1 {
		return 0, fmt.Errorf("query %q: %d series, want 1: %v", expr, len(res), res)
	}
	return res[0].float(), nil
}

type promAlert struct {
	Labels map[string]string `json:"labels"`
	State  string            `json:"state"`
}

func (p *promServer) alerts(ctx context.Context) ([]promAlert, error) {
	_, b, err := p.get(ctx, "/api/v1/alerts")
	if err != nil {
		return nil, err
	}
	var r struct {
		Data struct {
			Alerts []promAlert `json:"alerts"`
		} `json:"data"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("alerts: %s: %w", b, err)
	}
	return r.Data.Alerts, nil
}

// TestPrometheus runs a real Prometheus (Debian's) against the daemon in
// the lab while traffic flows, with docs/monitoring/alerts.yaml loaded:
// the traffic counters queried with PromQL match what the client sent,
// promtool check metrics passes on a live scrape, every expression of
// docs/monitoring/dashboard.json returns series, and a stopped backend
// fires XdplbBackendDown naming it.
func TestPrometheus(t *testing.T) {
	testutil.RequireRoot(t)
	promBin := testutil.RequireTool(t, "prometheus")
	promtool := testutil.RequireTool(t, "promtool")
	e := setup(t)
	target, vip := e.addCheckedVIP()
	ctx, cancel := context.WithTimeout(context.Background(), lab.Scale(3*time.Minute))
	defer cancel()
	prom := startPrometheus(t, ctx, e.lab.LB, promBin, e.d.MetricsAddr)

	// The rules are loaded and the daemon is scraped.
	waitFor(t, lab.Scale(15*time.Second), "the daemon scraped (up == 1) with the rules loaded", func() error {
		up, err := prom.scalar(ctx, `up{job="xdplb"}`)
		if err != nil || up != 1 {
			return fmt.Errorf("up = %v, %v", up, err)
		}
		_, b, err := prom.get(ctx, "/api/v1/rules")
		if err != nil || !strings.Contains(string(b), `"XdplbBackendDown"`) {
			return fmt.Errorf("rules: %v %.200s", err, b)
		}
		return nil
	})

	// Traffic while Prometheus scrapes every second; the client's kernel
	// counts what it sends to the VIP.
	match := fmt.Sprintf("ip daddr %s tcp dport %d", lab.VIP4, lab.HTTPPort)
	if err := e.lab.Client.AddCounters(e.ctx, lab.CounterRule{Name: "tovip", Hook: "output", Match: match}); err != nil {
		t.Fatal(err)
	}
	const conns = 300
	res := e.load(target, conns)
	// The data plane's counters settle once the last FINs have passed.
	var client lab.Counter
	waitFor(t, lab.Scale(5*time.Second), "the daemon's counters to match the client's", func() error {
		var err error
		if client, err = e.lab.Client.ReadCounter(e.ctx, "tovip"); err != nil {
			return err
		}
		vs, ok := lab.VIPStats(e.stats(), vip)
		if !ok || vs.Packets != client.Packets {
			return fmt.Errorf("daemon counted %d packets, client sent %d", vs.Packets, client.Packets)
		}
		return nil
	})
	settled := time.Now()
	// Within one scrape (1 s, plus the scrape itself), PromQL has them.
	within := lab.Scale(3 * time.Second)
	want := map[string]float64{
		fmt.Sprintf(`xdplb_vip_packets_total{job="xdplb",vip=%q}`, vip):                          float64(client.Packets),
		fmt.Sprintf(`xdplb_vip_bytes_total{job="xdplb",vip=%q}`, vip):                            float64(client.Bytes + ethHeader*client.Packets),
		fmt.Sprintf(`xdplb_vip_flows_total{job="xdplb",vip=%q}`, vip):                            conns,
		fmt.Sprintf(`sum(xdplb_backend_flows_total{job="xdplb",vip=%q})`, vip):                   conns,
		fmt.Sprintf(`sum(xdplb_backend_packets_total{job="xdplb",vip=%q})`, vip):                 float64(client.Packets),
		fmt.Sprintf(`sum(xdplb_backend_up{job="xdplb",vip=%q})`, vip):                            float64(len(e.lab.Backends)),
		`sum(xdplb_drops_total{job="xdplb"})`:                                                    0,
		fmt.Sprintf(`xdplb_xdp_actions_total{job="xdplb",iface=%q,action="tx"}`, e.lab.LB.Iface): float64(client.Packets),
	}
	for expr, w := range want {
		waitFor(t, within, "PromQL "+expr+" = "+strconv.FormatFloat(w, 'f', -1, 64), func() error {
			got, err := prom.scalar(ctx, expr)
			if err != nil {
				return err
			}
			if got != w {
				return fmt.Errorf("%s = %v, want %v", expr, got, w)
			}
			return nil
		})
	}
	t.Logf("PromQL matched the client's %d packets (%d IP bytes), %d connections, within %s of the counters settling; by backend %v",
		client.Packets, client.Bytes, conns, time.Since(settled).Round(time.Millisecond), res.ByBackend)
	for _, be := range e.lab.Backends {
		expr := fmt.Sprintf(`xdplb_backend_flows_total{job="xdplb",vip=%q,backend=%q}`, vip, be.IPv4)
		if got, err := prom.scalar(ctx, expr); err != nil || got != float64(res.ByBackend[be.Name]) {
			t.Errorf("%s = %v (%v), want %d (the connections %s answered)", expr, got, err, res.ByBackend[be.Name], be.Name)
		}
	}

	// promtool check metrics on a live scrape.
	body := scrapeText(t, ctx, e)
	cmd := exec.CommandContext(ctx, promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics on a live scrape: %v\n%s", err, out)
	}

	// Every expression of the dashboard returns series.
	b, err := os.ReadFile(filepath.Join(monitoringDir, "dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	// Grafana's intervals as 10s: ten scrapes.
	exprs := testutil.DashboardExprs(t, b, "10s")
	waitFor(t, lab.Scale(15*time.Second), fmt.Sprintf("every one of the dashboard's %d expressions to return series", len(exprs)), func() error {
		var empty []string
		for where, expr := range exprs {
			res, err := prom.query(ctx, expr)
			if err != nil {
				return fmt.Errorf("%s: %w", where, err)
			}
			if len(res) == 0 {
				empty = append(empty, where+": "+expr)
			}
		}
		if len(empty) > 0 {
			return fmt.Errorf("no series:\n  %s", strings.Join(empty, "\n  "))
		}
		return nil
	})

	// A backend stops, traffic goes on: XdplbBackendDown fires for it,
	// and for it alone (its for: is 30 s).
	down := e.lab.Backends[1]
	if err := e.servers[down.Name].Stop(); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	go e.lab.Client.Load(ctx, target, lab.LoadOptions{Requests: 200, Parallel: 2, Timeout: time.Second})
	var firing []promAlert
	waitFor(t, lab.Scale(75*time.Second), "XdplbBackendDown firing for "+down.IPv4.String(), func() error {
		as, err := prom.alerts(ctx)
		if err != nil {
			return err
		}
		firing = nil
		for _, a := range as {
			if a.Labels["alertname"] == "XdplbBackendDown" && a.State == "firing" {
				firing = append(firing, a)
			}
		}
		if len(firing) == 0 {
			return fmt.Errorf("alerts: %+v", as)
		}
		return nil
	})
	t.Logf("XdplbBackendDown firing %s after the backend stopped: %+v", time.Since(stopped).Round(time.Second), firing)
	if len(firing) != 1 || firing[0].Labels["backend"] != down.IPv4.String() || firing[0].Labels["vip"] != vip ||
		firing[0].Labels["severity"] != "warning" {
		t.Errorf("firing XdplbBackendDown alerts %+v, want one for backend %s of %s", firing, down.IPv4, vip)
	}
	if d := time.Since(stopped); d < 30*time.Second {
		t.Errorf("XdplbBackendDown fired %s after the backend stopped, before its for: of 30s", d)
	}
}

// scrapeText fetches the daemon's /metrics as text, from its namespace.
func scrapeText(t *testing.T, ctx context.Context, e *env) string {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DialContext: e.lab.LB.DialContext, DisableKeepAlives: true}, Timeout: lab.Scale(10 * time.Second)}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+e.d.MetricsAddr+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s %v", resp.Status, err)
	}
	return string(b)
}

// waitFor polls check until it returns nil, failing the test with its
// last error after limit.
func waitFor(t *testing.T, limit time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s: %v", limit, what, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
