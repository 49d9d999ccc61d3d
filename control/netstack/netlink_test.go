package netstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/internal/testutil"
	"golang.org/x/sys/unix"
)

// newNetns creates a named network namespace, deleted in Cleanup.
func newNetns(t *testing.T, suffix string) netns.NsHandle {
	return testutil.NewNetNS(t, fmt.Sprintf("xlbtest%d%s", os.Getpid()%100000, suffix))
}

type netFixture struct {
	ns       netns.NsHandle
	h        *netlink.Handle
	lb, peer netlink.Link
}

func mustIPNet(t *testing.T, s string) *net.IPNet {
	t.Helper()
	p := netip.MustParsePrefix(s)
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// newNetFixture: lb0 (10.77.0.1/24, fd77::1/64) in a fresh namespace
// <-veth-> peer0 (10.77.0.2/24, fd77::2/64) in another.
func newNetFixture(t *testing.T) *netFixture {
	ns, peerNS := newNetns(t, "a"), newNetns(t, "b")
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	ph, err := netlink.NewHandleAt(peerNS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ph.Close)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "lb0"}, PeerName: "peer0", PeerNamespace: netlink.NsFd(peerNS)}
	if err := h.LinkAdd(veth); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	f := &netFixture{ns: ns, h: h}
	for _, c := range []struct {
		h     *netlink.Handle
		link  *netlink.Link
		name  string
		addrs []string
	}{{h, &f.lb, "lb0", []string{"10.77.0.1/24", "fd77::1/64"}}, {ph, &f.peer, "peer0", []string{"10.77.0.2/24", "fd77::2/64"}}} {
		h := c.h
		l, err := h.LinkByName(c.name)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range c.addrs {
			if err := h.AddrAdd(l, &netlink.Addr{IPNet: mustIPNet(t, a), Flags: unix.IFA_F_NODAD}); err != nil {
				t.Fatalf("add %s: %v", a, err)
			}
		}
		if err := h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
		if l, err = h.LinkByName(c.name); err != nil {
			t.Fatal(err)
		}
		*c.link = l
	}
	return f
}

func (f *netFixture) network(t *testing.T, dir string) *Netlink {
	t.Helper()
	n, err := New(Options{Interfaces: []string{"lb0"}, StateDir: dir, Namespace: &f.ns})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	return n
}

