package loader

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// natConn is a flow of a lab VIP whose first packet went through: the
// client's side and the backend's side of it.
type natConn struct {
	v            natVIP
	client       netip.Addr
	cport        uint16
	source       netip.Addr // the flow's source as the backend sees it
	sport        uint16
	quotePayload []byte
}

// connect sends the first packet of a flow from client:cport to v.
func (lab *natLab) connect(t *testing.T, v natVIP, cport uint16) natConn {
	t.Helper()
	c := natConn{v: v, client: client4, cport: cport, quotePayload: []byte("quoted payload")}
	if v.key.Addr.Is6() {
		c.client = client6
	}
	r := lab.run(t, c.fromClient(true).build(t), lab.cli)
	if r.verdict != xdpRedirect {
		t.Fatalf("%s: first packet verdict %d, want redirect", v, r.verdict)
	}
	c.source, c.sport = c.client, cport
	if v.mode == ModeFullNAT {
		c.source, _ = ipAddrs(r.out)
		c.sport, _ = l4Ports(r.out)
	}
	return c
}

func (c natConn) tcp() bool { return c.v.key.Proto == ProtoTCP }

func (c natConn) fromClient(first bool) flow {
	return flow{src: c.client, sport: c.cport, dst: c.v.key.Addr, dport: c.v.key.Port, proto: c.v.key.Proto, syn: first && c.tcp()}
}

// toBackend is the flow's first packet as the backend got it.
func (c natConn) toBackend() flow {
	return flow{src: c.source, sport: c.sport, dst: c.v.backend, dport: c.v.bport(), proto: c.v.key.Proto, syn: c.tcp(), ttl: 63}
}

// toClient is a reply as the client got it, and fromBackend as the
// backend sent it (DR: the same packet).
func (c natConn) toClient() flow {
	return flow{src: c.v.key.Addr, sport: c.v.key.Port, dst: c.client, dport: c.cport, proto: c.v.key.Proto,
		ack: c.tcp(), ttl: 61, payload: c.quotePayload}
}

func (c natConn) fromBackend() flow {
	f := c.toClient()
	if c.v.mode != ModeDR {
		f.src, f.sport, f.dst, f.dport = c.v.backend, c.v.bport(), c.source, c.sport
	}
	return f
}

var (
	cliRouter4 = netip.MustParseAddr("10.0.0.254") // routers on the way, each side
	cliRouter6 = netip.MustParseAddr("2001:db8::fe")
	srvRouter4 = netip.MustParseAddr("10.0.1.254")
	srvRouter6 = netip.MustParseAddr("2001:db8:1::fe")
)

func pick46[T any](v6 bool, a, b T) T {
	if v6 {
		return b
	}
	return a
}

// quoteLen is how much of the quoted packet's L4 an error carries: all of
// it (-1) or the 8 bytes RFC 792 asks for (a TCP checksum not among them).
type quoteLen int

func (q quoteLen) String() string {
	if q < 0 {
		return "whole quote"
	}
	return fmt.Sprintf("%d-byte quote", int(q))
}

func (lab *natLab) icmpCounts(t testing.TB, id uint32) uint64 {
	t.Helper()
	vc, err := lab.d.VIPCounters()
	must(t, err)
	return vc[id].ICMPErrors
}

// An error sent to a VIP about a packet from it (the path MTU discovery of
// a reply: fragmentation needed, packet too big) goes to the backend that
// owns the quoted flow: for DR as it came but the MACs; for NAT translated
// as the flow's packets are (outer destination and quoted source the
// backend; full NAT also outer source and quoted destination the SNAT
// address and port), every checksum kept right, the outer TTL decremented.
func TestICMPToBackend(t *testing.T) {
	lab := newNATLab(t, testOptions(""))
	vips := natVIPs()
	lab.putNATVIPs(t, vips)
	cport := uint16(45000)
	for _, mode := range []ForwardMode{ModeDR, ModeNAT, ModeFullNAT} {
		for _, v6 := range []bool{false, true} {
			for _, q := range []struct {
				proto Protocol
				n     quoteLen
			}{{ProtoTCP, -1}, {ProtoTCP, 8}, {ProtoUDP, -1}, {ProtoUDP, 8}} {
				v := findVIP(vips, mode, v6, q.proto)
				t.Run(fmt.Sprintf("%s %s", v, q.n), func(t *testing.T) {
					cport++
					c := lab.connect(t, v, cport)
					router := pick46(v6, cliRouter4, cliRouter6)
					e := icmpError{src: router, dst: v.key.Addr, typ: pick46[uint8](v6, 3, 2), code: pick46[uint8](v6, 4, 0),
						mtu: pick46[uint16](v6, 1400, 1280), quote: quoted(c.toClient().build(t), int(q.n))}
					in := e.build(t)
					want := rewrittenMACs(in, lab.srvPeerMAC, lab.srv.HardwareAddr)
					if mode != ModeDR {
						e.dst, e.ttl, e.srcMAC, e.dstMAC = v.backend, 63, lab.srv.HardwareAddr, lab.srvPeerMAC
						if mode == ModeFullNAT {
							e.src = v.snat
						}
						e.quote = quoted(c.fromBackend().build(t), int(q.n))
						want = e.build(t)
					}
					icmp, ev := lab.icmpCounts(t, v.id), lab.events(t)
					lab.expectFrame(t, in, lab.cli, xdpRedirect, want)
					if n := lab.icmpCounts(t, v.id); n != icmp+1 {
						t.Errorf("vip %d icmp errors %d -> %d, want one more", v.id, icmp, n)
					}
					lab.checkEvents(t, ev, map[string]uint64{"icmp_to_backend": 1})
				})
			}
		}
	}
}

