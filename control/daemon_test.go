package control

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xdplb/xdplb/loader"
)

func daemonConfig(t *testing.T) DaemonConfig {
	t.Helper()
	dir, err := os.MkdirTemp("", "xlbd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return DaemonConfig{
		Interfaces:  []string{"lo"},
		StateDir:    filepath.Join(dir, "state"),
		SocketPath:  filepath.Join(dir, "run", "xdplb.sock"),
		MetricsAddr: "127.0.0.1:0",
		MaglevSize:  testTableSize,
		Version:     "test",
	}
}

func TestDaemonFlagErrors(t *testing.T) {
	open := func(loader.Options) (DatapathCloser, error) {
		t.Fatal("data plane opened despite a bad flag")
		return nil, nil
	}
	for _, tc := range []struct {
		change func(*DaemonConfig)
		want   string
	}{
		{func(c *DaemonConfig) { c.MaglevSize = 65536 }, "--maglev-size 65536: must be a prime"},
		{func(c *DaemonConfig) { c.Interfaces = []string{"nosuch0"} }, "interface nosuch0 not found"},
		{func(c *DaemonConfig) { c.Interfaces = nil }, "at least one --iface"},
		{func(c *DaemonConfig) { c.XDPMode = "fast" }, `--xdp-mode "fast"`},
	} {
		cfg := daemonConfig(t)
		tc.change(&cfg)
		err := RunDaemonWith(context.Background(), cfg, open)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("err %v, want %q", err, tc.want)
		}
	}
}

func TestDaemonBadConfigFailsFast(t *testing.T) {
	cfg := daemonConfig(t)
	cfg.ConfigFile = filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(cfg.ConfigFile, []byte("vips:\n  - address: 10.0.0.300\n    port: 80\n    protocol: tcp\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := RunDaemonWith(context.Background(), cfg, func(loader.Options) (DatapathCloser, error) {
		return newTestDatapath(), nil
	})
	if err == nil || !strings.Contains(err.Error(), "bad.yaml") {
		t.Fatalf("err %v", err)
	}
	if _, err := os.Stat(cfg.SocketPath); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left behind: %v", err)
	}
}

func TestDaemonServesAndStops(t *testing.T) {
	cfg := daemonConfig(t)
	dp := newTestDatapath()
	optsc := make(chan loader.Options, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- RunDaemonWith(ctx, cfg, func(o loader.Options) (DatapathCloser, error) { optsc <- o; return dp, nil })
	}()
	c := NewClient(cfg.SocketPath)
	defer c.Close()
	var err error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, err = c.Status(context.Background()); err == nil {
			break
		}
	}
	if err != nil {
		cancel()
		t.Fatalf("daemon not serving: %v (exit: %v)", err, <-done)
	}
	if opts := <-optsc; opts.LookupSize != testTableSize || opts.XDPMode != loader.XDPModeAuto || len(opts.Interfaces) != 1 {
		t.Errorf("loader options %+v", opts)
	}
	id := VIPID{Addr: netip.MustParseAddr("192.0.2.10"), Port: 80, Protocol: TCP}
	if err := c.AddVIP(context.Background(), VIP{Address: id.Addr, Port: 80, Protocol: TCP}); err != nil {
		t.Fatal(err)
	}
	// A second daemon on the same socket refuses to start.
	if err := RunDaemonWith(context.Background(), cfg, func(loader.Options) (DatapathCloser, error) {
		t.Error("second daemon opened the data plane")
		return dp, nil
	}); !errors.Is(err, ErrDaemonRunning) {
		t.Errorf("second daemon: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("daemon exit: %v", err)
	}
	if _, err := os.Stat(cfg.SocketPath); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket not removed: %v", err)
	}
	vips, _ := dp.VIPs()
	if _, ok := vips[VIPKeyOf(id)]; !ok {
		t.Fatal("vip not written to the data plane")
	}
	// The state survives: a restarted daemon's store has the VIP.
	st, err := OpenStore(cfg.StateDir, nil)
	if err != nil || len(st.State().VIPs) != 1 {
		t.Fatalf("restored state: %v %v", st, err)
	}
}
