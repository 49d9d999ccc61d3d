package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/xdplb/xdplb/control/model"
)

// DemoOptions configure RunDemo.
type DemoOptions struct {
	Binary   string // the xdplb binary, run as the daemon and as the CLI
	Out      io.Writer
	Logger   *slog.Logger
	Requests int // default 300
}

// RunDemo builds a lab, starts the daemon with native XDP on the load
// balancer, configures a DR VIP with three backends and an HTTP health check
// through the CLI, sends requests from the client and prints who answered
// and the XDP counters. Then it stops one backend's server, shows how fast it
// leaves the rotation and that the others take its share, and starts it
// again. Everything it created is removed before it returns, also when ctx is
// cancelled (Ctrl-C) or a step fails.
func RunDemo(ctx context.Context, o DemoOptions) (err error) {
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Requests <= 0 {
		o.Requests = 300
	}
	if os.Geteuid() != 0 {
		return errors.New("the demo needs root (network namespaces and XDP)")
	}
	if o.Binary == "" {
		return errors.New("no xdplb binary given")
	}
	say := func(format string, args ...any) { fmt.Fprintf(o.Out, format+"\n", args...) }

	l, err := New(ctx, Options{Logger: o.Logger})
	if err != nil {
		return fmt.Errorf("build lab: %w", err)
	}
	var d *Daemon
	defer func() {
		if ctx.Err() != nil {
			err = errors.New("interrupted")
		} else if err != nil && d != nil {
			say("\nDaemon log (%s):\n%s", d.LogPath, strings.TrimRight(d.Log(), "\n"))
		}
		say("\nCleaning up: stopping the daemon, deleting namespaces %s-*", l.Prefix)
		err = errors.Join(err, l.Close())
	}()
	say("Lab %s: namespaces client, lb, be1, be2, be3 on one bridge", l.Prefix)
	say("  client %-12s lb %-12s backends %s-%s (VIP on lo)", l.Client.IPv4, l.LB.IPv4, l.Backends[0].IPv4, l.Backends[len(l.Backends)-1].IPv4)
	servers, err := l.ServeBackends()
	if err != nil {
		return err
	}

	dir, err := os.MkdirTemp("", "xdplb-demo-")
	if err != nil {
		return fmt.Errorf("temp dir: %w", err)
	}
	l.AddCloser(func() error { return os.RemoveAll(dir) })
	// `ip netns exec` hides /sys/fs/bpf, so the daemon mounts a bpffs on
	// this directory itself, inside the private mount namespace that `ip
	// netns exec` gives it: pins and program go away with the daemon, even
	// if we are killed.
	bpffs := filepath.Join(dir, "bpffs")
	if err := os.Mkdir(bpffs, 0o700); err != nil {
		return fmt.Errorf("bpffs dir: %w", err)
	}

	say("Starting the daemon in %s with native XDP on %s", l.LB.NetNS, l.LB.Iface)
	d, err = StartDaemon(ctx, DaemonOptions{Binary: o.Binary, Node: l.LB, Dir: dir, BPFFS: bpffs})
	if err != nil {
		return err
	}
	l.AddCloser(d.Stop)

	vip := netip.AddrPortFrom(VIP4, HTTPPort).String() + "/tcp"
	cmds := [][]string{{"vip", "add", vip, "--mode", "dr", "--check", "http", "--check-interval", "200ms", "--check-timeout", "100ms"}}
	for _, be := range l.Backends {
		cmds = append(cmds, []string{"backend", "add", vip, be.IPv4.String()})
	}
	for _, args := range cmds {
		say("  $ xdplb %s", strings.Join(args, " "))
		if _, err := d.CLI(ctx, args...); err != nil {
			return err
		}
	}
	if _, err := d.WaitBackendsUp(ctx, vip, len(l.Backends), 15*time.Second); err != nil {
		return err
	}

	target := netip.AddrPortFrom(VIP4, HTTPPort)
	batch := func(n int) error {
		say("\nSending %d HTTP requests from the client to %s, each on a new connection...", n, vip)
		res := l.Client.Load(ctx, target, LoadOptions{Requests: n, Parallel: 4, MaxFailures: 20})
		if err := ctx.Err(); err != nil {
			return err
		}
		say("%d of %d answered in %s:", res.OK, res.Requests, res.Duration.Round(time.Millisecond))
		for _, be := range l.Backends {
			n := res.ByBackend[be.Name]
			bar := strings.Repeat("#", n*40/max(res.Requests, 1))
			say("  %-4s %-12s %4d  %5.1f%%  %s", be.Name, be.IPv4, n, 100*float64(n)/float64(max(res.Requests, 1)), bar)
		}
		for _, f := range res.Failures {
			say("  failed: %s", f)
		}
		if res.Failed > 0 {
			return fmt.Errorf("%d of %d requests failed", res.Failed, res.Requests)
		}
		return nil
	}
	if err := batch(o.Requests); err != nil {
		return err
	}
	out, err := d.CLI(ctx, "stats", "--interval", "200ms")
	if err != nil {
		return err
	}
	say("\nXDP counters ($ xdplb stats):\n%s", strings.TrimRight(out, "\n"))
	say("\nEvery request went client -> lb (XDP, MACs rewritten) -> backend, and the answer came back directly from the backend.")

	// Failover: the health check notices a dead server within fall (3)
	// probes at 200ms and takes it out of the Maglev table.
	be2, srv2 := l.Backends[1], servers[1]
	say("\nFailover: stopping %s's web server (its kernel now refuses connections)...", be2.Name)
	stopped := time.Now()
	if err := srv2.Stop(); err != nil {
		return err
	}
	_, seen, err := d.WaitBackendState(ctx, vip, be2.IPv4, model.BackendDown, 5*time.Second)
	if err != nil {
		return err
	}
	say("%s failed 3 checks in a row (one every 200ms) and left the rotation %s later:", be2.Name, seen.Sub(stopped).Round(10*time.Millisecond))
	if out, err = d.CLI(ctx, "backend", "list", vip); err != nil {
		return err
	}
	say("  $ xdplb backend list %s\n%s", vip, indent(out))
	if err := batch(o.Requests / 2); err != nil {
		return err
	}

	say("\nStarting %s's web server again...", be2.Name)
	started := time.Now()
	if err := srv2.Start(); err != nil {
		return err
	}
	if _, seen, err = d.WaitBackendState(ctx, vip, be2.IPv4, model.BackendUp, 5*time.Second); err != nil {
		return err
	}
	say("%s passed 2 checks in a row and is back in rotation %s later.", be2.Name, seen.Sub(started).Round(10*time.Millisecond))
	return batch(o.Requests / 2)
}

// indent prefixes every line of s with four spaces.
func indent(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = "    " + l
	}
	return strings.Join(lines, "\n")
}