// rewrittenMACs is frame with the given destination and source MACs.
func rewrittenMACs(frame []byte, dst, src []byte) []byte {
	out := append([]byte(nil), frame...)
	copy(out[0:6], dst)
	copy(out[6:12], src)
	return out
}

// An error from the backends' side about a packet the LB translated toward
// a NAT backend (port unreachable from the backend, time exceeded from a
// router) is translated back as the flow's replies are: the quoted packet
// becomes the client's own (to the VIP; full NAT: from the client's address
// and port), the outer destination the client, the outer source the VIP
// when it was the backend, and it leaves toward the client.
func TestICMPToClient(t *testing.T) {
	lab := newNATLab(t, testOptions(""))
	vips := natVIPs()
	lab.putNATVIPs(t, vips)
	cport := uint16(46000)
	for _, mode := range []ForwardMode{ModeNAT, ModeFullNAT} {
		for _, v6 := range []bool{false, true} {
			for _, k := range []struct {
				name        string
				proto       Protocol
				n           quoteLen
				fromRouter  bool
				typ4, code4 uint8
				typ6, code6 uint8
			}{
				{"port unreachable from the backend", ProtoUDP, -1, false, 3, 3, 1, 4},
				{"port unreachable from the backend", ProtoUDP, 8, false, 3, 3, 1, 4},
				{"time exceeded from a router", ProtoTCP, 8, true, 11, 0, 3, 0},
				{"fragmentation needed from a router", ProtoTCP, -1, true, 3, 4, 2, 0},
				// The frame goes on after the IP packet (an Ethernet
				// trailer) with what would be the quoted TCP checksum:
				// not part of the error, so neither rewritten nor summed.
				{"time exceeded from a router, trailer", ProtoTCP, 8, true, 11, 0, 3, 0},
			} {
				v := findVIP(vips, mode, v6, k.proto)
				t.Run(fmt.Sprintf("%s %s %s", v, k.name, k.n), func(t *testing.T) {
					cport++
					c := lab.connect(t, v, cport)
					from, to := v.backend, c.source // the error as it comes
					if k.fromRouter {
						from = pick46(v6, srvRouter4, srvRouter6)
					}
					e := icmpError{src: from, dst: to, typ: pick46(v6, k.typ4, k.typ6), code: pick46(v6, k.code4, k.code6),
						quote: quoted(c.toBackend().build(t), int(k.n)), srcMAC: lab.srvPeerMAC, dstMAC: lab.srv.HardwareAddr}
					if e.typ == 3 && e.code == 4 || e.typ == 2 && v6 {
						e.mtu = 1280
					}
					in := e.build(t)
					var trailer []byte
					if strings.HasSuffix(k.name, "trailer") {
						// The rest of the quoted TCP header.
						whole := quoted(c.toBackend().build(t), -1)
						hl := pick46(v6, 20, 40)
						trailer = append([]byte(nil), whole[hl+8:hl+20]...)
						in = append(in, trailer...)
					}
					if !k.fromRouter {
						e.src = v.key.Addr
					}
					orig := c.fromClient(true)
					orig.ttl = 63 // the client's packet left the LB with one TTL less
					e.dst, e.ttl, e.srcMAC, e.dstMAC = c.client, 63, lab.cli.HardwareAddr, lab.cliPeerMAC
					e.quote = quoted(orig.build(t), int(k.n))
					icmp, ev := lab.icmpCounts(t, v.id), lab.events(t)
					want := append(e.build(t), trailer...)
					r := lab.run(t, in, lab.srv)
					if r.verdict != xdpRedirect || !bytes.Equal(r.out, want) {
						t.Fatalf("verdict %d, want redirect\n  in %x\n got %x\nwant %x", r.verdict, in, r.out, want)
					}
					verifyChecksums(t, r.out[:len(r.out)-len(trailer)])
					if n := lab.icmpCounts(t, v.id); n != icmp+1 {
						t.Errorf("vip %d icmp errors %d -> %d, want one more", v.id, icmp, n)
					}
					lab.checkEvents(t, ev, map[string]uint64{"icmp_to_client": 1})
				})
			}
		}
	}
}

