package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"gopkg.in/yaml.v3"

	"github.com/xdplb/xdplb/healthcheck"
	"github.com/xdplb/xdplb/internal/testutil"
	"github.com/xdplb/xdplb/loader"
)

// monitoringDir holds the alert rules and the dashboard (docs/monitoring).
var monitoringDir = filepath.Join("..", "..", "docs", "monitoring")

// exportedMetrics are the names /metrics can serve: the collectors' and,
// for histograms, their series; plus Prometheus's own up.
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	ch := make(chan *prometheus.Desc, 100)
	go func() {
		NewCollector(nil, nil, nil, "", nil).Describe(ch)
		(&BGPCollector{}).Describe(ch)
		NewHealthMetrics(nil).Describe(ch)
		collectors.NewGoCollector().Describe(ch)
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}).Describe(ch)
		close(ch)
	}()
	re := regexp.MustCompile(`fqName: "([^"]+)"`)
	names := map[string]bool{"up": true}
	for d := range ch {
		m := re.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("desc without a name: %s", d)
		}
		names[m[1]] = true
		for _, s := range []string{"_bucket", "_count", "_sum"} {
			names[m[1]+s] = true
		}
	}
	return names
}

// metricRE finds the metric names an expression uses.
var metricRE = regexp.MustCompile(`\b((?:xdplb|process|go)_[a-z0-9_]+\b|up\{)`)

func checkNames(t *testing.T, where, expr string, exported map[string]bool) {
	t.Helper()
	ms := metricRE.FindAllStringSubmatch(expr, -1)
	if len(ms) == 0 {
		t.Errorf("%s: no metric in %q", where, expr)
	}
	for _, m := range ms {
		if name := strings.TrimSuffix(m[1], "{"); !exported[name] {
			t.Errorf("%s: %s is not a metric xdplb exports (%q)", where, name, expr)
		}
	}
}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// The alert rules load in Prometheus (promtool check rules), fire as
// alerts_test.yaml says (promtool test rules), use only metrics xdplb
// exports, and each has a severity, a summary and a description that name
// what they are about.
func TestAlertRules(t *testing.T) {
	exported := exportedMetrics(t)
	b, err := os.ReadFile(filepath.Join(monitoringDir, "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := yaml.Unmarshal(b, &rf); err != nil {
		t.Fatal(err)
	}
	var alerts []string
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
			checkNames(t, r.Alert, r.Expr, exported)
			if s := r.Labels["severity"]; s != "critical" && s != "warning" {
				t.Errorf("%s: severity %q, want critical or warning", r.Alert, s)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: want a summary and a description", r.Alert)
			}
			// What the alert is about, by the labels its expression keeps.
			for _, l := range []string{"vip", "backend", "reason", "iface"} {
				if strings.Contains(r.Expr, l) && regexp.MustCompile(`\b(by|on) \([^)]*\b`+l+`\b`).MatchString(r.Expr) &&
					!strings.Contains(r.Annotations["summary"], "$labels."+l) {
					t.Errorf("%s: keeps the label %s but its summary does not name it", r.Alert, l)
				}
			}
		}
	}
	for _, want := range []string{"XdplbDaemonDown", "XdplbBackendDown", "XdplbVIPNoHealthyBackend", "XdplbVIPDegraded",
		"XdplbDropsRising", "XdplbConntrackNearlyFull", "XdplbReconcileErrors", "XdplbBackendFlapping"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("no alert %s in alerts.yaml", want)
		}
	}

	promtool := testutil.RequireTool(t, "promtool")
	for _, args := range [][]string{{"check", "rules", "alerts.yaml"}, {"test", "rules", "alerts_test.yaml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = monitoringDir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// The dashboard is valid JSON, its expressions are valid PromQL (checked
// by promtool as recording rules), use only metrics xdplb exports, and it
// shows what the issue asks for.
func TestDashboard(t *testing.T) {
	exported := exportedMetrics(t)
	b, err := os.ReadFile(filepath.Join(monitoringDir, "dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	exprs := testutil.DashboardExprs(t, b, "1m")
	if len(exprs) < 10 {
		t.Fatalf("%d expressions in the dashboard", len(exprs))
	}
	var all strings.Builder
	rules := "groups:\n  - name: dashboard\n    rules:\n"
	i := 0
	for where, e := range exprs {
		checkNames(t, where, e, exported)
		if strings.Contains(e, "$") {
			t.Errorf("%s: a variable left in %q", where, e)
		}
		all.WriteString(e + "\n")
		i++
		q, _ := json.Marshal(e) // a JSON string is a YAML string
		rules += fmt.Sprintf("      - record: dashboard:expr%d\n        expr: %s\n", i, q)
	}
	for _, m := range []string{"xdplb_vip_packets_total", "xdplb_backend_bytes_total", "xdplb_vip_flows_total", "xdplb_backend_up",
		"xdplb_drops_total", "xdplb_xdp_actions_total", "xdplb_conntrack_entries", "xdplb_conntrack_capacity",
		"xdplb_reconciles_total", "xdplb_reconcile_duration_seconds_bucket", "xdplb_healthcheck_duration_seconds_bucket"} {
		if !strings.Contains(all.String(), m+"{") {
			t.Errorf("the dashboard does not show %s", m)
		}
	}
	promtool := testutil.RequireTool(t, "promtool")
	f := filepath.Join(t.TempDir(), "dashboard-rules.yaml")
	if err := os.WriteFile(f, []byte(rules), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "rules", f).CombinedOutput(); err != nil {
		t.Errorf("the dashboard's expressions as rules: promtool check rules: %v\n%s\n%s", err, out, rules)
	}
}

// A scrape of every collector passes promtool check metrics (the names,
// types, units and help text Prometheus's linter wants). The e2e test
// TestPrometheus does the same on a live daemon's scrape.
func TestPromtoolCheckMetrics(t *testing.T) {
	promtool := testutil.RequireTool(t, "promtool")
	f := newHealthFixture(t, 251, "10.0.0.1", "10.0.0.2")
	f.dp.SetVIPCounters(1, loader.Counters{Packets: 10, Bytes: 1500, Flows: 3})
	f.dp.SetDrops("no_backend", 5)
	f.dp.SetEvent("fib_no_neigh", 3)
	srv := NewMetricsServer(nil)
	hm := NewHealthMetrics(f.store)
	hm.ObserveProbe(healthcheck.TCP, 3*time.Millisecond, true)
	if err := srv.Register(NewCollector(f.dp, f.store, f.rec, "v1.2.3", nil), hm); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "xdplb_vip_packets_total") {
		t.Fatalf("scrape: %d\n%s", rec.Code, rec.Body.String())
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = rec.Body
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}
