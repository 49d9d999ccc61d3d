package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/xdplb/xdplb/control/api"
	"github.com/xdplb/xdplb/control/config"
	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/control/reconcile/reconciletest"
	"github.com/xdplb/xdplb/control/state"
	"github.com/xdplb/xdplb/loader"
)

// result is what one run of the CLI produced.
type result struct {
	stdout, stderr string
	code           int
}

// runCLI runs the program in-process with args after the program name.
func runCLI(t *testing.T, ctx context.Context, stdin string, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(ctx, append([]string{"xdplb"}, args...), strings.NewReader(stdin), &out, &errOut)
	return result{stdout: out.String(), stderr: errOut.String(), code: code}
}

// testDaemon is a daemon API (real server, real store) on a temp socket.
type testDaemon struct {
	t      *testing.T
	socket string
	store  *state.Store
	dp     *reconciletest.Datapath
	health *fakeHealth
}

// run runs the CLI against the lab's socket.
func (l *testDaemon) run(args ...string) result {
	l.t.Helper()
	return runCLI(l.t, l.t.Context(), "", append([]string{"--socket", l.socket}, args...)...)
}

// ok runs the CLI and fails the test unless it succeeded quietly on stderr.
func (l *testDaemon) ok(args ...string) string {
	l.t.Helper()
	r := l.run(args...)
	if r.code != 0 || r.stderr != "" {
		l.t.Fatalf("xdplb %s: exit %d, stderr %q", strings.Join(args, " "), r.code, r.stderr)
	}
	return r.stdout
}

// exported is the state as `export` prints it.
func (l *testDaemon) exported() string {
	l.t.Helper()
	return l.ok("export")
}

// wantOneLineError checks r failed with code and a single "xdplb: ..." line
// on stderr matching re, and printed nothing on stdout.
func wantOneLineError(t *testing.T, r result, code int, re string) {
	t.Helper()
	if r.code != code {
		t.Errorf("exit code %d, want %d (stderr %q)", r.code, code, r.stderr)
	}
	if !strings.HasPrefix(r.stderr, "xdplb: ") || strings.Count(r.stderr, "\n") != 1 || !strings.HasSuffix(r.stderr, "\n") {
		t.Errorf("stderr %q: want one line starting with \"xdplb: \"", r.stderr)
	}
	if !regexp.MustCompile(re).MatchString(strings.TrimSuffix(r.stderr, "\n")) {
		t.Errorf("stderr %q does not match %q", r.stderr, re)
	}
	if r.stdout != "" {
		t.Errorf("stdout %q: want nothing", r.stdout)
	}
}

func TestVersion(t *testing.T) {
	r := runCLI(t, t.Context(), "", "version")
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	want := "xdplb " + version + " (" + runtime.Version()
	if !strings.HasPrefix(r.stdout, want) || strings.Count(r.stdout, "\n") != 1 {
		t.Errorf("version printed %q, want one line starting with %q", r.stdout, want)
	}
	wantOneLineError(t, runCLI(t, t.Context(), "", "version", "extra"), exitUsage, `version: want no arguments`)
	wantOneLineError(t, runCLI(t, t.Context(), "", "version", "-o", "yaml"), exitUsage, `version: unknown output format "yaml"`)

	r = runCLI(t, t.Context(), "", "version", "-o", "json")
	var v map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &v); r.code != 0 || err != nil {
		t.Fatalf("version -o json: exit %d, %v: %q", r.code, err, r.stdout)
	}
	if v["version"] != version || v["go"] != runtime.Version() || v["os"] != runtime.GOOS || v["arch"] != runtime.GOARCH {
		t.Errorf("version -o json: %v", v)
	}
}

func TestUsageErrors(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	for _, tc := range []struct {
		args []string
		re   string
	}{
		{[]string{"bogus"}, `unknown command "bogus"`},
		{[]string{"vip", "bogus"}, `vip: unknown command "bogus"`},
		{[]string{"vip", "list", "--bogus"}, `vip list: flag provided but not defined: -bogus`},
		{[]string{"--bogus", "vip", "list"}, `flag provided but not defined: -bogus`},
		{[]string{"backend", "add", "10.0.0.1:80/tcp", "10.0.0.2", "--weight", "abc"}, `backend add: invalid value "abc" for flag -weight`},
		{[]string{"daemon"}, `daemon: at least one --iface is required`},
		{[]string{"daemon", "--iface", "lo", "--xdp-mode", "fast"}, `daemon: --xdp-mode "fast": want native, generic or auto`},
		{[]string{"daemon", "--iface", "lo", "--maglev-size", "65536"}, `daemon: --maglev-size 65536: must be a prime`},
		{[]string{"daemon", "--iface", "lo", "--log-level", "loud"}, `daemon: unknown --log-level "loud"`},
		{[]string{"daemon", "--iface", "lo", "--log-format", "xml"}, `daemon: unknown --log-format "xml"`},
		{[]string{"daemon", "--iface", "lo", "--conntrack-size", "0"}, `daemon: --conntrack-size 0`},
		{[]string{"daemon", "--iface", "lo", "--snat-ports", "60000-20000"}, `daemon: --snat-ports "60000-20000": want LO-HI with 1 <= LO <= HI <= 65535`},
		{[]string{"daemon", "--iface", "lo", "--watch-config"}, `daemon: --watch-config needs --config FILE`},
		{[]string{"daemon", "--iface", "lo", "--snat-ports", "many"}, `daemon: --snat-ports "many"`},
		{[]string{"daemon", "--iface", "lo", "--snat-ports", "0-100"}, `daemon: --snat-ports "0-100"`},
		{[]string{"apply"}, `apply: want -f FILE`},
		{[]string{"demo", "now"}, `demo: want no arguments`},
		{[]string{"demo", "--log-format", "xml"}, `demo: unknown --log-format "xml"`},
		{[]string{"export", "x"}, `export: want no arguments`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := runCLI(t, t.Context(), "", append([]string{"--socket", sock}, tc.args...)...)
			wantOneLineError(t, r, exitUsage, tc.re)
		})
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{}, {"--help"}, {"vip"}, {"vip", "add", "--help"}, {"vip", "set", "--help"}} {
		r := runCLI(t, t.Context(), "", args...)
		if r.code != 0 || r.stderr != "" || !strings.Contains(r.stdout, "USAGE") {
			t.Errorf("xdplb %v: exit %d, stderr %q, stdout %q: want usage on stdout", args, r.code, r.stderr, r.stdout)
		}
	}
}

func TestDaemonUnreachable(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.sock")

	// A socket file with nobody listening: connection refused.
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()

	for _, sock := range []string{missing, stale} {
		for _, args := range [][]string{{"vip", "list"}, {"export"}, {"stats", "-o", "json"}, {"status"}, {"backend", "list", "10.0.0.1:80/tcp"}} {
			r := runCLI(t, t.Context(), "", append([]string{"--socket", sock}, args...)...)
			wantOneLineError(t, r, exitError, regexp.QuoteMeta("xdplb: cannot reach the daemon at "+sock+": is `xdplb daemon` running?"))
		}
	}

	// XDPLB_SOCKET is the default of --socket.
	t.Setenv("XDPLB_SOCKET", missing)
	wantOneLineError(t, runCLI(t, t.Context(), "", "vip", "list"), exitError, regexp.QuoteMeta("daemon at "+missing+":"))
}

