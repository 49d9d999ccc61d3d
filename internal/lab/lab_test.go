package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/xdplb/xdplb/internal/testutil"
)

func newLab(t *testing.T) *Lab {
	t.Helper()
	testutil.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), Scale(30*time.Second))
	defer cancel()
	l, err := New(ctx, Options{})
	if err != nil {
		t.Fatalf("build lab: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("close lab: %v", err)
		}
	})
	return l
}

func TestTopologyCreateDestroy(t *testing.T) {
	rootArpIgnore, err := os.ReadFile("/proc/sys/net/ipv4/conf/all/arp_ignore")
	testutil.RequireRoot(t)
	if err != nil {
		t.Fatal(err)
	}
	l := newLab(t)

	nodes := append([]*Node{l.Switch}, l.Nodes()...)
	if len(nodes) != 6 {
		t.Fatalf("want 6 namespaces (sw, client, lb, be1-3), got %d", len(nodes))
	}
	for _, n := range nodes {
		if !strings.HasPrefix(n.NetNS, l.Prefix+"-") {
			t.Errorf("namespace %q lacks the lab prefix %q", n.NetNS, l.Prefix)
		}
		if _, err := os.Stat(filepath.Join("/run/netns", n.NetNS)); err != nil {
			t.Errorf("namespace %s: %v", n.NetNS, err)
		}
	}
	wantAddrs := map[string][2]string{
		"client": {"10.200.0.2", "fd00:200::2"},
		"lb":     {"10.200.0.10", "fd00:200::10"},
		"be1":    {"10.200.0.11", "fd00:200::11"},
		"be3":    {"10.200.0.13", "fd00:200::13"},
	}
	for _, n := range l.Nodes() {
		want, ok := wantAddrs[n.Name]
		if !ok {
			continue
		}
		if n.IPv4.String() != want[0] || n.IPv6.String() != want[1] {
			t.Errorf("%s: addresses %s %s, want %s %s", n.Name, n.IPv4, n.IPv6, want[0], want[1])
		}
		h, err := netlink.NewHandleAt(n.ns)
		if err != nil {
			t.Fatal(err)
		}
		link, err := h.LinkByName(n.Iface)
		if err != nil {
			t.Fatalf("%s: %v", n.Name, err)
		}
		addrs, err := h.AddrList(link, netlink.FAMILY_ALL)
		h.Close()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for _, a := range addrs {
			got[a.IPNet.String()] = true
		}
		for _, w := range []string{want[0] + "/24", want[1] + "/64"} {
			if !got[w] {
				t.Errorf("%s/%s lacks %s (has %v)", n.NetNS, n.Iface, w, got)
			}
		}
	}

	// Every bridge port carries an XDP program (the pass program).
	h, err := netlink.NewHandleAt(l.Switch.ns)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range l.Nodes() {
		link, err := h.LinkByName("sw-" + n.Name)
		if err != nil {
			t.Fatalf("bridge port of %s: %v", n.Name, err)
		}
		if x := link.Attrs().Xdp; x == nil || !x.Attached {
			t.Errorf("bridge port sw-%s has no XDP program", n.Name)
		}
		if link.Attrs().MasterIndex == 0 {
			t.Errorf("sw-%s is not on the bridge", n.Name)
		}
	}
	h.Close()

	// Sysctls are per namespace: set in the backends, untouched elsewhere.
	for _, c := range []struct {
		n    *Node
		want string
	}{{l.Backends[0], "1"}, {l.Client, "0"}} {
		got, err := c.n.Sysctl("net/ipv4/conf/all/arp_ignore")
		if err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Errorf("%s: arp_ignore=%s, want %s", c.n.Name, got, c.want)
		}
	}
	rootNow, err := os.ReadFile("/proc/sys/net/ipv4/conf/all/arp_ignore")
	if err != nil {
		t.Fatal(err)
	}
	if string(rootNow) != string(rootArpIgnore) {
		t.Errorf("root namespace arp_ignore changed from %q to %q", rootArpIgnore, rootNow)
	}

	names := []string{}
	for _, n := range nodes {
		names = append(names, n.NetNS)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	for _, name := range names {
		if _, err := os.Stat(filepath.Join("/run/netns", name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("namespace %s still exists after Close (stat: %v)", name, err)
		}
	}
	if err := l.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
}

func TestBackendsAnswerDirectly(t *testing.T) {
	l := newLab(t)
	servers, err := l.ServeBackends()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), Scale(30*time.Second))
	defer cancel()
	for _, be := range l.Backends {
		for _, a := range []netip.Addr{be.IPv4, be.IPv6} {
			got, err := l.Client.Get(ctx, netip.AddrPortFrom(a, HTTPPort), 3*time.Second)
			if err != nil {
				t.Errorf("client -> %s (%s): %v", be.Name, a, err)
				continue
			}
			if got != be.Name {
				t.Errorf("client -> %s: answered %q, want %q", a, got, be.Name)
			}
		}
	}
	for i, s := range servers {
		if s.Served() != 2 {
			t.Errorf("%s served %d requests, want 2", l.Backends[i].Name, s.Served())
		}
	}

	// A load run opens a new connection per request.
	res := l.Client.Load(ctx, netip.AddrPortFrom(l.Backends[1].IPv4, HTTPPort), LoadOptions{Requests: 20, Parallel: 3})
	if res.OK != 20 || res.ByBackend["be2"] != 20 || res.LocalPorts != 20 {
		t.Errorf("load to be2: ok %d, by backend %v, distinct client ports %d; want 20 each; failures %v",
			res.OK, res.ByBackend, res.LocalPorts, res.Failures)
	}
}

