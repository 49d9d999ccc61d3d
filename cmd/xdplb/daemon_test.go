package main

import (
	"bytes"
	"context"
	"errors"
	"github.com/xdplb/xdplb/loader"
	"io"
	"net/netip"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xdplb/xdplb/control/api"
	"github.com/xdplb/xdplb/control/bgp"
	"github.com/xdplb/xdplb/control/daemon"
	"github.com/xdplb/xdplb/control/reconcile"
	"github.com/xdplb/xdplb/control/state"
)

// startLab serves the real control API, backed by a real store in a temp
// dir, a real reconciler and a fake data plane, on a temp unix socket.
func startLab(t *testing.T) *testDaemon {
	t.Helper()
	dir := t.TempDir()
	store, err := state.Open(filepath.Join(dir, "state"), nil)
	if err != nil {
		t.Fatal(err)
	}
	dp := newFakeDatapath()
	health := newFakeHealth()
	srv := &api.Server{
		Store:      store,
		Datapath:   dp,
		Reconciler: reconcile.NewReconciler(store, dp, fakeNetwork{}, health, nil),
		Version:    "test",
		StartTime:  time.Now().Add(-time.Minute),
	}
	ctx, cancel := context.WithCancel(context.Background())
	sock := filepath.Join(dir, "xdplb.sock")
	ln, err := api.ListenUnix(ctx, sock)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	loop := make(chan struct{})
	go func() { srv.Reconciler.Run(ctx); close(loop) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		<-loop
	})
	return &testDaemon{t: t, socket: sock, store: store, dp: dp, health: health}
}