// --socket is accepted anywhere on the line, the nearest the command wins,
// and every command's help lists it (issue 12, defect 9).
func TestSocketAnywhere(t *testing.T) {
	dir := t.TempDir()
	g, l := filepath.Join(dir, "global.sock"), filepath.Join(dir, "local.sock")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--socket", g, "vip", "list"}, g},
		{[]string{"vip", "--socket", g, "list"}, g},
		{[]string{"vip", "list", "--socket", l}, l},
		{[]string{"vip", "list", "--socket=" + l}, l},
		{[]string{"--socket", g, "vip", "list", "--socket", l}, l},
		{[]string{"vip", "add", "10.0.0.1:80/tcp", "--socket", l, "--mode", "dr"}, l},
		{[]string{"backend", "del", "10.0.0.1:80/tcp", "10.0.0.2", "--socket", l}, l},
		{[]string{"stats", "-o", "json", "--socket", l}, l},
		{[]string{"apply", "-f", "-", "--socket", l}, l},
		{[]string{"status", "--socket", l}, l},
	} {
		r := runCLI(t, t.Context(), "vips: []\n", tc.args...)
		wantOneLineError(t, r, exitError, regexp.QuoteMeta("cannot reach the daemon at "+tc.want+":"))
	}
	var walk func(path []string, cmds []*cli.Command)
	walk = func(path []string, cmds []*cli.Command) {
		for _, c := range cmds {
			p := append(slices.Clone(path), c.Name)
			r := runCLI(t, t.Context(), "", append(p, "--help")...)
			if r.code != 0 || !strings.Contains(r.stdout, "--socket value") {
				t.Errorf("%s --help: exit %d, no --socket in\n%s", strings.Join(p, " "), r.code, r.stdout)
			}
			walk(p, c.Subcommands)
		}
	}
	e := &env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard}
	walk(nil, e.newApp().Commands)
}

func TestVIPAddListDel(t *testing.T) {
	l := startLab(t)
	if out := l.ok("vip", "add", "10.0.0.100:80/tcp"); out != "" {
		t.Errorf("vip add printed %q", out)
	}
	// Flags after the argument, as the docs write them.
	l.ok("vip", "add", "[2001:db8::1]:443/TCP", "--scheduler", "sh", "--check", "http", "--check-path", "/healthz",
		"--check-interval", "2s", "--check-timeout", "300ms", "--rise", "3", "--fall", "4", "--no-announce")
	l.ok("vip", "add", "--mode", "dr", "10.0.0.100:53/udp", "--announce")

	out := l.ok("vip", "list")
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("vip list: want header and 3 rows, got\n%s", out)
	}
	for i, want := range []string{`^VIP\s+MODE\s+SCHEDULER\s+CHECK\s+ANNOUNCE\s+FLOWS\s+HALF-OPEN$`,
		`^10\.0\.0\.100:53/udp\s+dr\s+maglev\s+\S.*\s+yes\s+0\s+0$`,
		`^10\.0\.0\.100:80/tcp\s+dr\s+maglev\s+.*\s+auto\s+0\s+0$`,
		`^\[2001:db8::1\]:443/tcp\s+dr\s+sh\s+http /healthz every 2s\s+no\s+0\s+0$`} {
		if !regexp.MustCompile(want).MatchString(lines[i]) {
			t.Errorf("vip list line %d = %q, want match %q", i, lines[i], want)
		}
	}

	var vips []model.VIP
	if err := json.Unmarshal([]byte(l.ok("vip", "list", "-o", "json")), &vips); err != nil {
		t.Fatalf("vip list -o json: %v", err)
	}
	if len(vips) != 3 {
		t.Fatalf("vip list -o json: %d VIPs, want 3", len(vips))
	}
	v6 := vips[2]
	if v6.ID().String() != "[2001:db8::1]:443/tcp" || v6.Scheduler != model.SchedSH || v6.Announce == nil || *v6.Announce {
		t.Errorf("v6 VIP = %+v", v6)
	}
	if hc := v6.HealthCheck; hc == nil || hc.Type != "http" || hc.Path != "/healthz" ||
		hc.Interval != model.Duration(2*time.Second) || hc.Timeout != model.Duration(300*time.Millisecond) || hc.Rise != 3 || hc.Fall != 4 {
		t.Errorf("v6 health check = %+v", v6.HealthCheck)
	}
	if a := vips[0].Announce; vips[0].Protocol != model.UDP || a == nil || !*a {
		t.Errorf("udp VIP = %+v, want announce on", vips[0])
	}

	l.ok("vip", "del", "10.0.0.100:80/tcp")
	l.ok("vip", "del", "[2001:db8::1]:443/tcp")
	if err := json.Unmarshal([]byte(l.ok("vip", "list", "-o", "json")), &vips); err != nil || len(vips) != 1 {
		t.Fatalf("after del: %v, %+v", err, vips)
	}
	wantOneLineError(t, l.run("vip", "del", "10.0.0.100:80/tcp"), exitError, `vip del: .*(not found|no such|unknown)`)

	l.ok("vip", "del", "10.0.0.100:53/udp")
	if out := l.ok("vip", "list", "-o", "json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("empty vip list -o json = %q, want []", out)
	}
	if out := l.ok("vip", "list"); strings.Count(out, "\n") != 1 {
		t.Errorf("empty vip list = %q, want the header only", out)
	}
}

func TestVIPDuplicate(t *testing.T) {
	l := startLab(t)
	l.ok("vip", "add", "10.0.0.100:80/tcp", "--scheduler", "maglev")
	before := l.exported()
	r := l.run("vip", "add", "10.0.0.100:80/tcp", "--scheduler", "sh")
	wantOneLineError(t, r, exitError, `^xdplb: vip add: .*10\.0\.0\.100:80/tcp.*exist`)
	if after := l.exported(); after != before {
		t.Errorf("state changed by a failed add:\n%s\nwant\n%s", after, before)
	}
}

func TestBackends(t *testing.T) {
	l := startLab(t)
	const vip = "10.0.0.100:80/tcp"
	l.ok("vip", "add", vip)
	l.ok("backend", "add", vip, "10.0.0.12", "--weight", "50")
	l.ok("backend", "add", vip, "10.0.0.11")
	// DR cannot change the port: the VIP's own port is the same as none.
	l.ok("backend", "add", vip, "10.0.0.13:80", "--weight", "0")

	list := func() []api.BackendStatus {
		t.Helper()
		var bs []api.BackendStatus
		if err := json.Unmarshal([]byte(l.ok("backend", "list", vip, "-o", "json")), &bs); err != nil {
			t.Fatalf("backend list -o json: %v", err)
		}
		return bs
	}
	bs := list()
	if len(bs) != 3 {
		t.Fatalf("backend list: %+v", bs)
	}
	for i, want := range []struct {
		addr   string
		port   uint16
		weight uint32
	}{{"10.0.0.11", 0, 100}, {"10.0.0.12", 0, 50}, {"10.0.0.13", 0, 0}} {
		if bs[i].Address != netip.MustParseAddr(want.addr) || bs[i].Port != want.port || bs[i].Weight != want.weight {
			t.Errorf("backend %d = %+v, want %+v", i, bs[i], want)
		}
	}

	l.ok("backend", "set", vip, "10.0.0.12", "--weight", "7")
	l.ok("backend", "set", vip, "10.0.0.11", "--drain")
	bs = list()
	if bs[0].Weight != 100 || !bs[0].Drain || bs[1].Weight != 7 || bs[1].Drain {
		t.Errorf("after set: %+v", bs)
	}
	waitFor(t, func() bool { return list()[0].State == model.BackendDraining }, "drained backend shown as draining")

	out := l.ok("backend", "list", vip)
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != 4 || !regexp.MustCompile(`^BACKEND\s+WEIGHT\s+STATE\s+FLOWS\s+HALF-OPEN\s+CHECK\s+MAC$`).MatchString(lines[0]) {
		t.Fatalf("backend list:\n%s", out)
	}
	for i, re := range []string{`^10\.0\.0\.11\s+100\s+draining\s+\d+\s+\d+\s+-\s+\S+$`, `^10\.0\.0\.12\s+7\s+\w+\s+\d+\s+\d+\s+-\s+\S+$`, `^10\.0\.0\.13\s+0\s+draining\s+\d+\s+\d+\s+-\s+\S+$`} {
		if !regexp.MustCompile(re).MatchString(lines[i+1]) {
			t.Errorf("backend list line %d = %q, want match %q", i+1, lines[i+1], re)
		}
	}

	l.ok("backend", "set", "--enable", vip, "10.0.0.11")
	if bs = list(); bs[0].Drain {
		t.Errorf("after --enable: %+v", bs[0])
	}

	l.ok("backend", "del", vip, "10.0.0.13:80")
	wantOneLineError(t, l.run("backend", "del", vip, "10.0.0.13"), exitError, `^xdplb: backend del: .*10\.0\.0\.13`)
	wantOneLineError(t, l.run("backend", "add", vip, "10.0.0.14:8080"), exitError, `^xdplb: backend add: .*dr mode cannot change the port`)
	wantOneLineError(t, l.run("backend", "add", vip, "10.0.0.12"), exitError, `backend add: .*exist`)
	wantOneLineError(t, l.run("backend", "add", "10.9.9.9:80/tcp", "10.0.0.12"), exitError, `backend add: .*10\.9\.9\.9:80/tcp`)
	if bs = list(); len(bs) != 2 {
		t.Errorf("after del: %+v", bs)
	}

	// IPv6 backends with and without a port.
	l.ok("vip", "add", "[2001:db8::1]:80/tcp")
	l.ok("backend", "add", "[2001:db8::1]:80/tcp", "2001:db8::11")
	l.ok("backend", "add", "[2001:db8::1]:80/tcp", "[2001:db8::12]:80", "--weight", "3")
	out = l.ok("backend", "list", "[2001:db8::1]:80/tcp")
	if !regexp.MustCompile(`\n2001:db8::11\s+100\s`).MatchString(out) || !regexp.MustCompile(`\n2001:db8::12\s+3\s`).MatchString(out) {
		t.Errorf("v6 backend list:\n%s", out)
	}
}

