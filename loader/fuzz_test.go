package loader

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/xdplb/xdplb/internal/testutil"
)

// The fuzz target runs random and mutated frames through the real XDP
// program and checks every verdict against frameClass, a reading of the
// frame written in Go from the policy in bpf/parse.h, not from the C:
//   - the program never aborts;
//   - a frame it passes reaches the kernel byte for byte;
//   - it forwards exactly the well-formed TCP/UDP packets to a VIP (address,
//     port, protocol), with only the MACs rewritten, to a backend of that
//     VIP: the same packet of the same flow;
//   - it drops only what the policy drops (fragments, IPv6 extension
//     headers, broken L4 headers) and only when they are addressed to a
//     VIP's address;
//   - an ICMP error the ICMP policy takes (parse.h) whose quoted packet is
//     a VIP's reply goes to that VIP's backend, only the MACs rewritten;
//     any other passes untouched.
//
// FuzzXDPNAT (fuzz_nat_test.go) does the same for NAT and full NAT.
// `go test` runs the seeds; `make fuzz` (and CI, for a bounded time) runs
// `go test -fuzz FuzzXDP$`.

// frameKind is what the policy makes of a frame.
type frameKind int

const (
	kindPass      frameKind = iota // not provably ours
	kindFlow                       // well-formed TCP/UDP: flow holds it
	kindFragment                   // dst is set
	kindIPv6Ext                    // dst is set
	kindMalformed                  // L4 header broken; dst is set
	kindICMPError                  // an ICMP error quoting TCP/UDP the ICMP policy takes
)

// frameClass is a frame as the policy reads it. For kindFlow, the
// 5-tuple and where the headers are; for kindICMPError the same of the
// quoted packet, as quoted, and the outer addresses.
type frameClass struct {
	kind         frameKind
	src, dst     netip.Addr
	sport, dport uint16
	proto        Protocol
	v6           bool
	l3, l4       int // IP header; TCP/UDP header, or the ICMP header
	end          int // end of the IP packet
	// kindICMPError only.
	osrc, odst netip.Addr // outer addresses
	q3, q4     int        // the quoted IP and L4 headers
}

// classifyFrame reads b as the policy table in bpf/parse.h describes.
func classifyFrame(b []byte) frameClass {
	if len(b) < 14 {
		return frameClass{}
	}
	etype := binary.BigEndian.Uint16(b[12:])
	l3 := 14
	if etype == 0x8100 || etype == 0x88a8 {
		if len(b) < 18 {
			return frameClass{}
		}
		etype = binary.BigEndian.Uint16(b[16:])
		l3 = 18
	}
	switch etype {
	case 0x0800:
		return classifyIPv4(b, l3)
	case 0x86dd:
		return classifyIPv6(b, l3)
	}
	return frameClass{}
}

func classifyIPv4(b []byte, l3 int) frameClass {
	ip := b[l3:]
	if len(ip) < 20 || ip[0]>>4 != 4 || ip[0]&0xf < 5 {
		return frameClass{}
	}
	hlen := int(ip[0]&0xf) * 4
	total := int(binary.BigEndian.Uint16(ip[2:]))
	if total < hlen || total > len(ip) {
		return frameClass{}
	}
	proto := ip[9]
	fragment := binary.BigEndian.Uint16(ip[6:])&0x3fff != 0 // MF or an offset
	if proto == 1 {
		if hlen != 20 || fragment {
			return frameClass{}
		}
		return classifyICMP(b, l3, false, l3+20, l3+total)
	}
	if proto != 6 && proto != 17 {
		return frameClass{}
	}
	dst := netip.AddrFrom4([4]byte(ip[16:20]))
	if fragment {
		return frameClass{kind: kindFragment, dst: dst}
	}
	c := classifyL4(proto, ip[hlen:total], dst)
	c.src, c.l3, c.l4, c.end = netip.AddrFrom4([4]byte(ip[12:16])), l3, l3+hlen, l3+total
	return c
}

