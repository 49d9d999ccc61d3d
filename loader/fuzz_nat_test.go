package loader

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
)

// FuzzXDPNAT runs random and mutated frames through the real program in a
// NAT lab (natLab: the FIB decides where translated packets go) with a DR,
// a NAT and a full-NAT VIP of each family and protocol (natVIPs), arriving
// on either interface. The oracle reads each frame by the policy
// (classifyFrame) and the maps as they were before it ran:
//   - the program never aborts, and never drops but what the policy drops
//     or a NAT flow it cannot hold (snat_exhausted, nat_table_full), each
//     drop counted;
//   - a frame that is neither a VIP's packet, nor a reply or an ICMP error
//     about a translation nat_flows holds, nor an ICMP error about a VIP's
//     flow, passes byte for byte;
//   - a translated frame (forwarded, or passed for the kernel to send)
//     differs from the input only in the fields a translation writes (MACs
//     and TTL only when forwarded, the TTL one less), and those hold what
//     the VIP, the backend and the translation say; a full-NAT flow leaves
//     from a port of the range that its connection-table entry and its
//     nat_flows translation name;
//   - a forwarded frame leaves with the MACs of the FIB's next hop, by
//     XDP_TX exactly when that is the interface it came in on;
//   - when every checksum of the input was right, every checksum of the
//     output is (IPv4 header, TCP/UDP with the pseudo-header, ICMP, ICMPv6,
//     the quoted IPv4 header and L4), and a zero IPv4 UDP checksum stays
//     zero: a wrong one in is forwarded wrong, updated incrementally;
//   - a NAT packet larger than the backends' MTU (1400 here) is answered
//     with the error a router sends, exactly, or passed translated for the
//     kernel to fragment (IPv4 without DF).
//
// `go test` runs the seeds; `go test -fuzz FuzzXDPNAT` fuzzes.
func FuzzXDPNAT(f *testing.F) {
	opts := testOptions("")
	opts.SNATPorts = PortRange{Lo: 20000, Hi: 29999}
	lab := newNATLab(f, opts)
	vips := natVIPs()
	lab.putNATVIPs(f, vips)
	lab.setMTU(f, lab.srv, natFuzzMTU)
	for _, s := range natFuzzSeeds(f, lab, vips) {
		f.Add(s.frame, s.fromSrv)
	}
	o := newNATOracle(f, lab, vips)
	f.Fuzz(func(t *testing.T, in []byte, fromSrv bool) {
		if len(in) < 14 || len(in) > 1514 {
			t.Skip("not an Ethernet frame BPF_PROG_RUN takes")
		}
		o.check(t, in, fromSrv)
	})
}

// natFuzzMTU is the MTU of the backends' interface in FuzzXDPNAT, below
// the largest frame the fuzzer sends, so the MTU paths are explored.
const natFuzzMTU = 1400

type natSeed struct {
	frame   []byte
	fromSrv bool
}

