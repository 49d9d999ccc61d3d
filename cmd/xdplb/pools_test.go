package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xdplb/xdplb/control/api"
	"github.com/xdplb/xdplb/control/model"
)

// Backup pools from the command line: backend add|set --priority, vip
// add|set --failover-below; backend list and vip list show each backend's
// pool and the pools taking new flows; export, apply and apply --dry-run
// carry both settings.
func TestBackupPools(t *testing.T) {
	l := startLab(t)
	const vip = "10.0.0.100:80/tcp"
	since := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	l.ok("vip", "add", vip, "--check", "tcp", "--failover-below", "50")
	l.ok("backend", "add", vip, "10.0.0.11")
	l.ok("backend", "add", vip, "10.0.0.12")
	l.ok("backend", "add", vip, "10.0.1.11", "--priority", "1")
	l.ok("backend", "add", vip, "10.0.2.11", "--priority", "2", "--weight", "50")

	wantLines(t, "backend list", l.ok("backend", "list", vip),
		`^BACKEND\s+WEIGHT\s+POOL\s+STATE\s+FLOWS\s+HALF-OPEN\s+CHECK\s+MAC$`,
		`^10\.0\.0\.11\s+100\s+0\s+up\s+0\s+0\s+-\s+02:00:00:00:00:0b$`,
		`^10\.0\.0\.12\s+100\s+0\s+up\s+`,
		`^10\.0\.1\.11\s+100\s+1\s+standby\s+`,
		`^10\.0\.2\.11\s+50\s+2\s+standby\s+`)
	wantLines(t, "vip list", l.ok("vip", "list"),
		`^VIP\s+MODE\s+SCHEDULER\s+CHECK\s+ANNOUNCE\s+FLOWS\s+HALF-OPEN\s+POOL$`,
		`^10\.0\.0\.100:80/tcp\s+dr\s+maglev\s+tcp every 1s\s+auto\s+0\s+0\s+0$`,
		`^  -> 10\.0\.0\.11\s+weight 100\s+up\s+-\s+0\s+0\s+0$`,
		`^  -> 10\.0\.0\.12\s+weight 100\s+up\s+-\s+0\s+0\s+0$`,
		`^  -> 10\.0\.1\.11\s+weight 100\s+standby\s+-\s+0\s+0\s+1$`,
		`^  -> 10\.0\.2\.11\s+weight 50\s+standby\s+-\s+0\s+0\s+2$`)

	// A primary backend down: half the primary is not below 50%; at 60%
	// it is, and the first backup shares new flows (a state change
	// makes the reconcile here; the daemon's checks signal it).
	l.health.set(vip, "10.0.0.11", false, "connect refused", since)
	l.ok("vip", "set", vip, "--failover-below", "60")
	if v := l.vipJSON(vip); v.FailoverBelow != 60 || v.ActivePriority == nil || *v.ActivePriority != 1 ||
		len(v.ActivePools) != 2 || v.Backends[2].State != model.BackendUp || v.Backends[3].State != model.BackendStandby {
		t.Fatalf("vip list -o json %+v", v)
	}
	wantLines(t, "vip list, sharing", firstLines(l.ok("vip", "list"), 2),
		`^VIP\s+`,
		`^10\.0\.0\.100:80/tcp\s+.*\s+0\+1$`)

	// The other primary backend moved behind the backups: no primary
	// backend is up, the first backup suffices.
	l.ok("backend", "set", vip, "10.0.0.12", "--priority", "3")
	var bs []api.BackendStatus
	if err := json.Unmarshal([]byte(l.ok("backend", "list", vip, "-o", "json")), &bs); err != nil {
		t.Fatal(err)
	}
	if len(bs) != 4 || bs[0].Address.String() != "10.0.0.11" || bs[0].State != model.BackendDown ||
		bs[1].Priority != 1 || bs[1].State != model.BackendUp || bs[3].Address.String() != "10.0.0.12" || bs[3].Priority != 3 || bs[3].State != model.BackendStandby {
		t.Fatalf("backend list -o json (by pool) %+v", bs)
	}

	out := l.exported()
	for _, s := range []string{"failover_below: 60\n", "- address: 10.0.1.11\n        weight: 100\n        priority: 1\n", "address: 10.0.0.12\n        weight: 100\n        priority: 3\n"} {
		if !strings.Contains(out, s) {
			t.Fatalf("export lacks %q:\n%s", s, out)
		}
	}
	file := filepath.Join(t.TempDir(), "lb.yaml")
	changed := strings.Replace(strings.Replace(out, "failover_below: 60", "failover_below: 25", 1), "priority: 3", "priority: 0", 1)
	if err := os.WriteFile(file, []byte(changed), 0o644); err != nil {
		t.Fatal(err)
	}
	want := `~ vip 10.0.0.100:80/tcp
    failover_below: 60 -> 25
  ~ backend 10.0.0.12: priority 3 -> -
dry run: 0 vips added, 0 removed, 1 changed; nothing applied
`
	if got := l.ok("apply", "-f", file, "--dry-run"); got != want {
		t.Fatalf("apply --dry-run:\n%s\nwant\n%s", got, want)
	}
	l.ok("apply", "-f", file)
	// Priority 0, the primary pool, is the default, which export leaves out.
	if got, want := l.exported(), strings.Replace(changed, "\n        priority: 0", "", 1); got != want {
		t.Fatalf("export after apply:\n%s\nwant\n%s", got, want)
	}
	if v := l.vipJSON(vip); v.ActivePriority == nil || *v.ActivePriority != 0 || len(v.ActivePools) != 1 {
		t.Fatalf("after apply: %+v", v)
	}
}

// firstLines is the first n lines of s.
func firstLines(s string, n int) string {
	lines := strings.SplitAfter(s, "\n")
	return strings.Join(lines[:min(n, len(lines))], "")
}

func TestBackupPoolsUsage(t *testing.T) {
	l := startLab(t)
	const vip = "10.0.0.100:80/tcp"
	l.ok("vip", "add", vip)
	l.ok("backend", "add", vip, "10.0.0.11")
	before := l.exported()
	for _, tc := range []struct {
		args []string
		re   string
	}{
		{[]string{"backend", "add", vip, "10.0.0.12", "--priority", "256"}, `^xdplb: backend add: --priority 256: want 0-255$`},
		{[]string{"backend", "add", vip, "10.0.0.12", "--priority", "-1"}, `--priority -1: want 0-255`},
		{[]string{"backend", "set", vip, "10.0.0.11", "--priority", "300"}, `^xdplb: backend set: --priority 300: want 0-255$`},
		{[]string{"backend", "set", vip, "10.0.0.11", "--priority", "1", "--weight", "5"}, `want exactly one of --weight N, --drain, --enable, --priority N`},
		{[]string{"vip", "set", vip, "--failover-below", "101"}, `^xdplb: vip set: --failover-below 101: want a percentage, 0-100$`},
		{[]string{"vip", "add", "10.0.0.101:80/tcp", "--failover-below", "-5"}, `--failover-below -5: want a percentage, 0-100`},
	} {
		wantOneLineError(t, l.run(tc.args...), exitUsage, tc.re)
	}
	if after := l.exported(); after != before {
		t.Fatalf("refused commands changed the state:\n%s", after)
	}
	// Without backup pools, the lists have no POOL column.
	if out := l.ok("backend", "list", vip); strings.Contains(out, "POOL") {
		t.Fatalf("backend list:\n%s", out)
	}
	if out := l.ok("vip", "list"); strings.Contains(out, "POOL") {
		t.Fatalf("vip list:\n%s", out)
	}
}