// TestDaemonFlags checks the daemon command hands every flag, and the
// defaults, to the daemon unchanged.
func TestDaemonFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  string // XDPLB_SOCKET
		want daemon.Config
	}{
		{
			args: []string{"daemon", "--iface", "eth0"},
			want: daemon.Config{Options: loader.Options{BPFFS: "/sys/fs/bpf", Interfaces: []string{"eth0"}, XDPMode: "auto", LookupSize: 65537, ConntrackSize: 1 << 20, MaxVIPs: loader.DefaultMaxVIPs, MaxBackends: loader.DefaultMaxBackends, SNATPorts: loader.DefaultSNATPorts, HalfOpenTimeout: loader.DefaultHalfOpenTimeout}, StateDir: "/var/lib/xdplb", MetricsAddr: "127.0.0.1:9642", SocketPath: "/run/xdplb/xdplb.sock", BGP: bgp.Config{HoldTime: bgp.DefaultHoldTime}},
		},
		{
			args: []string{"--socket", "/tmp/x.sock", "daemon", "--iface", "eth0", "--iface", "eth1", "--xdp-mode", "native",
				"--state-dir", "/s", "--bpffs", "/b", "--config", "/c.yaml", "--metrics-addr", "[::1]:9000",
				"--maglev-size", "251", "--conntrack-size", "4096", "--snat-ports", "30000-39999", "--half-open-timeout", "5s", "--detach-on-exit", "--recover-state", "--watch-config", "--log-level", "debug", "--log-format", "json"},
			want: daemon.Config{Options: loader.Options{BPFFS: "/b", Interfaces: []string{"eth0", "eth1"}, XDPMode: "native", LookupSize: 251, ConntrackSize: 4096, MaxVIPs: loader.DefaultMaxVIPs, MaxBackends: loader.DefaultMaxBackends, SNATPorts: loader.PortRange{Lo: 30000, Hi: 39999}, HalfOpenTimeout: 5 * time.Second}, StateDir: "/s", ConfigFile: "/c.yaml", MetricsAddr: "[::1]:9000", SocketPath: "/tmp/x.sock", DetachOnExit: true, RecoverState: true, WatchConfig: true, BGP: bgp.Config{HoldTime: bgp.DefaultHoldTime}},
		},
		{
			args: []string{"daemon", "--iface", "eth0", "--xdp-mode", "generic"},
			env:  "/tmp/env.sock",
			want: daemon.Config{Options: loader.Options{BPFFS: "/sys/fs/bpf", Interfaces: []string{"eth0"}, XDPMode: "generic", LookupSize: 65537, ConntrackSize: 1 << 20, MaxVIPs: loader.DefaultMaxVIPs, MaxBackends: loader.DefaultMaxBackends, SNATPorts: loader.DefaultSNATPorts, HalfOpenTimeout: loader.DefaultHalfOpenTimeout}, StateDir: "/var/lib/xdplb", MetricsAddr: "127.0.0.1:9642", SocketPath: "/tmp/env.sock", BGP: bgp.Config{HoldTime: bgp.DefaultHoldTime}},
		},
		{
			args: []string{"daemon", "--iface", "eth0", "--bgp-asn", "65001", "--bgp-router-id", "10.0.0.1",
				"--bgp-peer", "192.0.2.254", "--bgp-peer", "2001:db8::fe,asn=65000,port=1179", "--bgp-hold-time", "30s", "--bgp-listen-port", "1179"},
			want: daemon.Config{Options: loader.Options{BPFFS: "/sys/fs/bpf", Interfaces: []string{"eth0"}, XDPMode: "auto", LookupSize: 65537, ConntrackSize: 1 << 20, MaxVIPs: loader.DefaultMaxVIPs, MaxBackends: loader.DefaultMaxBackends, SNATPorts: loader.DefaultSNATPorts, HalfOpenTimeout: loader.DefaultHalfOpenTimeout}, StateDir: "/var/lib/xdplb", MetricsAddr: "127.0.0.1:9642", SocketPath: "/run/xdplb/xdplb.sock",
				BGP: bgp.Config{ASN: 65001, RouterID: netip.MustParseAddr("10.0.0.1"), HoldTime: 30 * time.Second, ListenPort: 1179, Peers: []bgp.Peer{
					{Addr: netip.MustParseAddr("192.0.2.254")}, {Addr: netip.MustParseAddr("2001:db8::fe"), ASN: 65000, Port: 1179}}}},
		},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			if tc.env != "" {
				t.Setenv("XDPLB_SOCKET", tc.env)
			}
			var got *daemon.Config
			var stderr bytes.Buffer
			e := &env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: &stderr,
				runDaemon: func(_ context.Context, cfg daemon.Config) error {
					got = &cfg
					cfg.Logger.Debug("probe")
					return errors.New("stopped")
				}}
			code := e.run(t.Context(), append([]string{"xdplb"}, tc.args...))
			if got == nil {
				t.Fatalf("daemon not started: exit %d, stderr %q", code, stderr.String())
			}
			if code != exitError || !strings.HasSuffix(stderr.String(), "xdplb: daemon: stopped\n") {
				t.Errorf("exit %d, stderr %q: want the daemon's error", code, stderr.String())
			}
			if got.Logger == nil {
				t.Fatal("no logger")
			}
			if debug := strings.Contains(stderr.String(), "probe"); debug != slices.Contains(tc.args, "debug") {
				t.Errorf("debug log written: %v, stderr %q", debug, stderr.String())
			}
			if slices.Contains(tc.args, "json") && !strings.HasPrefix(stderr.String(), "{") {
				t.Errorf("--log-format json wrote %q", stderr.String())
			}
			if got.Version != version {
				t.Errorf("version %q, want %q", got.Version, version)
			}
			got.Logger, got.Version = nil, ""
			if !reflect.DeepEqual(*got, tc.want) {
				t.Errorf("daemon config\n%+v\nwant\n%+v", *got, tc.want)
			}
		})
	}
}