// Without a load balancer nobody may claim the VIP: the backends hold it on
// lo but must not answer ARP or neighbour solicitations for it.
func TestBackendsDoNotAnswerForVIP(t *testing.T) {
	l := newLab(t)
	if _, err := l.ServeBackends(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, vip := range []netip.Addr{VIP4, VIP6} {
		if got, err := l.Client.Get(ctx, netip.AddrPortFrom(vip, HTTPPort), 1500*time.Millisecond); err == nil {
			t.Errorf("client reached VIP %s without a load balancer (answered %q): a backend answers ARP/NDP for it", vip, got)
		}
	}
	// Each backend answers for the VIP locally (it is on lo).
	for _, be := range l.Backends {
		got, err := be.Get(ctx, netip.AddrPortFrom(VIP4, HTTPPort), 2*time.Second)
		if err != nil || got != be.Name {
			t.Errorf("%s -> its own VIP: %q, %v", be.Name, got, err)
		}
	}
}

func TestTxChecksumToggle(t *testing.T) {
	l := newLab(t)
	// The lab turns it off: DR through XDP_TX on veth needs full checksums.
	if on, err := l.Client.TxChecksum(); err != nil || on {
		t.Errorf("client tx checksum offload = %v (%v), want off", on, err)
	}
	for _, on := range []bool{false, true} {
		if err := l.Client.SetTxChecksum(on); err != nil {
			t.Fatal(err)
		}
		got, err := l.Client.TxChecksum()
		if err != nil {
			t.Fatal(err)
		}
		if got != on {
			t.Errorf("tx checksum = %v after setting %v", got, on)
		}
	}
}

// A lab killed before cleanup leaves namespaces; the next lab removes them,
// but never those of a lab that is still alive.
func TestSweepLeftovers(t *testing.T) {
	live := newLab(t)
	prefix, err := randomPrefix()
	if err != nil {
		t.Fatal(err)
	}
	leftover := &Lab{Prefix: prefix, log: live.log}
	t.Cleanup(func() { _ = leftover.Close() }) // if the sweep fails
	n, err := leftover.newNode("be1")
	if err != nil {
		t.Fatal(err)
	}
	if err := sweep(live.log); err != nil {
		t.Fatalf("sweep: %v", err)
	}
	if _, err := os.Stat(filepath.Join("/run/netns", n.NetNS)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("leftover namespace %s survived the sweep (stat: %v)", n.NetNS, err)
	}
	for _, n := range append([]*Node{live.Switch}, live.Nodes()...) {
		if _, err := os.Stat(filepath.Join("/run/netns", n.NetNS)); err != nil {
			t.Errorf("sweep removed %s of a live lab: %v", n.NetNS, err)
		}
	}
}

// A stopped server makes its kernel refuse new connections (RST), which is
// what a health check and a client see when a server process dies; started
// again it serves at once.
func TestServerStopStart(t *testing.T) {
	l := newLab(t)
	servers, err := l.ServeBackends()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), Scale(30*time.Second))
	defer cancel()
	be, s := l.Backends[1], servers[1]
	target := netip.AddrPortFrom(be.IPv4, HTTPPort)
	if got, err := l.Client.Get(ctx, target, 2*time.Second); err != nil || got != be.Name {
		t.Fatalf("before stop: %q, %v", got, err)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if s.Running() {
		t.Error("Running() after Stop")
	}
	if err := s.Stop(); err != nil {
		t.Errorf("second stop: %v", err)
	}
	_, err = l.Client.Get(ctx, target, 2*time.Second)
	if k := Classify(err); k != ErrRefused {
		t.Errorf("stopped server: error %v is %q, want %q (a RST to the SYN)", err, k, ErrRefused)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err == nil {
		t.Error("starting a running server succeeded")
	}
	if got, err := l.Client.Get(ctx, target, 2*time.Second); err != nil || got != be.Name {
		t.Errorf("after restart: %q, %v", got, err)
	}
	if s.Served() != 2 {
		t.Errorf("served %d requests over two runs, want 2", s.Served())
	}
}

// The stream opens one connection per tick from a known port and records
// every outcome; the SYN tracker on the server sees exactly those ports.
func TestStreamAndSYNTracking(t *testing.T) {
	l := newLab(t)
	servers, err := l.ServeBackends()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), Scale(30*time.Second))
	defer cancel()
	be := l.Backends[0]
	if err := be.TrackSYNs(ctx, fmt.Sprintf("ip daddr %s tcp dport %d", be.IPv4, HTTPPort)); err != nil {
		t.Fatal(err)
	}
	const first = 31000
	s := l.Client.StartStream(ctx, netip.AddrPortFrom(be.IPv4, HTTPPort), StreamOptions{
		Interval: 10 * time.Millisecond, Duration: 3 * time.Second, MaxConns: 40, Timeout: time.Second, FirstPort: first,
	})
	time.Sleep(150 * time.Millisecond)
	if err := servers[0].Stop(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if err := servers[0].Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Done():
	case <-ctx.Done():
		t.Fatal("stream did not end")
	}
	as := s.Stop()
	if len(as) != 40 {
		t.Fatalf("%d attempts, want 40 (skipped %d)", len(as), s.Skipped())
	}
	kinds := map[ErrKind]int{}
	for i, a := range as {
		kinds[a.Kind]++
		if a.Port != first+uint16(a.Seq) {
			t.Errorf("attempt %d used port %d, want %d", a.Seq, a.Port, first+a.Seq)
		}
		if i > 0 && a.Start.Before(as[i-1].Start) {
			t.Errorf("attempts not ordered by start")
		}
		if a.Kind == ErrNone && a.Backend != be.Name {
			t.Errorf("attempt %d answered by %q", a.Seq, a.Backend)
		}
	}
	t.Logf("outcomes: %v", kinds)
	if kinds[ErrNone] < 25 || kinds[ErrRefused] < 3 || kinds[ErrNone]+kinds[ErrRefused]+kinds[ErrReset] != 40 {
		t.Errorf("outcomes %v: want most ok, some refused while stopped (~10), nothing else", kinds)
	}
	ports, err := be.SYNPorts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range as {
		if !ports[a.Port] {
			t.Errorf("no SYN seen from port %d (%v)", a.Port, a.Err)
		}
	}
	if len(ports) != 40 {
		t.Errorf("SYN tracker saw %d ports, want 40", len(ports))
	}
}