// natFuzzSeeds are frames of every NAT path: each VIP's first, established
// and closing packets, replies and ICMP errors of flows it opens here
// (so that they find their translations), and the DR fuzz seeds.
func natFuzzSeeds(f *testing.F, lab *natLab, vips []natVIP) []natSeed {
	var seeds []natSeed
	add := func(fromSrv bool, frames ...[]byte) {
		for _, b := range frames {
			seeds = append(seeds, natSeed{b, fromSrv})
		}
	}
	for _, b := range fuzzSeeds(f) {
		add(false, b)
	}
	big := make([]byte, natFuzzMTU)
	for i, v := range vips {
		c := natConn{v: v, client: pick46(v.key.Addr.Is6(), client4, client6), cport: uint16(33000 + i), quotePayload: []byte("quoted")}
		first := c.fromClient(true)
		r := lab.run(f, first.build(f), lab.cli)
		if r.verdict != xdpRedirect {
			f.Fatalf("%s: seed flow verdict %d", v, r.verdict)
		}
		c.source, c.sport = c.client, c.cport
		if v.mode == ModeFullNAT {
			c.source, _ = ipAddrs(r.out)
			c.sport, _ = l4Ports(r.out)
		}
		est, fin, vlan, opts, ttl1, large := c.fromClient(false), c.fromClient(false), first, first, first, c.fromClient(false)
		est.ack, fin.ack, fin.fin = c.tcp(), c.tcp(), c.tcp()
		vlan.vlan, opts.ipv4Options, ttl1.ttl, large.payload = vlan8021Q, true, 1, big // IP length > natFuzzMTU
		add(false, first.build(f), est.build(f), fin.build(f), vlan.build(f), ttl1.build(f), large.build(f))
		if v.key.Addr.Is4() {
			add(false, opts.build(f))
			nodf := large
			nodf.noDF = true
			add(false, nodf.build(f))
			if v.key.Proto == ProtoUDP {
				zero := est
				zero.noUDPChecksum = true
				add(false, zero.build(f))
			}
		}
		add(true, est.build(f)) // a client behind the backends' interface
		router := pick46(v.key.Addr.Is6(), cliRouter4, cliRouter6)
		tooBig := icmpError{src: router, dst: v.key.Addr, typ: pick46[uint8](v.key.Addr.Is6(), 3, 2), code: pick46[uint8](v.key.Addr.Is6(), 4, 0),
			mtu: 1280, quote: quoted(c.toClient().build(f), -1)}
		add(false, tooBig.build(f))
		if v.mode == ModeDR {
			continue
		}
		reply := c.fromBackend()
		reply.srcMAC, reply.dstMAC = lab.srvPeerMAC, lab.srv.HardwareAddr
		reply.syn, reply.ack = c.tcp(), c.tcp()
		short := tooBig
		short.quote = quoted(c.toClient().build(f), 8)
		unreach := icmpError{src: v.backend, dst: c.source, typ: pick46[uint8](v.key.Addr.Is6(), 3, 1), code: pick46[uint8](v.key.Addr.Is6(), 3, 4),
			quote: quoted(c.toBackend().build(f), -1), srcMAC: lab.srvPeerMAC, dstMAC: lab.srv.HardwareAddr}
		exceeded := unreach
		exceeded.src, exceeded.typ, exceeded.code = pick46(v.key.Addr.Is6(), srvRouter4, srvRouter6), pick46[uint8](v.key.Addr.Is6(), 11, 3), 0
		exceeded.quote = quoted(c.toBackend().build(f), 8)
		unknown := reply
		unknown.dport++
		add(false, short.build(f))
		add(true, reply.build(f), unreach.build(f), exceeded.build(f), unknown.build(f))
	}
	return seeds
}

// natOracle checks FuzzXDPNAT's verdicts; it remembers the drop counters
// to tell which reason each drop was counted as.
type natOracle struct {
	lab   *natLab
	vips  map[VIPKey]natVIP
	ports PortRange
	drops map[string]uint64
}

func newNATOracle(t testing.TB, lab *natLab, vips []natVIP) *natOracle {
	o := &natOracle{lab: lab, vips: map[VIPKey]natVIP{}, ports: lab.d.SNATPorts()}
	for _, v := range vips {
		o.vips[v.key] = v
	}
	var err error
	o.drops, err = lab.d.DropCounters()
	must(t, err)
	return o
}

// natExpect is what the oracle allows for a frame, read before it runs.
type natExpect struct {
	what string
	vip  natVIP // the VIP whose packet, reply or error it is; zero: none
	dr   bool   // a DR VIP's: forwarded to its backend, only the MACs rewritten
	// The fields a translation writes: a flow's addresses and ports, or an
	// error's outer addresses and quoted addresses and ports.
	src, dst       netip.Addr
	sport, dport   uint16
	qsrc, qdst     netip.Addr
	qsport, qdport uint16
	fullNew        bool         // a full-NAT flow's packet: the source port is the data plane's choice
	ct             xdplbFlowKey // ... and this connection-table entry must name it
	client         netip.AddrPort
	toBackends     bool     // sent out of "srv", whose MTU is natFuzzMTU
	drops          []string // drop reasons it may be counted as
}

