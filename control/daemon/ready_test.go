package daemon

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/xdplb/xdplb/loader"
)

// freeAddr is a loopback TCP address that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// httpGet returns the status and body of url, or an error while nothing
// listens.
func httpGet(url string) (int, string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// waitStatus polls url until it answers want.
func waitStatus(t *testing.T, url string, want int) string {
	t.Helper()
	var code int
	var body string
	var err error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if code, body, err = httpGet(url); err == nil && code == want {
			return body
		}
	}
	t.Fatalf("%s: %d %q %v, want %d", url, code, body, err, want)
	return ""
}

// The metrics listener answers /healthz while the data plane loads, and
// /readyz only once it is loaded and reconciled; /metrics has the Go
// runtime and process collectors from the start, the data plane's
// counters once it is there.
func TestDaemonReadiness(t *testing.T) {
	cfg := daemonConfig(t)
	cfg.MetricsAddr = freeAddr(t)
	base := "http://" + cfg.MetricsAddr
	loading := make(chan struct{})
	release := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- RunWith(ctx, cfg, func(loader.Options) (DatapathCloser, error) {
			close(loading)
			<-release
			return newTestDatapath(), nil
		})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("daemon exit: %v", err)
		}
	}()
	select {
	case <-loading:
	case err := <-done:
		t.Fatalf("daemon ended: %v", err)
	}
	waitStatus(t, base+"/healthz", http.StatusOK)
	if code, body, err := httpGet(base + "/readyz"); err != nil || code != http.StatusServiceUnavailable {
		t.Errorf("/readyz while loading: %d %q %v", code, body, err)
	}
	body := waitStatus(t, base+"/metrics", http.StatusOK)
	if !strings.Contains(body, "go_goroutines") || !strings.Contains(body, "process_start_time_seconds") || strings.Contains(body, "xdplb_build_info") {
		t.Errorf("/metrics while loading:\n%s", body)
	}
	close(release)
	waitStatus(t, base+"/readyz", http.StatusOK)
	body = waitStatus(t, base+"/metrics", http.StatusOK)
	for _, want := range []string{`xdplb_build_info{version="test"} 1`, `xdplb_reconciles_total{result="ok"} `, "go_goroutines"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics when ready lacks %q", want)
		}
	}
}
