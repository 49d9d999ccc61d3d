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

// The demo's NAT VIPs: on the client's segment beside the DR VIP (VIP4),
// their backends behind the load balancer's second interface.
var (
	demoNATVIP     = netip.MustParseAddr("10.200.0.101")
	demoFullNATVIP = netip.MustParseAddr("10.200.0.102")
)

// RunDemo builds a two-armed lab, starts the daemon with native XDP on both
// of the load balancer's interfaces, configures through the CLI a DR VIP
// with three backends on the client's segment, and a nat and a fullnat VIP
// with three backends on the segment behind the load balancer, all with an
// HTTP health check; sends requests from the client to each and prints who
// answered, whom the NAT backends saw as their peer, and the XDP counters.
// Then it stops one DR backend's server, shows how fast it leaves the
// rotation and that the others take its share, and starts it again.
// Everything it created is removed before it returns, also when ctx is
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

	l, err := New(ctx, Options{Backends: 3, NAT: &NATOptions{Backends: 3, Gateway: true}, Logger: o.Logger})
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
	say("Lab %s: network namespaces on two bridges, the load balancer on both", l.Prefix)
	say("  %s: client %s, lb %s (%s), DR backends %s-%s (VIPs on their lo), port %d",
		Subnet4, l.Client.IPv4, l.LB.IPv4, l.LB.Iface, l.Backends[0].IPv4, l.Backends[len(l.Backends)-1].IPv4, HTTPPort)
	say("  %s: lb %s (%s), NAT backends %s-%s (default route via the lb), port %d",
		NATSubnet4, l.LB.Back.IPv4, l.LB.Back.Name, l.NATBackends[0].IPv4, l.NATBackends[len(l.NATBackends)-1].IPv4, NATPort)
	servers, err := l.ServeBackends()
	if err != nil {
		return err
	}
	if _, err := l.ServeNATBackends(); err != nil {
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

	say("Starting the daemon in %s with native XDP on %s", l.LB.NetNS, strings.Join(l.LB.Ifaces(), " and "))
	d, err = StartDaemon(ctx, DaemonOptions{Binary: o.Binary, Node: l.LB, Dir: dir, BPFFS: bpffs})
	if err != nil {
		return err
	}
	l.AddCloser(d.Stop)
	run := func(cmds ...[]string) error {
		for _, args := range cmds {
			say("  $ xdplb %s", strings.Join(args, " "))
			if _, err := d.CLI(ctx, args...); err != nil {
				return err
			}
		}
		return nil
	}
	check := []string{"--check", "http", "--check-interval", "200ms", "--check-timeout", "100ms"}

	say("\nDR: the backends hold the VIP on lo and answer the client directly.")
	target := netip.AddrPortFrom(VIP4, HTTPPort)
	vip := target.String() + "/tcp"
	cmds := [][]string{append([]string{"vip", "add", vip, "--mode", "dr"}, check...)}
	for _, be := range l.Backends {
		cmds = append(cmds, []string{"backend", "add", vip, be.IPv4.String()})
	}
	if err := run(cmds...); err != nil {
		return err
	}
	if _, err := d.WaitBackendsUp(ctx, vip, len(l.Backends), 15*time.Second); err != nil {
		return err
	}
	batch := func(target netip.AddrPort, backends []*Node, n int) (LoadResult, error) {
		vip := target.String() + "/tcp"
		say("\nSending %d HTTP requests from the client to %s, each on a new connection...", n, vip)
		res := l.Client.Load(ctx, target, LoadOptions{Requests: n, Parallel: 4, MaxFailures: 20})
		if err := ctx.Err(); err != nil {
			return res, err
		}
		say("%d of %d answered in %s:", res.OK, res.Requests, res.Duration.Round(time.Millisecond))
		for _, be := range backends {
			n := res.ByBackend[be.Name]
			bar := strings.Repeat("#", n*40/max(res.Requests, 1))
			say("  %-4s %-12s %4d  %5.1f%%  %s", be.Name, be.IPv4, n, 100*float64(n)/float64(max(res.Requests, 1)), bar)
		}
		for _, f := range res.Failures {
			say("  failed: %s", f)
		}
		if res.Failed > 0 {
			return res, fmt.Errorf("%d of %d requests failed", res.Failed, res.Requests)
		}
		return res, nil
	}
	if _, err := batch(target, l.Backends, o.Requests); err != nil {
		return err
	}
	say("Every request went client -> lb (XDP, MACs rewritten) -> backend, and the answer came back directly from the backend.")

	if err := demoNAT(ctx, l, d, run, check, batch, say, o.Requests); err != nil {
		return err
	}

	out, err := d.CLI(ctx, "stats", "--interval", "200ms")
	if err != nil {
		return err
	}
	say("\nXDP counters ($ xdplb stats):\n%s", strings.TrimRight(out, "\n"))

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
	if _, err := batch(target, l.Backends, o.Requests/2); err != nil {
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
	_, err = batch(target, l.Backends, o.Requests/2)
	return err
}

// demoNAT is the NAT part of the demo: a nat and a fullnat VIP with the NAT
// backends, a batch of requests to each, and whom the backends saw.
func demoNAT(ctx context.Context, l *Lab, d *Daemon, run func(...[]string) error, check []string,
	batch func(netip.AddrPort, []*Node, int) (LoadResult, error), say func(string, ...any), n int) error {
	say("\nNAT: the backends are on %s behind the lb's %s, which is their gateway; they listen on %d.", NATSubnet4, l.LB.Back.Name, NATPort)
	say("nat rewrites the destination to a backend's address and port, fullnat the source to the lb's too.")
	natTarget := netip.AddrPortFrom(demoNATVIP, HTTPPort)
	fullTarget := netip.AddrPortFrom(demoFullNATVIP, HTTPPort)
	natVIP, fullVIP := natTarget.String()+"/tcp", fullTarget.String()+"/tcp"
	cmds := [][]string{
		append([]string{"vip", "add", natVIP, "--mode", "nat"}, check...),
		append([]string{"vip", "add", fullVIP, "--mode", "fullnat", "--snat-addr", l.LB.Back.IPv4.String()}, check...),
	}
	for _, vip := range []string{natVIP, fullVIP} {
		for _, be := range l.NATBackends {
			cmds = append(cmds, []string{"backend", "add", vip, netip.AddrPortFrom(be.IPv4, NATPort).String()})
		}
	}
	if err := run(cmds...); err != nil {
		return err
	}
	for _, vip := range []string{natVIP, fullVIP} {
		if _, err := d.WaitBackendsUp(ctx, vip, len(l.NATBackends), 15*time.Second); err != nil {
			return err
		}
	}
	for _, t := range []netip.AddrPort{natTarget, fullTarget} {
		res, err := batch(t, l.NATBackends, n)
		if err != nil {
			return err
		}
		say("  the backends saw their peer as %s", peerSummary(res))
	}
	say("Every request went client -> lb %s (XDP: rewritten, next hop from the FIB) -> %s -> backend, and every",
		l.LB.Iface, l.LB.Back.Name)
	say("answer came back through the lb, rewritten back to the VIP. Behind nat the backends see the client itself;")
	say("behind fullnat they see the lb, so they would need no route to the client at all.")
	return nil
}

// peerSummary says which peer addresses the backends reported, and with
// which ports: "10.200.0.2 (300 requests, each from the client's own
// port)" or "10.201.0.10 (300 requests, ports 1042-32701)".
func peerSummary(res LoadResult) string {
	type seen struct {
		requests, own int
		lo, hi        uint16
	}
	by := map[netip.Addr]*seen{}
	var addrs []netip.Addr
	for _, a := range res.Answers {
		s := by[a.Peer.Addr()]
		if s == nil {
			s = &seen{lo: a.Peer.Port(), hi: a.Peer.Port()}
			by[a.Peer.Addr()] = s
			addrs = append(addrs, a.Peer.Addr())
		}
		s.requests++
		s.lo, s.hi = min(s.lo, a.Peer.Port()), max(s.hi, a.Peer.Port())
		if a.Peer.Port() == a.Port {
			s.own++
		}
	}
	var parts []string
	for _, a := range addrs {
		s := by[a]
		ports := fmt.Sprintf("ports %d-%d", s.lo, s.hi)
		if s.own == s.requests {
			ports = "each from the client's own port"
		}
		parts = append(parts, fmt.Sprintf("%s (%d requests, %s)", a, s.requests, ports))
	}
	return strings.Join(parts, ", ")
}

// indent prefixes every line of s with four spaces.
func indent(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = "    " + l
	}
	return strings.Join(lines, "\n")
}