// Keep-alive connections stay on one TCP connection each, so on one
// server; a server that goes away is a failure of every connection to it.
func TestKeepAlive(t *testing.T) {
	l := newLab(t)
	servers, err := l.ServeBackends()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), Scale(30*time.Second))
	defer cancel()
	be := l.Backends[2]
	k, err := l.Client.OpenKeepAlive(ctx, netip.AddrPortFrom(be.IPv4, HTTPPort), KeepAliveOptions{
		Conns: 3, Every: 20 * time.Millisecond, FirstPort: 32000,
	})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	for _, r := range k.Results() {
		if r.Failures != 0 || r.Backend != be.Name || len(r.Answers) != 1 || r.Requests < 5 {
			t.Errorf("conn from port %d: %+v", r.Port, r)
		}
	}
	// Only 3 TCP connections served all of that.
	if err := servers[2].Stop(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	rs := k.Close()
	ports := map[uint16]bool{}
	for _, r := range rs {
		ports[r.Port] = true
		if r.Failures != 1 || r.Closed {
			t.Errorf("conn from port %d after its server stopped: failures %d closed %v (%v), want one failure", r.Port, r.Failures, r.Closed, r.Err)
		}
	}
	if len(ports) != 3 || !ports[32000] || !ports[32002] {
		t.Errorf("client ports %v, want 32000-32002", ports)
	}
	t.Logf("connections: %+v", rs)
}