// TestDaemonBGPFlagErrors: a bad --bgp-* flag is a usage error, found
// before the daemon starts.
func TestDaemonBGPFlagErrors(t *testing.T) {
	bgpOK := []string{"--bgp-asn", "65001", "--bgp-router-id", "10.0.0.1", "--bgp-peer", "192.0.2.254"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--bgp-asn", "65001"}, `--bgp-router-id is required`},
		{[]string{"--bgp-peer", "192.0.2.254"}, `--bgp-asn is required`},
		{[]string{"--bgp-listen-port", "1179"}, `--bgp-listen-port needs`},
		{append(bgpOK, "--bgp-asn", "4294967296"), `--bgp-asn 4294967296: want 1 to 4294967295`},
		{append(bgpOK, "--bgp-router-id", "router1"), `--bgp-router-id "router1": want an IPv4 address`},
		{append(bgpOK, "--bgp-router-id", "2001:db8::1"), `router id 2001:db8::1: want an IPv4 address`},
		{append(bgpOK, "--bgp-peer", "192.0.2.253,asn=x"), `--bgp-peer: bgp peer "192.0.2.253,asn=x": asn "x"`},
		{append(bgpOK, "--bgp-peer", "192.0.2.254,port=1179"), `peer 192.0.2.254 given twice`},
		{append(bgpOK, "--bgp-hold-time", "1s"), `hold time 1s: want whole seconds from 3s to 18h12m15s`},
		{append(bgpOK, "--bgp-listen-port", "70000"), `--bgp-listen-port 70000: want 1 to 65535`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			e := &env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: &bytes.Buffer{},
				runDaemon: func(context.Context, daemon.Config) error {
					t.Fatal("daemon started despite a bad flag")
					return nil
				}}
			var stderr bytes.Buffer
			e.stderr = &stderr
			code := e.run(t.Context(), append([]string{"xdplb", "daemon", "--iface", "eth0"}, tc.args...))
			if code != exitUsage || !strings.Contains(stderr.String(), tc.want) || strings.Count(stderr.String(), "\n") != 1 {
				t.Errorf("exit %d, stderr %q: want a one-line usage error with %q", code, stderr.String(), tc.want)
			}
		})
	}
}

// TestDaemonMissingInterface runs the real daemon entry point: it checks
// the interfaces before it touches anything, so this needs no root.
func TestDaemonMissingInterface(t *testing.T) {
	dir := t.TempDir()
	r := runCLI(t, t.Context(), "", "--socket", filepath.Join(dir, "x.sock"), "daemon", "--iface", "xdplbnone0",
		"--state-dir", dir, "--bpffs", dir, "--metrics-addr", "127.0.0.1:0")
	wantOneLineError(t, r, exitError, `^xdplb: daemon: .*xdplbnone0`)
}

// TestDetachCommand checks detach hands its flags to daemon.Detach and
// reports its error as one line.
func TestDetachCommand(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want daemon.DetachConfig
		err  error
	}{
		{[]string{"detach"}, daemon.DetachConfig{StateDir: "/var/lib/xdplb", BPFFS: "/sys/fs/bpf"}, nil},
		{[]string{"detach", "--state-dir", "/s", "--bpffs", "/b"}, daemon.DetachConfig{StateDir: "/s", BPFFS: "/b"},
			state.ErrLocked},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var got *daemon.DetachConfig
			var stdout, stderr bytes.Buffer
			e := &env{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr,
				runDetach: func(_ context.Context, cfg daemon.DetachConfig) error {
					got = &cfg
					return tc.err
				}}
			code := e.run(t.Context(), append([]string{"xdplb"}, tc.args...))
			if got == nil {
				t.Fatalf("detach not run: exit %d, stderr %q", code, stderr.String())
			}
			if got.Logger == nil {
				t.Error("no logger")
			}
			got.Logger = nil
			if *got != tc.want {
				t.Errorf("detach config %+v, want %+v", *got, tc.want)
			}
			if tc.err == nil {
				if code != exitOK || stderr.Len() != 0 {
					t.Errorf("exit %d, stderr %q", code, stderr.String())
				}
				return
			}
			wantOneLineError(t, result{stdout: stdout.String(), stderr: stderr.String(), code: code}, exitError,
				`^xdplb: detach: state dir in use`)
		})
	}
	r := runCLI(t, t.Context(), "", "detach", "now")
	wantOneLineError(t, r, exitUsage, `^xdplb: detach: want no arguments$`)
}