// routerAnswer says whether a NAT packet (not an ICMP error) is one a
// router answers instead of forwarding: out of TTL, or larger than the
// backends' MTU (DF set, or IPv6). answer is the error, or nil when the
// packet cannot be quoted (IPv4 options) and passes for the kernel to
// answer. A NAT packet without DF that is too big is not one: it is
// passed translated, for the kernel to fragment.
func (e natExpect) routerAnswer(c frameClass, in []byte) (answer []byte, ok bool) {
	if !e.translates() || c.kind != kindFlow {
		return nil, false
	}
	ttl, df := in[c.l3+8], binary.BigEndian.Uint16(in[c.l3+6:])&0x4000 != 0
	if c.v6 {
		ttl, df = in[c.l3+7], true
	}
	quotable := c.v6 || in[c.l3] == 0x45
	switch {
	case !icmpErrorAllowed(c.src):
		return nil, false // no error to such a source: passed, or forwarded
	case ttl <= 1:
		if !quotable {
			return nil, true
		}
		return routerError(in, c, pick46[uint8](c.v6, 11, 3), 0, 0), true
	case e.toBackends && c.end-c.l3 > natFuzzMTU && df && e.src.IsGlobalUnicast():
		// (The FIB, which finds the MTU, refuses other sources first.)
		if !quotable {
			return nil, true
		}
		return routerError(in, c, pick46[uint8](c.v6, 3, 2), pick46[uint8](c.v6, 4, 0), natFuzzMTU), true
	}
	return nil, false
}

// icmpErrorAllowed is bpf/router.h's: a router sends no ICMP error to an
// address that is no single host's.
func icmpErrorAllowed(a netip.Addr) bool {
	a = a.Unmap()
	if a.Is4() {
		b := a.As4()
		return b[0] != 0 && b[0] != 127 && b[0] < 224 && !(b[0] == 169 && b[1] == 254)
	}
	return !a.IsUnspecified() && !a.IsLoopback() && !a.IsMulticast() && !a.IsLinkLocalUnicast()
}

// mustForward: a NAT packet toward a backend (which has a neighbour
// entry) from a unicast address (the FIB refuses others), with TTL to
// spare, not larger than the MTU, is forwarded (or dropped, counted, when
// its flow cannot be held).
func (e natExpect) mustForward(c frameClass, in []byte) bool {
	if !e.translates() || !e.toBackends || !e.src.IsGlobalUnicast() {
		return false
	}
	ttl := in[c.l3+8]
	if c.v6 {
		ttl = in[c.l3+7]
	}
	return ttl > 1 && c.end-c.l3 <= natFuzzMTU
}

func (e natExpect) translates() bool { return e.vip.id != 0 && !e.dr }

