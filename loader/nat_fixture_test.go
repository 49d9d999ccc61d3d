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
// to both, so both are in tx_ports.
type natLab struct {
	ns       netns.NsHandle
	d        *Datapath
	cli, srv *net.Interface
	// peerMAC is every neighbour's MAC, by the interface it is on.
	cliPeerMAC, srvPeerMAC net.HardwareAddr
}

var (
	natBackend4 = netip.MustParseAddr("10.0.1.5")
	natBackend6 = netip.MustParseAddr("2001:db8:1::5")
	natSNAT4    = netip.MustParseAddr("10.0.1.1") // srv's own address
	natSNAT6    = netip.MustParseAddr("2001:db8:1::1")
	natLBCli4   = netip.MustParseAddr("10.0.0.10") // cli's own address
	natLBCli6   = netip.MustParseAddr("2001:db8::10")
)

func newNATLab(t *testing.T, opts Options) *natLab {
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
	arms := []arm{
		{"cli", []string{"10.0.0.10/24", "2001:db8::10/64"}, []netip.Addr{client4, client6}, &lab.cliPeerMAC, &lab.cli},
		{"srv", []string{"10.0.1.1/24", "2001:db8:1::1/64"}, []netip.Addr{natBackend4, natBackend6}, &lab.srvPeerMAC, &lab.srv},
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
func (lab *natLab) run(t *testing.T, in []byte, ifc *net.Interface) result {
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