// TestBadInputs checks that every malformed command line fails with its
// one-line error before contacting the daemon, and changes nothing.
func TestBadInputs(t *testing.T) {
	l := startLab(t)
	const vip = "10.0.0.100:80/tcp"
	l.ok("vip", "add", vip)
	l.ok("backend", "add", vip, "10.0.0.11")
	before := l.exported()

	for _, tc := range []struct {
		args []string
		re   string
	}{
		{[]string{"vip", "add"}, `^xdplb: vip add: want ADDR:PORT/PROTO$`},
		{[]string{"vip", "add", "10.0.0.1:80/tcp", "10.0.0.2:80/tcp"}, `vip add: want ADDR:PORT/PROTO`},
		{[]string{"vip", "add", "10.0.0.1/tcp"}, `vip add: vip "10.0.0.1/tcp"`},
		{[]string{"vip", "add", "10.0.0.1:80"}, `vip add: vip "10.0.0.1:80": want ADDR:PORT/PROTO`},
		{[]string{"vip", "add", "10.0.0.1:80/sctp"}, `protocol must be tcp or udp`},
		{[]string{"vip", "add", "10.0.0.1:0/tcp"}, `port must be 1-65535`},
		{[]string{"vip", "add", "2001:db8::1:80/tcp"}, `vip add: vip "2001:db8::1:80/tcp"`},
		{[]string{"vip", "add", "10.0.0.1:80/tcp", "--mode", "tunnel"}, `unknown mode "tunnel"`},
		{[]string{"vip", "add", "10.0.0.1:80/tcp", "--scheduler", "best"}, `unknown scheduler "best"`},
		{[]string{"vip", "add", "10.0.0.1:80/tcp", "--check", "icmp"}, `unknown check "icmp"`},
		{[]string{"vip", "add", "10.0.0.1:80/tcp", "--check", "tcp", "--check-interval", "soon"}, `--check-interval "soon": want a duration like 1s`},
		{[]string{"vip", "add", "10.0.0.1:80/tcp", "--check", "tcp", "--check-timeout", "-1s"}, `--check-timeout "-1s": must be positive`},
		{[]string{"vip", "add", "10.0.0.1:80/tcp", "--check", "tcp", "--check-port", "70000"}, `--check-port 70000: want 1-65535`},
		{[]string{"vip", "add", "10.0.0.1:80/tcp", "--check", "tcp", "--rise", "0"}, `--rise 0: want 1-100$`},
		{[]string{"vip", "add", "10.0.0.1:80/tcp", "--check", "tcp", "--fall", "101"}, `--fall 101: want 1-100$`},
		{[]string{"vip", "add", "10.0.0.1:80/tcp", "--rise", "2"}, `vip add: check flags need --check tcp\|http\|udp`},
		{[]string{"vip", "add", "10.0.0.1:80/tcp", "--check", "none", "--fall", "2"}, `--check none takes no other check flags`},
		{[]string{"vip", "add", "10.0.0.1:80/tcp", "--check", "tcp", "--check-path", "/x"}, `--check-path needs --check http`},
		{[]string{"vip", "add", "10.0.0.1:80/tcp", "--announce", "--no-announce"}, `exclude each other`},
		{[]string{"vip", "add", "10.0.0.1:80/tcp", "--mode", "fullnat", "--snat-addr", "lb1"}, `vip add: --snat-addr "lb1": want an IPv4 or IPv6 address, or auto$`},
		{[]string{"vip", "add", "10.0.0.1:80/tcp", "--snat-addr", "10.0.2.1"}, `vip add: vip 10\.0\.0\.1:80/tcp: snat address 10\.0\.2\.1: only a fullnat vip has one \(mode is dr\)$`},
		{[]string{"vip", "add", "10.0.0.1:80/tcp", "--mode", "nat", "--snat-addr", "10.0.2.1"}, `only a fullnat vip has one \(mode is nat\)`},
		{[]string{"vip", "add", "10.0.0.1:80/tcp", "--mode", "fullnat", "--snat-addr", "2001:db8::1"}, `snat address 2001:db8::1: address family differs from the vip's`},
		{[]string{"vip", "add", "10.0.0.1:80/tcp", "--check", "http", "--check-expect", "2xx"}, `vip add: --check-expect "2xx": want an http status or a range like 200-399$`},
		{[]string{"vip", "add", "10.0.0.1:80/tcp", "--check", "http", "--check-expect", "399-200"}, `vip add: --check-expect 399-200: the first status must not be above the last$`},
		{[]string{"vip", "add", "10.0.0.1:80/tcp", "--check", "http", "--check-expect", "200-600"}, `--check-expect 200-600: want http statuses 100-599$`},
		{[]string{"vip", "add", "10.0.0.1:80/tcp", "--check", "tcp", "--check-expect", "200"}, `--check-expect needs --check http`},
		{[]string{"vip", "add", "10.0.0.1:80/tcp", "--fallback", "sorry.example"}, `vip add: --fallback "sorry.example": want ADDR or ADDR:PORT, or none$`},
		{[]string{"vip", "add", "10.0.0.1:80/tcp", "--fallback", "10.0.0.99:8080"}, `vip add: vip 10\.0\.0\.1:80/tcp: fallback 10\.0\.0\.99:8080: dr mode cannot change the port`},
		{[]string{"vip", "add", "10.0.0.1:80/tcp", "--fallback", "2001:db8::99"}, `fallback 2001:db8::99: address family differs from the vip's`},
		{[]string{"vip", "set"}, `^xdplb: vip set: want ADDR:PORT/PROTO$`},
		{[]string{"vip", "set", vip}, `^xdplb: vip set: nothing to change: give the options to change, as for vip add$`},
		{[]string{"vip", "set", "10.0.0.100/tcp", "--scheduler", "sh"}, `vip set: vip "10.0.0.100/tcp"`},
		{[]string{"vip", "set", vip, "--check-expect", "600"}, `vip set: --check-expect 600: want http statuses 100-599$`},
		{[]string{"vip", "set", vip, "--check", "none", "--rise", "2"}, `vip set: --check none takes no other check flags`},
		{[]string{"vip", "set", vip, "--check", "tcp", "--check-path", "/"}, `vip set: --check-path needs --check http`},
		{[]string{"vip", "set", vip, "--check", "tcp", "--rise", "0"}, `vip set: --rise 0: want 1-100$`},
		{[]string{"vip", "set", vip, "--fallback", "10.0.0"}, `vip set: --fallback "10.0.0"`},
		{[]string{"vip", "set", vip, "--snat-addr", "lb1"}, `vip set: --snat-addr "lb1"`},
		{[]string{"vip", "set", vip, "--announce", "--no-announce"}, `exclude each other`},
		{[]string{"vip", "del"}, `vip del: want ADDR:PORT/PROTO`},
		{[]string{"vip", "del", "nope"}, `vip del: vip "nope"`},
		{[]string{"vip", "list", "-o", "yaml"}, `vip list: unknown output format "yaml": want table or json`},
		{[]string{"vip", "list", "extra"}, `vip list: want no arguments`},
		{[]string{"backend", "add", vip}, `backend add: want VIP ADDR\[:PORT\]`},
		{[]string{"backend", "add", "10.0.0.100/tcp", "10.0.0.12"}, `backend add: vip "10.0.0.100/tcp"`},
		{[]string{"backend", "add", vip, "10.0.0"}, `backend add: backend "10.0.0": want ADDR or ADDR:PORT`},
		{[]string{"backend", "add", vip, "host.example:80"}, `backend "host.example:80"`},
		{[]string{"backend", "add", vip, "10.0.0.12", "--weight", "65536"}, `backend add: --weight 65536: want 0-65535`},
		{[]string{"backend", "add", vip, "10.0.0.12", "--weight", "-1"}, `--weight -1: want 0-65535`},
		{[]string{"backend", "set", vip, "10.0.0.11"}, `backend set: want exactly one of --weight N, --drain, --enable`},
		{[]string{"backend", "set", vip, "10.0.0.11", "--drain", "--enable"}, `want exactly one of`},
		{[]string{"backend", "set", vip, "10.0.0.11", "--weight", "1", "--drain"}, `want exactly one of`},
		{[]string{"backend", "set", vip, "10.0.0.11", "--weight", "100000"}, `--weight 100000`},
		{[]string{"backend", "del", vip}, `backend del: want VIP ADDR\[:PORT\]`},
		{[]string{"backend", "list"}, `backend list: want VIP`},
		{[]string{"backend", "list", vip, "-o", "xml"}, `unknown output format "xml"`},
		{[]string{"stats", "--interval", "fast"}, `stats: --interval "fast": want a duration`},
		{[]string{"stats", "--interval", "0s"}, `stats: --interval "0s": must be positive`},
		{[]string{"stats", "-o", "csv"}, `stats: unknown output format "csv"`},
		{[]string{"status", "-o", "csv"}, `status: unknown output format "csv"`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			wantOneLineError(t, l.run(tc.args...), exitUsage, tc.re)
			// The same line without a daemon: the input is checked first.
			r := runCLI(t, t.Context(), "", append([]string{"--socket", filepath.Join(t.TempDir(), "none.sock")}, tc.args...)...)
			wantOneLineError(t, r, exitUsage, tc.re)
		})
	}
	if after := l.exported(); after != before {
		t.Errorf("state changed by bad inputs:\n%s\nwant\n%s", after, before)
	}
}