func newNATLab(t *testing.T, gateway bool) *Lab {
	t.Helper()
	testutil.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), Scale(30*time.Second))
	defer cancel()
	l, err := New(ctx, Options{NAT: &NATOptions{Gateway: gateway}})
	if err != nil {
		t.Fatalf("build lab: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("close lab: %v", err)
		}
	})
	return l
}

// The NAT lab: the client on one segment, the load balancer on both, the
// backends on the other; the backends' routes as the mode needs them; each
// backend's HTTP and UDP servers report who they are and whom they saw.
func TestNATTopology(t *testing.T) {
	for _, gateway := range []bool{true, false} {
		t.Run(fmt.Sprintf("gateway=%v", gateway), func(t *testing.T) {
			l := newNATLab(t, gateway)
			ctx, cancel := context.WithTimeout(context.Background(), Scale(30*time.Second))
			defer cancel()
			if len(l.Backends) != 0 || len(l.NATBackends) != 3 {
				t.Fatalf("%d DR and %d NAT backends, want 0 and 3", len(l.Backends), len(l.NATBackends))
			}
			if l.LB.Back == nil || l.LB.Back.IPv4.String() != "10.201.0.10" || l.LB.Back.IPv6.String() != "fd00:201::10" {
				t.Fatalf("lb back interface %+v, want 10.201.0.10 and fd00:201::10", l.LB.Back)
			}
			if got := l.LB.Ifaces(); len(got) != 2 || got[0] != Iface || got[1] != BackIface {
				t.Errorf("lb interfaces %v, want [%s %s]", got, Iface, BackIface)
			}
			if be := l.Backend("nat2"); be == nil || be.IPv4.String() != "10.201.0.12" || be.IPv6.String() != "fd00:201::12" {
				t.Errorf("nat2: %+v, want 10.201.0.12 and fd00:201::12", be)
			}
			for _, k := range []string{"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"} {
				if v, err := l.LB.Sysctl(k); err != nil || v != "1" {
					t.Errorf("lb %s = %q (%v), want 1", k, v, err)
				}
			}
			sw, err := netlink.NewHandleAt(l.Switch.ns)
			if err != nil {
				t.Fatal(err)
			}
			for _, name := range []string{"sw-client", "sw-lb", "swn-lb", "swn-nat1", "swn-nat3"} {
				link, err := sw.LinkByName(name)
				if err != nil {
					t.Errorf("bridge port %s: %v", name, err)
					continue
				}
				if x := link.Attrs().Xdp; x == nil || !x.Attached {
					t.Errorf("bridge port %s has no XDP program", name)
				}
			}
			sw.Close()

			for _, be := range l.NATBackends {
				for _, c := range []netip.Addr{l.Client.IPv4, l.Client.IPv6} {
					ok, dev, gw, err := be.RouteTo(c)
					if err != nil {
						t.Fatal(err)
					}
					back := l.LB.Back.IPv4
					if c.Is6() {
						back = l.LB.Back.IPv6
					}
					switch {
					case gateway && (!ok || gw != back || dev != Iface):
						t.Errorf("%s: route to the client %s: %v dev %s via %s, want via %s", be.Name, c, ok, dev, gw, back)
					case !gateway && ok:
						t.Errorf("%s: has a route to the client %s (dev %s via %s), want none", be.Name, c, dev, gw)
					}
				}
				// The client reaches the backends only through a load balancer.
				if ok, _, _, err := l.Client.RouteTo(be.IPv4); err != nil || ok {
					t.Errorf("client has a route to %s (%v)", be.IPv4, err)
				}
				if on, err := be.TxChecksum(); err != nil || on {
					t.Errorf("%s tx checksum offload = %v (%v), want off", be.Name, on, err)
				}
			}

			servers, err := l.ServeNATBackends()
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range servers {
				for _, a := range []netip.Addr{s.Node.IPv4, s.Node.IPv6} {
					peer := l.LB.Back.IPv4
					if a.Is6() {
						peer = l.LB.Back.IPv6
					}
					res := l.LB.Load(ctx, netip.AddrPortFrom(a, NATPort), LoadOptions{Requests: 3, Parallel: 1})
					if res.OK != 3 || res.ByBackend[s.Node.Name] != 3 {
						t.Errorf("lb -> %s http: %+v", a, res)
					}
					for _, ans := range res.Answers {
						if ans.Peer.Addr() != peer || ans.Peer.Port() != ans.Port {
							t.Errorf("lb -> %s http from port %d: the server saw %s, want %s:%d", a, ans.Port, ans.Peer, peer, ans.Port)
						}
					}
					er := l.LB.EchoUDP(ctx, netip.AddrPortFrom(a, NATPort), EchoOptions{Requests: 3, FirstPort: 33000})
					if er.OK != 3 || er.ByBackend[s.Node.Name] != 3 {
						t.Errorf("lb -> %s udp: %+v", a, er)
					}
					for _, ans := range er.Answers {
						if ans.Peer != netip.AddrPortFrom(peer, ans.Port) {
							t.Errorf("lb -> %s udp from port %d: the server saw %s, want %s:%d", a, ans.Port, ans.Peer, peer, ans.Port)
						}
					}
				}
				if s.UDP.Served() != 6 || s.HTTP.Served() != 6 {
					t.Errorf("%s served %d http and %d udp, want 6 each", s.Node.Name, s.HTTP.Served(), s.UDP.Served())
				}
			}
		})
	}
}