// Errors the program is not to act on reach the kernel as they came, and
// count nothing: about flows it knows nothing of, or frames outside the
// ICMP parsing policy (bpf/parse.h), and ICMP that is no error.
func TestICMPPassUntouched(t *testing.T) {
	lab := newNATLab(t, testOptions(""))
	vips := natVIPs()
	lab.putNATVIPs(t, vips)
	cport := uint16(47000)
	conn := func(mode ForwardMode, v6 bool, proto Protocol) natConn {
		cport++
		return lab.connect(t, findVIP(vips, mode, v6, proto), cport)
	}
	nat4, nat6 := conn(ModeNAT, false, ProtoTCP), conn(ModeNAT, true, ProtoUDP)
	full4, full6 := conn(ModeFullNAT, false, ProtoTCP), conn(ModeFullNAT, true, ProtoTCP)
	// An error about c's reply to its client, to the VIP; and one about
	// c's packet to the backend, from the backend.
	toVIP := func(c natConn, quote []byte) icmpError {
		v6 := c.v.key.Addr.Is6()
		return icmpError{src: pick46(v6, cliRouter4, cliRouter6), dst: c.v.key.Addr, typ: pick46[uint8](v6, 3, 2),
			code: pick46[uint8](v6, 4, 0), mtu: 1280, quote: quote}
	}
	fromBackend := func(c natConn, quote []byte) icmpError {
		v6 := c.v.key.Addr.Is6()
		return icmpError{src: c.v.backend, dst: c.source, typ: pick46[uint8](v6, 3, 1), code: pick46[uint8](v6, 3, 4),
			quote: quote, srcMAC: lab.srvPeerMAC, dstMAC: lab.srv.HardwareAddr}
	}
	q := func(f flow, n int) []byte { return quoted(f.build(t), n) }
	unknown := func(c natConn) natConn { c.cport, c.sport = 1, 1; return c }
	otherPort := func(c natConn) natConn { c.v.key.Port = 83; return c }
	noVIP := func(c natConn) natConn { c.v.key.Addr = pick46(c.v.key.Addr.Is6(), other4, other6); return c }
	// The parts of the policy.
	withOpts := func(f flow) flow { f.ipv4Options = true; return f }
	later := nat4.fromBackend()
	laterFrag := rawIPv4(later.src, later.dst, 6, 0x0010, tcpHeader(later.sport, later.dport, 5, 20))[14:]
	ext := nat6.fromBackend()
	hopByHop := append([]byte{17, 0, 1, 4, 0, 0, 0, 0}, udpHeader(ext.sport, ext.dport, 8, 8)...)
	quotedExt := rawIPv6(ext.src, ext.dst, 0, hopByHop)[14:]

	tests := []struct {
		name string
		in   []byte
	}{
		{"echo request to a vip", icmpEcho(t, client4, vipAddr4)},
		{"icmpv6 echo request to a vip", icmpEcho(t, client6, vipAddr6)},
		{"echo request from a backend to a client", icmpEcho(t, natBackend4, client4)},
		{"about a flow of no vip", toVIP(nat4, q(noVIP(nat4).toClient(), -1)).build(t)},
		{"about a flow of no vip v6", toVIP(nat6, q(noVIP(nat6).toClient(), -1)).build(t)},
		{"about another port of a vip address", toVIP(nat4, q(otherPort(nat4).toClient(), -1)).build(t)},
		{"about a full nat flow not in the connection table", toVIP(full4, q(unknown(full4).toClient(), -1)).build(t)},
		{"about a full nat flow not in the connection table v6", toVIP(full6, q(unknown(full6).toClient(), -1)).build(t)},
		{"from a backend about no nat flow", fromBackend(nat4, q(unknown(nat4).toBackend(), -1)).build(t)},
		{"from a backend about no full nat flow v6", fromBackend(full6, q(unknown(full6).toBackend(), -1)).build(t)},
		{"outer ipv4 with options", withOuterOptions(t, fromBackend(nat4, q(nat4.toBackend(), -1)).build(t))},
		{"quoted ipv4 with options", fromBackend(nat4, q(withOpts(nat4.toBackend()), -1)).build(t)},
		{"quoted ipv4 later fragment", fromBackend(nat4, laterFrag).build(t)},
		{"7 quoted l4 bytes", fromBackend(nat4, q(nat4.toBackend(), 7)).build(t)},
		{"7 quoted l4 bytes v6", fromBackend(nat6, q(nat6.toBackend(), 7)).build(t)},
		{"quoted ipv6 extension header", fromBackend(nat6, quotedExt).build(t)},
		{"redirect is no error", func() []byte {
			e := fromBackend(nat4, q(nat4.toBackend(), -1))
			e.typ, e.code = 5, 1
			return e.build(t)
		}()},
		{"parameter problem is not translated", func() []byte {
			e := fromBackend(nat4, q(nat4.toBackend(), -1))
			e.typ, e.code = 12, 0
			return e.build(t)
		}()},
		{"icmpv6 parameter problem is not translated", func() []byte {
			e := fromBackend(nat6, q(nat6.toBackend(), -1))
			e.typ, e.code = 4, 0
			return e.build(t)
		}()},
		// The IP packet ends before 8 quoted L4 bytes; the frame goes on
		// (an Ethernet trailer): what follows the packet is not quoted.
		{"quote cut short by the ip length, frame longer", shortenIP(t, fromBackend(nat4, q(nat4.toBackend(), -1)).build(t), 8+20+4)},
		{"quote cut short by the ip length, frame longer v6", shortenIP(t, fromBackend(nat6, q(nat6.toBackend(), -1)).build(t), 8+40+4)},
	}
	icmp := map[uint32]uint64{}
	for _, v := range vips {
		icmp[v.id] = lab.icmpCounts(t, v.id)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := lab.events(t)
			ingress := lab.cli
			if bytes.Equal(tt.in[6:12], lab.srvPeerMAC) {
				ingress = lab.srv
			}
			r := lab.run(t, tt.in, ingress)
			if r.verdict != xdpPass || !bytes.Equal(r.out, tt.in) {
				t.Fatalf("verdict %d, want pass untouched\n got %x\nwant %x", r.verdict, r.out, tt.in)
			}
			lab.checkEvents(t, ev, nil)
			for _, v := range vips {
				if n := lab.icmpCounts(t, v.id); n != icmp[v.id] {
					t.Errorf("vip %d counted an icmp error (%d -> %d)", v.id, icmp[v.id], n)
					icmp[v.id] = n
				}
			}
		})
	}
}