// expect reads the maps for what c is.
func (o *natOracle) expect(t *testing.T, c frameClass) natExpect {
	lab := o.lab
	switch c.kind {
	case kindFragment, kindIPv6Ext, kindMalformed:
		if c.dst == vipAddr4 || c.dst == vipAddr6 {
			return natExpect{what: "policy drop", drops: []string{map[frameKind]string{
				kindFragment: "fragment", kindIPv6Ext: "ipv6_ext", kindMalformed: "malformed_l4"}[c.kind]}}
		}
		return natExpect{what: "not ours"}
	case kindFlow:
		if v, ok := o.vips[VIPKey{Addr: c.dst, Port: c.dport, Proto: c.proto}]; ok {
			e := natExpect{what: "packet of " + v.String(), vip: v, dr: v.mode == ModeDR,
				src: c.src, sport: c.sport, dst: v.backend, dport: v.bport(), toBackends: true, drops: []string{"nat_table_full"}}
			if v.mode == ModeFullNAT {
				e.src, e.fullNew, e.drops = v.snat, true, []string{"snat_exhausted", "nat_table_full"}
				e.ct, e.client = flowKey(c.src, c.sport, c.dst, c.dport, c.proto), netip.AddrPortFrom(c.src, c.sport)
			}
			return e
		}
		ns, ok := lab.natFlow(t, flowKey(c.src, c.sport, c.dst, c.dport, c.proto))
		if !ok {
			return natExpect{what: "not ours"}
		}
		e := natExpect{what: "reply", vip: o.byID(ns.VipId), src: addrFrom16(ns.Vip), sport: fromNetPort(ns.VipPort), dst: c.dst, dport: c.dport}
		if ns.Flags&uint32(xdplbNatFlagsNAT_F_FULL) != 0 {
			e.dst, e.dport = addrFrom16(ns.Client), fromNetPort(ns.ClientPort)
		}
		return e
	case kindICMPError:
		if c.odst != c.src {
			return natExpect{what: "icmp error not sent to the source it quotes"}
		}
		src, sport, dst, dport := c.about()
		fk := flowKey(src, sport, dst, dport, c.proto)
		if v, ok := o.vips[VIPKey{Addr: dst, Port: dport, Proto: c.proto}]; ok {
			e := natExpect{what: "icmp error to " + v.String(), vip: v, dr: v.mode == ModeDR, toBackends: true,
				src: c.osrc, dst: v.backend, qsrc: v.backend, qsport: v.bport(), qdst: c.dst, qdport: c.dport}
			if v.mode == ModeFullNAT {
				ct, ok := lab.conntrack(t, fk)
				if !ok || ct.BackendId != v.id {
					return natExpect{what: "icmp error about a full nat flow not held"}
				}
				e.src, e.qdst, e.qdport = v.snat, v.snat, snatPortOf(ct)
			}
			return e
		}
		ns, ok := lab.natFlow(t, fk)
		if !ok {
			return natExpect{what: "icmp error about nothing of ours"}
		}
		e := natExpect{what: "icmp error to a client", vip: o.byID(ns.VipId), src: c.osrc, dst: c.odst,
			qsrc: c.src, qsport: c.sport, qdst: addrFrom16(ns.Vip), qdport: fromNetPort(ns.VipPort)}
		if c.osrc == src {
			e.src = addrFrom16(ns.Vip)
		}
		if ns.Flags&uint32(xdplbNatFlagsNAT_F_FULL) != 0 {
			e.dst, e.qsrc, e.qsport = addrFrom16(ns.Client), addrFrom16(ns.Client), fromNetPort(ns.ClientPort)
		}
		return e
	}
	return natExpect{what: "not ours"}
}

func (o *natOracle) byID(id uint32) natVIP {
	for _, v := range o.vips {
		if v.id == id {
			return v
		}
	}
	return natVIP{id: id}
}

func (o *natOracle) check(t *testing.T, in []byte, fromSrv bool) {
	lab := o.lab
	ingress := lab.cli
	if fromSrv {
		ingress = lab.srv
	}
	c := classifyFrame(in)
	e := o.expect(t, c)
	inErr := checksumErr(in)
	r := lab.run(t, in, ingress)
	out := r.out
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("%s (%s, on %s): %s\n in %x\nout %x", e.what, kindName(c.kind), ingress.Name, fmt.Sprintf(format, args...), in, out)
	}
	if answer, ok := e.routerAnswer(c, in); ok {
		// The packet itself is not sent: the error a router sends is,
		// or (no IPv4 header it can quote) the kernel gets the packet.
		switch {
		case r.verdict == xdpDrop:
			break // its flow could not be held: checked below
		case answer == nil && (r.verdict != xdpPass || !bytes.Equal(out, in)):
			fail("verdict %d, want pass untouched for the kernel to answer", r.verdict)
		case answer != nil && (r.verdict != xdpTX || !bytes.Equal(out, answer)):
			fail("verdict %d, want tx of the router's answer\nwant %x", r.verdict, answer)
		case answer != nil:
			if err := checksumErr(out); err != nil && inErr == nil {
				fail("the answer: %v", err)
			}
			return
		default:
			return
		}
	}
	switch r.verdict {
	case xdpAborted:
		fail("XDP_ABORTED")
	case xdpDrop:
		reason := o.dropped(t)
		for _, ok := range e.drops {
			if reason == ok {
				return
			}
		}
		fail("dropped as %q, allowed %v", reason, e.drops)
	case xdpPass:
		if e.dr || e.mustForward(c, in) {
			fail("passed")
		}
		if bytes.Equal(out, in) {
			return
		}
		if !e.translates() {
			fail("passed changed")
		}
		o.checkTranslated(t, fail, c, e, in, out, false, inErr)
	case xdpTX, xdpRedirect:
		if e.vip.id == 0 {
			fail("forwarded")
		}
		if e.dr {
			want := rewrittenMACs(in, lab.srvPeerMAC, lab.srv.HardwareAddr)
			if !bytes.Equal(out, want) || (r.verdict == xdpTX) != (ingress == lab.srv) {
				fail("verdict %d; want %x by %s", r.verdict, want, map[bool]string{true: "tx", false: "redirect"}[ingress == lab.srv])
			}
			return
		}
		o.checkTranslated(t, fail, c, e, in, out, true, inErr)
		dstAddr := e.dst
		ifc, peer, ok := lab.route(dstAddr)
		if !ok || ifc == lab.oth {
			fail("forwarded to %s, which has no neighbour on an XDP interface", dstAddr)
		}
		if !bytes.Equal(out[0:6], peer) || !bytes.Equal(out[6:12], ifc.HardwareAddr) {
			fail("MACs %x -> %x, want %s's %s -> %s", out[6:12], out[0:6], ifc.Name, ifc.HardwareAddr, peer)
		}
		if (r.verdict == xdpTX) != (ifc.Index == ingress.Index) {
			fail("verdict %d for egress %s", r.verdict, ifc.Name)
		}
	default:
		fail("verdict %d", r.verdict)
	}
}