// The ECMP topology: the client behind the router, three load balancers
// and the backends on the other segment, the router forwarding with an L4
// multipath hash, everyone's routes through it; and FRR runs on the router.
func TestECMPTopology(t *testing.T) {
	testutil.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), Scale(60*time.Second))
	defer cancel()
	l, err := New(ctx, Options{ECMP: &ECMPOptions{}})
	if err != nil {
		t.Fatalf("build lab: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("close lab: %v", err)
		}
	})
	if len(l.LBs) != 3 || l.LB != l.LBs[0] || l.Router == nil || l.Router.Back == nil {
		t.Fatalf("lbs %v, router %+v", l.LBs, l.Router)
	}
	for i, lb := range l.LBs {
		if want := fmt.Sprintf("10.200.0.%d", 31+i); lb.IPv4.String() != want || lb.Name != fmt.Sprintf("lb%d", i+1) {
			t.Errorf("%s at %s, want lb%d at %s", lb.Name, lb.IPv4, i+1, want)
		}
	}
	if l.Client.IPv4.String() != "10.202.0.2" || l.Router.IPv4.String() != "10.200.0.1" || l.Router.Back.IPv4.String() != "10.202.0.1" {
		t.Errorf("client %s, router %s and %s", l.Client.IPv4, l.Router.IPv4, l.Router.Back.IPv4)
	}
	for k, want := range map[string]string{"net/ipv4/ip_forward": "1", "net/ipv4/fib_multipath_hash_policy": "1", "net/ipv6/fib_multipath_hash_policy": "1"} {
		if v, err := l.Router.Sysctl(k); err != nil || v != want {
			t.Errorf("router %s = %q (%v), want %s", k, v, err, want)
		}
	}
	// The client reaches a backend's own address through the router.
	if _, err := l.ServeBackends(); err != nil {
		t.Fatal(err)
	}
	be := l.Backends[0]
	res := l.Client.Load(ctx, netip.AddrPortFrom(be.IPv4, HTTPPort), LoadOptions{Requests: 5, Timeout: 2 * time.Second})
	if res.OK != 5 || res.ByBackend[be.Name] != 5 {
		t.Errorf("client to %s through the router: %+v", be.IPv4, res)
	}
	f, err := l.StartFRR(ctx, l.Router, ECMPRouterConfig(65000, 65001, l.Router.IPv4, []netip.Addr{l.LBs[0].IPv4}, 3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	out, err := f.Vtysh(ctx, "show bgp summary")
	if err != nil || !strings.Contains(out, "10.200.0.31") || !strings.Contains(out, "65001") {
		t.Errorf("show bgp summary: %v\n%s", err, out)
	}
	if err := f.Stop(); err != nil {
		t.Error(err)
	}
}

func TestParseSlowness(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want float64
		bad  bool
	}{
		{"", 1, false}, {"1", 1, false}, {"25", 25, false}, {"2.5", 2.5, false},
		{"0.5", 1, false}, {"-3", 1, false}, {"1e9", 1000, false},
		{"fast", 1, true}, {"NaN", 1, true},
	} {
		got, err := parseSlowness(tc.in)
		if got != tc.want || (err != nil) != tc.bad {
			t.Errorf("parseSlowness(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.bad)
		}
	}
}
