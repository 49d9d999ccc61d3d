package e2e

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xdplb/xdplb/internal/lab"
)

// SIGHUP reloads --config under traffic with no failed connection, keeps
// the running state when the file is bad, and without --config is logged
// and ignored; the daemon never dies of it (issue 12, defect 7).
func TestSIGHUPReload(t *testing.T) {
	e := setupLab(t, lab.Options{})
	vip := netip.AddrPortFrom(lab.VIP4, 80)
	e.addVIP(vip.String()+"/tcp", func(n *lab.Node) netip.Addr { return n.IPv4 })

	hup := func() {
		t.Helper()
		if err := e.d.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		if e.d.Exited() {
			t.Fatalf("daemon exited on SIGHUP:\n%s", e.d.LogTail(20))
		}
	}
	hup()
	if !strings.Contains(e.d.Log(), "SIGHUP: no --config to reload, ignored") {
		t.Errorf("SIGHUP without --config not logged:\n%s", e.d.LogTail(20))
	}

	// The same state as a config file; the daemon restarted with it.
	file := filepath.Join(t.TempDir(), "lb.yaml")
	exported := e.cli("export")
	if err := os.WriteFile(file, []byte(exported), 0o600); err != nil {
		t.Fatal(err)
	}
	e.stop()
	e.daemonArgs = append(e.daemonArgs, "--config", file)
	e.start()

	// A second VIP in the file, reloaded while the first takes traffic.
	second := exported + "  - address: " + lab.VIP4.String() + "\n    port: 81\n    protocol: tcp\n    backends: []\n"
	if err := os.WriteFile(file, []byte(second), 0o600); err != nil {
		t.Fatal(err)
	}
	loaded := make(chan lab.LoadResult, 1)
	go func() {
		loaded <- e.lab.Client.Load(e.ctx, vip, lab.LoadOptions{Requests: 3000, Parallel: 4, Timeout: 3 * time.Second,
			MaxFailures: 20, FirstPort: firstClientPort})
	}()
	time.Sleep(100 * time.Millisecond)
	hup()
	res := <-loaded
	t.Logf("%d requests across the reload in %s", res.Requests, res.Duration.Round(time.Millisecond))
	if res.OK != res.Requests || res.Requests != 3000 {
		t.Errorf("%d of %d requests succeeded across the reload; first failures: %v", res.OK, res.Requests, res.Failures)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(e.cli("vip", "list"), lab.VIP4.String()+":81/tcp") {
		if time.Now().After(deadline) {
			t.Fatalf("reloaded vip not in vip list:\n%s\nlog:\n%s", e.cli("vip", "list"), e.d.LogTail(20))
		}
		time.Sleep(100 * time.Millisecond)
	}

	// A bad file: refused, the running state kept.
	before := e.cli("export")
	if err := os.WriteFile(file, []byte("vips: [{address: nonsense}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hup()
	if !strings.Contains(e.d.Log(), "SIGHUP: config not reloaded, the running state is kept") {
		t.Errorf("bad config not logged:\n%s", e.d.LogTail(20))
	}
	if after := e.cli("export"); after != before {
		t.Errorf("state changed by a bad config:\n%s\nwant\n%s", after, before)
	}
}

// TestWatchConfig: with --watch-config, a config file replaced the way
// configuration management does (a new file renamed over it) is applied
// under traffic with no failed request; a bad one is refused and logged,
// the running state kept (issue 17).
func TestWatchConfig(t *testing.T) {
	e := setupLab(t, lab.Options{})
	vip := netip.AddrPortFrom(lab.VIP4, 80)
	e.addVIP(vip.String()+"/tcp", func(n *lab.Node) netip.Addr { return n.IPv4 })
	dir := t.TempDir()
	file := filepath.Join(dir, "lb.yaml")
	push := func(content string) {
		t.Helper()
		tmp := filepath.Join(dir, ".lb.yaml.new")
		if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, file); err != nil {
			t.Fatal(err)
		}
	}
	exported := e.cli("export")
	push(exported)
	e.stop()
	e.daemonArgs = append(e.daemonArgs, "--config", file, "--watch-config")
	e.start()

	loaded := make(chan lab.LoadResult, 1)
	go func() {
		loaded <- e.lab.Client.Load(e.ctx, vip, lab.LoadOptions{Requests: 3000, Parallel: 4, Timeout: 3 * time.Second,
			MaxFailures: 20, FirstPort: firstClientPort})
	}()
	time.Sleep(100 * time.Millisecond)
	push(exported + "  - address: " + lab.VIP4.String() + "\n    port: 81\n    protocol: tcp\n    backends: []\n")
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(e.cli("vip", "list"), lab.VIP4.String()+":81/tcp") {
		if time.Now().After(deadline) {
			t.Fatalf("the pushed VIP is not in vip list:\n%s\nlog:\n%s", e.cli("vip", "list"), e.d.LogTail(20))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if res := <-loaded; res.OK != res.Requests || res.Requests != 3000 {
		t.Errorf("%d of %d requests succeeded across the change; first failures: %v", res.OK, res.Requests, res.Failures)
	}

	before := e.cli("export")
	push("vips: [{address: nonsense}]\n")
	deadline = time.Now().Add(5 * time.Second)
	for !strings.Contains(e.d.Log(), "config file changed: config not reloaded, the running state is kept") {
		if time.Now().After(deadline) {
			t.Fatalf("bad pushed config not logged:\n%s", e.d.LogTail(20))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if after := e.cli("export"); after != before {
		t.Errorf("state changed by a bad config:\n%s\nwant\n%s", after, before)
	}
}
