package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/internal/lab"
)

// The NAT tests run a two-armed load balancer: the client on the lab
// segment, the LB on it and on the NAT segment (eth1), three backends on
// the NAT segment listening on lab.NATPort (HTTP, and a UDP echo) behind
// VIPs on port 80. In nat the backends' default route is the LB; in
// fullnat they have no route toward the client at all.

// natModes are the two NAT forwarding modes, each run in a lab of its own.
var natModes = []string{"nat", "fullnat"}

// snatPorts is the daemon's --snat-ports in the fullnat tests: a range
// other than the default, so the backends' view of the peer port proves
// the flag reaches the data plane; like the default, below the kernel's
// ephemeral ports, which the LB's own health checks use from the same
// address.
const (
	snatLo    = 10000
	snatHi    = 14999
	snatPorts = "10000-14999"
)

// natClosingTimeout is how long the data plane keeps a closed flow's
// translation (loader.NATClosingTimeout), and so its SNAT port.
const natClosingTimeout = 10 * time.Second

// family is one address family of the NAT tests.
type family struct {
	name string
	vip  netip.Addr
	nft  string // nftables family keyword: ip or ip6
	// of picks the family's address of an interface.
	of func(v4, v6 netip.Addr) netip.Addr
}

var families = []family{
	{"ipv4", lab.VIP4, "ip", func(v4, _ netip.Addr) netip.Addr { return v4 }},
	{"ipv6", lab.VIP6, "ip6", func(_, v6 netip.Addr) netip.Addr { return v6 }},
}

func (f family) node(n *lab.Node) netip.Addr { return f.of(n.IPv4, n.IPv6) }

// natEnv is a NAT lab with its daemon and the backends' servers.
type natEnv struct {
	*env
	mode     string
	backends map[string]lab.NATBackend // by name
}

// setupNAT builds the two-armed lab for mode (nat: the backends route via
// the LB; fullnat: they know only their own subnet) and starts the daemon
// on both of the LB's interfaces and the servers on the backends.
func setupNAT(t *testing.T, mode string) *natEnv {
	t.Helper()
	return setupNATWith(t, mode)
}

// setupNATWith is setupNAT with more daemon flags.
func setupNATWith(t *testing.T, mode string, extra ...string) *natEnv {
	t.Helper()
	args := extra
	if mode == "fullnat" {
		args = append(args, "--snat-ports", snatPorts)
	}
	e := &natEnv{
		env:      setupLab(t, lab.Options{NAT: &lab.NATOptions{Gateway: mode == "nat"}}, args...),
		mode:     mode,
		backends: map[string]lab.NATBackend{},
	}
	servers, err := e.lab.ServeNATBackends()
	if err != nil {
		t.Fatalf("start backends: %v", err)
	}
	for _, s := range servers {
		e.backends[s.Node.Name] = s
	}
	return e
}

// checkFlags is a tcp health check every 200ms, as health_test.go uses.
func checkFlags() []string {
	return []string{"--check", "tcp", "--check-interval", checkInterval.String(), "--check-timeout", "100ms",
		"--rise", fmt.Sprint(checkRise), "--fall", fmt.Sprint(checkFall)}
}

// addNATVIP adds the VIP f.vip:80/proto in the env's mode with every
// backend at its lab.NATPort and waits until all are up.
func (e *natEnv) addNATVIP(f family, proto string, extra ...string) (netip.AddrPort, string) {
	e.t.Helper()
	target := netip.AddrPortFrom(f.vip, lab.HTTPPort)
	vip := target.String() + "/" + proto
	e.cli(append([]string{"vip", "add", vip, "--mode", e.mode}, extra...)...)
	for _, be := range e.lab.NATBackends {
		e.cli("backend", "add", vip, netip.AddrPortFrom(f.node(be), lab.NATPort).String())
	}
	if _, err := e.d.WaitBackendsUp(e.ctx, vip, len(e.lab.NATBackends), 10*time.Second); err != nil {
		e.t.Fatal(err)
	}
	// The VIP is on the client's subnet: the LB must answer ARP/NDP for it
	// as soon as it can forward to its backends.
	if _, ok := e.waitAnnounced(f.vip, time.Second); !ok {
		// Reported, then waited for, so that the rest of the test runs.
		took, ok := e.waitAnnounced(f.vip, 10*time.Second)
		e.t.Errorf("%s: its backends are up but its address is not announced on %s within 1s (announced %v, %s later)",
			vip, lab.Iface, ok, ms(took+time.Second))
	}
	return target, vip
}

