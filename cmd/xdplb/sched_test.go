package main

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xdplb/xdplb/control/model"
)

// A canary: backends in groups, one command per step shifts a whole
// group, and writes the VIP's table (and set) once per step. vip set
// --scheduler and --persistence change the VIP, shown by vip list.
func TestCanaryGroupsAndScheduler(t *testing.T) {
	l := startLab(t)
	const vip = "10.0.0.100:80/tcp"
	l.ok("vip", "add", vip, "--scheduler", "wrr", "--persistence", "300s")
	l.ok("backend", "add", vip, "10.0.0.11", "--weight", "95", "--group", "v1")
	l.ok("backend", "add", vip, "10.0.0.12", "--weight", "95", "--group", "v1")
	l.ok("backend", "add", vip, "10.0.0.13", "--weight", "5", "--group", "v2")
	l.dp.TakeWrites()

	l.ok("backend", "set", vip, "--group", "v2", "--weight", "25")
	w := l.dp.TakeWrites()
	if n := countPrefix(w, "put-table"); n != 1 || countPrefix(w, "put-set") != 1 {
		t.Fatalf("group shift wrote %v, want one table and one set", w)
	}
	l.ok("backend", "set", vip, "--group", "v1", "--weight", "0")
	v := l.vipJSON(vip)
	for _, b := range v.Backends {
		want := uint32(25)
		if b.Group == "v1" {
			want = 0
		}
		if b.Weight != want {
			t.Errorf("backend %s of group %s: weight %d, want %d", b.Address, b.Group, b.Weight, want)
		}
	}
	if v.Scheduler != model.SchedWRR || v.Persistence != model.Duration(300*time.Second) {
		t.Fatalf("vip %+v", v.VIP)
	}
	wantLines(t, "backend list", l.ok("backend", "list", vip),
		`^BACKEND\s+GROUP\s+WEIGHT\s+STATE\s+FLOWS\s+HALF-OPEN\s+CHECK\s+MAC$`,
		`^10\.0\.0\.11\s+v1\s+0\s+draining\s+0\s+0\s+-\s+\S+$`,
		`^10\.0\.0\.12\s+v1\s+0\s+draining\s+0\s+0\s+-\s+\S+$`,
		`^10\.0\.0\.13\s+v2\s+25\s+up\s+0\s+0\s+-\s+\S+$`)
	list := l.ok("vip", "list")
	wantLines(t, "vip list", list[:indexLine(list, 2)],
		`^VIP\s+MODE\s+SCHEDULER\s+CHECK\s+ANNOUNCE\s+FLOWS\s+HALF-OPEN$`,
		`^10\.0\.0\.100:80/tcp\s+dr\s+wrr,persist=5m0s\s+`)

	l.ok("vip", "set", vip, "--scheduler", "lc", "--persistence", "none")
	v = l.vipJSON(vip)
	if v.Scheduler != model.SchedLC || v.Persistence != 0 {
		t.Fatalf("after set %+v", v.VIP)
	}
	if got := l.ok("export"); !contains(got, "scheduler: lc", "group: v2") {
		t.Fatalf("export:\n%s", got)
	}
}

func countPrefix(w []string, p string) int {
	n := 0
	for _, s := range w {
		if strings.HasPrefix(s, p) {
			n++
		}
	}
	return n
}

// indexLine is the offset just past the n-th line of s.
func indexLine(s string, n int) int {
	for i, c := range s {
		if c == '\n' {
			n--
			if n == 0 {
				return i + 1
			}
		}
	}
	return len(s)
}

func contains(s string, subs ...string) bool {
	return !slices.ContainsFunc(subs, func(x string) bool { return !strings.Contains(s, x) })
}
