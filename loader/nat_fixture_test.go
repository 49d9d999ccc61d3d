package loader

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/xdplb/xdplb/internal/testutil"
)

// natLab is a network namespace shaped like a two-armed NAT load balancer,
// for running the program with real FIB lookups: interface "cli" faces the
// clients (10.0.0.0/24, 2001:db8::/64) and "srv" the backends (10.0.1.0/24,
// 2001:db8:1::/64), each a veth whose peer stays in the namespace, with
// permanent neighbour entries for the client and backend addresses the
// tests use and forwarding on. The datapath is loaded there and attached
// to both, so both are in tx_ports. A third veth, "oth" (10.0.2.0/24,
// 2001:db8:2::/64, neighbours 10.0.2.5 and 2001:db8:2::5), has a route and
// neighbours but no XDP program: the FIB may name it, XDP cannot send
// through it.
type natLab struct {
	ns            netns.NsHandle
	d             *Datapath
	cli, srv, oth *net.Interface
	// peerMAC is every neighbour's MAC, by the interface it is on.
	cliPeerMAC, srvPeerMAC, othPeerMAC net.HardwareAddr
}

var (
	natBackend4 = netip.MustParseAddr("10.0.1.5")
	natBackend6 = netip.MustParseAddr("2001:db8:1::5")
	natSNAT4    = netip.MustParseAddr("10.0.1.1") // srv's own address
	natSNAT6    = netip.MustParseAddr("2001:db8:1::1")
	natOther4   = netip.MustParseAddr("10.0.2.5") // a neighbour behind "oth"
	natOther6   = netip.MustParseAddr("2001:db8:2::5")
)

func newNATLab(t testing.TB, opts Options) *natLab {
	t.Helper()
	testutil.RequireRoot(t)
	lab := &natLab{ns: testutil.NewNetNS(t, "")}
	bpffs := testutil.MountBPFFS(t)
	testutil.InNetNS(t, lab.ns, func() error {
		if err := lab.setup(); err != nil {
			return err
		}
		opts.BPFFS = bpffs
		opts.Interfaces = []string{"cli", "srv"}
		opts.XDPMode = XDPModeNative
		d, err := Load(opts)
		if err != nil {
			return fmt.Errorf("load: %w", err)
		}
		lab.d = d
		return nil
	})
	t.Cleanup(func() {
		testutil.InNetNS(t, lab.ns, func() error { return lab.d.Remove() })
	})
	return lab
}

func (lab *natLab) setup() error {
	for _, sysctl := range []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"} {
		if err := os.WriteFile(sysctl, []byte("1"), 0o644); err != nil {
			return err
		}
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return err
	}
	type arm struct {
		name  string
		addrs []string
		neigh []netip.Addr
		mac   *net.HardwareAddr
		ifc   **net.Interface
	}
	lab.cliPeerMAC = net.HardwareAddr{0x02, 0, 0, 0, 0xc1, 0x01}
	lab.srvPeerMAC = net.HardwareAddr{0x02, 0, 0, 0, 0xb1, 0x01}
	lab.othPeerMAC = net.HardwareAddr{0x02, 0, 0, 0, 0xd1, 0x01}
	arms := []arm{
		{"cli", []string{"10.0.0.10/24", "2001:db8::10/64"}, []netip.Addr{client4, client6}, &lab.cliPeerMAC, &lab.cli},
		{"srv", []string{"10.0.1.1/24", "2001:db8:1::1/64"}, []netip.Addr{natBackend4, natBackend6}, &lab.srvPeerMAC, &lab.srv},
		{"oth", []string{"10.0.2.1/24", "2001:db8:2::1/64"}, []netip.Addr{natOther4, natOther6}, &lab.othPeerMAC, &lab.oth},
	}
	for _, a := range arms {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: a.name}, PeerName: a.name + "p", PeerHardwareAddr: *a.mac}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("add %s: %w", a.name, err)
		}
		l, err := netlink.LinkByName(a.name)
		if err != nil {
			return err
		}
		for _, s := range a.addrs {
			addr, err := netlink.ParseAddr(s)
			if err != nil {
				return err
			}
			addr.Flags = 0x02 /* IFA_F_NODAD */
			if err := netlink.AddrAdd(l, addr); err != nil {
				return fmt.Errorf("address %s on %s: %w", s, a.name, err)
			}
		}
		for _, name := range []string{a.name, a.name + "p"} {
			pl, err := netlink.LinkByName(name)
			if err != nil {
				return err
			}
			if err := netlink.LinkSetUp(pl); err != nil {
				return err
			}
		}
		for _, n := range a.neigh {
			fam := netlink.FAMILY_V4
			if n.Is6() {
				fam = netlink.FAMILY_V6
			}
			err := netlink.NeighSet(&netlink.Neigh{LinkIndex: l.Attrs().Index, Family: fam, State: netlink.NUD_PERMANENT,
				IP: n.AsSlice(), HardwareAddr: *a.mac})
			if err != nil {
				return fmt.Errorf("neighbour %s on %s: %w", n, a.name, err)
			}
		}
		ifc, err := net.InterfaceByName(a.name)
		if err != nil {
			return err
		}
		*a.ifc = ifc
	}
	return nil
}