const sampleConfig = `vips:
  - address: 10.200.0.100
    port: 80
    protocol: tcp
    mode: dr
    scheduler: maglev
    healthcheck: {type: http, path: /healthz, interval: 1s, timeout: 500ms, rise: 2, fall: 3}
    backends:
      - {address: 10.200.0.12, weight: 100, drain: true}
      - {address: 10.200.0.11, weight: 100}
      - {address: 10.200.0.13}
  - address: 2001:db8::100
    port: 53
    protocol: udp
    announce: false
    backends:
      - {address: "2001:db8::11", port: 53, weight: 0}
      - {address: "2001:db8::10"}
`

func TestApplyExportRoundTrip(t *testing.T) {
	l := startLab(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "lb.yaml")
	if err := os.WriteFile(file, []byte(sampleConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := l.ok("apply", "-f", file); out != "" {
		t.Errorf("apply printed %q", out)
	}
	exported := l.exported()

	want, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	wantYAML, err := config.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	if exported != string(wantYAML) {
		t.Errorf("export after apply:\n%s\nwant\n%s", exported, wantYAML)
	}
	for _, s := range []string{"address: 10.200.0.13", "weight: 0", "drain: true", "interval: 1s", "timeout: 500ms"} {
		if !strings.Contains(exported, s) {
			t.Errorf("export lacks %q:\n%s", s, exported)
		}
	}

	// Apply what export printed, on an empty daemon, through stdin: same YAML.
	l2 := startLab(t)
	r := runCLI(t, t.Context(), exported, "--socket", l2.socket, "apply", "-f", "-")
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("apply -f -: exit %d, stderr %q", r.code, r.stderr)
	}
	if again := l2.exported(); again != exported {
		t.Errorf("export after apply of export:\n%s\nwant\n%s", again, exported)
	}

	// apply replaces everything: an empty file empties the state.
	empty := filepath.Join(dir, "empty.yaml")
	if err := os.WriteFile(empty, []byte("vips: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	l.ok("apply", "-f", empty)
	if out := l.ok("vip", "list", "-o", "json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("after applying an empty state: %s", out)
	}
}

func TestApplyErrors(t *testing.T) {
	l := startLab(t)
	l.ok("vip", "add", "10.0.0.100:80/tcp")
	before := l.exported()
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	syntax := write("syntax.yaml", "vips:\n  - address: 10.0.0.1\n   port: 80\n")
	unknown := write("unknown.yaml", "vips:\n  - address: 10.0.0.1\n    port: 80\n    protocol: tcp\n    colour: red\n")
	invalid := write("invalid.yaml", "vips:\n  - address: 10.0.0.1\n    port: 80\n    protocol: tcp\n  - address: 10.0.0.1\n    port: 80\n    protocol: tcp\n")

	// Syntax errors name the file and are found without a daemon.
	for _, f := range []string{syntax, unknown} {
		wantOneLineError(t, l.run("apply", "-f", f), exitError, `^xdplb: apply: .*`+regexp.QuoteMeta(f))
		r := runCLI(t, t.Context(), "", "--socket", filepath.Join(dir, "none.sock"), "apply", "-f", f)
		wantOneLineError(t, r, exitError, regexp.QuoteMeta(f))
	}
	wantOneLineError(t, l.run("apply", "-f", filepath.Join(dir, "missing.yaml")), exitError, `apply: .*missing\.yaml`)
	// A well-formed but invalid state is refused by the daemon.
	wantOneLineError(t, l.run("apply", "-f", invalid), exitError, `apply: .*10\.0\.0\.1:80/tcp`)

	if after := l.exported(); after != before {
		t.Errorf("state changed by failed applies:\n%s\nwant\n%s", after, before)
	}
}

func TestStats(t *testing.T) {
	l := startLab(t)
	l.ok("vip", "add", "10.0.0.100:80/tcp")
	l.ok("backend", "add", "10.0.0.100:80/tcp", "10.0.0.11")
	l.ok("backend", "add", "10.0.0.100:80/tcp", "10.0.0.12")

	var st api.Stats
	waitFor(t, func() bool {
		st = api.Stats{}
		if err := json.Unmarshal([]byte(l.ok("stats", "-o", "json")), &st); err != nil {
			t.Fatalf("stats -o json: %v", err)
		}
		return len(st.VIPs) == 1 && len(st.VIPs[0].Backends) == 2 && st.VIPs[0].Packets > 0
	}, "stats of the VIP and its two backends")
	if st.VIPs[0].VIP != "10.0.0.100:80/tcp" {
		t.Errorf("stats VIP = %q", st.VIPs[0].VIP)
	}

	out := l.ok("stats", "--interval", "20ms")
	lines := strings.Split(out, "\n")
	// When, over how long, and the table; BPS says it is bits.
	if !regexp.MustCompile(`^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+; rates over \d+ms$`).MatchString(lines[0]) || lines[1] != "" ||
		!regexp.MustCompile(`^VIP\s+BACKEND\s+PACKETS\s+BYTES\s+FLOWS\s+CPS\s+PPS\s+BPS\(bits/s\)$`).MatchString(lines[2]) {
		t.Fatalf("stats table:\n%s", out)
	}
	// The fake's packet and byte counters grow on every read, so those
	// rates are positive; its flow counters do not, so CPS is 0.
	for i, re := range []string{`^10\.0\.0\.100:80/tcp\s+-\s+\d+\s+\d+\s+\d+\s+0\s+[1-9][\d.]*[kMG]?\s+[1-9][\d.]*[kMG]?$`,
		`^10\.0\.0\.100:80/tcp\s+10\.0\.0\.11\s+\d+\s+\d+\s+\d+\s+0\s+[1-9][\d.]*[kMG]?\s+[1-9][\d.]*[kMG]?$`,
		`^10\.0\.0\.100:80/tcp\s+10\.0\.0\.12\s+`} {
		if !regexp.MustCompile(re).MatchString(lines[i+3]) {
			t.Errorf("stats line %d = %q, want match %q", i+3, lines[i+3], re)
		}
	}
	if !regexp.MustCompile(`(?m)^no_backend\s+3$`).MatchString(out) || strings.Contains(out, "fragment") {
		t.Errorf("stats table: want the non-zero drop reasons only:\n%s", out)
	}
	// What the driver refused, beside the actions, and what it means.
	if !regexp.MustCompile(`(?m)^lo\s+tx\s+42\nlo\s+tx_error\s+5\ntx_error: counted as tx or redirect, then refused by the interface's driver \(ethtool -S\): lost$`).MatchString(out) {
		t.Errorf("stats table: want the driver's tx errors after tx:\n%s", out)
	}
	if len(st.TxErrors) != 1 || st.TxErrors[0] != (api.TxErrorStats{Iface: "lo", Count: 5}) {
		t.Errorf("stats -o json tx_errors = %+v", st.TxErrors)
	}
}

func TestStatsWatch(t *testing.T) {
	l := startLab(t)
	l.ok("vip", "add", "10.0.0.100:80/tcp")
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	r := runCLI(t, ctx, "", "--socket", l.socket, "stats", "--watch", "--interval", "50ms", "-o", "json")
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("stats --watch: exit %d, stderr %q", r.code, r.stderr)
	}
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	n := 0
	var prev time.Time
	for dec.More() {
		var st api.Stats
		if err := dec.Decode(&st); err != nil {
			t.Fatalf("sample %d: %v", n, err)
		}
		if !st.Time.After(prev) {
			t.Errorf("sample %d time %v not after %v", n, st.Time, prev)
		}
		prev = st.Time
		n++
	}
	if n < 3 {
		t.Errorf("stats --watch printed %d samples in 500ms at 50ms, want several", n)
	}

	// Table mode: one block per interval, until cancelled.
	ctx, cancel = context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	r = runCLI(t, ctx, "", "--socket", l.socket, "stats", "-w", "--interval", "50ms")
	if n := len(regexp.MustCompile(`(?m)^VIP\s+BACKEND`).FindAllString(r.stdout, -1)); r.code != 0 || n < 2 {
		t.Errorf("stats -w: exit %d, stderr %q, stdout:\n%s", r.code, r.stderr, r.stdout)
	}
	// Each block says when it was read.
	times := regexp.MustCompile(`(?m)^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+); rates over \d+ms\n\nVIP\s`).FindAllStringSubmatch(r.stdout, -1)
	if n := len(regexp.MustCompile(`(?m)^VIP\s+BACKEND`).FindAllString(r.stdout, -1)); len(times) != n {
		t.Errorf("stats -w: %d timestamps for %d tables:\n%s", len(times), n, r.stdout)
	}
}

func TestWriteStatsTable(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	b := func(a string, p, by, f uint64) api.BackendStats {
		return api.BackendStats{Address: netip.MustParseAddr(a), CounterSet: api.CounterSet{Packets: p, Bytes: by, Flows: f}}
	}
	prev := api.Stats{Time: t0, VIPs: []api.VIPStats{
		{VIP: "10.0.0.1:80/tcp", CounterSet: api.CounterSet{Packets: 100, Bytes: 1000, Flows: 1},
			Backends: []api.BackendStats{b("10.0.0.12", 50, 500, 1)}},
	}}
	cur := api.Stats{Time: t0.Add(2 * time.Second), VIPs: []api.VIPStats{
		{VIP: "[2001:db8::1]:80/tcp"},
		{VIP: "10.0.0.1:80/tcp", CounterSet: api.CounterSet{Packets: 2100, Bytes: 3001000, Flows: 9},
			Backends: []api.BackendStats{b("10.0.0.12", 40, 400, 1), b("10.0.0.11", 7, 70, 7)}},
	}, Actions: []api.ActionStats{{Iface: "eth1", Action: "tx", Count: 5}, {Iface: "eth0", Action: "tx", Count: 9}, {Iface: "eth0", Action: "pass", Count: 1}},
		TxErrors: []api.TxErrorStats{{Iface: "eth1", Count: 0}, {Iface: "eth0", Count: 3}}}
	var buf bytes.Buffer
	if err := writeStatsTable(&buf, prev, cur); err != nil {
		t.Fatal(err)
	}
	want := `2025-01-01 00:00:02 UTC; rates over 2s

VIP                   BACKEND    PACKETS  BYTES    FLOWS  CPS  PPS  BPS(bits/s)
10.0.0.1:80/tcp       -          2100     3001000  9      4    1k   12M
10.0.0.1:80/tcp       10.0.0.11  7        70       7      -    -    -
10.0.0.1:80/tcp       10.0.0.12  40       400      1      0    0    0
[2001:db8::1]:80/tcp  -          0        0        0      -    -    -

IFACE  ACTION    COUNT
eth0   pass      1
eth0   tx        9
eth0   tx_error  3
eth1   tx        5
eth1   tx_error  0
tx_error: counted as tx or redirect, then refused by the interface's driver (ethtool -S): lost
`
	if buf.String() != want {
		t.Errorf("stats table:\n%s\nwant\n%s", buf.String(), want)
	}

	// Drops: by reason, then each VIP's refused new flows with their rate.
	prev.VIPs[0].Drops = map[string]uint64{"rate_limited": 10}
	cur.VIPs[1].Drops = map[string]uint64{"rate_limited": 30, "backends_full": 4}
	cur.Drops = map[string]uint64{"rate_limited": 30, "backends_full": 4, "fragment": 2, "no_backend": 0}
	buf.Reset()
	if err := writeStatsTable(&buf, prev, cur); err != nil {
		t.Fatal(err)
	}
	wantDrops := `
DROP REASON    COUNT
backends_full  4
fragment       2
rate_limited   30

VIP              DROP REASON    COUNT  RATE
10.0.0.1:80/tcp  backends_full  4      2
10.0.0.1:80/tcp  rate_limited   30     10
`
	if got := buf.String(); !strings.HasSuffix(got, want[strings.Index(want, "\nIFACE"):]+wantDrops) {
		t.Errorf("stats table with drops:\n%s\nwant it to end with\n%s", got, wantDrops)
	}
	cur.Drops = nil
	cur.VIPs[1].Drops = nil

	// Zeroed counters say since when.
	cur.Since = t0.Add(-time.Hour)
	buf.Reset()
	if err := writeStatsTable(&buf, prev, cur); err != nil {
		t.Fatal(err)
	}
	if first, _, _ := strings.Cut(buf.String(), "\n"); first != "2025-01-01 00:00:02 UTC; rates over 2s; counters since 2024-12-31 23:00:00 UTC (stats --zero)" {
		t.Errorf("first line of zeroed stats: %q", first)
	}

	// No refused frame: the rows, no explanation.
	cur.TxErrors[1].Count = 0
	buf.Reset()
	if err := writeStatsTable(&buf, prev, cur); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), "tx_error:") || !strings.Contains(buf.String(), "eth0   tx_error  0\n") {
		t.Errorf("stats table without refused frames:\n%s", buf.String())
	}
}

