package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/xdplb/xdplb/loader"

	"github.com/xdplb/xdplb/internal/lab"
)

// tcpEnv is the lab and what the cases need to set themselves up.
type tcpEnv struct {
	lab    *lab.Lab
	dir    string // temporary directory of the section
	binary string // xdplb
	log    *slog.Logger
}

// tcpCase is one path from the client to the backends. Each case is set up
// right before its runs and torn down right after, so the load balancer
// namespace only ever holds the one being measured: no XDP program on the
// LB's interface while the kernel or HAProxy forwards, no conntrack while
// xdplb does.
type tcpCase struct {
	Name string
	// Balanced: the case spreads connections over all backends (a path
	// check then wants to see more than one of them answer).
	Balanced bool
	Up       func(ctx context.Context, e *tcpEnv) (target netip.AddrPort, down func() error, err error)
}

// Names of the cases the targets and notes refer to.
const (
	tcpXDPLBDR      = "xdplb DR"
	tcpXDPLBNAT     = "xdplb NAT"
	tcpXDPLBFullNAT = "xdplb full NAT"
	tcpNftDNAT      = "nftables DNAT"
	tcpNftDNATSNAT  = "nftables DNAT + SNAT"
	tcpHAProxy      = "HAProxy (TCP mode)"
)

var tcpCases = []tcpCase{
	{Name: "direct", Up: tcpUpDirect},
	{Name: tcpXDPLBDR, Balanced: true, Up: tcpUpXDPLB},
	{Name: tcpXDPLBNAT, Balanced: true, Up: tcpUpXDPLBNAT},
	{Name: tcpXDPLBFullNAT, Balanced: true, Up: tcpUpXDPLBFullNAT},
	{Name: tcpNftDNAT, Balanced: true, Up: tcpUpNftDNAT},
	{Name: tcpNftDNATSNAT, Balanced: true, Up: tcpUpNftDNATSNAT},
	{Name: tcpHAProxy, Balanced: true, Up: tcpUpHAProxy},
}

// tcpBackendPort is where the NAT-like paths (xdplb NAT and full NAT,
// nftables, HAProxy) reach the backends, behind the VIP's port 80; DR
// keeps the port, so it and direct use port 80.
const tcpBackendPort = 8080

// tcpFullNATAddr is xdplb full NAT's SNAT address: an address of its own
// on the LB, apart from nftables' (tcpSNAT4) and HAProxy's (the LB's own)
// for the reason tcpSNAT4 gives.
var tcpFullNATAddr = netip.MustParseAddr("10.200.0.201")

// tcpUpDirect: the client talks to the first backend itself, the ceiling.
func tcpUpDirect(_ context.Context, e *tcpEnv) (netip.AddrPort, func() error, error) {
	return netip.AddrPortFrom(e.lab.Backends[0].IPv4, lab.HTTPPort), func() error { return nil }, nil
}

// tcpUpXDPLB starts the daemon with native XDP on the LB and a DR VIP over
// the three backends (Maglev, the default scheduler, no health check: the
// backends are up as soon as their MACs are resolved). A fresh state
// directory each time, so the daemon starts empty.
func tcpUpXDPLB(ctx context.Context, e *tcpEnv) (netip.AddrPort, func() error, error) {
	var cmds [][]string
	vip := netip.AddrPortFrom(lab.VIP4, lab.HTTPPort).String() + "/tcp"
	cmds = append(cmds, []string{"vip", "add", vip, "--mode", "dr"})
	for _, be := range e.lab.Backends {
		cmds = append(cmds, []string{"backend", "add", vip, be.IPv4.String()})
	}
	return tcpStartXDPLB(ctx, e, vip, cmds)
}

// tcpUpXDPLBNAT: the daemon with a `nat` VIP, port 80, over the three
// backends' port 8080. The backends answer the client's own address, so
// for the time of the case each gets a route to the client via the LB
// (on a real network: their default route), and the LB's program turns
// the answers back into the VIP's.
func tcpUpXDPLBNAT(ctx context.Context, e *tcpEnv) (_ netip.AddrPort, _ func() error, err error) {
	st := &tcpSteps{}
	defer func() {
		if err != nil {
			err = errors.Join(err, st.down())
		}
	}()
	if err := st.run(append(tcpRouterSteps(e.lab.LB), tcpReturnRoutes(ctx, e)...)...); err != nil {
		return netip.AddrPort{}, nil, err
	}
	vip := netip.AddrPortFrom(lab.VIP4, lab.HTTPPort).String() + "/tcp"
	cmds := [][]string{{"vip", "add", vip, "--mode", "nat"}}
	for _, be := range e.lab.Backends {
		cmds = append(cmds, []string{"backend", "add", vip, netip.AddrPortFrom(be.IPv4, tcpBackendPort).String()})
	}
	target, stop, err := tcpStartXDPLB(ctx, e, vip, cmds)
	if err != nil {
		return netip.AddrPort{}, nil, err
	}
	st.undo = append(st.undo, stop)
	return target, st.down, nil
}

