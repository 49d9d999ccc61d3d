package bench

// NAT and full NAT in the per-packet cost section (packet.go): a network
// namespace shaped like a two-armed load balancer, so that the program's
// bpf_fib_lookup finds routes and neighbours, a datapath of its own loaded
// and attached there, and the frames, harnesses and checks of the NAT rows.

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/xdplb/xdplb/bench/progs"
	"github.com/xdplb/xdplb/internal/nsthread"
	"github.com/xdplb/xdplb/loader"
)

const pktXDPRedirect = 4

// The NAT lab's interfaces: "cli" faces the clients, "srv" the backends.
// Each is a veth whose peer stays in the namespace (a link needs one to be
// up); the test runs never transmit, so the peers carry nothing.
var (
	pktCliMAC = net.HardwareAddr{0x02, 0, 0, 0, 0xaa, 0x11}
	pktSrvMAC = net.HardwareAddr{0x02, 0, 0, 0, 0xaa, 0x12}
)

// Service ports of the NAT VIPs (on each family's VIP address) and the
// backends' port: the VIP port differs from the backend's, as in the
// issue's `backend add 10.0.0.100:80/tcp 10.0.1.5:8080`.
const (
	pktNATPort     = pktTCPPort // mode nat
	pktFullNATPort = 443        // mode fullnat
	pktBackendPort = 8080
)

// pktNATFamily is one family's addressing on the NAT lab.
type pktNATFamily struct {
	cli, srv netip.Prefix // the balancer's own addresses
	// backends are neighbours on srv, every NAT VIP's backends. Full NAT
	// holds a port per (SNAT address, port, backend): four backends give a
	// new-flow run of 20,000 flows about 5,000 ports of each's range.
	backends []netip.Addr
	snat     netip.Addr // full NAT's source: srv's address
}

// By pktFamilies' order. The clients (pktFamily.client) are neighbours on
// cli; the VIPs are pktFamily.vip.
var pktNATFamilies = []pktNATFamily{
	{netip.MustParsePrefix("10.0.0.10/24"), netip.MustParsePrefix("10.0.1.1/24"),
		pktAddrs("10.0.1.5", "10.0.1.6", "10.0.1.7", "10.0.1.8"), netip.MustParseAddr("10.0.1.1")},
	{netip.MustParsePrefix("2001:db8::10/64"), netip.MustParsePrefix("2001:db8:1::1/64"),
		pktAddrs("2001:db8:1::5", "2001:db8:1::6", "2001:db8:1::7", "2001:db8:1::8"), netip.MustParseAddr("2001:db8:1::1")},
}

func pktAddrs(s ...string) []netip.Addr {
	as := make([]netip.Addr, len(s))
	for i, a := range s {
		as[i] = netip.MustParseAddr(a)
	}
	return as
}

// pktNATCase is one NAT row's family: the frame, where it arrives, what
// xdplb must make of it and the harnessed programs timed on it.
type pktNATCase struct {
	in  []byte
	ctx pktXDPMD
	// want is xdplb's output frame, byte for byte; new flows, whose
	// tuple the harness writes, are checked by checkNew instead.
	want     []byte
	checkNew func(out []byte) error
	// The floor and xdplb behind the restore harness (and, for new
	// flows, the new-flow harness after it).
	floorH, xdplbH *ebpf.Program
}

// pktNAT is the NAT lab: its namespace and datapath, the rows' cases per
// family, and what the checks need.
type pktNAT struct {
	log      *slog.Logger
	name     string // the namespace, under /run/netns
	ns       netns.NsHandle
	cli, srv int // ifindexes
	dp       *loader.Datapath
	natFlows *ebpf.Map // the pinned nat_flows, emptied before new-flow runs
	// keep holds the keys of the established flows' translations, which
	// emptying the table must leave in place.
	keep     map[string]bool
	cases    [][pktNumPaths]*pktNATCase
	closers  []func() error
	inserted int // new flows the xdplb new-flow runs created
	filled   int // new flows inserted to fill the connection table
	flushed  int // translations removed between runs
	portsMax int // most SNAT ports one full-NAT new-flow run held
	// newRuns and newDisturbed count xdplb's NAT new-flow measurements and
	// those that failed the CPU-time check after every retry.
	newRuns, newDisturbed int
}

