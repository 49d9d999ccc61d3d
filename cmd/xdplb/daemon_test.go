package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xdplb/xdplb/control"
)

// startLab serves the real control API, backed by a real store in a temp
// dir, a real reconciler and a fake data plane, on a temp unix socket.
func startLab(t *testing.T) *testDaemon {
	t.Helper()
	dir := t.TempDir()
	store, err := control.OpenStore(filepath.Join(dir, "state"), nil)
	if err != nil {
		t.Fatal(err)
	}
	dp := newFakeDatapath()
	health := newFakeHealth()
	srv := &control.Server{
		Store:      store,
		Datapath:   dp,
		Reconciler: control.NewReconciler(store, dp, fakeNetwork{}, health, nil),
		Version:    "test",
		StartTime:  time.Now().Add(-time.Minute),
	}
	ctx, cancel := context.WithCancel(context.Background())
	sock := filepath.Join(dir, "xdplb.sock")
	ln, err := control.ListenUnix(ctx, sock)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return &testDaemon{t: t, socket: sock, store: store, dp: dp, health: health}
}

// TestDaemonFlags checks the daemon command hands every flag, and the
// defaults, to the daemon unchanged.
func TestDaemonFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  string // XDPLB_SOCKET
		want control.DaemonConfig
	}{
		{
			args: []string{"daemon", "--iface", "eth0"},
			want: control.DaemonConfig{Interfaces: []string{"eth0"}, XDPMode: "auto", StateDir: "/var/lib/xdplb",
				BPFFS: "/sys/fs/bpf", MetricsAddr: "127.0.0.1:9642", SocketPath: "/run/xdplb/xdplb.sock",
				MaglevSize: 65537, ConntrackSize: 1 << 20},
		},
		{
			args: []string{"--socket", "/tmp/x.sock", "daemon", "--iface", "eth0", "--iface", "eth1", "--xdp-mode", "native",
				"--state-dir", "/s", "--bpffs", "/b", "--config", "/c.yaml", "--metrics-addr", "[::1]:9000",
				"--maglev-size", "251", "--conntrack-size", "4096", "--detach-on-exit", "--log-level", "debug", "--log-format", "json"},
			want: control.DaemonConfig{Interfaces: []string{"eth0", "eth1"}, XDPMode: "native", StateDir: "/s",
				BPFFS: "/b", ConfigFile: "/c.yaml", MetricsAddr: "[::1]:9000", SocketPath: "/tmp/x.sock",
				MaglevSize: 251, ConntrackSize: 4096, DetachOnExit: true},
		},
		{
			args: []string{"daemon", "--iface", "eth0", "--xdp-mode", "generic"},
			env:  "/tmp/env.sock",
			want: control.DaemonConfig{Interfaces: []string{"eth0"}, XDPMode: "generic", StateDir: "/var/lib/xdplb",
				BPFFS: "/sys/fs/bpf", MetricsAddr: "127.0.0.1:9642", SocketPath: "/tmp/env.sock",
				MaglevSize: 65537, ConntrackSize: 1 << 20},
		},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			if tc.env != "" {
				t.Setenv("XDPLB_SOCKET", tc.env)
			}
			var got *control.DaemonConfig
			var stderr bytes.Buffer
			e := &env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: &stderr,
				runDaemon: func(_ context.Context, cfg control.DaemonConfig) error {
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

// TestDaemonMissingInterface runs the real daemon entry point: it checks
// the interfaces before it touches anything, so this needs no root.
func TestDaemonMissingInterface(t *testing.T) {
	dir := t.TempDir()
	r := runCLI(t, t.Context(), "", "--socket", filepath.Join(dir, "x.sock"), "daemon", "--iface", "xdplbnone0",
		"--state-dir", dir, "--bpffs", dir, "--metrics-addr", "127.0.0.1:0")
	wantOneLineError(t, r, exitError, `^xdplb: daemon: .*xdplbnone0`)
}

// TestDetachCommand checks detach hands its flags to control.Detach and
// reports its error as one line.
func TestDetachCommand(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want control.DetachConfig
		err  error
	}{
		{[]string{"detach"}, control.DetachConfig{StateDir: "/var/lib/xdplb", BPFFS: "/sys/fs/bpf"}, nil},
		{[]string{"detach", "--state-dir", "/s", "--bpffs", "/b"}, control.DetachConfig{StateDir: "/s", BPFFS: "/b"},
			control.ErrStateDirLocked},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var got *control.DetachConfig
			var stdout, stderr bytes.Buffer
			e := &env{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr,
				runDetach: func(_ context.Context, cfg control.DetachConfig) error {
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