func classifyIPv6(b []byte, l3 int) frameClass {
	ip := b[l3:]
	if len(ip) < 40 || ip[0]>>4 != 6 {
		return frameClass{}
	}
	plen := int(binary.BigEndian.Uint16(ip[4:]))
	if plen > len(ip)-40 {
		return frameClass{}
	}
	dst := netip.AddrFrom16([16]byte(ip[24:40]))
	switch nh := ip[6]; nh {
	case 44:
		return frameClass{kind: kindFragment, dst: dst}
	case 0, 43, 60, 51, 135, 139, 140:
		return frameClass{kind: kindIPv6Ext, dst: dst}
	case 58:
		return classifyICMP(b, l3, true, l3+40, l3+40+plen)
	case 6, 17:
		c := classifyL4(nh, ip[40:40+plen], dst)
		c.src, c.v6, c.l3, c.l4, c.end = netip.AddrFrom16([16]byte(ip[8:24])), true, l3, l3+40, l3+40+plen
		return c
	}
	return frameClass{}
}

// classifyICMP reads the ICMP message at b[l4:end] (outer IPv4 without
// options, or IPv6): an error (IPv4 destination unreachable or time
// exceeded; IPv6 destination unreachable, packet too big or time exceeded)
// whose quote, inside the IP packet, holds an IPv4 header without options
// and not a later fragment, or an IPv6 header without extension headers,
// of TCP or UDP, and at least 8 bytes after it.
func classifyICMP(b []byte, l3 int, v6 bool, l4, end int) frameClass {
	msg := b[l4:end]
	if len(msg) < 8 {
		return frameClass{}
	}
	q := msg[8:]
	c := frameClass{kind: kindICMPError, v6: v6, l3: l3, l4: l4, end: end, q3: l4 + 8}
	if v6 {
		if msg[0] < 1 || msg[0] > 3 || len(q) < 40+8 || q[0]>>4 != 6 || (q[6] != 6 && q[6] != 17) {
			return frameClass{}
		}
		c.osrc, c.odst = netip.AddrFrom16([16]byte(b[l3+8:])), netip.AddrFrom16([16]byte(b[l3+24:]))
		c.src, c.dst, c.proto, c.q4 = netip.AddrFrom16([16]byte(q[8:24])), netip.AddrFrom16([16]byte(q[24:40])), Protocol(q[6]), c.q3+40
	} else {
		if msg[0] != 3 && msg[0] != 11 || len(q) < 20+8 || q[0] != 0x45 || (q[9] != 6 && q[9] != 17) ||
			binary.BigEndian.Uint16(q[6:])&0x1fff != 0 {
			return frameClass{}
		}
		c.osrc, c.odst = netip.AddrFrom4([4]byte(b[l3+12:])), netip.AddrFrom4([4]byte(b[l3+16:]))
		c.src, c.dst, c.proto, c.q4 = netip.AddrFrom4([4]byte(q[12:16])), netip.AddrFrom4([4]byte(q[16:20])), Protocol(q[9]), c.q3+20
	}
	c.sport, c.dport = binary.BigEndian.Uint16(b[c.q4:]), binary.BigEndian.Uint16(b[c.q4+2:])
	return c
}

// classifyL4 reads l4, exactly the L4 bytes the IP header counts.
func classifyL4(proto uint8, l4 []byte, dst netip.Addr) frameClass {
	bad := frameClass{kind: kindMalformed, dst: dst}
	if proto == 6 {
		if len(l4) < 20 {
			return bad
		}
		doff := int(l4[12] >> 4)
		if doff < 5 || doff*4 > len(l4) {
			return bad
		}
		return frameClass{kind: kindFlow, dst: dst, sport: binary.BigEndian.Uint16(l4[0:]), dport: binary.BigEndian.Uint16(l4[2:]), proto: ProtoTCP}
	}
	if len(l4) < 8 {
		return bad
	}
	if ulen := int(binary.BigEndian.Uint16(l4[4:])); ulen < 8 || ulen > len(l4) {
		return bad
	}
	return frameClass{kind: kindFlow, dst: dst, sport: binary.BigEndian.Uint16(l4[0:]), dport: binary.BigEndian.Uint16(l4[2:]), proto: ProtoUDP}
}