// tcpUpXDPLBFullNAT: the daemon with a `fullnat` VIP, port 80, over the
// backends' port 8080, SNAT address tcpFullNATAddr (added to the LB's
// interface for the time of the case). The backends need nothing: they
// answer the SNAT address, which is on their segment.
func tcpUpXDPLBFullNAT(ctx context.Context, e *tcpEnv) (_ netip.AddrPort, _ func() error, err error) {
	lb := e.lab.LB
	st := &tcpSteps{}
	defer func() {
		if err != nil {
			err = errors.Join(err, st.down())
		}
	}()
	if err := st.run(append(tcpRouterSteps(lb), tcpAddrStep(ctx, lb, tcpFullNATAddr))...); err != nil {
		return netip.AddrPort{}, nil, err
	}
	vip := netip.AddrPortFrom(lab.VIP4, lab.HTTPPort).String() + "/tcp"
	cmds := [][]string{{"vip", "add", vip, "--mode", "fullnat", "--snat-addr", tcpFullNATAddr.String()}}
	for _, be := range e.lab.Backends {
		cmds = append(cmds, []string{"backend", "add", vip, netip.AddrPortFrom(be.IPv4, tcpBackendPort).String()})
	}
	target, stop, err := tcpStartXDPLB(ctx, e, vip, cmds)
	if err != nil {
		return netip.AddrPort{}, nil, err
	}
	st.undo = append(st.undo, stop)
	return target, st.down, nil
}

// tcpStartXDPLB starts the daemon with native XDP on the LB, gives it cmds
// and waits until vip's backends are up.
func tcpStartXDPLB(ctx context.Context, e *tcpEnv, vip string, cmds [][]string) (netip.AddrPort, func() error, error) {
	dir, err := os.MkdirTemp(e.dir, "xdplb-")
	if err != nil {
		return netip.AddrPort{}, nil, fmt.Errorf("daemon dir: %w", err)
	}
	// The daemon mounts a bpffs here inside its own mount namespace (that
	// of `ip netns exec`): its pins go away with it. It also removes the
	// VIP address it announced when it stops (--detach-on-exit), else the
	// next case's daemon, on a fresh state directory, would find it on the
	// interface as an address of the host and refuse the VIP.
	bpffs := filepath.Join(dir, "bpffs")
	if err := os.Mkdir(bpffs, 0o700); err != nil {
		return netip.AddrPort{}, nil, fmt.Errorf("bpffs dir: %w", err)
	}
	d, err := lab.StartDaemon(ctx, lab.DaemonOptions{Binary: e.binary, Node: e.lab.LB, Dir: dir, BPFFS: bpffs, XDPMode: string(loader.XDPModeNative),
		ExtraArgs: []string{"--detach-on-exit"}})
	if err != nil {
		return netip.AddrPort{}, nil, err
	}
	target := netip.AddrPortFrom(lab.VIP4, lab.HTTPPort)
	for _, args := range cmds {
		if _, err := d.CLI(ctx, args...); err != nil {
			return netip.AddrPort{}, nil, errors.Join(err, d.Stop())
		}
	}
	if _, err := d.WaitBackendsUp(ctx, vip, len(e.lab.Backends), 15*time.Second); err != nil {
		return netip.AddrPort{}, nil, errors.Join(err, fmt.Errorf("daemon log:\n%s", d.LogTail(20)), d.Stop())
	}
	return target, d.Stop, nil
}

const tcpNftTable = "xlbbench"

// tcpSNAT4 is the source address the nftables case gives its connections to
// the backends: an address of its own on the LB, clear of the lab's hosts
// and VIP. Not the LB's own address, which HAProxy's connections use: the
// backends keep TIME_WAIT sockets from every case, and a SYN that reuses
// such a 4-tuple with another sender's TCP timestamps fails PAWS and is
// retransmitted a second later. Seen here: after a HAProxy run, masquerade
// to the LB's address stalled the next nftables run to a fifth of its rate.
var tcpSNAT4 = netip.MustParseAddr("10.200.0.200")