func (f *netFixture) addrs(t *testing.T) []string {
	t.Helper()
	as, err := f.h.AddrList(f.lb, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range as {
		if a.IP.IsLinkLocalUnicast() {
			continue
		}
		s := a.IPNet.String()
		if a.Label != "" && a.Label != "lb0" {
			s += " " + a.Label
		}
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

func TestNetlinkRouteCheck(t *testing.T) {
	f := newNetFixture(t)
	n := f.network(t, "")
	// Off-link: routed through a gateway, and no route at all.
	if err := f.h.RouteAdd(&netlink.Route{Dst: mustIPNet(t, "10.99.0.0/24"), Gw: net.ParseIP("10.77.0.2"), LinkIndex: f.lb.Attrs().Index}); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"10.99.0.5", "192.0.2.7", "10.77.0.1"} {
		_, err := n.Resolve(context.Background(), netip.MustParseAddr(a))
		if !errors.Is(err, model.ErrInvalid) {
			t.Errorf("resolve %s: %v, want ErrInvalid", a, err)
		}
	}
	_, err := n.Resolve(context.Background(), netip.MustParseAddr("10.99.0.5"))
	if err == nil || err.Error() != "backend 10.99.0.5 is not on a directly connected subnet of lb0" {
		t.Errorf("message %q", err)
	}
	_, err = n.Resolve(context.Background(), netip.MustParseAddr("192.0.2.7"))
	if err == nil || !strings.HasPrefix(err.Error(), "backend 192.0.2.7 is not on a directly connected subnet of lb0 (no route: ") {
		t.Errorf("message without a route %q", err)
	}
	st := model.State{VIPs: []model.VIP{{Address: netip.MustParseAddr("10.77.0.100"), Port: 80, Protocol: model.TCP, Mode: model.ModeDR,
		Backends: []model.Backend{be("10.77.0.2", 100)}}}}
	if err := n.CheckState(st); err != nil {
		t.Errorf("check on-link backend: %v", err)
	}
	st.VIPs[0].Backends = append(st.VIPs[0].Backends, be("10.99.0.5", 100))
	if err := n.CheckState(st); !errors.Is(err, model.ErrInvalid) {
		t.Errorf("check off-link backend: %v, want ErrInvalid", err)
	}

	// On-link, IPv4 and IPv6: the MAC gets resolved (managed entry or poke).
	for _, a := range []string{"10.77.0.2", "fd77::2"} {
		deadline := time.Now().Add(5 * time.Second)
		for {
			nb, err := n.Resolve(context.Background(), netip.MustParseAddr(a))
			if err != nil {
				t.Fatalf("resolve %s: %v", a, err)
			}
			if nb.Ifindex != f.lb.Attrs().Index || nb.Iface != "lb0" || nb.SrcMAC.String() != f.lb.Attrs().HardwareAddr.String() {
				t.Fatalf("resolve %s: %+v", a, nb)
			}
			if nb.MAC.String() == f.peer.Attrs().HardwareAddr.String() {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("resolve %s: MAC %v, want %v", a, nb.MAC, f.peer.Attrs().HardwareAddr)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// This kernel (>= 5.16) takes managed entries: the kernel keeps them resolved.
	neighs, err := f.h.NeighList(f.lb.Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	managed := slices.ContainsFunc(neighs, func(nb netlink.Neigh) bool {
		return nb.IP.Equal(net.ParseIP("10.77.0.2")) && nb.FlagsExt&netlink.NTF_EXT_MANAGED != 0
	})
	if !managed {
		t.Errorf("no managed neighbour entry for 10.77.0.2: %+v", neighs)
	}
}

func TestNetlinkWatchSignalsMACChange(t *testing.T) {
	f := newNetFixture(t)
	n := f.network(t, "")
	ip := netip.MustParseAddr("10.77.0.9")
	old := net.HardwareAddr{0x02, 0, 0, 0, 0x77, 1}
	neigh := netlink.Neigh{LinkIndex: f.lb.Attrs().Index, IP: net.IP(ip.AsSlice()), State: netlink.NUD_PERMANENT, HardwareAddr: old}
	if err := f.h.NeighAdd(&neigh); err != nil {
		t.Fatal(err)
	}
	nb, err := n.Resolve(context.Background(), ip)
	if err != nil || nb.MAC.String() != old.String() {
		t.Fatalf("resolve: %+v %v", nb, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { n.Watch(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	time.Sleep(200 * time.Millisecond) // let the subscription start
	select {
	case <-n.Changes():
		t.Fatal("signalled without a change")
	default:
	}
	neigh.HardwareAddr = net.HardwareAddr{0x02, 0, 0, 0, 0x77, 2}
	if err := f.h.NeighSet(&neigh); err != nil {
		t.Fatal(err)
	}
	select {
	case <-n.Changes():
	case <-time.After(3 * time.Second):
		t.Fatal("no change signalled after the neighbour's MAC changed")
	}
}

func TestNetlinkAnnounce(t *testing.T) {
	f := newNetFixture(t)
	dir := t.TempDir()
	n := f.network(t, dir)
	// The operator's own /32 on the interface: never touched.
	if err := f.h.AddrAdd(f.lb, &netlink.Addr{IPNet: mustIPNet(t, "10.77.0.50/32")}); err != nil {
		t.Fatal(err)
	}
	base := f.addrs(t)
	want := map[netip.Addr]bool{
		netip.MustParseAddr("10.77.0.100"):  false, // inside 10.77.0.0/24
		netip.MustParseAddr("10.77.0.50"):   false, // already there
		netip.MustParseAddr("fd77::100"):    false,
		netip.MustParseAddr("192.0.2.1"):    false, // outside, not forced: routers' job
		netip.MustParseAddr("198.51.100.1"): true,  // forced
	}
	if err := n.Announce(context.Background(), want); err != nil {
		t.Fatal(err)
	}
	got := f.addrs(t)
	wantAddrs := append(slices.Clone(base), "10.77.0.100/32 lb0:xlb", "198.51.100.1/32 lb0:xlb", "fd77::100/128")
	slices.Sort(wantAddrs)
	if !slices.Equal(got, wantAddrs) {
		t.Fatalf("addresses %v, want %v", got, wantAddrs)
	}
	if err := n.Announce(context.Background(), want); err != nil || !slices.Equal(f.addrs(t), wantAddrs) {
		t.Fatalf("second announce changed something: %v %v", f.addrs(t), err)
	}

	// A restarted daemon withdraws what the previous one added, and only that.
	n2 := f.network(t, dir)
	delete(want, netip.MustParseAddr("10.77.0.100"))
	if err := n2.Announce(context.Background(), want); err != nil {
		t.Fatal(err)
	}
	if got := f.addrs(t); slices.Contains(got, "10.77.0.100/32 lb0:xlb") || !slices.Contains(got, "fd77::100/128") {
		t.Fatalf("after withdrawing one: %v", got)
	}
	if err := n2.Announce(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if got := f.addrs(t); !slices.Equal(got, base) {
		t.Fatalf("after withdrawing all: %v, want %v", got, base)
	}
	if !slices.Contains(base, "10.77.0.50/32") || !strings.Contains(strings.Join(base, " "), "10.77.0.1/24") {
		t.Fatalf("base %v", base)
	}
}

func be(a string, w uint32) model.Backend {
	return model.Backend{Address: netip.MustParseAddr(a), Weight: w}
}

// addLink adds an interface of the fixture's namespace that is up, with
// addrs: a veth whose peer (name+"p") stays in the namespace, up too, as
// the dummy driver may be missing.
func (f *netFixture) addLink(t *testing.T, name string, addrs ...string) netlink.Link {
	t.Helper()
	if err := f.h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}); err != nil {
		t.Fatalf("add %s: %v", name, err)
	}
	peer, err := f.h.LinkByName(name + "p")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.h.LinkSetUp(peer); err != nil {
		t.Fatal(err)
	}
	l, err := f.h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if err := f.h.AddrAdd(l, &netlink.Addr{IPNet: mustIPNet(t, a), Flags: unix.IFA_F_NODAD}); err != nil {
			t.Fatalf("add %s: %v", a, err)
		}
	}
	if err := f.h.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
	return l
}

// NAT backends are found by route, through a gateway too, but only out of
// an attached interface; the egress interface's primary address is what a
// fullnat VIP without its own takes.
func TestNetlinkNATRoutes(t *testing.T) {
	f := newNetFixture(t)
	f.addLink(t, "other0", "10.88.0.1/24")
	arm := f.addLink(t, "arm1") // attached, without an IPv4 address
	if err := f.h.RouteAdd(&netlink.Route{Dst: mustIPNet(t, "10.55.0.0/24"), LinkIndex: arm.Attrs().Index, Scope: netlink.SCOPE_LINK}); err != nil {
		t.Fatal(err)
	}
	if err := f.h.RouteAdd(&netlink.Route{Dst: mustIPNet(t, "10.99.0.0/24"), Gw: net.ParseIP("10.77.0.2"), LinkIndex: f.lb.Attrs().Index}); err != nil {
		t.Fatal(err)
	}
	n, err := New(Options{Interfaces: []string{"lb0", "arm1"}, Namespace: &f.ns})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)

	addrs := []string{"10.77.0.2", "10.99.0.5", "fd77::2", "10.55.0.5", "10.88.0.5", "192.0.2.7", "10.77.0.1"}
	var in []netip.Addr
	for _, a := range addrs {
		in = append(in, netip.MustParseAddr(a))
	}
	got := n.RouteAll(context.Background(), in)
	for _, tc := range []struct {
		addr, iface, primary, err string
	}{
		{"10.77.0.2", "lb0", "10.77.0.1", ""},
		{"10.99.0.5", "lb0", "10.77.0.1", ""}, // through a gateway: fine for NAT
		{"fd77::2", "lb0", "fd77::1", ""},
		{"10.55.0.5", "arm1", "", ""},
		{"10.88.0.5", "", "", "backend 10.88.0.5 is routed through other0, which is not an attached interface (lb0, arm1)"},
		{"192.0.2.7", "", "", "backend 192.0.2.7 is not reachable through lb0, arm1 (no route: "},
		{"10.77.0.1", "", "", "backend 10.77.0.1 is an address of this host"},
	} {
		rt := got[netip.MustParseAddr(tc.addr)]
		if tc.err != "" {
			if !errors.Is(rt.Err, model.ErrInvalid) || !strings.HasPrefix(rt.Err.Error(), tc.err) {
				t.Errorf("route %s: %+v, want error %q", tc.addr, rt, tc.err)
			}
			continue
		}
		if rt.Err != nil || rt.Iface != tc.iface || rt.Primary.String() != orInvalid(tc.primary) {
			t.Errorf("route %s: %+v, want via %s from %q", tc.addr, rt, tc.iface, tc.primary)
		}
	}

	// Every next hop is kept resolved: the backend on a connected
	// subnet, the gateway of a routed one (10.77.0.2 for 10.99.0.5).
	for _, nh := range []struct {
		link netlink.Link
		fam  int
		addr string
	}{{f.lb, netlink.FAMILY_V4, "10.77.0.2"}, {f.lb, netlink.FAMILY_V6, "fd77::2"}, {arm, netlink.FAMILY_V4, "10.55.0.5"}} {
		neighs, err := f.h.NeighList(nh.link.Attrs().Index, nh.fam)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(neighs, func(nb netlink.Neigh) bool {
			return nb.IP.Equal(net.ParseIP(nh.addr)) && nb.FlagsExt&netlink.NTF_EXT_MANAGED != 0
		}) {
			t.Errorf("no managed neighbour entry for next hop %s: %+v", nh.addr, neighs)
		}
	}

	// A flushed next hop is resolved again on request (the daemon asks
	// when the program counts fib_no_neigh).
	if err := f.h.NeighDel(&netlink.Neigh{LinkIndex: arm.Attrs().Index, Family: netlink.FAMILY_V4, IP: net.ParseIP("10.55.0.5")}); err != nil {
		t.Fatal(err)
	}
	n.ResolveNATNextHops(context.Background())
	if neighs, err := f.h.NeighList(arm.Attrs().Index, netlink.FAMILY_V4); err != nil {
		t.Fatal(err)
	} else if !slices.ContainsFunc(neighs, func(nb netlink.Neigh) bool { return nb.IP.Equal(net.ParseIP("10.55.0.5")) }) {
		t.Errorf("flushed next hop 10.55.0.5 not resolved again: %+v", neighs)
	}

	nat := func(mode model.Mode, snat string, backends ...string) model.State {
		v := model.VIP{Address: netip.MustParseAddr("10.77.0.100"), Port: 80, Protocol: model.TCP, Mode: mode}
		if snat != "" {
			v.SNATAddr = netip.MustParseAddr(snat)
		}
		for _, b := range backends {
			v.Backends = append(v.Backends, model.Backend{Address: netip.MustParseAddr(b), Port: 8080, Weight: 1})
		}
		return model.State{VIPs: []model.VIP{v}}
	}
	for _, tc := range []struct {
		st   model.State
		want string // "" valid
	}{
		{nat(model.ModeNAT, "", "10.77.0.2", "10.99.0.5", "10.55.0.5"), ""},
		{nat(model.ModeFullNAT, "", "10.77.0.2", "10.99.0.5"), ""},
		{nat(model.ModeFullNAT, "10.88.0.1", "10.55.0.5"), ""}, // any address of this host
		{nat(model.ModeNAT, "", "10.77.0.2", "10.88.0.5"), "vip 10.77.0.100:80/tcp: backend 10.88.0.5 is routed through other0, which is not an attached interface (lb0, arm1)"},
		{nat(model.ModeFullNAT, "", "192.0.2.7"), "vip 10.77.0.100:80/tcp: backend 192.0.2.7 is not reachable through lb0, arm1"},
		{nat(model.ModeFullNAT, "", "10.55.0.5"), "vip 10.77.0.100:80/tcp: interface arm1 toward backend 10.55.0.5:8080 has no IPv4 address to take as the snat address: set one with --snat-addr"},
		{nat(model.ModeFullNAT, "10.77.0.99", "10.77.0.2"), "vip 10.77.0.100:80/tcp: snat address 10.77.0.99 is not an address of this host"},
	} {
		err := n.CheckState(tc.st)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("check %+v: %v", tc.st.VIPs[0], err)
		case tc.want != "" && (!errors.Is(err, model.ErrInvalid) || !strings.HasPrefix(err.Error(), tc.want)):
			t.Errorf("check %+v: %v, want %q", tc.st.VIPs[0], err, tc.want)
		}
	}

	// A VIP address xdplb announces is no SNAT address: it goes with its VIP.
	if err := n.Announce(context.Background(), map[netip.Addr]bool{netip.MustParseAddr("10.77.0.100"): false}); err != nil {
		t.Fatal(err)
	}
	if err := n.CheckState(nat(model.ModeFullNAT, "10.77.0.100", "10.77.0.2")); err == nil || !strings.Contains(err.Error(), "is not an address of this host") {
		t.Errorf("announced vip address as snat address: %v", err)
	}
}

func orInvalid(s string) string {
	if s == "" {
		return netip.Addr{}.String()
	}
	return s
}

// A DR or NAT backend that is the network or broadcast address of an
// attached subnet, or an address of this host, is refused with a message
// that says so; a neighbour entry with a group MAC never makes a backend
// resolved (issue 12, defect 3).
func TestNetlinkRefusesSegmentWideBackends(t *testing.T) {
	f := newNetFixture(t)
	n := f.network(t, "")
	for _, tc := range []struct {
		mode model.Mode
		addr string
		want string // "" valid
	}{
		{model.ModeDR, "10.77.0.2", ""},
		{model.ModeDR, "10.77.0.255", "vip 10.77.0.100:80/tcp: backend 10.77.0.255 is the broadcast address of 10.77.0.0/24 on lb0"},
		{model.ModeDR, "10.77.0.0", "vip 10.77.0.100:80/tcp: backend 10.77.0.0 is the network address of 10.77.0.0/24 on lb0"},
		{model.ModeDR, "10.77.0.1", "vip 10.77.0.100:80/tcp: backend 10.77.0.1 is an address of this host, not a backend"},
		{model.ModeNAT, "10.77.0.255", "vip 10.77.0.100:80/tcp: backend 10.77.0.255 is the broadcast address of 10.77.0.0/24 on lb0"},
		{model.ModeNAT, "10.77.0.2", ""},
	} {
		st := model.State{VIPs: []model.VIP{{Address: netip.MustParseAddr("10.77.0.100"), Port: 80, Protocol: model.TCP, Mode: tc.mode,
			Backends: []model.Backend{be(tc.addr, 100)}}}}
		err := n.CheckState(st)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s backend %s: %v", tc.mode, tc.addr, err)
		case tc.want != "" && (!errors.Is(err, model.ErrInvalid) || err.Error() != tc.want):
			t.Errorf("%s backend %s: %v, want %q", tc.mode, tc.addr, err, tc.want)
		}
	}
	for i, mac := range []string{"ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:01", "33:33:00:00:00:01"} {
		a := netip.AddrFrom4([4]byte{10, 77, 0, byte(20 + i)})
		hw, _ := net.ParseMAC(mac)
		if err := f.h.NeighSet(&netlink.Neigh{LinkIndex: f.lb.Attrs().Index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
			IP: a.AsSlice(), HardwareAddr: hw}); err != nil {
			t.Fatal(err)
		}
		nb, err := n.Resolve(context.Background(), a)
		if !errors.Is(err, model.ErrInvalid) || !strings.Contains(err.Error(), "a broadcast or multicast MAC") || nb.MAC != nil {
			t.Errorf("backend %s with MAC %s: %+v, %v; want refused", a, mac, nb, err)
		}
	}
}

// A VIP on an address of this host is refused with ErrOwnAddress (which
// force overrides); one on a subnet's network or broadcast address is
// refused outright; an address xdplb announced for a VIP is fine.
func TestCheckVIPAddress(t *testing.T) {
	f := newNetFixture(t)
	n := f.network(t, "")
	for _, tc := range []struct {
		addr string
		want string // "" valid
		own  bool
	}{
		{"10.77.0.100", "", false},
		{"fd77::100", "", false},
		{"10.77.0.1", "10.77.0.1 is an address of this host (on lb0): the VIP would take the host's own connections to its port; use --force to take it anyway", true},
		{"fd77::1", "fd77::1 is an address of this host (on lb0): the VIP would take the host's own connections to its port; use --force to take it anyway", true},
		{"10.77.0.255", "10.77.0.255 is the broadcast address of 10.77.0.0/24 on lb0", false},
		{"10.77.0.0", "10.77.0.0 is the network address of 10.77.0.0/24 on lb0", false},
		{"::ffff:10.77.0.1", "10.77.0.1 is an address of this host (on lb0): the VIP would take the host's own connections to its port; use --force to take it anyway", true},
	} {
		err := n.CheckVIPAddress(netip.MustParseAddr(tc.addr))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.addr, err)
		case tc.want != "" && (!errors.Is(err, model.ErrInvalid) || err.Error() != tc.want):
			t.Errorf("%s: %v, want %q", tc.addr, err, tc.want)
		case errors.Is(err, model.ErrOwnAddress) != tc.own:
			t.Errorf("%s: %v matches ErrOwnAddress %v, want %v", tc.addr, err, !tc.own, tc.own)
		}
	}
	// Announced for a VIP: the VIP's own, not the host's.
	vip := netip.MustParseAddr("10.77.0.100")
	if err := n.Announce(context.Background(), map[netip.Addr]bool{vip: false}); err != nil {
		t.Fatal(err)
	}
	if err := n.CheckVIPAddress(vip); err != nil {
		t.Errorf("announced VIP address: %v", err)
	}
	// A NAT backend on this host is named as such.
	st := model.State{VIPs: []model.VIP{{Address: vip, Port: 80, Protocol: model.TCP, Mode: model.ModeNAT,
		Backends: []model.Backend{be("10.77.0.1", 100)}}}}
	if err := n.CheckState(st); !errors.Is(err, model.ErrInvalid) || err.Error() != "vip 10.77.0.100:80/tcp: backend 10.77.0.1 is an address of this host, not a backend" {
		t.Errorf("nat backend on this host: %v", err)
	}
}
