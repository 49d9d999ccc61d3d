package daemon

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xdplb/xdplb/loader"
)

// listenNotify is a service manager's notify socket: a unixgram socket
// at a temp path (short: sun_path holds 108 bytes).
func listenNotify(t *testing.T, name string) (*net.UnixConn, string) {
	t.Helper()
	if name == "" {
		dir, err := os.MkdirTemp("", "xlbn")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		name = filepath.Join(dir, "notify")
	}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, name
}

// readNotify returns the next datagram on c.
func readNotify(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4096)
	n, err := c.Read(b)
	if err != nil {
		t.Fatalf("read notify socket: %v", err)
	}
	return string(b[:n])
}

func TestNotify(t *testing.T) {
	c, path := listenNotify(t, "")
	if err := notify(path, "READY=1\nSTATUS=up"); err != nil {
		t.Fatal(err)
	}
	if got := readNotify(t, c); got != "READY=1\nSTATUS=up" {
		t.Errorf("got %q", got)
	}
	// systemd may pass a socket in the abstract namespace: "@name".
	abstract := fmt.Sprintf("@xdplb-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	ca, _ := listenNotify(t, abstract)
	if err := notify(abstract, "STOPPING=1"); err != nil {
		t.Fatal(err)
	}
	if got := readNotify(t, ca); got != "STOPPING=1" {
		t.Errorf("abstract: got %q", got)
	}
	// No socket: not run as Type=notify, nothing to do.
	if err := notify("", "READY=1"); err != nil {
		t.Errorf("no socket: %v", err)
	}
	if err := notify("relative/sock", "READY=1"); err == nil || !strings.Contains(err.Error(), "absolute path") {
		t.Errorf("relative socket: %v", err)
	}
	if err := notify(filepath.Join(t.TempDir(), "none"), "READY=1"); err == nil {
		t.Error("no error from a socket nobody listens on")
	}
}

// The daemon tells the service manager READY=1 once it serves (the data
// plane loaded, the API and /readyz answering) and STOPPING=1 when told
// to stop.
func TestDaemonNotifiesReadyAndStopping(t *testing.T) {
	c, path := listenNotify(t, "")
	cfg := daemonConfig(t)
	cfg.NotifySocket = path
	cfg.MetricsAddr = freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- RunWith(ctx, cfg, func(loader.Options) (DatapathCloser, error) { return newTestDatapath(), nil })
	}()
	if got := readNotify(t, c); got != "READY=1\nSTATUS=running on lo" {
		t.Fatalf("first notification %q", got)
	}
	if code, body, err := httpGet("http://" + cfg.MetricsAddr + "/readyz"); err != nil || code != 200 {
		t.Errorf("/readyz once READY=1 was sent: %d %q %v", code, body, err)
	}
	if _, err := os.Stat(cfg.SocketPath); err != nil {
		t.Errorf("API socket once READY=1 was sent: %v", err)
	}
	cancel()
	if got := readNotify(t, c); got != "STOPPING=1" {
		t.Errorf("notification at stop %q", got)
	}
	if err := <-done; err != nil {
		t.Fatalf("daemon exit: %v", err)
	}
}