// tcpUpNftDNAT makes the LB namespace a kernel load balancer in the shape
// of xdplb's `nat`: DNAT of the LB's own address, port 80, to the
// backends' port 8080 in turn (numgen inc: round robin over new
// connections, like HAProxy's), with the backends' answers coming back
// through the LB by the same routes to the client as xdplb NAT's, to be
// un-NATed by conntrack.
func tcpUpNftDNAT(ctx context.Context, e *tcpEnv) (netip.AddrPort, func() error, error) {
	return tcpUpNftables(ctx, e, false)
}

// tcpUpNftDNATSNAT is the same with SNAT towards the backends to
// tcpSNAT4, in the shape of xdplb's `fullnat`: SNAT on the LB (to an
// address of its own) is how a one-armed kernel LB gets its return path
// without touching the backends' routes.
func tcpUpNftDNATSNAT(ctx context.Context, e *tcpEnv) (netip.AddrPort, func() error, error) {
	return tcpUpNftables(ctx, e, true)
}

func tcpUpNftables(ctx context.Context, e *tcpEnv, snat bool) (_ netip.AddrPort, _ func() error, err error) {
	lb := e.lab.LB
	target := netip.AddrPortFrom(lb.IPv4, lab.HTTPPort)
	var elems, addrs []string
	for i, be := range e.lab.Backends {
		elems = append(elems, fmt.Sprintf("%d : %s . %d", i, be.IPv4, tcpBackendPort))
		addrs = append(addrs, be.IPv4.String())
	}
	post := ""
	if snat {
		post = fmt.Sprintf(`
  chain post {
    type nat hook postrouting priority srcnat; policy accept;
    ip daddr { %s } tcp dport %d snat to %s
  }`, strings.Join(addrs, ", "), tcpBackendPort, tcpSNAT4)
	}
	ruleset := fmt.Sprintf(`table ip %[1]s {
  chain pre {
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr %[2]s tcp dport %[3]d dnat ip to numgen inc mod %[4]d map { %[5]s }
  }%[6]s
}
`, tcpNftTable, lb.IPv4, lab.HTTPPort, len(e.lab.Backends), strings.Join(elems, ", "), post)
	file := filepath.Join(e.dir, "nftables.conf")
	if err := os.WriteFile(file, []byte(ruleset), 0o644); err != nil {
		return netip.AddrPort{}, nil, fmt.Errorf("nft ruleset: %w", err)
	}
	st := &tcpSteps{}
	defer func() {
		if err != nil {
			err = errors.Join(err, st.down())
		}
	}()
	bg := context.Background() // teardown runs also after an interrupt
	var steps []tcpStep
	if snat {
		steps = append(steps, tcpAddrStep(ctx, lb, tcpSNAT4))
	} else {
		steps = append(steps, tcpReturnRoutes(ctx, e)...)
	}
	steps = append(steps, tcpRouterSteps(lb)...)
	steps = append(steps,
		tcpStep{func() error {
			if _, err := lb.Exec(ctx, "nft", "-f", file); err != nil {
				return fmt.Errorf("%w\nruleset:\n%s", err, ruleset)
			}
			return nil
		}, func() error { _, err := lb.Exec(bg, "nft", "delete", "table", "ip", tcpNftTable); return err }},
	)
	if err := st.run(steps...); err != nil {
		return netip.AddrPort{}, nil, err
	}
	return target, st.down, nil
}

// tcpStep is one change to a namespace and how to take it back.
type tcpStep struct{ do, undo func() error }

// tcpRouterSteps make the LB a router for the time of a case: forwarding
// on, for the kernel's DNAT and for xdplb's NAT (bpf_fib_lookup routes
// only for a forwarding interface, and the kernel forwards what the
// program passes to it), and no ICMP redirects: forwarding back out of
// the interface a packet came in on would make the kernel send the
// client some, not what a LB should do.
func tcpRouterSteps(lb *lab.Node) []tcpStep {
	return []tcpStep{
		tcpSysctlStep(lb, "net/ipv4/conf/all/send_redirects", "0"),
		tcpSysctlStep(lb, "net/ipv4/conf/"+lb.Iface+"/send_redirects", "0"),
		tcpSysctlStep(lb, "net/ipv4/ip_forward", "1"),
	}
}

// tcpSteps are changes made so far, undone in reverse by down, whatever
// was done, also when a later step failed.
type tcpSteps struct{ undo []func() error }

// run does steps in order until one fails.
func (s *tcpSteps) run(steps ...tcpStep) error {
	for _, st := range steps {
		if err := st.do(); err != nil {
			return err
		}
		s.undo = append(s.undo, st.undo)
	}
	return nil
}

func (s *tcpSteps) down() error {
	var errs []error
	for i := len(s.undo) - 1; i >= 0; i-- {
		errs = append(errs, s.undo[i]())
	}
	s.undo = nil
	return errors.Join(errs...)
}

