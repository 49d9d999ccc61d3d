package testutil

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// DashboardExprs returns every PromQL expression of a Grafana dashboard
// (docs/monitoring/dashboard.json), keyed by panel title and ref id, its
// variables replaced: constants by their value, the others (the instance
// and vip selectors) by .*, Grafana's intervals by window. It fails the
// test when the JSON does not parse or holds no expression.
func DashboardExprs(t testing.TB, b []byte, window string) map[string]string {
	t.Helper()
	var d struct {
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				RefID string `json:"refId"`
				Expr  string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("dashboard.json: %v", err)
	}
	var repl []string
	for _, v := range d.Templating.List {
		val := ".*"
		if v.Type == "constant" {
			val = fmt.Sprint(v.Query)
		}
		repl = append(repl, "${"+v.Name+"}", val, "$"+v.Name, val)
	}
	repl = append(repl, "$__rate_interval", window, "$__interval", window, "$__range", window)
	r := strings.NewReplacer(repl...)
	out := map[string]string{}
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			out[p.Title+" "+tg.RefID] = r.Replace(tg.Expr)
		}
	}
	if len(out) == 0 {
		t.Fatal("no expression in dashboard.json")
	}
	return out
}