// about is the 5-tuple of the flow an ICMP error is about: the quoted
// packet's, reversed (a reply quoted is about its flow's client; a
// packet to a backend quoted is about that backend's reply).
func (c frameClass) about() (src netip.Addr, sport uint16, dst netip.Addr, dport uint16) {
	return c.dst, c.dport, c.src, c.sport
}

// fuzzSeeds are well-formed and broken frames of every kind the policy
// names; the fuzzer mutates from them.
func fuzzSeeds(t testing.TB) [][]byte {
	var seeds [][]byte
	for _, fl := range []flow{
		{src: client4, dst: vipAddr4, dport: 80, syn: true},
		{src: client4, dst: vipAddr4, dport: 80, ack: true},
		{src: client4, dst: vipAddr4, dport: 80, fin: true, ack: true},
		{src: client4, dst: vipAddr4, dport: 53, proto: ProtoUDP},
		{src: client4, dst: vipAddr4, dport: 80, ack: true, ipv4Options: true},
		{src: client4, dst: vipAddr4, dport: 80, ack: true, vlan: vlan8021Q},
		{src: client4, dst: vipAddr4, dport: 81, ack: true},
		{src: client4, dst: other4, dport: 80, syn: true},
		{src: client6, dst: vipAddr6, dport: 80, syn: true},
		{src: client6, dst: vipAddr6, dport: 53, proto: ProtoUDP, vlan: vlan8021AD},
		{src: client6, dst: other6, dport: 80, ack: true},
	} {
		seeds = append(seeds, fl.build(t))
	}
	seeds = append(seeds,
		arpRequest(t, vipAddr4),
		neighborSolicitation(t, client6, vipAddr6),
		icmpEcho(t, client4, vipAddr4),
		// Fragmentation needed about VIP 1's reply (DR: to its backend), and
		// about a flow of no VIP.
		icmpError{src: cliRouter4, dst: vipAddr4, typ: 3, code: 4, mtu: 1400,
			quote: quoted(flow{src: vipAddr4, sport: 80, dst: client4, dport: 40000, ack: true}.build(t), -1)}.build(t),
		icmpError{src: cliRouter6, dst: vipAddr6, typ: 2, mtu: 1280,
			quote: quoted(flow{src: vipAddr6, sport: 53, dst: client6, dport: 40000, proto: ProtoUDP}.build(t), 8)}.build(t),
		icmpError{src: cliRouter4, dst: other4, typ: 11,
			quote: quoted(flow{src: other4, sport: 80, dst: client4, dport: 40000, ack: true}.build(t), 8)}.build(t),
		rawIPv4(client4, vipAddr4, 6, 0x2000, tcpHeader(40000, 80, 5, 20)), // first fragment
		rawIPv4(client4, vipAddr4, 6, 0, tcpHeader(40000, 80, 4, 20)),      // doff < 5
		rawIPv4(client4, vipAddr4, 17, 0, udpHeader(40000, 53, 4, 8)),      // UDP length < 8
		rawIPv6(client6, vipAddr6, 44, make([]byte, 8)),                    // fragment header
		rawIPv6(client6, vipAddr6, 0, make([]byte, 8)),                     // hop-by-hop
		rawIPv6(client6, vipAddr6, 6, tcpHeader(40000, 80, 15, 20)),        // doff beyond the L4
		rawEth(0x88cc),
	)
	return seeds
}