// newPktNAT builds the lab namespace, loads a datapath there (pinned in
// bpffs, attached natively to both arms, so both are in tx_ports) and
// configures a NAT and a full-NAT VIP per family, each with four backends
// behind srv. ctSize sizes its connection table.
func newPktNAT(log *slog.Logger, bpffs string, ctSize uint32) (_ *pktNAT, err error) {
	n := &pktNAT{log: log, keep: map[string]bool{}}
	defer func() {
		if err != nil {
			err = errors.Join(err, n.close())
		}
	}()
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("random name: %w", err)
	}
	// Not lab's "xlb" prefix: lab sweeps namespaces of that shape.
	n.name = "xpb" + hex.EncodeToString(b) + "-nat"
	if n.ns, err = nsthread.NewNamed(n.name); err != nil {
		return nil, fmt.Errorf("create netns %s: %w", n.name, err)
	}
	n.closers = append(n.closers, func() error {
		errs := []error{n.ns.Close()}
		if err := netns.DeleteNamed(n.name); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("delete netns %s: %w", n.name, err))
		}
		return errors.Join(errs...)
	})
	if err := n.do(n.setup); err != nil {
		return nil, err
	}
	err = n.do(func() error {
		var err error
		n.dp, err = loader.Load(loader.Options{BPFFS: bpffs, ConntrackSize: ctSize, Interfaces: []string{"cli", "srv"},
			XDPMode: loader.XDPModeNative, Logger: log.With("section", "packet", "lab", "nat")})
		if err != nil {
			return fmt.Errorf("load xdplb in %s: %w", n.name, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	n.closers = append(n.closers, func() error { return n.do(n.dp.Remove) })
	if n.natFlows, err = ebpf.LoadPinnedMap(filepath.Join(n.dp.PinPath(), "nat_flows"), nil); err != nil {
		return nil, fmt.Errorf("open pinned nat_flows: %w", err)
	}
	n.closers = append(n.closers, n.natFlows.Close)
	if err := n.configure(); err != nil {
		return nil, err
	}
	return n, nil
}

// do runs fn on a locked OS thread inside the lab's namespace: test runs
// name their ingress interface by an ifindex of the caller's namespace,
// and the FIB they look up is that namespace's.
func (n *pktNAT) do(fn func() error) error { return nsthread.Do(n.ns, n.name, fn) }

// setup, inside the namespace: forwarding on (bpf_fib_lookup refuses to
// route otherwise), the two arms with their addresses, and permanent
// neighbours for the clients and the backends.
func (n *pktNAT) setup() error {
	for _, sysctl := range []string{"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding", "net/ipv6/conf/default/forwarding"} {
		if err := os.WriteFile(filepath.Join("/proc/sys", sysctl), []byte("1"), 0o644); err != nil {
			return fmt.Errorf("sysctl %s: %w", sysctl, err)
		}
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	type arm struct {
		name     string
		mac      net.HardwareAddr
		peerMAC  net.HardwareAddr // every neighbour's MAC on this arm
		ifindex  *int
		fromFams func(pktFamily, pktNATFamily) (netip.Prefix, []netip.Addr)
	}
	arms := []arm{
		{name: "cli", mac: pktCliMAC, peerMAC: pktClientMAC, ifindex: &n.cli,
			fromFams: func(f pktFamily, nf pktNATFamily) (netip.Prefix, []netip.Addr) {
				return nf.cli, []netip.Addr{f.client}
			}},
		{name: "srv", mac: pktSrvMAC, peerMAC: pktBackendMAC, ifindex: &n.srv,
			fromFams: func(_ pktFamily, nf pktNATFamily) (netip.Prefix, []netip.Addr) { return nf.srv, nf.backends }},
	}
	for _, a := range arms {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: a.name, HardwareAddr: a.mac},
			PeerName: a.name + "-p", PeerHardwareAddr: a.peerMAC}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("add veth %s: %w", a.name, err)
		}
		l, err := netlink.LinkByName(a.name)
		if err != nil {
			return err
		}
		*a.ifindex = l.Attrs().Index
		for fi, fam := range pktFamilies {
			prefix, neighs := a.fromFams(fam, pktNATFamilies[fi])
			addr := &netlink.Addr{IPNet: &net.IPNet{IP: prefix.Addr().AsSlice(), Mask: net.CIDRMask(prefix.Bits(), prefix.Addr().BitLen())}}
			if prefix.Addr().Is6() {
				addr.Flags = unix.IFA_F_NODAD
			}
			if err := netlink.AddrAdd(l, addr); err != nil {
				return fmt.Errorf("address %s on %s: %w", prefix, a.name, err)
			}
			for _, neigh := range neighs {
				family := netlink.FAMILY_V4
				if neigh.Is6() {
					family = netlink.FAMILY_V6
				}
				if err := netlink.NeighSet(&netlink.Neigh{LinkIndex: l.Attrs().Index, Family: family, State: netlink.NUD_PERMANENT,
					IP: neigh.AsSlice(), HardwareAddr: a.peerMAC}); err != nil {
					return fmt.Errorf("neighbour %s on %s: %w", neigh, a.name, err)
				}
			}
		}
		for _, name := range []string{a.name, a.name + "-p"} {
			pl, err := netlink.LinkByName(name)
			if err != nil {
				return err
			}
			if err := netlink.LinkSetUp(pl); err != nil {
				return fmt.Errorf("%s up: %w", name, err)
			}
		}
	}
	return nil
}

// configure writes, per family, a NAT VIP (port pktNATPort) and a full-NAT
// VIP (pktFullNATPort, SNAT address srv's own) on the family's VIP
// address, each with the family's backends at pktBackendPort behind srv,
// named in turn by the lookup table's slots.
func (n *pktNAT) configure() error {
	id, bid := uint32(0), uint32(0)
	for fi, fam := range pktFamilies {
		nf := pktNATFamilies[fi]
		for _, v := range []struct {
			port uint16
			mode loader.ForwardMode
		}{{pktNATPort, loader.ModeNAT}, {pktFullNATPort, loader.ModeFullNAT}} {
			id++
			meta := loader.VIPMeta{ID: id, Mode: v.mode, Hash: loader.HashMaglev}
			if v.mode == loader.ModeFullNAT {
				meta.SNATAddr = nf.snat
			}
			if err := n.dp.PutVIP(loader.VIPKey{Addr: fam.vip, Port: v.port, Proto: loader.ProtoTCP}, meta); err != nil {
				return err
			}
			first := bid + 1
			for _, a := range nf.backends {
				bid++
				if err := n.dp.PutBackend(loader.Backend{ID: bid, VIPID: id, Addr: a, Port: pktBackendPort, Mode: v.mode}); err != nil {
					return err
				}
			}
			table := make([]uint32, n.dp.LookupTableSize())
			for i := range table {
				table[i] = first + uint32(i%len(nf.backends))
			}
			if err := n.dp.PutLookupTable(id, table); err != nil {
				return err
			}
		}
	}
	return nil
}

// pktRunOnce runs prog once on in as if it arrived on ifindex; the caller is in
// the lab's namespace.
func pktRunOnce(prog *ebpf.Program, in []byte, ifindex int) (uint32, []byte, error) {
	v, _, out, err := pktTestRun(prog, in, &pktXDPMD{DataEnd: uint32(len(in)), IngressIfindex: uint32(ifindex)}, 1)
	return v, out, err
}

// prepare, inside the namespace, places the established flows of both
// modes per family (their SYNs, checked byte for byte), learns full NAT's
// SNAT port, builds every NAT row's frame and expected output, checks
// each once through xdplb and through its harness, and loads the
// harnesses the rounds time. floor is the benchmark's floor program.
func (n *pktNAT) prepare(floor *ebpf.Program) error {
	prog := n.dp.Program()
	ports := n.dp.SNATPorts()
	for fi, fam := range pktFamilies {
		nf := pktNATFamilies[fi]
		var cs [pktNumPaths]*pktNATCase
		// to*: a frame the balancer sends, with the MACs of the egress
		// and its neighbour and the TTL lowered by one; from*: one it
		// receives.
		toBackend := func(f pktFlow) pktFlow {
			f.srcMAC, f.dstMAC, f.ttl = [6]byte(pktSrvMAC), [6]byte(pktBackendMAC), 63
			return f
		}
		toClient := func(f pktFlow) pktFlow {
			f.srcMAC, f.dstMAC, f.ttl = [6]byte(pktCliMAC), [6]byte(pktClientMAC), 63
			return f
		}
		fromClient := func(f pktFlow) pktFlow {
			f.srcMAC, f.dstMAC = [6]byte(pktClientMAC), [6]byte(pktCliMAC)
			return f
		}
		fromBackend := func(f pktFlow) pktFlow {
			f.srcMAC, f.dstMAC = [6]byte(pktBackendMAC), [6]byte(pktSrvMAC)
			return f
		}
		const cport = 40000
		for _, mode := range []struct {
			name           string
			vport          uint16
			est, reply, nw pktPath
		}{
			{"nat", pktNATPort, pktNATEst, pktNATReply, pktNATNew},
			{"fullnat", pktFullNATPort, pktFullNATEst, pktFullNATReply, pktFullNATNew},
		} {
			full := mode.vport == pktFullNATPort
			// The SYN places the flow; its output says full NAT's port.
			syn, err := fromClient(pktFlow{src: fam.client, dst: fam.vip, sport: cport, dport: mode.vport, syn: true}).frame()
			if err != nil {
				return err
			}
			v, out, err := pktRunOnce(prog, syn, n.cli)
			if err != nil {
				return fmt.Errorf("%s %s syn: %w", fam.name, mode.name, err)
			}
			// Which backend the flow went to, and full NAT's port, are
			// the program's choice: read from the output, then the whole
			// frame is compared.
			src, sport := fam.client, uint16(cport)
			sent, err := pktDecodeTCP(out)
			if err != nil || v != pktXDPRedirect || !slices.Contains(nf.backends, sent.dst) {
				return fmt.Errorf("%s %s syn: verdict %d, output %x: not a SYN translated to a backend (%v)", fam.name, mode.name, v, out, err)
			}
			backend := sent.dst
			if full {
				src, sport = nf.snat, sent.sport
				if sport < ports.Lo || sport > ports.Hi {
					return fmt.Errorf("%s full NAT syn: source port %d outside %s", fam.name, sport, ports)
				}
			}
			want, err := toBackend(pktFlow{src: src, dst: backend, sport: sport, dport: pktBackendPort, syn: true}).frame()
			if err != nil {
				return err
			}
			if v != pktXDPRedirect || !bytes.Equal(out, want) {
				return fmt.Errorf("%s %s syn: verdict %d, output\n %x\nwant verdict %d, output\n %x", fam.name, mode.name, v, out, pktXDPRedirect, want)
			}
			flows := []struct {
				path    pktPath
				in, out pktFlow
				ingress int
			}{
				{mode.est, fromClient(pktFlow{src: fam.client, dst: fam.vip, sport: cport, dport: mode.vport, ack: true}),
					toBackend(pktFlow{src: src, dst: backend, sport: sport, dport: pktBackendPort, ack: true}), n.cli},
				{mode.reply, fromBackend(pktFlow{src: backend, dst: src, sport: pktBackendPort, dport: sport, ack: true}),
					toClient(pktFlow{src: fam.vip, dst: fam.client, sport: mode.vport, dport: cport, ack: true}), n.srv},
			}
			for _, f := range flows {
				c := &pktNATCase{ctx: pktXDPMD{IngressIfindex: uint32(f.ingress)}}
				if c.in, err = f.in.frame(); err != nil {
					return err
				}
				if c.want, err = f.out.frame(); err != nil {
					return err
				}
				c.ctx.DataEnd = uint32(len(c.in))
				if err := pktCheckNATFrame(c.want); err != nil {
					return fmt.Errorf("%s %s expected frame: %w", fam.name, pktPathNames[f.path], err)
				}
				cs[f.path] = c
			}
			// A new flow: the SYN of a port not used above, which the
			// new-flow harness gives a 5-tuple of its own on every run.
			c := &pktNATCase{}
			if c.in, err = fromClient(pktFlow{src: fam.client, dst: fam.vip, sport: cport + 1, dport: mode.vport, syn: true}).frame(); err != nil {
				return err
			}
			c.ctx = pktXDPMD{DataEnd: uint32(len(c.in)), IngressIfindex: uint32(n.cli)}
			nfam, backends := fam, nf.backends
			var wantSrc netip.Addr
			if full {
				wantSrc = nf.snat
			}
			c.checkNew = func(out []byte) error { return pktCheckNATNew(nfam, out, backends, wantSrc, ports) }
			cs[mode.nw] = c
		}
		n.cases = append(n.cases, cs)
	}
	// The translations now in the table are the established flows': kept
	// whenever new-flow runs empty it.
	if _, err := n.emptyNATTable(func(k []byte) bool { n.keep[string(k)] = true; return true }); err != nil {
		return err
	}
	return n.loadHarnesses(floor)
}

// loadHarnesses checks every row's frame once through xdplb, then loads
// the floor and xdplb behind the restore harness (new flows: restore, then
// the new-flow harness, then the program) and checks those too.
func (n *pktNAT) loadHarnesses(floor *ebpf.Program) error {
	prog := n.dp.Program()
	for fi, fam := range pktFamilies {
		for path, c := range n.cases[fi] {
			if c == nil {
				continue
			}
			name := fam.name + " " + pktPathNames[path]
			targets := []*ebpf.Program{floor, prog}
			if c.checkNew != nil {
				sportOff, saddrOff := fam.sportOff, fam.saddrOff
				for i, t := range targets {
					h, err := progs.LoadNewFlowHarness(t, sportOff, saddrOff)
					if err != nil {
						return err
					}
					n.closers = append(n.closers, h.Close)
					targets[i] = h.Program()
				}
			}
			var hs [2]*ebpf.Program
			for i, t := range targets {
				h, err := progs.LoadRestoreHarness(t, c.in)
				if err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
				n.closers = append(n.closers, h.Close)
				hs[i] = h.Program()
			}
			c.floorH, c.xdplbH = hs[0], hs[1]
			// Once plain (established and reply only: a plain new-flow SYN
			// would leave a flow the harness never makes), then three
			// repeats through each harness, as the timed runs will.
			if c.checkNew == nil {
				v, out, err := pktRunOnce(prog, c.in, int(c.ctx.IngressIfindex))
				if err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
				if err := c.checkXdplb(v, out); err != nil {
					return fmt.Errorf("%s, one run: %w", name, err)
				}
			}
			for _, r := range []struct {
				prog  *ebpf.Program
				check func(uint32, []byte) error
			}{{c.floorH, c.checkFloor(fam)}, {c.xdplbH, c.checkXdplb}} {
				v, _, out, err := pktTestRun(r.prog, bytes.Repeat([]byte{0xee}, len(c.in)), &c.ctx, 3)
				if err != nil {
					return fmt.Errorf("%s through the harness: %w", name, err)
				}
				if err := r.check(v, out); err != nil {
					return fmt.Errorf("%s through the harness: %w", name, err)
				}
			}
			if c.checkNew != nil {
				n.inserted += 3
			}
		}
	}
	return nil
}

// checkXdplb says whether one of xdplb's runs translated c's frame.
func (c *pktNATCase) checkXdplb(v uint32, out []byte) error {
	if c.checkNew != nil {
		if v != pktXDPRedirect {
			return fmt.Errorf("verdict %d, want %d (redirect to the other arm); output %x", v, pktXDPRedirect, out)
		}
		return c.checkNew(out)
	}
	if v != pktXDPRedirect || !bytes.Equal(out, c.want) {
		return fmt.Errorf("verdict %d, output\n %x\nwant verdict %d, output\n %x", v, out, pktXDPRedirect, c.want)
	}
	return nil
}

// checkFloor says whether a run of the floor behind c's harness swapped
// the MACs of c's frame (and nothing else but, for new flows, the tuple
// bytes the new-flow harness writes).
func (c *pktNATCase) checkFloor(fam pktFamily) func(uint32, []byte) error {
	want := pktMACSwap(c.in)
	return func(v uint32, out []byte) error {
		got := bytes.Clone(out)
		if c.checkNew != nil && len(got) == len(want) {
			copy(got[fam.sportOff:fam.sportOff+2], want[fam.sportOff:])
			copy(got[fam.saddrOff:fam.saddrOff+4], want[fam.saddrOff:])
		}
		if v != pktXDPTX || !bytes.Equal(got, want) {
			return fmt.Errorf("floor: verdict %d, output\n %x\nwant verdict %d, output\n %x", v, out, pktXDPTX, want)
		}
		return nil
	}
}

// pktCheckNATFrame checks the IPv4 header and TCP checksums of an
// Ethernet frame (one's complement sums over the header, and over the
// pseudo-header and segment, must come to 0xffff), so that an expected
// output is a frame a receiver would take.
func pktCheckNATFrame(frame []byte) error {
	p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	var pseudo []byte
	var seg []byte
	switch ip := p.NetworkLayer().(type) {
	case *layers.IPv4:
		if s := pktSum(ip.Contents); s != 0xffff {
			return fmt.Errorf("ipv4 header checksum: sum %#04x", s)
		}
		seg = ip.Payload
		pseudo = append(append(append([]byte(nil), ip.SrcIP.To4()...), ip.DstIP.To4()...), 0, byte(ip.Protocol),
			byte(len(seg)>>8), byte(len(seg)))
	case *layers.IPv6:
		seg = ip.Payload
		pseudo = append(append(append([]byte(nil), ip.SrcIP...), ip.DstIP...), 0, 0, byte(len(seg)>>8), byte(len(seg)),
			0, 0, 0, byte(ip.NextHeader))
	default:
		return fmt.Errorf("no IP layer in %x", frame)
	}
	if s := pktSum(append(pseudo, seg...)); s != 0xffff {
		return fmt.Errorf("tcp checksum: sum %#04x", s)
	}
	return nil
}

// pktSum is the folded one's complement sum of b's 16-bit words.
func pktSum(b []byte) uint16 {
	var sum uint32
	for i := 0; i < len(b); i += 2 {
		w := uint32(b[i]) << 8
		if i+1 < len(b) {
			w |= uint32(b[i+1])
		}
		sum += w
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}

// pktTCPFrame is what the checks read from a TCP frame.
type pktTCPFrame struct {
	srcMAC, dstMAC net.HardwareAddr
	src, dst       netip.Addr
	sport, dport   uint16
	ttl            uint8
	syn            bool
}

// pktDecodeTCP decodes an Ethernet frame with IPv4 or IPv6 and TCP.
func pktDecodeTCP(frame []byte) (pktTCPFrame, error) {
	var f pktTCPFrame
	p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	eth, _ := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if eth == nil || tcp == nil {
		return f, fmt.Errorf("not an ethernet frame with TCP: %x", frame)
	}
	switch ip := p.NetworkLayer().(type) {
	case *layers.IPv4:
		f.src, _ = netip.AddrFromSlice(ip.SrcIP.To4())
		f.dst, _ = netip.AddrFromSlice(ip.DstIP.To4())
		f.ttl = ip.TTL
	case *layers.IPv6:
		f.src, _ = netip.AddrFromSlice(ip.SrcIP)
		f.dst, _ = netip.AddrFromSlice(ip.DstIP)
		f.ttl = ip.HopLimit
	default:
		return f, fmt.Errorf("no IP layer in %x", frame)
	}
	f.srcMAC, f.dstMAC = eth.SrcMAC, eth.DstMAC
	f.sport, f.dport, f.syn = uint16(tcp.SrcPort), uint16(tcp.DstPort), tcp.SYN
	return f, nil
}

// pktCheckNATNew checks a new flow's translated SYN: the harness wrote its
// source, so the bytes cannot be known; what xdplb must have written is
// checked field by field: MACs, TTL, a backend's address and port, and
// for full NAT (wantSrc valid) the SNAT address and a port of its range.
func pktCheckNATNew(fam pktFamily, out []byte, backends []netip.Addr, wantSrc netip.Addr, ports loader.PortRange) error {
	f, err := pktDecodeTCP(out)
	if err != nil {
		return err
	}
	var errs []error
	if !bytes.Equal(f.srcMAC, pktSrvMAC) || !bytes.Equal(f.dstMAC, pktBackendMAC) {
		errs = append(errs, fmt.Errorf("MACs %s -> %s, want %s -> %s", f.srcMAC, f.dstMAC, pktSrvMAC, pktBackendMAC))
	}
	if !slices.Contains(backends, f.dst) || f.dport != pktBackendPort || !f.syn {
		errs = append(errs, fmt.Errorf("%s SYN to %s:%d, want to one of %v, port %d", fam.name, f.dst, f.dport, backends, pktBackendPort))
	}
	if f.ttl != 63 {
		errs = append(errs, fmt.Errorf("ttl %d, want 63", f.ttl))
	}
	if wantSrc.IsValid() && (f.src != wantSrc || f.sport < ports.Lo || f.sport > ports.Hi) {
		errs = append(errs, fmt.Errorf("source %s:%d, want %s with a port of %s", f.src, f.sport, wantSrc, ports))
	}
	if !wantSrc.IsValid() && f.src == fam.vip {
		errs = append(errs, fmt.Errorf("source %s is the VIP", f.src))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("new flow not translated: %w; frame %x", err, out)
	}
	return nil
}

// emptyNATTable deletes every translation in nat_flows and puts back those
// whose key keep accepts (with the value just read), so a new-flow run
// starts with the SNAT ports free and the established flows' translations
// in place. Keys and values are read as bytes: the bench need not know
// their layout. It returns how many it removed.
func (n *pktNAT) emptyNATTable(keep func(key []byte) bool) (int, error) {
	return pktEmptyMap(n.natFlows, keep)
}

// pktEmptyMap is emptyNATTable for any hash map m.
func pktEmptyMap(m *ebpf.Map, keep func(key []byte) bool) (int, error) {
	const chunk = 4096
	byteArrays := func(size uint32) reflect.Value {
		t := reflect.SliceOf(reflect.ArrayOf(int(size), reflect.TypeFor[byte]()))
		return reflect.MakeSlice(t, chunk, chunk)
	}
	keys, vals := byteArrays(m.KeySize()), byteArrays(m.ValueSize())
	var cursor ebpf.MapBatchCursor
	var putK, putV [][]byte
	removed := 0
	for {
		cnt, err := m.BatchLookupAndDelete(&cursor, keys.Interface(), vals.Interface(), nil)
		for i := range cnt {
			k := keys.Index(i).Bytes()
			if keep(k) {
				putK = append(putK, bytes.Clone(k))
				putV = append(putV, bytes.Clone(vals.Index(i).Bytes()))
			} else {
				removed++
			}
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if err != nil {
			return removed, fmt.Errorf("empty %s: %w", m, err)
		}
	}
	for i := range putK {
		if err := m.Put(putK[i], putV[i]); err != nil {
			return removed, fmt.Errorf("put back into %s: %w", m, err)
		}
	}
	return removed, nil
}

// fill fills the half-open table (where new flows go) before timing, so
// that every NAT new flow of the rounds takes a half-open flow's place (an
// early drop), as in the DR rows' "table full" state: IPv4 NAT new flows
// through their harness, in runs of 100,000 with the NAT table emptied
// after each (it must not fill: a plain hash drops what does not fit),
// until twice the table's size went in. The established flows, touched
// every round, stay in the connection table.
func (n *pktNAT) fill() error {
	c := n.cases[0][pktNATNew]
	size := int(n.dp.HalfOpenSize())
	const chunk = 100_000
	for n.filled < size*2 {
		v, _, out, err := pktTestRun(c.xdplbH, c.in, &c.ctx, chunk)
		if err != nil {
			return err
		}
		if err := c.checkXdplb(v, out); err != nil {
			return err
		}
		n.filled += chunk
		if err := n.beforeNewFlows(); err != nil {
			return err
		}
	}
	entries, err := n.dp.ConntrackEntries()
	if err != nil {
		return err
	}
	if entries < size*9/10 {
		return fmt.Errorf("%d entries after %d inserts into %d, want a full table", entries, n.filled, size)
	}
	return nil
}

// beforeNewFlows empties the NAT table but for the established flows'
// translations; untimed, before each new-flow run.
func (n *pktNAT) beforeNewFlows() error {
	removed, err := n.emptyNATTable(func(k []byte) bool { return n.keep[string(k)] })
	n.flushed += removed
	return err
}

// checkCounters makes sure every NAT packet was sent by the program: no
// drop, and none of the events that pass a packet to the kernel instead
// (no route, no neighbour, an egress without XDP, TTL, MTU). snat_exhausted
// is reported, not failed: a new flow whose 16 ports tried were all
// taken, which a full-NAT new-flow run can meet as it fills the range.
func (n *pktNAT) checkCounters() (snatExhausted uint64, err error) {
	drops, err := n.dp.DropCounters()
	if err != nil {
		return 0, err
	}
	var errs []error
	for reason, c := range drops {
		if reason == "snat_exhausted" {
			snatExhausted = c
			continue
		}
		if c != 0 {
			errs = append(errs, fmt.Errorf("xdplb (NAT) dropped %d packets (%s) during the run", c, reason))
		}
	}
	events, err := n.dp.EventCounters()
	if err != nil {
		return 0, err
	}
	for _, ev := range []string{"fib_failed", "fib_no_neigh", "egress_not_xdp", "ttl_exceeded", "frag_needed"} {
		if c := events[ev]; c != 0 {
			errs = append(errs, fmt.Errorf("xdplb (NAT) passed %d packets to the kernel (%s) during the run", c, ev))
		}
	}
	return snatExhausted, errors.Join(errs...)
}

func (n *pktNAT) close() error {
	var errs []error
	for i := len(n.closers) - 1; i >= 0; i-- {
		errs = append(errs, n.closers[i]())
	}
	n.closers = nil
	return errors.Join(errs...)
}

// measureNATRound times family fi's NAT rows once: per row the floor
// alone, the floor behind the row's harness and xdplb behind it, back to
// back on the same frame, in an order that reverses every round. Every
// timed run's last output is checked: xdplb's must be the translated
// frame (established and reply: byte for byte), so a run that passed the
// packet to the kernel, or dropped it, fails the section.
func (b *pktBench) measureNATRound(round, fi int) error {
	fam := pktFamilies[fi]
	for path := pktNATFirst; path < pktNumPaths; path++ {
		c := b.nat.cases[fi][path]
		repeat := b.p.repeat
		var before func() error
		if c.checkNew != nil {
			repeat, before = b.p.newRepeat, b.nat.beforeNewFlows
		}
		// The floor alone swaps the MACs on every repeat: an even count
		// swaps them back.
		swapped := pktMACSwap(c.in)
		runs := []pktRun{
			{prog: b.floor, in: c.in, ctx: &c.ctx, repeat: b.p.repeat, check: func(v uint32, out []byte) error {
				if v != pktXDPTX || !bytes.Equal(out, swapped) && !bytes.Equal(out, c.in) {
					return fmt.Errorf("floor: verdict %d, output %x", v, out)
				}
				return nil
			}},
			{prog: c.floorH, in: c.in, ctx: &c.ctx, repeat: repeat, check: c.checkFloor(fam)},
			{prog: c.xdplbH, in: c.in, ctx: &c.ctx, repeat: repeat, check: c.checkXdplb, before: before},
		}
		var ns [3]float64
		for i := range runs {
			if round%2 == 1 {
				i = len(runs) - 1 - i
			}
			runsBefore, disturbedBefore := b.runs, b.disturbed
			v, err := b.perPacketRun(runs[i])
			if err != nil {
				return fmt.Errorf("%s %s: %w", fam.name, pktPathNames[path], err)
			}
			if i == 2 && c.checkNew != nil {
				b.nat.inserted += (b.runs - runsBefore) * repeat
				b.nat.newRuns++
				b.nat.newDisturbed += b.disturbed - disturbedBefore
			}
			ns[i] = v
		}
		if path == pktFullNATNew {
			// The ports the last run took, before the next run frees them.
			// ExpireNAT walks the table now (NATStats may answer from
			// the last walk); nothing of a run this short has expired.
			st, err := b.nat.dp.ExpireNAT()
			if err != nil {
				return err
			}
			b.nat.portsMax = max(b.nat.portsMax, st.SNATPortsInUse)
		}
		b.series[fi][path].addHarnessed(ns[0], ns[1], ns[2])
	}
	return nil
}

// natNotes describe the NAT rows' state after the run; checked, and
// reported when not as planned.
func (b *pktBench) natNotes() ([]string, error) {
	n := b.nat
	entries, err := n.dp.ConntrackEntries()
	if err != nil {
		return nil, err
	}
	var notes []string
	exhausted := "no new flow was dropped for want of a port (snat_exhausted 0)"
	if b.snatExhausted > 0 {
		exhausted = fmt.Sprintf("**%d new flows were dropped as snat_exhausted** (16 consecutive ports tried were "+
			"taken), so a few timed packets took the drop path", b.snatExhausted)
	}
	notes = append(notes, fmt.Sprintf("NAT new flows: the NAT table (nat_flows, a plain hash: it must never evict "+
		"a live flow's translation) is emptied before every NAT new-flow run, untimed, except for the established "+
		"flows' translations (%d translations removed in all); without that a full-NAT run of %d new flows per "+
		"VIP would use up the SNAT range (%s, %d ports per backend, 4 backends) within a few runs. So each run starts with the "+
		"range free; by its end it held up to %d (port, backend) mappings, about %.0f%% of each backend's range, and %s. The half-open "+
		"table (where new flows go: %d flows for the default connection table) is not emptied: it was filled with %d new flows before timing, so every NAT "+
		"new flow takes a half-open flow's place (the state of the DR rows' table-full figure); the rounds added %d more, and both tables hold %d.",
		n.flushed, b.p.newRepeat, n.dp.SNATPorts(), n.dp.SNATPorts().Size(), n.portsMax,
		100*float64(n.portsMax)/float64(len(pktNATFamilies[0].backends)*n.dp.SNATPorts().Size()), exhausted,
		n.dp.HalfOpenSize(), n.filled, n.inserted, entries))
	if n.newDisturbed > 0 {
		notes = append(notes, fmt.Sprintf("NAT new flows: %d of the %d xdplb measurements failed the CPU-time check "+
			"after every retry (the thread's CPU time over the syscall above the kernel's own figure by more than the "+
			"slack), so the kernel's figure stands for them; the retries are why the rounds inserted more flows than "+
			"they measured. The cause was not pinned down; a likely one: the NAT table's entries are allocated and "+
			"freed as the program runs (BPF_F_NO_PREALLOC), work the kernel may do outside its timed loop.", n.newDisturbed, n.newRuns))
	}
	return notes, nil
}

// hold attaches each of ps natively to an end of a veth pair of the lab
// that stays down (so no frame ever reaches them) until the lab is
// closed. Why: a test run adds its program to the kernel's XDP dispatcher
// at start and removes it at the end, which costs a few hundred µs of CPU
// in the syscall (and two RCU grace periods of wall time); a program
// attached to a driver is in the dispatcher already. Measured here: a
// floor run of 5,000 repeats took 79 ns of thread CPU per packet against
// the kernel's 24 detached, 37 against 33 attached. Without it, runs of
// few repeats (the new-flow runs) fail the CPU-time check every time.
func (n *pktNAT) hold(ps []*ebpf.Program) error {
	return n.do(func() error {
		closers, err := pktHold(ps, "hold")
		n.closers = append(n.closers, closers...)
		return err
	})
}

// pktHold attaches each of ps to an end of a veth pair of its own (named
// from prefix, left down) in the calling thread's network namespace, and
// returns the functions that detach them (pktNAT.hold says why).
func pktHold(ps []*ebpf.Program, prefix string) ([]func() error, error) {
	var closers []func() error
	for i := 0; i < len(ps); i += 2 {
		a, b := fmt.Sprintf("%s%da", prefix, i/2), fmt.Sprintf("%s%db", prefix, i/2)
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: a}, PeerName: b}); err != nil {
			return closers, fmt.Errorf("add veth %s: %w", a, err)
		}
		for j, name := range []string{a, b} {
			if i+j >= len(ps) {
				break
			}
			ifc, err := net.InterfaceByName(name)
			if err != nil {
				return closers, err
			}
			l, err := link.AttachXDP(link.XDPOptions{Program: ps[i+j], Interface: ifc.Index, Flags: link.XDPDriverMode})
			if err != nil {
				return closers, fmt.Errorf("attach %v to %s: %w", ps[i+j], name, err)
			}
			closers = append(closers, l.Close)
		}
	}
	return closers, nil
}

// timedPrograms are the programs the NAT rows' runs start: the harnesses
// (the programs they tail-call run inside them).
func (n *pktNAT) timedPrograms() []*ebpf.Program {
	var ps []*ebpf.Program
	for _, cs := range n.cases {
		for _, c := range cs {
			if c != nil {
				ps = append(ps, c.floorH, c.xdplbH)
			}
		}
	}
	return ps
}