// checkTranslated holds a translated frame to e: nothing changed but the
// fields a translation writes, and those as e says.
func (o *natOracle) checkTranslated(t *testing.T, fail func(string, ...any), c frameClass, e natExpect, in, out []byte, forwarded bool, inErr error) {
	t.Helper()
	if len(out) != len(in) {
		fail("length changed")
	}
	norm := append([]byte(nil), out...)
	restore := func(from, to int) {
		if to > len(in) {
			to = len(in)
		}
		copy(norm[from:to], in[from:to])
	}
	ttl := c.l3 + 8
	if c.v6 {
		ttl = c.l3 + 7
	}
	if forwarded {
		restore(0, 12)
		if out[ttl] != in[ttl]-1 {
			fail("TTL %d -> %d, want one less", in[ttl], out[ttl])
		}
		restore(ttl, ttl+1)
	}
	// The IP header's checksum and addresses; the L4 ports and checksum.
	ipFields := func(l3 int) {
		if c.v6 {
			restore(l3+8, l3+40)
		} else {
			restore(l3+10, l3+20)
		}
	}
	l4Check := func(l4 int, end int) {
		switch {
		case c.proto == ProtoUDP:
			restore(l4+6, l4+8)
		case l4+18 <= end:
			restore(l4+16, l4+18)
		}
	}
	ipFields(c.l3)
	if c.kind == kindICMPError {
		restore(c.l4+2, c.l4+4)
		ipFields(c.q3)
		restore(c.q4, c.q4+4)
		l4Check(c.q4, c.end)
	} else {
		restore(c.l4, c.l4+4)
		l4Check(c.l4, c.end)
	}
	if !bytes.Equal(norm, in) {
		for i := range norm {
			if norm[i] != in[i] {
				fail("byte %d changed, outside the fields a translation writes", i)
			}
		}
	}

	got := classifyFrame(out)
	if got.kind != c.kind {
		fail("output reads as kind %s", kindName(got.kind))
	}
	if c.kind == kindICMPError {
		if got.osrc != e.src || got.odst != e.dst || got.src != e.qsrc || got.sport != e.qsport || got.dst != e.qdst || got.dport != e.qdport {
			fail("error %s -> %s quoting %s -> %s, want %s -> %s quoting %s -> %s", got.osrc, got.odst,
				netip.AddrPortFrom(got.src, got.sport), netip.AddrPortFrom(got.dst, got.dport), e.src, e.dst,
				netip.AddrPortFrom(e.qsrc, e.qsport), netip.AddrPortFrom(e.qdst, e.qdport))
		}
	} else {
		sport := e.sport
		if e.fullNew {
			sport = got.sport
			if sport < o.ports.Lo || sport > o.ports.Hi {
				fail("snat port %d outside %s", sport, o.ports)
			}
			ct, ok := o.lab.conntrack(t, e.ct)
			if !ok || snatPortOf(ct) != sport {
				fail("sent from snat port %d, its connection-table entry %+v (found %v)", sport, ct, ok)
			}
			ns, ok := o.lab.natFlow(t, flowKey(e.vip.backend, e.vip.bport(), e.vip.snat, sport, c.proto))
			if !ok || netip.AddrPortFrom(addrFrom16(ns.Client), fromNetPort(ns.ClientPort)) != e.client {
				fail("snat port %d translates to %+v (found %v), not to its client %s", sport, ns, ok, e.client)
			}
		}
		if got.src != e.src || got.sport != sport || got.dst != e.dst || got.dport != e.dport {
			fail("sent %s -> %s, want %s -> %s", netip.AddrPortFrom(got.src, got.sport), netip.AddrPortFrom(got.dst, got.dport),
				netip.AddrPortFrom(e.src, sport), netip.AddrPortFrom(e.dst, e.dport))
		}
	}

	if inErr == nil {
		if err := checksumErr(out); err != nil {
			fail("every checksum in was right, out: %v", err)
		}
	}
	// No UDP checksum (IPv4) stays none.
	udp := c.l4
	if c.kind == kindICMPError {
		udp = c.q4
	}
	if c.proto == ProtoUDP && !c.v6 && in[udp+6] == 0 && in[udp+7] == 0 && (out[udp+6] != 0 || out[udp+7] != 0) {
		fail("a zero IPv4 UDP checksum became %02x%02x", out[udp+6], out[udp+7])
	}
}