func FuzzXDP(f *testing.F) {
	testutil.RequireRoot(f)
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	// One data plane per fuzzing process, with the four VIPs of the packet
	// tests; the connection table fills as the fuzzer goes, which is part
	// of what it explores.
	opts := testOptions(testutil.MountBPFFS(f))
	d := load(f, opts)
	f.Cleanup(func() {
		if err := d.Remove(); err != nil {
			f.Errorf("remove: %v", err)
		}
	})
	setupVIPs(f, d)
	vips := map[VIPKey]uint32{vip4TCP: 1, vip4UDP: 2, vip6TCP: 3, vip6UDP: 4}
	vipAddr := func(a netip.Addr) bool { return a == vipAddr4 || a == vipAddr6 }

	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 14 || len(in) > 1514 {
			t.Skip("not an Ethernet frame BPF_PROG_RUN takes")
		}
		r, err := run(t, d.Program(), in)
		if err != nil {
			t.Fatalf("run: %v", err)
		}
		c := classifyFrame(in)
		if c.kind == kindICMPError {
			// An error about a DR VIP's reply goes to its backend as it
			// came but the MACs; any other passes untouched.
			_, _, vip, vport := c.about()
			id, ok := vips[VIPKey{Addr: vip, Port: vport, Proto: c.proto}]
			// An error not sent to the source of the packet it quotes is
			// no flow's of ours.
			ok = ok && c.odst == c.src
			switch {
			case r.verdict == xdpAborted:
				t.Fatalf("XDP_ABORTED for %x", in)
			case ok && (r.verdict != xdpTX || !bytes.Equal(r.out, rewritten(in, id))):
				t.Fatalf("icmp error about vip %d's flow: verdict %d\n in %x\nout %x, want tx to its backend", id, r.verdict, in, r.out)
			case !ok && (r.verdict != xdpPass || !bytes.Equal(r.out, in)):
				t.Fatalf("icmp error about no vip's flow: verdict %d\n in %x\nout %x, want pass untouched", r.verdict, in, r.out)
			}
			return
		}
		switch r.verdict {
		case xdpAborted:
			t.Fatalf("XDP_ABORTED for %x", in)
		case xdpPass:
			if c.kind == kindFlow && vipsHave(vips, c) {
				t.Fatalf("passed a packet of VIP %s:%d: %x", c.dst, c.dport, in)
			}
			if c.kind != kindFlow && c.kind != kindPass && vipAddr(c.dst) {
				t.Fatalf("passed a frame the policy drops (kind %d) for VIP address %s: %x", c.kind, c.dst, in)
			}
			if !bytes.Equal(r.out[:len(in)], in) {
				t.Fatalf("passed frame changed:\n in %x\nout %x", in, r.out[:len(in)])
			}
		case xdpDrop:
			if c.kind == kindFlow || c.kind == kindPass || !vipAddr(c.dst) {
				t.Fatalf("dropped a frame the policy does not drop (kind %d, dst %s): %x", c.kind, c.dst, in)
			}
		case xdpTX, xdpRedirect:
			if c.kind != kindFlow || !vipsHave(vips, c) {
				t.Fatalf("forwarded a frame that is no VIP packet (kind %d, %s:%d/%d): %x", c.kind, c.dst, c.dport, c.proto, in)
			}
			id := vips[VIPKey{Addr: c.dst, Port: c.dport, Proto: c.proto}]
			if want := rewritten(in, id); !bytes.Equal(r.out[:len(in)], want) {
				t.Fatalf("forwarded frame is not the same packet to backend %d:\n in %x\nout %x\nwant %x", id, in, r.out[:len(in)], want)
			}
		default:
			t.Fatalf("verdict %d for %x", r.verdict, in)
		}
	})
}

func vipsHave(vips map[VIPKey]uint32, c frameClass) bool {
	_, ok := vips[VIPKey{Addr: c.dst, Port: c.dport, Proto: c.proto}]
	return ok
}