// waitAnnounced waits until the LB holds addr on its client-side
// interface, as the daemon announces a VIP.
func (e *natEnv) waitAnnounced(addr netip.Addr, limit time.Duration) (time.Duration, bool) {
	e.t.Helper()
	start := time.Now()
	for {
		out, err := e.lab.LB.Exec(e.ctx, "ip", "-br", "addr", "show", "dev", lab.Iface)
		if err != nil {
			e.t.Fatal(err)
		}
		if strings.Contains(out, netip.PrefixFrom(addr, addr.BitLen()).String()) {
			return time.Since(start), true
		}
		if time.Since(start) > limit {
			return time.Since(start), false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// wantPeer checks the peer a backend reported for a connection or
// datagram the client sent from clientPort: in nat the client itself,
// port and all; in fullnat the LB's address on the NAT segment (the
// default SNAT address) and a port of the SNAT range. It returns a
// complaint, or "".
func (e *natEnv) wantPeer(f family, clientPort uint16, peer netip.AddrPort) string {
	if e.mode == "nat" {
		if want := netip.AddrPortFrom(f.node(e.lab.Client), clientPort); peer != want {
			return fmt.Sprintf("backend saw peer %s, want the client itself, %s", peer, want)
		}
		return ""
	}
	if snat := f.of(e.lab.LB.Back.IPv4, e.lab.LB.Back.IPv6); peer.Addr() != snat || peer.Port() < snatLo || peer.Port() > snatHi {
		return fmt.Sprintf("backend saw peer %s, want the SNAT address %s and a port in %s", peer, snat, snatPorts)
	}
	return ""
}

// checkSpread fails unless every NAT backend answered within 25% of an
// even share of n.
func (e *natEnv) checkSpread(what string, by map[string]int, n int) {
	e.t.Helper()
	even := float64(n) / float64(len(e.lab.NATBackends))
	for _, be := range e.lab.NATBackends {
		if got := float64(by[be.Name]); got < 0.75*even || got > 1.25*even {
			e.t.Errorf("%s: %s answered %.0f of %d, want %.0f +- 25%%", what, be.Name, got, n, even)
		}
	}
	if len(by) != len(e.lab.NATBackends) {
		e.t.Errorf("%s: answers from %v, want exactly the NAT backends", what, by)
	}
}

// events are the data plane's event counters (xdplb_events_total) by
// event.
func (e *env) events() map[string]float64 {
	e.t.Helper()
	out := map[string]float64{}
	for _, m := range e.metrics()["xdplb_events_total"].GetMetric() {
		for _, lp := range m.GetLabel() {
			if lp.GetName() == "event" {
				out[lp.GetValue()] = m.GetCounter().GetValue()
			}
		}
	}
	return out
}

const (
	natConnections = 500
	natDatagrams   = 150
)

// Real HTTP over TCP and a UDP echo through a nat and a fullnat VIP, IPv4
// and IPv6: every connection and datagram is answered, by every backend
// in about equal shares, through translations the backends' view of the
// peer confirms; the data plane's counters agree with the kernels'.
func TestNATTraffic(t *testing.T) {
	for _, mode := range natModes {
		for _, f := range families {
			t.Run(mode+"/"+f.name, func(t *testing.T) { testNATTraffic(t, mode, f) })
		}
	}
}

func testNATTraffic(t *testing.T, mode string, f family) {
	e := setupNAT(t, mode)
	for _, be := range e.lab.NATBackends {
		ok, dev, gw, err := be.RouteTo(f.node(e.lab.Client))
		if err != nil {
			t.Fatal(err)
		}
		switch back := f.of(e.lab.LB.Back.IPv4, e.lab.LB.Back.IPv6); {
		case mode == "nat" && (!ok || gw != back):
			t.Fatalf("%s routes the client via %q %s, want via the LB (%s)", be.Name, dev, gw, back)
		case mode == "fullnat" && ok:
			t.Fatalf("%s has a route to the client (%s via %s): fullnat must work without one", be.Name, dev, gw)
		}
	}
	target, vip := e.addNATVIP(f, "tcp")
	_, uvip := e.addNATVIP(f, "udp")
	e.firstPacket(f, target)

	// Kernel counters, the reference for the data plane's: what the client
	// sends to the VIP and receives from it, what each backend sends back,
	// and anything for the VIP that reaches the LB's own kernel (nothing
	// should: the program translates every packet of the VIP).
	toVIP := fmt.Sprintf("%s daddr %s tcp dport %d", f.nft, f.vip, lab.HTTPPort)
	if err := e.lab.Client.AddCounters(e.ctx,
		lab.CounterRule{Name: "tovip", Hook: "output", Match: toVIP},
		lab.CounterRule{Name: "fromvip", Hook: "input", Match: fmt.Sprintf("%s saddr %s tcp sport %d", f.nft, f.vip, lab.HTTPPort)},
	); err != nil {
		t.Fatal(err)
	}
	if err := e.lab.LB.AddCounters(e.ctx, lab.CounterRule{Name: "vipinput", Hook: "input", Match: fmt.Sprintf("%s daddr %s", f.nft, f.vip)}); err != nil {
		t.Fatal(err)
	}
	for _, be := range e.lab.NATBackends {
		if err := be.AddCounters(e.ctx, lab.CounterRule{Name: "replies", Hook: "output",
			Match: fmt.Sprintf("%s saddr %s tcp sport %d", f.nft, f.node(be), lab.NATPort)}); err != nil {
			t.Fatal(err)
		}
	}
	before, evBefore := e.stats(), e.events()
	served := map[string]uint64{}
	for name, s := range e.backends {
		served[name] = s.HTTP.Served()
	}

	res := e.load(target, natConnections)
	e.checkSpread("tcp", res.ByBackend, natConnections)
	var bad []string
	used := map[string]bool{} // backend and the port it saw
	for _, a := range res.Answers {
		if why := e.wantPeer(f, a.Port, a.Peer); why != "" {
			bad = append(bad, fmt.Sprintf("connection from port %d to %s: %s", a.Port, a.Backend, why))
		}
		key := a.Backend + " " + a.Peer.String()
		if used[key] {
			bad = append(bad, fmt.Sprintf("connection from port %d: %s saw peer %s twice", a.Port, a.Backend, a.Peer))
		}
		used[key] = true
	}
	// Within the closing timeout no translation is reused: every
	// connection reached its backend from a peer of its own.
	if res.Duration >= natClosingTimeout {
		t.Logf("the load took %s, more than the closing timeout: peers may repeat", res.Duration)
		bad = bad[:0]
	}
	if len(bad) > 0 {
		t.Errorf("%d of %d answers show a wrong translation:\n  %s", len(bad), len(res.Answers), strings.Join(bad[:min(len(bad), 10)], "\n  "))
	}
	for name, s := range e.backends {
		if got, want := s.HTTP.Served()-served[name], uint64(res.ByBackend[name]); got != want {
			t.Errorf("%s served %d requests, the client saw %d answers from it", name, got, want)
		}
	}

	echo := e.lab.Client.EchoUDP(e.ctx, target, lab.EchoOptions{Requests: natDatagrams, Parallel: 8, FirstPort: 50000})
	t.Logf("%d datagrams to %s in %s: %d answered, by backend %v", echo.Requests, uvip, echo.Duration.Round(time.Millisecond), echo.OK, echo.ByBackend)
	if echo.OK != natDatagrams {
		t.Fatalf("%d of %d datagrams to %s answered; first failures:\n  %s", echo.OK, natDatagrams, uvip, strings.Join(echo.Failures, "\n  "))
	}
	e.checkSpread("udp", echo.ByBackend, natDatagrams)
	bad = bad[:0]
	for _, a := range echo.Answers {
		if why := e.wantPeer(f, a.Port, a.Peer); why != "" {
			bad = append(bad, fmt.Sprintf("datagram from port %d to %s: %s", a.Port, a.Backend, why))
		}
	}
	if len(bad) > 0 {
		t.Errorf("%d of %d echoes show a wrong translation:\n  %s", len(bad), len(echo.Answers), strings.Join(bad[:min(len(bad), 10)], "\n  "))
	}
	// An example of each, for the log.
	t.Logf("%s: tcp from client port %d answered by %s, which saw %s; udp from port %d answered by %s from %s, which saw %s",
		mode, res.Answers[0].Port, res.Answers[0].Backend, res.Answers[0].Peer,
		echo.Answers[0].Port, echo.Answers[0].Backend, echo.Answers[0].From, echo.Answers[0].Peer)

	// The counters settle once the last FINs have passed (bounded).
	var (
		sent, got, lbIn lab.Counter
		replies         uint64
		vs              = map[string]uint64{}
		ev              map[string]float64
	)
	deadline := time.Now().Add(3 * time.Second)
	for {
		var err error
		if sent, err = e.lab.Client.ReadCounter(e.ctx, "tovip"); err != nil {
			t.Fatal(err)
		}
		if got, err = e.lab.Client.ReadCounter(e.ctx, "fromvip"); err != nil {
			t.Fatal(err)
		}
		replies = 0
		for _, be := range e.lab.NATBackends {
			c, err := be.ReadCounter(e.ctx, "replies")
			if err != nil {
				t.Fatal(err)
			}
			replies += c.Packets
		}
		after := e.stats()
		d := diffVIP(t, before, after, vip)
		vs["packets"], vs["flows"] = d.Packets, d.Flows
		ev = e.events()
		for k, v := range ev {
			ev[k] = v - evBefore[k]
		}
		if (d.Packets == sent.Packets && uint64(ev["nat_reply"]) == replies+natDatagrams) || time.Now().After(deadline) {
			for reason, n := range after.Drops {
				if n != before.Drops[reason] {
					t.Errorf("drops %s: %d -> %d", reason, before.Drops[reason], n)
				}
			}
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	lbIn, err := e.lab.LB.ReadCounter(e.ctx, "vipinput")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("client sent %d packets to %s and got %d back; backends sent %d; data plane: VIP packets %d, flows %d, events %v",
		sent.Packets, vip, got.Packets, replies, vs["packets"], vs["flows"], ev)
	if vs["flows"] != natConnections {
		t.Errorf("VIP flows = %d, want %d (one per connection)", vs["flows"], natConnections)
	}
	if vs["packets"] != sent.Packets {
		t.Errorf("VIP packets = %d, but the client sent %d to the VIP", vs["packets"], sent.Packets)
	}
	// Every TCP reply the backends sent, and every UDP echo, was translated
	// back by the program, and the client received every TCP one.
	if n := uint64(ev["nat_reply"]); n != replies+natDatagrams {
		t.Errorf("nat_reply events = %d, want the backends' %d TCP replies + %d echoes", n, replies, natDatagrams)
	}
	if got.Packets != replies {
		t.Errorf("the client received %d packets from the VIP, the backends sent %d", got.Packets, replies)
	}
	for _, name := range []string{"fib_failed", "ttl_exceeded", "frag_needed", "egress_not_xdp"} {
		if ev[name] != 0 {
			t.Errorf("event %s grew by %.0f, want 0", name, ev[name])
		}
	}
	if lbIn.Packets != 0 {
		t.Errorf("%d packets for the VIP reached the LB's kernel, want none", lbIn.Packets)
	}
}

// firstPacket checks the path of a packet whose next hop the LB has not
// resolved: the program passes it to the kernel, translated, and the
// kernel resolves the neighbour and forwards it (event fib_no_neigh).
// Without health checks nothing else resolves the backends' neighbours.
func (e *natEnv) firstPacket(f family, target netip.AddrPort) {
	t := e.t
	t.Helper()
	if _, err := e.lab.LB.Exec(e.ctx, "ip", "neigh", "flush", "dev", lab.BackIface); err != nil {
		t.Fatal(err)
	}
	before := e.events()["fib_no_neigh"]
	got, err := e.lab.Client.Get(e.ctx, target, 3*time.Second)
	passed := e.events()["fib_no_neigh"] - before
	if err == nil {
		t.Logf("first connection with the LB's neighbours flushed: answered by %s; fib_no_neigh grew by %.0f", got, passed)
		if passed == 0 {
			t.Errorf("first connection with the LB's neighbours flushed: no fib_no_neigh event")
		}
		return
	}
	rt, _ := e.lab.LB.Exec(e.ctx, "cat", "/proc/net/stat/rt_cache")
	t.Errorf("first connection with the LB's neighbours flushed failed: %v; fib_no_neigh grew by %.0f: the packets the program "+
		"passed to the kernel, translated, for it to resolve the neighbour were lost (%s route cache stats, see in_martian_src:\n%s)",
		err, passed, e.lab.LB.NetNS, rt)
	// Resolve the neighbours from the LB itself, so that the rest of the
	// test still checks the translations.
	for _, be := range e.lab.NATBackends {
		if _, err := e.lab.LB.Get(e.ctx, netip.AddrPortFrom(f.node(be), lab.NATPort), 3*time.Second); err != nil {
			t.Fatal(err)
		}
	}
}

// strongest returns the backend holding the most of the connections and
// how many it holds.
func strongest(rs []lab.ConnResult, bes []*lab.Node) (*lab.Node, map[string]int) {
	per := map[string]int{}
	for _, r := range rs {
		per[r.Backend]++
	}
	var top *lab.Node
	for _, be := range bes {
		if top == nil || per[be.Name] > per[top.Name] {
			top = be
		}
	}
	return top, per
}

// A NAT backend's server dies under traffic: its open connections fail,
// those of the others do not; new connections fail only while the health
// check has not yet noticed (refused by the dead backend's kernel), and
// within maxDetection no new connection goes to it any more.
func TestNATBackendFailure(t *testing.T) {
	for _, mode := range natModes {
		t.Run(mode, func(t *testing.T) { testNATBackendFailure(t, mode) })
	}
}

func testNATBackendFailure(t *testing.T, mode string) {
	e := setupNAT(t, mode)
	f := families[0]
	target, vip := e.addNATVIP(f, "tcp", checkFlags()...)
	if err := e.lab.LB.AddCounters(e.ctx, lab.CounterRule{Name: "vipinput", Hook: "input", Match: fmt.Sprintf("ip daddr %s", f.vip)}); err != nil {
		t.Fatal(err)
	}
	// In nat the SYN's source port is the client's, so the backends can
	// say where each connection went; in fullnat it is a SNAT port.
	if mode == "nat" {
		for _, be := range e.lab.NATBackends {
			if err := be.TrackSYNs(e.ctx, fmt.Sprintf("ip daddr %s tcp dport %d", be.IPv4, lab.NATPort)); err != nil {
				t.Fatal(err)
			}
		}
	}

	ka, err := e.lab.Client.OpenKeepAlive(e.ctx, target, lab.KeepAliveOptions{Conns: 9, Every: 50 * time.Millisecond,
		Timeout: time.Second, MaxLife: 30 * time.Second, FirstPort: keepAlivePort})
	if err != nil {
		t.Fatal(err)
	}
	defer ka.Close()
	open := ka.Results()
	dead, held := strongest(open, e.lab.NATBackends)
	t.Logf("keep-alive connections by backend %v; %s's server will die", held, dead.Name)
	if held[dead.Name] == len(open) {
		t.Fatalf("every keep-alive connection went to %s: the test would prove nothing", dead.Name)
	}
	stream := e.lab.Client.StartStream(e.ctx, target, lab.StreamOptions{Interval: 10 * time.Millisecond,
		Duration: 10 * time.Second, Timeout: time.Second, FirstPort: streamPort})
	defer stream.Stop()
	time.Sleep(800 * time.Millisecond)

	t0 := time.Now()
	if err := e.backends[dead.Name].HTTP.Stop(); err != nil {
		t.Fatal(err)
	}
	_, seenDown, err := e.d.WaitBackendState(e.ctx, vip, dead.IPv4, model.BackendDown, 3*time.Second)
	if err != nil {
		stopStream(t, stream)
		t.Fatalf("%s's server stopped at T0: %v", dead.Name, err)
	}
	time.Sleep(time.Until(t0.Add(2500 * time.Millisecond)))
	as := stopStream(t, stream)
	rs := ka.Close()

	// Keep-alive connections: those on the dead backend fail, the others
	// go on, each on its backend.
	for _, r := range rs {
		switch {
		case r.Backend == dead.Name && r.Failures == 0:
			t.Errorf("keep-alive connection from port %d on %s survived its server (%d requests)", r.Port, dead.Name, r.Requests)
		case r.Backend != dead.Name && (r.Failures != 0 || len(r.Answers) != 1):
			t.Errorf("keep-alive connection from port %d on healthy %s: %d requests, failure %v, answers %v",
				r.Port, r.Backend, r.Requests, r.Err, r.Answers)
		}
	}

	var owners map[uint16][]string
	if mode == "nat" {
		owners = map[uint16][]string{}
		for _, be := range e.lab.NATBackends {
			ports, err := be.SYNPorts(e.ctx)
			if err != nil {
				t.Fatal(err)
			}
			for p := range ports {
				owners[p] = append(owners[p], be.Name)
			}
		}
	}
	var (
		bad      []string
		byPhase                = map[string]map[string]int{"before T0": {}, "after T0": {}}
		lastDead time.Duration = -1
	)
	for _, a := range as {
		ph := "before T0"
		if a.End.After(t0) {
			ph = "after T0"
		}
		name := a.Backend
		if a.Err != nil {
			name = "failed"
		}
		byPhase[ph][name]++
		if owners != nil {
			be, known := owner(owners, a)
			switch {
			case !known:
				bad = append(bad, fmt.Sprintf("%s: SYN reached %s", describe(a, t0), be))
			case a.Err == nil && a.Backend != be:
				bad = append(bad, fmt.Sprintf("%s, but its SYN reached %s", describe(a, t0), be))
			case a.Err != nil && be != dead.Name:
				bad = append(bad, fmt.Sprintf("%s: failed on healthy %s", describe(a, t0), be))
			}
		}
		if a.Err == nil {
			continue
		}
		// Only the dead backend's kernel refuses: a failure of any other
		// kind, or before T0, is the data plane's.
		if a.Kind != lab.ErrRefused || ph == "before T0" {
			bad = append(bad, describe(a, t0)+" (want only connections refused by the dead backend, after T0)")
		}
		lastDead = max(lastDead, a.Start.Sub(t0))
	}
	t.Logf("new connections: before T0 %v, after %v", byPhase["before T0"], byPhase["after T0"])
	if len(bad) > 0 {
		t.Errorf("%d of %d new connections misbehaved:\n  %s", len(bad), len(as), strings.Join(bad[:min(len(bad), 20)], "\n  "))
	}
	if n := len(byPhase["before T0"]); n != len(e.lab.NATBackends) {
		t.Errorf("before T0 new connections went to %v, want every backend", byPhase["before T0"])
	}
	if lastDead < 0 {
		t.Logf("no new connection reached %s after it died", dead.Name)
	} else {
		t.Logf("MEASURED %s detection: the last new connection to dead %s started at T0+%s (daemon reported it down at T0+%s)",
			mode, dead.Name, ms(lastDead), ms(seenDown.Sub(t0)))
	}
	if lastDead >= maxDetection {
		t.Errorf("new connections went to dead %s until T0+%s, want none from T0+%s on", dead.Name, ms(lastDead), maxDetection)
	}
	if c, err := e.lab.LB.ReadCounter(e.ctx, "vipinput"); err != nil || c.Packets != 0 {
		t.Errorf("%d packets for the VIP reached the LB's kernel (%v), want none", c.Packets, err)
	}
}

// natFlagClosing is NAT_F_CLOSING of bpf/types.h: the translation's flow
// saw a FIN or RST, and it expires natClosingTimeout after its last packet.
const natFlagClosing = 1

// natKeys returns the keys of the pinned NAT table (bpftool's JSON of
// each), each with whether its flow was closing (its flags as bpftool
// formats them from the map's BTF; open where it does not): what the table
// holds now, unlike the status, whose count is that of the daemon's last
// sweep.
func (e *natEnv) natKeys() map[string]bool {
	e.t.Helper()
	pin := filepath.Join(e.bpffs, "xdplb", "nat_flows")
	out, err := exec.CommandContext(e.ctx, "bpftool", "-j", "map", "dump", "pinned", pin).Output()
	if err != nil {
		e.t.Fatalf("bpftool map dump pinned %s: %v", pin, err)
	}
	var entries []struct {
		Key       json.RawMessage `json:"key"`
		Formatted struct {
			Value struct {
				Flags uint32 `json:"flags"`
			} `json:"value"`
		} `json:"formatted"`
	}
	if err := json.Unmarshal(out, &entries); err != nil {
		e.t.Fatalf("bpftool map dump pinned %s: %v", pin, err)
	}
	keys := make(map[string]bool, len(entries))
	for _, en := range entries {
		keys[string(en.Key)] = en.Formatted.Value.Flags&natFlagClosing != 0
	}
	return keys
}

// The daemon is stopped (SIGTERM) and killed (SIGKILL) and started again
// while keep-alive connections send requests and new connections keep
// coming: the pinned program and its NAT state carry every connection
// through, and no new one fails.
func TestNATRestart(t *testing.T) {
	for _, mode := range natModes {
		t.Run(mode, func(t *testing.T) { testNATRestart(t, mode) })
	}
}

func testNATRestart(t *testing.T, mode string) {
	e := setupNAT(t, mode)
	// On a slow machine (lab.Slowness) the same test slowed down: checks
	// that do not time out on a loaded CPU, and as much traffic over the
	// longer restarts.
	target, vip := e.addNATVIP(families[0], "tcp", "--check", "tcp", "--check-interval", lab.Scale(checkInterval).String(),
		"--check-timeout", lab.Scale(100*time.Millisecond).String(), "--rise", fmt.Sprint(checkRise), "--fall", fmt.Sprint(checkFall))
	ka, err := e.lab.Client.OpenKeepAlive(e.ctx, target, lab.KeepAliveOptions{Conns: 9, Every: lab.Scale(50 * time.Millisecond),
		Timeout: lab.Scale(time.Second), MaxLife: lab.Scale(30 * time.Second), FirstPort: keepAlivePort})
	if err != nil {
		t.Fatal(err)
	}
	defer ka.Close()
	streamStart := time.Now()
	stream := e.lab.Client.StartStream(e.ctx, target, lab.StreamOptions{Interval: lab.Scale(10 * time.Millisecond),
		Duration: lab.Scale(15 * time.Second), Timeout: lab.Scale(2 * time.Second), FirstPort: streamPort})
	defer stream.Stop()
	time.Sleep(lab.Scale(500 * time.Millisecond))

	for _, how := range []string{"SIGTERM", "SIGKILL"} {
		before := time.Now()
		ct0, nat0 := mapEntries(t, e.status(), "conntrack"), e.natKeys()
		if how == "SIGTERM" {
			e.stop()
		} else {
			e.d.Kill()
			e.d = nil
		}
		time.Sleep(lab.Scale(300 * time.Millisecond)) // forwarding without a daemon
		e.start()
		ct1, nat1 := mapEntries(t, e.status(), "conntrack"), e.natKeys()
		// A closed flow's translation expires natClosingTimeout after its
		// last packet, which came after the stream started (for one closed
		// by the first snapshot) or after that snapshot (for one open
		// then): on a machine slow enough for a restart to outlast that,
		// the daemon's sweep may rightly have taken it. On a normal one
		// none of the first may go.
		closedMayGo := time.Since(streamStart) > natClosingTimeout
		openMayGo := time.Since(before) > natClosingTimeout
		lost, expired := 0, 0
		for k, closing := range nat0 {
			if _, ok := nat1[k]; ok {
				continue
			}
			if closing && closedMayGo || !closing && openMayGo {
				expired++
			} else {
				lost++
			}
		}
		t.Logf("%s and restart: conntrack %d -> %d entries, nat_flows %d -> %d (%d of the first lost, %d closed ones that may have expired)",
			how, ct0, ct1, len(nat0), len(nat1), lost, expired)
		if ct1 < ct0 || lost > 0 {
			t.Errorf("%s and restart: conntrack %d -> %d entries, %d of %d NAT translations lost; want none lost", how, ct0, ct1, lost, len(nat0))
		}
		if _, err := e.d.WaitBackendsUp(e.ctx, vip, len(e.lab.NATBackends), 5*time.Second); err != nil {
			t.Error(err)
		}
		time.Sleep(lab.Scale(500 * time.Millisecond))
	}
	as := stopStream(t, stream)
	rs := ka.Close()
	failed := 0
	by := map[string]int{}
	for _, a := range as {
		by[a.Backend]++
		if a.Err != nil {
			failed++
			if failed <= 10 {
				t.Errorf("new connection %s", describe(a, as[0].Start))
			}
		}
	}
	for _, r := range rs {
		if r.Failures != 0 || len(r.Answers) != 1 || !r.Closed {
			t.Errorf("keep-alive connection from port %d on %s: %d requests, failure %v, answers %v",
				r.Port, r.Backend, r.Requests, r.Err, r.Answers)
		}
	}
	t.Logf("%d new connections (%d failed) by backend %v, %d keep-alive connections through two restarts", len(as), failed, by, len(rs))
	if len(as) < 100 {
		t.Errorf("only %d new connections were made", len(as))
	}
}

// natDiagnose logs the NAT state of a failed test: the translation table
// as bpftool shows it (the first entries) and the data plane's events.
func (e *env) natDiagnose() {
	pin := filepath.Join(e.bpffs, "xdplb", "nat_flows")
	ctx, cancel := context.WithTimeout(context.Background(), lab.Scale(10*time.Second))
	defer cancel()
	out, err := exec.CommandContext(ctx, "bpftool", "map", "dump", "pinned", pin).CombinedOutput()
	lines := strings.Split(string(out), "\n")
	if len(lines) > 80 {
		lines = append(lines[:80], fmt.Sprintf("... (%d lines)", len(lines)))
	}
	e.t.Logf("bpftool map dump pinned %s (%v):\n%s", pin, err, strings.Join(lines, "\n"))
	if mfs, err := e.d.Metrics(ctx); err == nil {
		var evs []string
		for _, m := range mfs["xdplb_events_total"].GetMetric() {
			evs = append(evs, fmt.Sprintf("%v=%.0f", labelPairs(m), m.GetCounter().GetValue()))
		}
		e.t.Logf("events: %s", strings.Join(evs, " "))
	}
}
