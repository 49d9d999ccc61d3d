package main

import (
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xdplb/xdplb/control/api"
	"github.com/xdplb/xdplb/control/model"
)

// vipJSON is one VIP of `vip list -o json`.
func (l *testDaemon) vipJSON(id string) api.VIPStatus {
	l.t.Helper()
	var vips []api.VIPStatus
	if err := json.Unmarshal([]byte(l.ok("vip", "list", "-o", "json")), &vips); err != nil {
		l.t.Fatal(err)
	}
	for _, v := range vips {
		if v.ID().String() == id {
			return v
		}
	}
	l.t.Fatalf("vip %s not listed", id)
	return api.VIPStatus{}
}

// wantLines checks that out has a line matching each of res, in order,
// starting at its first line.
func wantLines(t *testing.T, what, out string, res ...string) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	for i, re := range res {
		if i >= len(lines) || !regexp.MustCompile(re).MatchString(lines[i]) {
			t.Fatalf("%s line %d: want match %q in\n%s", what, i, re, out)
		}
	}
	if len(lines) != len(res) {
		t.Fatalf("%s: %d lines, want %d:\n%s", what, len(lines), len(res), out)
	}
}

// `vip set` changes only the options given, and no backend entry nor
// table for anything but the mode; a mode change is refused while the VIP
// has open flows, unless forced.
func TestVIPSet(t *testing.T) {
	l := startLab(t)
	const vip = "10.0.0.100:80/tcp"
	l.ok("vip", "add", vip, "--check", "http", "--check-path", "/healthz", "--check-expect", "200-299", "--rise", "3")
	l.ok("backend", "add", vip, "10.0.0.11")
	l.ok("backend", "add", vip, "10.0.0.12", "--weight", "50")
	l.dp.TakeWrites()
	tables := l.dp.LookupTables()

	l.ok("vip", "set", vip, "--check-interval", "2s", "--fall", "4")
	hc := l.vipJSON(vip).HealthCheck
	if hc == nil || hc.Type != model.CheckHTTP || hc.Path != "/healthz" || hc.Expect != "200-299" ||
		hc.Interval != model.Duration(2*time.Second) || hc.Rise != 3 || hc.Fall != 4 {
		t.Fatalf("check after set %+v", hc)
	}
	if w := l.dp.TakeWrites(); len(w) != 0 {
		t.Fatalf("check set wrote %v, want nothing", w)
	}
	// Flags after the argument or before it, as for vip add.
	l.ok("vip", "set", "--scheduler", "sh", vip, "--no-announce", "--check-expect", "200 - 204")
	if w := l.dp.TakeWrites(); !slices.Equal(w, []string{"put-vip 1"}) {
		t.Fatalf("scheduler set wrote %v, want the vip entry only", w)
	}
	v := l.vipJSON(vip)
	if v.Scheduler != model.SchedSH || v.Announce == nil || *v.Announce || v.HealthCheck.Expect != "200-204" || len(v.Backends) != 2 {
		t.Fatalf("after set %+v", v)
	}
	wantLines(t, "vip list", l.ok("vip", "list"),
		`^VIP\s+MODE\s+SCHEDULER\s+CHECK\s+ANNOUNCE\s+FLOWS\s+HALF-OPEN$`,
		`^10\.0\.0\.100:80/tcp\s+dr\s+sh\s+http /healthz expect 200-204 every 2s\s+no\s+0\s+0$`,
		`^  -> 10\.0\.0\.11\s+weight 100\s+up\s+-\s+0\s+0$`,
		`^  -> 10\.0\.0\.12\s+weight 50\s+up\s+-\s+0\s+0$`)
	if !mapsEqualTables(tables, l.dp.LookupTables()) {
		t.Fatal("vip set changed a lookup table")
	}

	// Open flows: a mode change would break them.
	l.dp.SetFlows(1, 3)
	l.dp.SetHalfOpen(2, 1)
	before := l.exported()
	wantOneLineError(t, l.run("vip", "set", vip, "--mode", "nat"), exitError,
		`^xdplb: vip set: vip 10\.0\.0\.100:80/tcp: changing its mode from dr to nat breaks its 4 open flows \(3 established, 1 half-open\): wait for them to end, or use --force$`)
	if after := l.exported(); after != before {
		t.Fatalf("refused set changed the state:\n%s", after)
	}
	l.ok("vip", "set", vip, "--mode", "nat", "--force")
	if v := l.vipJSON(vip); v.Mode != model.ModeNAT || v.Flows != 3 || v.HalfOpen != 1 {
		t.Fatalf("after forced set %+v", v)
	}
	// Without open flows no force is needed.
	l.dp.SetFlows(1, 0)
	l.dp.SetHalfOpen(2, 0)
	l.ok("vip", "set", vip, "--mode", "dr", "--check", "none")
	if v := l.vipJSON(vip); v.Mode != model.ModeDR || v.HealthCheck == nil || v.HealthCheck.Type != model.CheckNone {
		t.Fatalf("after set %+v", v)
	}
}

func mapsEqualTables(a, b map[uint32][]uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for id, t := range a {
		if !slices.Equal(t, b[id]) {
			return false
		}
	}
	return true
}