// dropped is the one drop reason counted since the last drop.
func (o *natOracle) dropped(t *testing.T) string {
	now, err := o.lab.d.DropCounters()
	must(t, err)
	var rose []string
	one := ""
	for reason, n := range now {
		if d := n - o.drops[reason]; d != 0 {
			rose = append(rose, fmt.Sprintf("%s+%d", reason, d))
			if d == 1 {
				one = reason
			}
		}
	}
	o.drops = now
	if len(rose) != 1 || one == "" {
		return fmt.Sprintf("not counted once: %v", rose)
	}
	return one
}

func kindName(k frameKind) string {
	return [...]string{"pass", "flow", "fragment", "ipv6 ext", "malformed", "icmp error"}[k]
}

// routerError is the ICMP or ICMPv6 error (type, code, and the 32 bits
// after the checksum: rest) a router sends back for in (classified c),
// from the address in was sent to, quoting its IP header and 8 bytes,
// with the MACs swapped and a VLAN tag kept. Written from RFC 792/4443,
// not from the program.
func routerError(in []byte, c frameClass, typ, code uint8, rest uint32) []byte {
	out := append([]byte(nil), in[:c.l3]...)
	copy(out[0:6], in[6:12])
	copy(out[6:12], in[0:6])
	icmp := binary.BigEndian.AppendUint32([]byte{typ, code, 0, 0}, rest)
	if c.v6 {
		icmp = append(icmp, in[c.l3:c.l3+48]...)
		ip := make([]byte, 40)
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(len(icmp)))
		ip[6], ip[7] = 58, 64
		copy(ip[8:], in[c.l3+24:c.l3+40])
		copy(ip[24:], in[c.l3+8:c.l3+24])
		binary.BigEndian.PutUint16(icmp[2:], ^foldSum(onesSum(pseudoSum(ip[8:24], ip[24:40], 58, len(icmp)), icmp)))
		return append(append(out, ip...), icmp...)
	}
	icmp = append(icmp, in[c.l3:c.l3+28]...)
	ip := []byte{0x45, 0xc0, 0, byte(20 + len(icmp)), 0, 0, 0, 0, 64, 1, 0, 0}
	ip = append(append(ip, in[c.l3+16:c.l3+20]...), in[c.l3+12:c.l3+16]...)
	binary.BigEndian.PutUint16(ip[10:], ^foldSum(onesSum(0, ip)))
	binary.BigEndian.PutUint16(icmp[2:], ^foldSum(onesSum(0, icmp)))
	return append(append(out, ip...), icmp...)
}