// xdpMD is struct xdp_md as BPF_PROG_RUN takes it: the ingress interface
// chooses where the FIB lookup starts.
type xdpMD struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

// run runs the program on in as if it arrived on ifc, in the lab's
// namespace (the FIB is the namespace's).
func (lab *natLab) run(t testing.TB, in []byte, ifc *net.Interface) result {
	t.Helper()
	var r result
	testutil.InNetNS(t, lab.ns, func() error {
		opts := ebpf.RunOptions{Data: in, DataOut: make([]byte, len(in)+256),
			Context: xdpMD{DataEnd: uint32(len(in)), IngressIfindex: uint32(ifc.Index)}}
		v, err := lab.d.Program().Run(&opts)
		if err != nil {
			return fmt.Errorf("run: %w", err)
		}
		r = result{v, opts.DataOut}
		return nil
	})
	return r
}

// events reads the event counters.
func (lab *natLab) events(t testing.TB) map[string]uint64 {
	t.Helper()
	ev, err := lab.d.EventCounters()
	must(t, err)
	return ev
}

// checkEvents says which events rose since before (a reading of events)
// and by how much: every other event must not have moved.
func (lab *natLab) checkEvents(t testing.TB, before map[string]uint64, want map[string]uint64) {
	t.Helper()
	after := lab.events(t)
	for name, n := range after {
		if d := n - before[name]; d != want[name] {
			t.Errorf("event %s rose by %d, want %d", name, d, want[name])
		}
	}
	for name := range want {
		if _, ok := after[name]; !ok {
			t.Errorf("no event counter named %s", name)
		}
	}
}

// setMTU sets ifc's MTU until the test ends.
func (lab *natLab) setMTU(t testing.TB, ifc *net.Interface, mtu int) {
	t.Helper()
	set := func(mtu int) error {
		l, err := netlink.LinkByIndex(ifc.Index)
		if err != nil {
			return err
		}
		return netlink.LinkSetMTU(l, mtu)
	}
	old := ifc.MTU
	testutil.InNetNS(t, lab.ns, func() error { return set(mtu) })
	t.Cleanup(func() { testutil.InNetNS(t, lab.ns, func() error { return set(old) }) })
}

// route is the lab interface toward a neighbour of the lab, and that
// neighbour's MAC: the MACs the FIB gives a packet sent to a are the
// interface's and peer. ok is false for an address with no neighbour entry.
func (lab *natLab) route(a netip.Addr) (ifc *net.Interface, peer net.HardwareAddr, ok bool) {
	switch a {
	case client4, client6:
		return lab.cli, lab.cliPeerMAC, true
	case natBackend4, natBackend6:
		return lab.srv, lab.srvPeerMAC, true
	case natOther4, natOther6:
		return lab.oth, lab.othPeerMAC, true
	}
	return nil, nil, false
}