// tcpAddrStep adds a as a /32 to the LB's interface.
func tcpAddrStep(ctx context.Context, lb *lab.Node, a netip.Addr) tcpStep {
	p := netip.PrefixFrom(a, 32).String()
	return tcpStep{
		func() error { _, err := lb.Exec(ctx, "ip", "addr", "add", p, "dev", lb.Iface); return err },
		func() error {
			_, err := lb.Exec(context.Background(), "ip", "addr", "del", p, "dev", lb.Iface)
			return err
		},
	}
}

// tcpReturnRoutes route the backends' answers to the client through the
// LB: a host route on each backend, as `nat` (xdplb's, or the kernel's
// DNAT without SNAT) needs; direct and DR need the backends' own route to
// the client, so the routes go with the case.
func tcpReturnRoutes(ctx context.Context, e *tcpEnv) []tcpStep {
	client := netip.PrefixFrom(e.lab.Client.IPv4, 32).String()
	var steps []tcpStep
	for _, be := range e.lab.Backends {
		args := []string{"route", "add", client, "via", e.lab.LB.IPv4.String(), "dev", be.Iface}
		steps = append(steps, tcpStep{
			func() error { _, err := be.Exec(ctx, "ip", args...); return err },
			func() error {
				_, err := be.Exec(context.Background(), "ip", "route", "del", client, "dev", be.Iface)
				return err
			},
		})
	}
	return steps
}

// tcpSysctlStep sets a sysctl of n; its undo restores the value it had.
func tcpSysctlStep(n *lab.Node, name, value string) tcpStep {
	var old string
	return tcpStep{
		do: func() error {
			var err error
			if old, err = n.Sysctl(name); err != nil {
				return err
			}
			return n.SetSysctl(name, value)
		},
		undo: func() error { return n.SetSysctl(name, old) },
	}
}

// tcpHAProxyConf: TCP mode, one thread (2 cores, one of them busy with wrk),
// round robin over the backends, no logging. maxconn stays within the file
// descriptor limit HAProxy may raise itself to.
const tcpHAProxyConf = `global
    nbthread 1
    maxconn 4096
defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend fe
    bind {{BIND}}
    default_backend be
backend be
    balance roundrobin
{{SERVERS}}`

// tcpUpHAProxy runs HAProxy on the LB's own address, port 80. It opens its
// own connections to the backends, so their answers come back to it.
func tcpUpHAProxy(ctx context.Context, e *tcpEnv) (netip.AddrPort, func() error, error) {
	lb := e.lab.LB
	target := netip.AddrPortFrom(lb.IPv4, lab.HTTPPort)
	var servers strings.Builder
	names := map[string]bool{}
	for _, be := range e.lab.Backends {
		fmt.Fprintf(&servers, "    server %s %s\n", be.Name, netip.AddrPortFrom(be.IPv4, tcpBackendPort))
		names[be.Name] = true
	}
	conf := strings.NewReplacer("{{BIND}}", target.String(), "{{SERVERS}}", servers.String()).Replace(tcpHAProxyConf)
	file := filepath.Join(e.dir, "haproxy.cfg")
	if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
		return netip.AddrPort{}, nil, fmt.Errorf("haproxy config: %w", err)
	}
	// -db: stay in the foreground, so Stop signals HAProxy itself.
	p, err := lb.StartProcess(lab.ProcessOptions{LogPath: filepath.Join(e.dir, "haproxy.log")}, "haproxy", "-db", "-f", file)
	if err != nil {
		return netip.AddrPort{}, nil, err
	}
	if err := tcpWaitServes(ctx, lb, target, func(name string) bool { return names[name] }, p); err != nil {
		return netip.AddrPort{}, nil, errors.Join(err, p.Stop())
	}
	return target, p.Stop, nil
}

// tcpCheckPath sends a few requests on new connections from the client
// through the case's path: all must be answered, and a balancing case must
// reach more than one backend. A path that only half works would otherwise
// show up as a throughput figure.
func tcpCheckPath(ctx context.Context, e *tcpEnv, c tcpCase, target netip.AddrPort) error {
	seen := map[string]int{}
	for range 3 * len(e.lab.Backends) {
		name, err := e.lab.Client.Get(ctx, target, 2*time.Second)
		if err != nil {
			return fmt.Errorf("%s: path check to %s: %w", c.Name, target, err)
		}
		seen[name]++
	}
	if c.Balanced && len(seen) < 2 {
		return fmt.Errorf("%s: path check to %s: only %v answered", c.Name, target, seen)
	}
	return nil
}