func TestStatus(t *testing.T) {
	l := startLab(t)
	l.ok("vip", "add", "10.0.0.100:80/tcp")
	var st api.DaemonStatus
	if err := json.Unmarshal([]byte(l.ok("status", "-o", "json")), &st); err != nil {
		t.Fatalf("status -o json: %v", err)
	}
	if len(st.Interfaces) != 1 || st.Interfaces[0].Name != "lo" || st.Interfaces[0].ProgramID != 17 {
		t.Errorf("status interfaces = %+v", st.Interfaces)
	}
	if st.Kernel.Release != "6.1.0-57-amd64" || st.Kernel.ElemCount || st.Kernel.Count != "walk" || !st.Kernel.BatchLookup {
		t.Errorf("status kernel = %+v", st.Kernel)
	}
	out := l.ok("status")
	for _, re := range []string{`(?m)^uptime:\s+\S+`, `(?m)^pin path:\s+/sys/fs/bpf/xdplb$`,
		`(?m)^kernel:\s+6\.1\.0-57-amd64$`, `(?m)^btf:\s+yes$`, `(?m)^element count:\s+no: table entries counted by walking$`,
		`(?m)^batch map ops:\s+lookup yes, update of lookup tables yes$`, `(?m)^mmapable maps:\s+yes$`,
		`(?m)^IFACE\s+IFINDEX\s+XDP MODE\s+PROGRAM ID\s+LINK ID$`, `(?m)^lo\s+1\s+generic\s+17\s+4$`,
		`(?m)^MAP\s+ENTRIES\s+MAX\s+FILL$`, `(?m)^backends\s+\d+\s+256\s+[\d.]+%$`, `(?m)^vips\s+\d+\s+64\s+[\d.]+%$`} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("status lacks %q:\n%s", re, out)
		}
	}
}

