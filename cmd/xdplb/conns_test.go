package main

import (
	"encoding/json"
	"net/netip"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/xdplb/xdplb/control/api"
	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/control/reconcile"
	"github.com/xdplb/xdplb/loader"
)

// connsLab is a lab with a DR VIP (backends 10.0.0.11 and 10.0.0.12,
// ids 1 and 2), a fullnat VIP (backend 10.0.1.5:8443, id 3) and their
// flows in the connection table.
func connsLab(t *testing.T) *testDaemon {
	l := startLab(t)
	const vip, full = "10.0.0.100:80/tcp", "[2001:db8::1]:443/tcp"
	l.ok("vip", "add", vip)
	l.ok("backend", "add", vip, "10.0.0.11")
	l.ok("backend", "add", vip, "10.0.0.12")
	l.ok("vip", "add", full, "--mode", "fullnat", "--snat-addr", "2001:db8:2::1")
	l.ok("backend", "add", full, "[2001:db8:1::5]:8443")
	key := func(s string) loader.VIPKey {
		id, err := model.ParseVIPID(s)
		if err != nil {
			t.Fatal(err)
		}
		return reconcile.VIPKeyOf(id)
	}
	c := func(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
	l.dp.SetConns(
		loader.Conn{Client: c("192.0.2.10:40001"), VIP: key(vip), BackendID: 1, Phase: loader.FlowEstablished, Idle: 65 * time.Second},
		loader.Conn{Client: c("192.0.2.11:40002"), VIP: key(vip), BackendID: 2, Phase: loader.FlowHalfOpen, Idle: 2 * time.Second},
		loader.Conn{Client: c("192.0.2.12:40003"), VIP: key(vip), BackendID: 1, Phase: loader.FlowEnded, Closing: true},
		loader.Conn{Client: c("[2001:db8::99]:40004"), VIP: key(full), BackendID: 3, Phase: loader.FlowEstablished, SNATPort: 20001},
	)
	return l
}

func TestConnsTable(t *testing.T) {
	l := connsLab(t)
	out := l.ok("conns")
	want := `PRO  FROM                   TO(VIP)                BACKEND                STATE        IDLE      SNAT
TCP  192.0.2.10:40001       10.0.0.100:80          10.0.0.11:80           established  1m5s      -
TCP  192.0.2.11:40002       10.0.0.100:80          10.0.0.12:80           half-open    2s        -
TCP  192.0.2.12:40003       10.0.0.100:80          10.0.0.11:80           closing      0s        -
TCP  [2001:db8::99]:40004   [2001:db8::1]:443      [2001:db8:1::5]:8443   established  0s        [2001:db8:2::1]:20001
`
	if out != want {
		t.Errorf("conns:\n%s\nwant\n%s", out, want)
	}

	// Filtered by VIP and backend, flags before or after the VIP.
	for _, args := range [][]string{{"conns", "10.0.0.100:80/tcp", "--backend", "10.0.0.11"}, {"conns", "--backend", "10.0.0.11:80", "10.0.0.100:80/tcp"}} {
		out = l.ok(args...)
		if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 3 ||
			!strings.Contains(lines[1], "192.0.2.10:40001") || !strings.Contains(lines[2], "192.0.2.12:40003") {
			t.Errorf("xdplb %v:\n%s", args, out)
		}
	}
	// Bounded, and says how much was left out.
	out = l.ok("conns", "--limit", "1")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 3 || !strings.Contains(lines[1], "192.0.2.10:40001") ||
		lines[2] != "... 3 more not shown (4 matched; --limit 1, 0 for all)" {
		t.Errorf("conns --limit 1:\n%s", out)
	}
	if out = l.ok("conns", "--limit", "0"); strings.Count(out, "\n") != 5 {
		t.Errorf("conns --limit 0:\n%s", out)
	}
	// Nothing matches: the header alone.
	l.dp.SetConns()
	if out = l.ok("conns"); !regexp.MustCompile(`^PRO\s+FROM\s+TO\(VIP\)\s+BACKEND\s+STATE\s+IDLE\s+SNAT\n$`).MatchString(out) {
		t.Errorf("empty conns:\n%q", out)
	}
}

func TestConnsJSON(t *testing.T) {
	l := connsLab(t)
	var doc struct {
		Conns   []api.Conn `json:"conns"`
		Matched int        `json:"matched"`
		Omitted int        `json:"omitted"`
	}
	out := l.ok("conns", "-o", "json", "--limit", "3")
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("conns -o json: %v\n%s", err, out)
	}
	if len(doc.Conns) != 3 || doc.Matched != 4 || doc.Omitted != 1 {
		t.Fatalf("conns -o json: %+v", doc)
	}
	if c := doc.Conns[0]; c.Client != netip.MustParseAddrPort("192.0.2.10:40001") || c.VIP != "10.0.0.100:80/tcp" ||
		c.Backend != netip.MustParseAddrPort("10.0.0.11:80") || c.State != "established" || c.IdleSeconds != 65 || c.Protocol != model.TCP {
		t.Errorf("first conn: %+v", c)
	}
	// One connection a line, as they arrive.
	if n := strings.Count(out, "\n"); n != 5 {
		t.Errorf("conns -o json: %d lines, want 5:\n%s", n, out)
	}
	out = l.ok("conns", "-o", "json", "[2001:db8::1]:443/tcp")
	doc.Conns = nil
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Conns) != 1 || doc.Conns[0].SNATPort != 20001 || doc.Conns[0].SNATAddr != netip.MustParseAddr("2001:db8:2::1") ||
		doc.Conns[0].Backend != netip.MustParseAddrPort("[2001:db8:1::5]:8443") || doc.Matched != 1 || doc.Omitted != 0 {
		t.Errorf("fullnat conns -o json: %+v", doc)
	}
	l.dp.SetConns()
	if out = l.ok("conns", "-o", "json"); out != "{\"conns\": [], \"matched\": 0, \"omitted\": 0}\n" {
		t.Errorf("empty conns -o json: %q", out)
	}
}

func TestConnsErrors(t *testing.T) {
	l := connsLab(t)
	for _, tc := range []struct {
		args []string
		re   string
	}{
		{[]string{"conns", "10.0.0.100:80/tcp", "10.0.0.101:80/tcp"}, `^xdplb: conns: want \[VIP\]$`},
		{[]string{"conns", "10.0.0.100/tcp"}, `^xdplb: conns: vip "10.0.0.100/tcp"`},
		{[]string{"conns", "--backend", "nope"}, `^xdplb: conns: backend "nope"`},
		{[]string{"conns", "--limit", "-1"}, `^xdplb: conns: --limit -1: want a count, 0 for all$`},
		{[]string{"conns", "-o", "yaml"}, `^xdplb: conns: unknown output format "yaml"`},
	} {
		wantOneLineError(t, l.run(tc.args...), exitUsage, tc.re)
		r := runCLI(t, t.Context(), "", append([]string{"--socket", filepath.Join(t.TempDir(), "none.sock")}, tc.args...)...)
		wantOneLineError(t, r, exitUsage, tc.re)
	}
	wantOneLineError(t, l.run("conns", "10.0.0.99:80/tcp"), exitError, `^xdplb: conns: vip 10\.0\.0\.99:80/tcp: not found$`)
	wantOneLineError(t, l.run("conns", "10.0.0.100:80/tcp", "--backend", "10.0.0.13"), exitError,
		`^xdplb: conns: vip 10\.0\.0\.100:80/tcp: backend 10\.0\.0\.13: not found$`)
}