// A fallback stands by while a backend is up, takes the new flows while
// none is, and is shown by vip list, backend list and export.
func TestVIPFallback(t *testing.T) {
	l := startLab(t)
	const vip = "10.0.0.100:80/tcp"
	since := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	l.health.set(vip, "10.0.0.11", false, "connect refused", since)
	l.health.set(vip, "10.0.0.12", false, "timeout", since)
	// The fallback's entry is the first (id 1), the backends' 2 and 3.
	l.ok("vip", "add", vip, "--check", "tcp", "--fallback", "10.0.0.99")
	l.ok("backend", "add", vip, "10.0.0.11")
	l.ok("backend", "add", vip, "10.0.0.12")
	l.dp.SetFlows(1, 5)
	l.dp.SetFlows(2, 2)

	wantLines(t, "vip list", l.ok("vip", "list"),
		`^VIP\s+MODE\s+SCHEDULER\s+CHECK\s+ANNOUNCE\s+FLOWS\s+HALF-OPEN$`,
		`^10\.0\.0\.100:80/tcp\s+dr\s+maglev\s+tcp every 1s\s+auto\s+7\s+0$`,
		`^  -> 10\.0\.0\.11\s+weight 100\s+down\s+connect refused\s+2\s+0$`,
		`^  -> 10\.0\.0\.12\s+weight 100\s+down\s+timeout\s+0\s+0$`,
		`^  -> 10\.0\.0\.99\s+fallback\s+active\s+-\s+5\s+0$`)
	wantLines(t, "backend list", l.ok("backend", "list", vip),
		`^BACKEND\s+WEIGHT\s+STATE\s+FLOWS\s+HALF-OPEN\s+CHECK\s+MAC$`,
		`^10\.0\.0\.11\s+100\s+down\s+2\s+0\s+connect refused\s+02:00:00:00:00:0b$`,
		`^10\.0\.0\.12\s+100\s+down\s+0\s+0\s+timeout\s+02:00:00:00:00:0c$`,
		`^10\.0\.0\.99\s+fallback\s+active\s+5\s+0\s+-\s+02:00:00:00:00:63$`)
	var bs []api.BackendStatus
	if err := json.Unmarshal([]byte(l.ok("backend", "list", vip, "-o", "json")), &bs); err != nil {
		t.Fatal(err)
	}
	if len(bs) != 3 || !bs[2].Fallback || bs[2].State != model.FallbackActive || bs[0].Fallback {
		t.Fatalf("backend list -o json %+v", bs)
	}
	if v := l.vipJSON(vip); v.Fallback == nil || v.Fallback.State != model.FallbackActive || v.Fallback.Flows != 5 || v.Flows != 7 {
		t.Fatalf("vip list -o json fallback %+v", v.Fallback)
	}
	// Read as the plain VIPs it extends, the listing has the fallback
	// as configured.
	var plain []model.VIP
	if err := json.Unmarshal([]byte(l.ok("vip", "list", "-o", "json")), &plain); err != nil || len(plain) != 1 ||
		plain[0].Fallback == nil || plain[0].Fallback.Address.String() != "10.0.0.99" || len(plain[0].Backends) != 2 {
		t.Fatalf("vip list -o json as []VIP: %v %+v", err, plain)
	}
	// stats counts its packets, marked.
	out := l.ok("stats", "--interval", "20ms")
	if !regexp.MustCompile(`\n10\.0\.0\.100:80/tcp\s+10\.0\.0\.12\s+.*\n10\.0\.0\.100:80/tcp\s+10\.0\.0\.99 \(fallback\)\s+\d+\s+\d+\s+\d+\s+\d+\s+[1-9]`).MatchString(out) {
		t.Fatalf("stats:\n%s", out)
	}
	if out := l.exported(); !strings.Contains(out, "fallback:\n      address: 10.0.0.99\n") {
		t.Fatalf("export lacks the fallback:\n%s", out)
	}

	// A backend up again: the fallback stands by (a state change makes
	// the reconcile here; the daemon's checks signal it).
	l.health.set(vip, "10.0.0.12", true, "ok", since)
	l.ok("backend", "set", vip, "10.0.0.11", "--weight", "50")
	out = l.ok("vip", "list")
	if !regexp.MustCompile(`\n  -> 10\.0\.0\.99\s+fallback\s+standby\s+-\s+5\s+0\n`).MatchString(out) ||
		!regexp.MustCompile(`\n  -> 10\.0\.0\.12\s+weight 100\s+up\s+ok\s+0\s+0\n`).MatchString(out) {
		t.Fatalf("vip list:\n%s", out)
	}

	// Its open flows hold a removal or a replacement, and vip del, as a
	// backend's do.
	before := l.exported()
	wantOneLineError(t, l.run("vip", "set", vip, "--fallback", "none"), exitError,
		`^xdplb: vip set: vip 10\.0\.0\.100:80/tcp: removing its fallback 10\.0\.0\.99 breaks its 5 open flows \(5 established, 0 half-open\): wait for them to end, or use --force$`)
	wantOneLineError(t, l.run("vip", "set", vip, "--fallback", "10.0.0.98"), exitError, `replacing its fallback 10\.0\.0\.99 breaks its 5 open flows`)
	l.dp.SetFlows(2, 0)
	wantOneLineError(t, l.run("vip", "del", vip), exitError, `vip del: .*5 open flows`)
	if after := l.exported(); after != before {
		t.Fatalf("refused changes changed the state:\n%s", after)
	}
	l.ok("vip", "set", vip, "--fallback", "none", "--force")
	if v := l.vipJSON(vip); v.Fallback != nil {
		t.Fatalf("fallback %+v after --fallback none", v.Fallback)
	}
	if strings.Contains(l.exported(), "fallback") {
		t.Fatal("export still has the fallback")
	}
}