func TestReorderArgs(t *testing.T) {
	app := (&env{}).newApp()
	for _, tc := range []struct{ in, want string }{
		{"xdplb vip add 10.0.0.1:80/tcp --mode dr", "xdplb vip add --mode dr -- 10.0.0.1:80/tcp"},
		{"xdplb --socket /s vip add A --announce --scheduler=sh", "xdplb --socket /s vip add --announce --scheduler=sh -- A"},
		{"xdplb backend set V B --weight 5", "xdplb backend set --weight 5 -- V B"},
		{"xdplb backend set V --drain B", "xdplb backend set --drain -- V B"},
		{"xdplb vip list -o json", "xdplb vip list -o json"},
		{"xdplb vip del -- -x", "xdplb vip del -- -x"},
		{"xdplb bogus --x", "xdplb bogus --x"},
		{"xdplb", "xdplb"},
	} {
		got := strings.Join(reorderArgs(app, strings.Fields(tc.in)), " ")
		if got != tc.want {
			t.Errorf("reorderArgs(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestBackendString(t *testing.T) {
	for _, tc := range []struct {
		addr string
		port uint16
		want string
	}{{"10.0.0.1", 0, "10.0.0.1"}, {"10.0.0.1", 8080, "10.0.0.1:8080"}, {"2001:db8::1", 0, "2001:db8::1"}, {"2001:db8::1", 80, "[2001:db8::1]:80"}} {
		got := backendString(netip.MustParseAddr(tc.addr), tc.port)
		if got != tc.want {
			t.Errorf("backendString(%s, %d) = %q, want %q", tc.addr, tc.port, got, tc.want)
		}
		// What is printed parses back to the same backend.
		a, p, err := model.ParseBackendAddr(got)
		if err != nil || a != netip.MustParseAddr(tc.addr) || p != tc.port {
			t.Errorf("ParseBackendAddr(%q) = %v, %d, %v", got, a, p, err)
		}
	}
}

func TestSI(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 999: "999", 1000: "1k", 1234567: "1.23M", 8e9: "8G"} {
		if got := si(v); got != want {
			t.Errorf("si(%v) = %q, want %q", v, got, want)
		}
	}
}

// waitFor polls cond for up to 5s: the reconciler applies changes
// asynchronously.
func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestBackendHealthAndForcedDelete(t *testing.T) {
	l := startLab(t)
	const vip = "10.0.0.100:80/tcp"
	l.ok("vip", "add", vip, "--check", "tcp", "--check-interval", "200ms", "--fall", "3")
	since := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	l.health.set(vip, "10.0.0.11", true, "ok", since)
	l.health.set(vip, "10.0.0.12", false, "connect refused", since)
	l.health.set(vip, "10.0.0.13", true, "ok", since)
	l.ok("backend", "add", vip, "10.0.0.11")
	l.ok("backend", "add", vip, "10.0.0.12")
	l.ok("backend", "add", vip, "10.0.0.13")
	l.ok("backend", "set", vip, "10.0.0.13", "--drain")
	// Backend ids follow the order of the adds.
	l.dp.SetFlows(1, 12)
	l.dp.SetFlows(3, 5)
	l.dp.SetHalfOpen(3, 2)

	out := l.ok("backend", "list", vip)
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	for i, re := range []string{`^BACKEND\s+WEIGHT\s+STATE\s+FLOWS\s+HALF-OPEN\s+CHECK\s+MAC$`,
		`^10\.0\.0\.11\s+100\s+up\s+12\s+0\s+ok\s+02:00:00:00:00:0b$`,
		`^10\.0\.0\.12\s+100\s+down\s+0\s+0\s+connect refused\s+02:00:00:00:00:0c$`,
		`^10\.0\.0\.13\s+100\s+draining\s+5\s+2\s+ok\s+02:00:00:00:00:0d$`} {
		if i >= len(lines) || !regexp.MustCompile(re).MatchString(lines[i]) {
			t.Fatalf("backend list line %d: want match %q in\n%s", i, re, out)
		}
	}
	var bs []api.BackendStatus
	if err := json.Unmarshal([]byte(l.ok("backend", "list", vip, "-o", "json")), &bs); err != nil {
		t.Fatal(err)
	}
	if len(bs) != 3 || bs[1].Check != "connect refused" || !bs[1].CheckSince.Equal(since) || bs[2].Flows != 5 || bs[2].HalfOpen != 2 {
		t.Fatalf("backend list -o json: %+v", bs)
	}

	// The drained backend still has flows: del refuses, and says why.
	before := l.exported()
	wantOneLineError(t, l.run("backend", "del", vip, "10.0.0.13"), exitError,
		`^xdplb: backend del: vip 10\.0\.0\.100:80/tcp: backend 10\.0\.0\.13 still has 7 open flows \(5 established, 2 half-open\): drain it and wait, or use --force$`)
	if after := l.exported(); after != before {
		t.Fatalf("refused del changed the state:\n%s", after)
	}
	l.ok("backend", "del", vip, "10.0.0.13", "--force")
	// No flows: no --force needed.
	l.ok("backend", "del", vip, "10.0.0.12")
	if err := json.Unmarshal([]byte(l.ok("backend", "list", vip, "-o", "json")), &bs); err != nil || len(bs) != 1 {
		t.Fatalf("after del: %v %+v", err, bs)
	}

	// vip del is refused the same way while its backends have flows.
	before = l.exported()
	wantOneLineError(t, l.run("vip", "del", vip), exitError,
		`^xdplb: vip del: vip 10\.0\.0\.100:80/tcp still has 12 open flows \(12 established, 0 half-open\): drain its backends and wait, or use --force$`)
	if after := l.exported(); after != before {
		t.Fatalf("refused vip del changed the state:\n%s", after)
	}
	l.ok("vip", "del", vip, "--force")
	if out := l.ok("vip", "list"); strings.Contains(out, "10.0.0.100") {
		t.Fatalf("forced vip del left the VIP:\n%s", out)
	}
}

// TestDaemonRefusesBadInputs: inputs that are well-formed but that the
// daemon refuses against its state and its map sizes. Each gives one line
// and exit 1, and the state is unchanged.
func TestDaemonRefusesBadInputs(t *testing.T) {
	l := startLab(t)
	l.store.SetLimits(3, 4) // VIP ids 1..2, backend ids 1..3
	const vip = "10.0.0.100:80/tcp"
	l.ok("vip", "add", vip)
	l.ok("vip", "add", "[2001:db8::100]:80/tcp")
	l.ok("backend", "add", vip, "10.0.0.11")
	l.ok("backend", "add", vip, "10.0.0.12")
	before := l.exported()

	for _, tc := range []struct {
		args []string
		re   string
	}{
		{[]string{"vip", "add", vip}, `^xdplb: vip add: .*10\.0\.0\.100:80/tcp.*exist`},
		{[]string{"vip", "add", "10.0.0.101:80/tcp"}, `^xdplb: vip add: .*(VIPs|vips)`},
		{[]string{"vip", "del", "10.0.0.99:80/tcp"}, `^xdplb: vip del: .*10\.0\.0\.99:80/tcp`},
		{[]string{"backend", "add", vip, "10.0.0.11"}, `^xdplb: backend add: .*10\.0\.0\.11.*exist`},
		{[]string{"backend", "add", vip, "2001:db8::11"}, `^xdplb: backend add: .*(IPv6|family)`},
		{[]string{"backend", "add", "10.0.0.99:80/tcp", "10.0.0.13"}, `^xdplb: backend add: .*10\.0\.0\.99:80/tcp`},
		{[]string{"backend", "add", vip, "10.0.0.13:8080"}, `^xdplb: backend add: .*port`},
		{[]string{"backend", "set", vip, "10.0.0.19", "--drain"}, `^xdplb: backend set: .*10\.0\.0\.19`},
		{[]string{"vip", "set", "10.0.0.99:80/tcp", "--scheduler", "sh"}, `^xdplb: vip set: vip 10\.0\.0\.99:80/tcp: not found$`},
		{[]string{"vip", "set", vip, "--rise", "3"}, `^xdplb: vip set: vip 10\.0\.0\.100:80/tcp: healthcheck: the vip has no check to change: give its type too$`},
		{[]string{"vip", "set", vip, "--scheduler", "hash"}, `^xdplb: vip set: vip 10\.0\.0\.100:80/tcp: unknown scheduler "hash": want maglev, sh, rr, wrr, random, lc or wlc$`},
		{[]string{"vip", "set", vip, "--persistence", "1.5s"}, `^xdplb: vip set: vip 10\.0\.0\.100:80/tcp: persistence 1\.5s: want whole seconds$`},
		{[]string{"backend", "set", vip, "--group", "v9", "--weight", "5"}, `^xdplb: backend set: vip 10\.0\.0\.100:80/tcp: group "v9": no backend: not found$`},
		{[]string{"vip", "set", vip, "--fallback", "10.0.0.11"}, `^xdplb: vip set: vip 10\.0\.0\.100:80/tcp: fallback 10\.0\.0\.11: is a backend of the vip too$`},
		{[]string{"vip", "set", vip, "--check", "http", "--check-path", "healthz"}, `vip set: .*path "healthz": must start with /`},
		{[]string{"vip", "set", vip, "--snat-addr", "10.0.2.1"}, `vip set: .*only a fullnat vip has one \(mode is dr\)`},
		{[]string{"backend", "del", vip, "10.0.0.19"}, `^xdplb: backend del: .*10\.0\.0\.19`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := l.run(tc.args...)
			t.Log(strings.TrimSpace(r.stderr))
			wantOneLineError(t, r, exitError, tc.re)
		})
	}
	if after := l.exported(); after != before {
		t.Fatalf("state changed by refused inputs:\n%s\nwant\n%s", after, before)
	}
	// One backend more than the backend map holds.
	l.ok("backend", "add", "[2001:db8::100]:80/tcp", "2001:db8::11")
	before = l.exported()
	wantOneLineError(t, l.run("backend", "add", "[2001:db8::100]:80/tcp", "2001:db8::12"), exitError, `^xdplb: backend add: .*backends`)
	// A fallback takes a backend id too.
	wantOneLineError(t, l.run("vip", "set", vip, "--fallback", "10.0.0.98"), exitError, `^xdplb: vip set: .*backends`)
	if after := l.exported(); after != before {
		t.Errorf("state changed by refused inputs:\n%s\nwant\n%s", after, before)
	}
}

// NAT VIPs: backends on another port than the VIP's; `vip list` gains a
// SNAT column when a VIP is fullnat; `backend list` of a NAT VIP shows its
// mode, egress interface and SNAT address instead of a MAC; export and
// apply keep it all; stats carry the ICMP errors.
func TestNATVIPs(t *testing.T) {
	l := startLab(t)
	const nat, full, full6 = "10.0.0.100:80/tcp", "10.0.0.101:443/tcp", "[2001:db8::1]:53/udp"
	l.ok("vip", "add", nat, "--mode", "nat")
	l.ok("vip", "add", full, "--mode", "fullnat", "--snat-addr", "10.0.2.1")
	l.ok("vip", "add", full6, "--mode", "fullnat")
	l.ok("backend", "add", nat, "10.0.1.5:8080")
	l.ok("backend", "add", nat, "10.0.1.6") // the VIP's port
	l.ok("backend", "add", full, "10.0.1.5:8443", "--weight", "50")
	l.ok("backend", "add", full6, "[2001:db8:1::5]:5353")

	out := l.ok("vip", "list")
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	for i, re := range []string{`^VIP\s+MODE\s+SCHEDULER\s+CHECK\s+ANNOUNCE\s+FLOWS\s+HALF-OPEN\s+SNAT$`,
		`^10\.0\.0\.100:80/tcp\s+nat\s+maglev\s+-\s+auto\s+0\s+0\s+-$`,
		`^  -> 10\.0\.1\.5:8080\s+weight 100\s+up\s+-\s+0\s+0\s+-$`,
		`^  -> 10\.0\.1\.6\s+weight 100\s+up\s+-\s+0\s+0\s+-$`,
		`^10\.0\.0\.101:443/tcp\s+fullnat\s+maglev\s+-\s+auto\s+0\s+0\s+10\.0\.2\.1$`,
		`^  -> 10\.0\.1\.5:8443\s+weight 50\s+up\s+-\s+0\s+0\s+10\.0\.2\.1$`,
		`^\[2001:db8::1\]:53/udp\s+fullnat\s+maglev\s+-\s+auto\s+0\s+0\s+auto$`,
		// The address an "auto" VIP found, on its backends' lines.
		`^  -> \[2001:db8:1::5\]:5353\s+weight 100\s+up\s+-\s+0\s+0\s+2001:db8:ffff::1$`} {
		if i >= len(lines) || !regexp.MustCompile(re).MatchString(lines[i]) {
			t.Fatalf("vip list line %d: want match %q in\n%s", i, re, out)
		}
	}
	var vips []model.VIP
	if err := json.Unmarshal([]byte(l.ok("vip", "list", "-o", "json")), &vips); err != nil {
		t.Fatal(err)
	}
	if len(vips) != 3 || vips[1].Mode != model.ModeFullNAT || vips[1].SNATAddr != netip.MustParseAddr("10.0.2.1") ||
		vips[0].Backends[0].Port != 8080 || vips[2].SNATAddr.IsValid() {
		t.Fatalf("vip list -o json: %+v", vips)
	}

	waitFor(t, func() bool { return strings.Contains(l.ok("backend", "list", full6), " up ") }, "the v6 backend up")
	for _, tc := range []struct {
		vip  string
		rows []string
	}{
		{nat, []string{`^BACKEND\s+WEIGHT\s+STATE\s+FLOWS\s+HALF-OPEN\s+CHECK\s+MODE\s+IFACE\s+SNAT$`,
			`^10\.0\.1\.5:8080\s+100\s+up\s+0\s+0\s+-\s+nat\s+lo\s+-$`,
			`^10\.0\.1\.6\s+100\s+up\s+0\s+0\s+-\s+nat\s+lo\s+-$`}},
		{full, []string{`^BACKEND\s+WEIGHT\s+STATE\s+FLOWS\s+HALF-OPEN\s+CHECK\s+MODE\s+IFACE\s+SNAT$`,
			`^10\.0\.1\.5:8443\s+50\s+up\s+0\s+0\s+-\s+fullnat\s+lo\s+10\.0\.2\.1$`}},
		{full6, []string{`^BACKEND`, `^\[2001:db8:1::5\]:5353\s+100\s+up\s+0\s+0\s+-\s+fullnat\s+lo\s+2001:db8:ffff::1$`}},
	} {
		out := l.ok("backend", "list", tc.vip)
		lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
		for i, re := range tc.rows {
			if i >= len(lines) || !regexp.MustCompile(re).MatchString(lines[i]) {
				t.Fatalf("backend list %s line %d: want match %q in\n%s", tc.vip, i, re, out)
			}
		}
	}
	var bs []api.BackendStatus
	if err := json.Unmarshal([]byte(l.ok("backend", "list", full, "-o", "json")), &bs); err != nil {
		t.Fatal(err)
	}
	if len(bs) != 1 || bs[0].Mode != model.ModeFullNAT || bs[0].SNATAddr != netip.MustParseAddr("10.0.2.1") || bs[0].Port != 8443 || bs[0].Iface != "lo" {
		t.Fatalf("backend list -o json: %+v", bs)
	}
	// The backend is named with its port.
	l.ok("backend", "set", nat, "10.0.1.5:8080", "--weight", "7")
	wantOneLineError(t, l.run("backend", "set", nat, "10.0.1.5", "--weight", "7"), exitError, `backend 10\.0\.1\.5: not found`)

	exported := l.exported()
	for _, s := range []string{"mode: nat", "mode: fullnat", "snat_addr: 10.0.2.1", "port: 8080", "port: 8443", "port: 5353"} {
		if !strings.Contains(exported, s) {
			t.Errorf("export lacks %q:\n%s", s, exported)
		}
	}
	l2 := startLab(t)
	if r := runCLI(t, t.Context(), exported, "--socket", l2.socket, "apply", "-f", "-"); r.code != 0 || r.stderr != "" {
		t.Fatalf("apply -f -: exit %d, stderr %q", r.code, r.stderr)
	}
	if again := l2.exported(); again != exported {
		t.Errorf("export after apply of export:\n%s\nwant\n%s", again, exported)
	}

	l.dp.SetVIPCounters(1, loader.Counters{ICMPErrors: 4})
	l.dp.SetCountersFunc(nil)
	var st api.Stats
	if err := json.Unmarshal([]byte(l.ok("stats", "-o", "json")), &st); err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(st.VIPs, func(v api.VIPStats) bool { return v.ICMPErrors == 4 }) {
		t.Fatalf("stats -o json: %+v", st)
	}
}

// A socket the user may not open (mode 0600, not root) is reported as
// such, not as a daemon that is not running (issue 12, defect 8). Root
// opens any socket, so the kernel's refusal is made up here, as connect
// returns it.
func TestSocketPermissionDenied(t *testing.T) {
	fs := flag.NewFlagSet("xdplb", flag.ContinueOnError)
	fs.String("socket", "/run/xdplb/xdplb.sock", "")
	c := cli.NewContext(cli.NewApp(), fs, nil)
	denied := &net.OpError{Op: "dial", Net: "unix", Err: os.NewSyscallError("connect", syscall.EACCES)}
	err := apiError(c, fmt.Errorf("get /v1/vips: %w", denied))
	want := "permission denied on the daemon's socket /run/xdplb/xdplb.sock: it is for root only (mode 0600); run as root"
	if err == nil || err.Error() != want {
		t.Errorf("error %v, want %q", err, want)
	}
	refused := &net.OpError{Op: "dial", Net: "unix", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	if err := apiError(c, refused); err == nil || !strings.Contains(err.Error(), "is `xdplb daemon` running?") {
		t.Errorf("refused: %v", err)
	}
}

// stats --zero (ipvsadm -Z): stats counts from then on, the metrics are
// untouched (tested in control/api); with --watch it watches from zero.
func TestStatsZero(t *testing.T) {
	l := startLab(t)
	l.ok("vip", "add", "10.0.0.100:80/tcp")
	l.ok("backend", "add", "10.0.0.100:80/tcp", "10.0.0.11")
	l.dp.SetCountersFunc(nil)
	l.dp.SetVIPCounters(1, loader.Counters{Packets: 100, Bytes: 10000, Flows: 10})
	l.dp.SetBackendCounters(1, loader.Counters{Packets: 100, Bytes: 10000, Flows: 10})
	stats := func() api.Stats {
		t.Helper()
		var st api.Stats
		if err := json.Unmarshal([]byte(l.ok("stats", "-o", "json")), &st); err != nil {
			t.Fatal(err)
		}
		return st
	}
	if st := stats(); st.VIPs[0].Packets != 100 || !st.Since.IsZero() {
		t.Fatalf("before --zero: %+v", st)
	}
	if out := l.ok("stats", "--zero"); out != "" {
		t.Errorf("stats --zero printed %q", out)
	}
	st := stats()
	if st.VIPs[0].CounterSet != (api.CounterSet{}) || st.VIPs[0].Backends[0].CounterSet != (api.CounterSet{}) || st.Drops["no_backend"] != 0 || st.Since.IsZero() {
		t.Fatalf("after --zero: %+v", st)
	}
	l.dp.SetVIPCounters(1, loader.Counters{Packets: 130, Bytes: 13000, Flows: 13})
	if st = stats(); st.VIPs[0].CounterSet != (api.CounterSet{Packets: 30, Bytes: 3000, Flows: 3}) {
		t.Fatalf("after --zero and traffic: %+v", st.VIPs[0])
	}

	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	r := runCLI(t, ctx, "", "--socket", l.socket, "stats", "-Z", "-w", "--interval", "50ms")
	if r.code != 0 || r.stderr != "" || !regexp.MustCompile(`counters since .* \(stats --zero\)\n\nVIP.*\n10\.0\.0\.100:80/tcp\s+-\s+0\s+0\s+0\s`).MatchString(r.stdout) {
		t.Errorf("stats -Z -w: exit %d, stderr %q, stdout:\n%s", r.code, r.stderr, r.stdout)
	}
	wantOneLineError(t, runCLI(t, t.Context(), "", "--socket", filepath.Join(t.TempDir(), "none.sock"), "stats", "--zero"),
		exitError, "cannot reach the daemon")
}

// apply --dry-run prints what the apply would change and changes nothing;
// the daemon checks the file as for an apply, so a bad one fails.
func TestApplyDryRun(t *testing.T) {
	l := startLab(t)
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	l.ok("apply", "-f", write("lb.yaml", sampleConfig))
	before, gen := l.exported(), l.store.Generation()

	changed := write("changed.yaml", `vips:
  - address: 10.200.0.100
    port: 80
    protocol: tcp
    scheduler: sh
    healthcheck: {type: http, path: /healthz, interval: 2s, timeout: 500ms, rise: 2, fall: 3}
    backends:
      - {address: 10.200.0.11, weight: 50}
      - {address: 10.200.0.13}
      - {address: 10.200.0.14, port: 80}
  - address: 10.200.0.101
    port: 443
    protocol: tcp
    mode: fullnat
    snat_addr: 10.200.2.1
    backends:
      - {address: 10.200.1.5, port: 8443, weight: 7}
`)
	want := `~ vip 10.200.0.100:80/tcp
    healthcheck.interval: 1s -> 2s
    scheduler: maglev -> sh
  ~ backend 10.200.0.11: weight 100 -> 50
  - backend 10.200.0.12
  + backend 10.200.0.14: weight=100
+ vip 10.200.0.101:443/tcp: mode=fullnat scheduler=maglev snat_addr=10.200.2.1
  + backend 10.200.1.5:8443: weight=7
- vip [2001:db8::100]:53/udp
  - backend 2001:db8::10
  - backend 2001:db8::11
dry run: 1 vips added, 1 removed, 1 changed; nothing applied
`
	if out := l.ok("apply", "-f", changed, "--dry-run"); out != want {
		t.Errorf("apply --dry-run:\n%s\nwant\n%s", out, want)
	}
	// From stdin too.
	r := runCLI(t, t.Context(), before, "--socket", l.socket, "apply", "--dry-run", "-f", "-")
	if r.code != 0 || r.stderr != "" || r.stdout != "dry run: no changes\n" {
		t.Errorf("apply --dry-run of the state itself: exit %d, stderr %q, stdout %q", r.code, r.stderr, r.stdout)
	}

	// Refused as an apply would be: a duplicate VIP, more VIPs than the
	// maps hold.
	invalid := write("invalid.yaml", "vips:\n  - address: 10.0.0.1\n    port: 80\n    protocol: tcp\n  - address: 10.0.0.1\n    port: 80\n    protocol: tcp\n")
	wantOneLineError(t, l.run("apply", "-f", invalid, "--dry-run"), exitError, `^xdplb: apply: .*10\.0\.0\.1:80/tcp`)
	l.store.SetLimits(2, 256) // one VIP id
	wantOneLineError(t, l.run("apply", "-f", changed, "--dry-run"), exitError, `^xdplb: apply: .*(VIPs|vips)`)
	wantOneLineError(t, l.run("apply", "-f", changed), exitError, `^xdplb: apply: .*(VIPs|vips)`)

	if after := l.exported(); after != before || l.store.Generation() != gen {
		t.Errorf("dry runs changed the state (generation %d -> %d):\n%s", gen, l.store.Generation(), after)
	}
}