// withOuterOptions gives an ICMP error frame's IPv4 header 4 bytes of
// options (no-operation, end of list), its checksum and length fixed.
func withOuterOptions(t testing.TB, frame []byte) []byte {
	t.Helper()
	l3 := ipOffset(frame)
	ip := frame[l3:]
	if ip[0] != 0x45 {
		t.Fatalf("not an ipv4 header without options: %x", ip[:20])
	}
	out := append(append(append([]byte(nil), frame[:l3+20]...), 1, 1, 1, 0), ip[20:]...)
	h := out[l3:]
	h[0] = 0x46
	binary.BigEndian.PutUint16(h[2:], binary.BigEndian.Uint16(h[2:])+4)
	h[10], h[11] = 0, 0
	binary.BigEndian.PutUint16(h[10:], ^foldSum(onesSum(0, h[:24])))
	return out
}

// shortenIP makes the IP packet of frame (an ICMP error) end after body
// bytes of ICMP message, the bytes after it left in the frame as a
// trailer; the lengths and the checksums are those of the short packet.
func shortenIP(t testing.TB, frame []byte, body int) []byte {
	t.Helper()
	out := append([]byte(nil), frame...)
	l3 := ipOffset(out)
	ip := out[l3:]
	var icmp []byte
	if ip[0]>>4 == 4 {
		binary.BigEndian.PutUint16(ip[2:], uint16(20+body))
		ip[10], ip[11] = 0, 0
		binary.BigEndian.PutUint16(ip[10:], ^foldSum(onesSum(0, ip[:20])))
		icmp = ip[20 : 20+body]
		icmp[2], icmp[3] = 0, 0
		binary.BigEndian.PutUint16(icmp[2:], ^foldSum(onesSum(0, icmp)))
	} else {
		binary.BigEndian.PutUint16(ip[4:], uint16(body))
		icmp = ip[40 : 40+body]
		icmp[2], icmp[3] = 0, 0
		binary.BigEndian.PutUint16(icmp[2:], ^foldSum(onesSum(pseudoSum(ip[8:24], ip[24:40], 58, body), icmp)))
	}
	if err := checksumErr(out); err != nil {
		t.Fatalf("shortened frame: %v", err)
	}
	return out
}
