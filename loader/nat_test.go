package loader

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"
)

// l4Ports are the ports of a TCP/UDP frame's L4 header.
func l4Ports(frame []byte) (sport, dport uint16) {
	l3 := ipOffset(frame)
	l4 := l3 + 40
	if frame[l3]>>4 == 4 {
		l4 = l3 + int(frame[l3]&0xf)*4
	}
	return binary.BigEndian.Uint16(frame[l4:]), binary.BigEndian.Uint16(frame[l4+2:])
}

// expectFrame runs in on ingress and compares the verdict and the output
// with want byte for byte, then checks the output's checksums by decoding.
func (lab *natLab) expectFrame(t *testing.T, in []byte, ingress *net.Interface, verdict uint32, want []byte) result {
	t.Helper()
	r := lab.run(t, in, ingress)
	if r.verdict != verdict {
		t.Fatalf("verdict %d, want %d; out %x", r.verdict, verdict, r.out)
	}
	if !bytes.Equal(r.out, want) {
		t.Fatalf("output\n got %x\nwant %x", r.out, want)
	}
	verifyChecksums(t, r.out)
	return r
}

// natCase is one row of TestNATForward: a flow of one VIP from a client
// port of its own, in frames of one shape.
type natCase struct {
	name        string
	mode        ForwardMode
	v6          bool
	proto       Protocol
	vlan        vlanKind
	ipv4Options bool
	noUDPCsum   bool
	oneArm      bool // the client's packets arrive on "srv": the backend is out of the same interface (XDP_TX)
}

// Every mode x family x protocol: the first packet of a flow translated
// toward the backend, the backend's reply translated back, an established
// packet on the connection-table path, and (TCP) a FIN marking both
// entries closing; every output compared byte for byte with a frame built
// independently from the addresses, ports, TTL and MACs the contract says,
// and its checksums verified by decoding it.
func TestNATForward(t *testing.T) {
	opts := testOptions("")
	opts.SNATPorts = PortRange{Lo: 20000, Hi: 29999}
	lab := newNATLab(t, opts)
	vips := natVIPs()
	lab.putNATVIPs(t, vips)

	var cases []natCase
	for _, mode := range []ForwardMode{ModeNAT, ModeFullNAT} {
		for _, v6 := range []bool{false, true} {
			for _, proto := range []Protocol{ProtoTCP, ProtoUDP} {
				cases = append(cases, natCase{mode: mode, v6: v6, proto: proto})
			}
		}
	}
	cases = append(cases,
		natCase{name: "802.1q", mode: ModeNAT, proto: ProtoTCP, vlan: vlan8021Q},
		natCase{name: "802.1ad", mode: ModeFullNAT, v6: true, proto: ProtoUDP, vlan: vlan8021AD},
		natCase{name: "ipv4 options", mode: ModeNAT, proto: ProtoTCP, ipv4Options: true},
		natCase{name: "ipv4 options", mode: ModeFullNAT, proto: ProtoUDP, ipv4Options: true},
		natCase{name: "zero udp checksum", mode: ModeNAT, proto: ProtoUDP, noUDPCsum: true},
		natCase{name: "zero udp checksum", mode: ModeFullNAT, proto: ProtoUDP, noUDPCsum: true},
		natCase{name: "one arm", mode: ModeNAT, proto: ProtoTCP, oneArm: true},
		natCase{name: "one arm", mode: ModeFullNAT, v6: true, proto: ProtoTCP, oneArm: true},
	)
	for i, tc := range cases {
		v := findVIP(vips, tc.mode, tc.v6, tc.proto)
		name := v.String()
		if tc.name != "" {
			name += " " + tc.name
		}
		t.Run(name, func(t *testing.T) {
			lab.checkNATFlow(t, v, tc, uint16(41000+i))
		})
	}
	drops, err := lab.d.DropCounters()
	must(t, err)
	for reason, n := range drops {
		if n != 0 {
			t.Errorf("drop %s = %d, want 0", reason, n)
		}
	}
}

func (lab *natLab) checkNATFlow(t *testing.T, v natVIP, tc natCase, cport uint16) {
	client := client4
	if tc.v6 {
		client = client6
	}
	tcp := tc.proto == ProtoTCP
	// The client's packets, and the same packets as the backend gets them.
	toVIP := flow{src: client, dst: v.key.Addr, sport: cport, dport: v.key.Port, proto: tc.proto,
		vlan: tc.vlan, ipv4Options: tc.ipv4Options, noUDPChecksum: tc.noUDPCsum}
	ingress, fwdVerdict := lab.cli, uint32(xdpRedirect)
	if tc.oneArm {
		ingress, fwdVerdict = lab.srv, xdpTX
	}
	toBackend := toVIP
	toBackend.dst, toBackend.dport = v.backend, v.bport()
	toBackend.ttl, toBackend.srcMAC, toBackend.dstMAC = 63, lab.srv.HardwareAddr, lab.srvPeerMAC

	first := toVIP
	first.syn = tcp
	evBefore := lab.events(t)
	vcBefore, err := lab.d.VIPCounters()
	must(t, err)
	r := lab.run(t, first.build(t), ingress)
	if r.verdict != fwdVerdict {
		t.Fatalf("first packet: verdict %d, want %d; out %x", r.verdict, fwdVerdict, r.out)
	}
	// Full NAT: the data plane chose the port.
	snatPort := cport
	if v.mode == ModeFullNAT {
		snatPort, _ = l4Ports(r.out)
		if r := lab.d.SNATPorts(); snatPort < r.Lo || snatPort > r.Hi {
			t.Fatalf("snat port %d outside %s", snatPort, r)
		}
		toBackend.src, toBackend.sport = v.snat, snatPort
	}
	want := toBackend
	want.syn = tcp
	if !bytes.Equal(r.out, want.build(t)) {
		t.Fatalf("first packet\n got %x\nwant %x", r.out, want.build(t))
	}
	verifyChecksums(t, r.out)

	// Both entries, as the contract gives them.
	ctKey := flowKey(client, cport, v.key.Addr, v.key.Port, tc.proto)
	replyKey := flowKey(v.backend, v.bport(), toBackend.src, snatPort, tc.proto)
	ct, ok := lab.conntrack(t, ctKey)
	if !ok {
		t.Fatal("no connection-table entry for the flow")
	}
	wantPort := uint16(0)
	if v.mode == ModeFullNAT {
		wantPort = snatPort
	}
	if ct.BackendId != v.id || snatPortOf(ct) != wantPort || ct.Flags&uint32(xdplbFlowFlagsFLOW_F_CLOSING) != 0 {
		t.Errorf("connection table: backend %d snat port %d flags %#x, want backend %d port %d open",
			ct.BackendId, snatPortOf(ct), ct.Flags, v.id, wantPort)
	}
	ns, ok := lab.natFlow(t, replyKey)
	if !ok {
		t.Fatalf("no nat_flows entry for the reply %s:%d -> %s:%d", v.backend, v.bport(), toBackend.src, snatPort)
	}
	wantNS := xdplbNatState{Vip: v.key.Addr.As16(), Client: client.As16(), VipPort: toNetPort(v.key.Port),
		ClientPort: toNetPort(cport), VipId: v.id, LastSeen: ns.LastSeen}
	if v.mode == ModeFullNAT {
		wantNS.Flags = uint32(xdplbNatFlagsNAT_F_FULL)
	}
	if ns != wantNS || ns.LastSeen == 0 {
		t.Errorf("nat_flows entry %+v, want %+v", ns, wantNS)
	}

	// The reply, from the backend, translated back to the client.
	reply := flow{src: v.backend, dst: toBackend.src, sport: v.bport(), dport: snatPort, proto: tc.proto,
		syn: tcp, ack: tcp, vlan: tc.vlan, ipv4Options: tc.ipv4Options, noUDPChecksum: tc.noUDPCsum,
		srcMAC: lab.srvPeerMAC, dstMAC: lab.srv.HardwareAddr, payload: []byte("reply from backend")}
	back := reply
	back.src, back.sport, back.dst, back.dport = v.key.Addr, v.key.Port, client, cport
	back.ttl, back.srcMAC, back.dstMAC = 63, lab.cli.HardwareAddr, lab.cliPeerMAC
	lab.expectFrame(t, reply.build(t), lab.srv, xdpRedirect, back.build(t))

	// An established packet: the connection table's path, the same
	// translation.
	est, estWant := toVIP, toBackend
	est.ack, estWant.ack = tcp, tcp
	est.payload = []byte("second packet of the flow")
	estWant.payload = est.payload
	lab.expectFrame(t, est.build(t), ingress, fwdVerdict, estWant.build(t))
	packets := uint64(2)

	if tcp {
		fin, finWant := est, estWant
		fin.fin, finWant.fin = true, true
		lab.expectFrame(t, fin.build(t), ingress, fwdVerdict, finWant.build(t))
		packets++
		ct, _ := lab.conntrack(t, ctKey)
		ns, _ := lab.natFlow(t, replyKey)
		if ct.Flags&uint32(xdplbFlowFlagsFLOW_F_CLOSING) == 0 || ns.Flags&uint32(xdplbNatFlagsNAT_F_CLOSING) == 0 {
			t.Errorf("after a FIN: connection table flags %#x, nat flags %#x, want both closing", ct.Flags, ns.Flags)
		}
		if snatPortOf(ct) != wantPort {
			t.Errorf("after a FIN the flow holds snat port %d, want %d", snatPortOf(ct), wantPort)
		}
	}
	lab.checkEvents(t, evBefore, map[string]uint64{"nat_reply": 1})
	vc, err := lab.d.VIPCounters()
	must(t, err)
	if got, was := vc[v.id], vcBefore[v.id]; got.Packets-was.Packets != packets || got.Flows-was.Flows != 1 {
		t.Errorf("vip counters went from %+v to %+v, want %d packets and 1 flow more", was, got, packets)
	}
}

// A packet from a NAT backend's address that no translation matches goes
// to the kernel as it came, and so does one from elsewhere.
func TestNATReplyWithoutTranslation(t *testing.T) {
	lab := newNATLab(t, testOptions(""))
	vips := natVIPs()
	lab.putNATVIPs(t, vips)
	nat, full := findVIP(vips, ModeNAT, false, ProtoTCP), findVIP(vips, ModeFullNAT, true, ProtoUDP)
	// One real flow of each, so the table is not empty.
	lab.run(t, flow{src: client4, dst: nat.key.Addr, dport: nat.key.Port, syn: true}.build(t), lab.cli)
	lab.run(t, flow{src: client6, dst: full.key.Addr, dport: full.key.Port, proto: ProtoUDP}.build(t), lab.cli)

	frames := map[string][]byte{
		"nat: unknown client port":      flow{src: natBackend4, dst: client4, sport: 8080, dport: 40001, syn: true, ack: true}.build(t),
		"nat: other backend port":       flow{src: natBackend4, dst: client4, sport: 8081, dport: 40000, syn: true, ack: true}.build(t),
		"nat: other protocol":           flow{src: natBackend4, dst: client4, sport: 8080, dport: 40000, proto: ProtoUDP}.build(t),
		"nat: from a non-backend":       flow{src: netip.MustParseAddr("10.0.1.6"), dst: client4, sport: 8080, dport: 40000, ack: true}.build(t),
		"fullnat: unknown snat port":    flow{src: natBackend6, dst: natSNAT6, sport: 5353, dport: 20000, proto: ProtoUDP}.build(t),
		"fullnat: to the client itself": flow{src: natBackend6, dst: client6, sport: 5353, dport: 40000, proto: ProtoUDP}.build(t),
	}
	ev := lab.events(t)
	for name, in := range frames {
		t.Run(name, func(t *testing.T) {
			r := lab.run(t, in, lab.srv)
			if r.verdict != xdpPass || !bytes.Equal(r.out, in) {
				t.Fatalf("verdict %d out %x, want pass untouched", r.verdict, r.out)
			}
		})
	}
	lab.checkEvents(t, ev, nil)
}

// A NAT packet the program cannot forward is answered as a router answers
// it (TTL run out, larger than the egress MTU with DF: ICMP back out of the
// interface it came in on, quoting it as it came), or goes to the kernel,
// counted: untouched when there is no route, translated when only the next
// hop is missing (no neighbour yet, an egress without XDP) or the kernel
// must fragment it, so the kernel forwards it.
func TestNATCannotForward(t *testing.T) {
	opts := testOptions("")
	opts.MaxVIPs = 32
	lab := newNATLab(t, opts)
	vips := natVIPs()
	lab.putNATVIPs(t, vips)
	// NAT VIPs whose backend has no neighbour entry, no route, or is
	// behind "oth", an interface without XDP.
	odd := func(id uint32, backend netip.Addr) natVIP {
		v := natVIP{id: id, mode: ModeNAT, backend: backend, port: 8080, key: VIPKey{Addr: vipAddr4, Port: uint16(1000 + id), Proto: ProtoTCP}}
		if backend.Is6() {
			v.key.Addr = vipAddr6
		}
		lab.putNATVIP(t, v)
		return v
	}
	noNeigh4, noNeigh6 := odd(13, netip.MustParseAddr("10.0.1.9")), odd(14, netip.MustParseAddr("2001:db8:1::9"))
	noRoute4, noRoute6 := odd(15, netip.MustParseAddr("192.0.2.9")), odd(16, netip.MustParseAddr("2001:db8:ff::9"))
	notXDP4, notXDP6 := odd(17, natOther4), odd(18, natOther6)
	nat4, nat6 := findVIP(vips, ModeNAT, false, ProtoTCP), findVIP(vips, ModeNAT, true, ProtoTCP)
	full4 := findVIP(vips, ModeFullNAT, false, ProtoUDP)

	port := uint16(43000)
	syn := func(v natVIP, f flow) flow {
		port++
		f.src, f.dst, f.sport, f.dport = pick46(v.key.Addr.Is6(), client4, client6), v.key.Addr, port, v.key.Port
		f.proto, f.syn = v.key.Proto, v.key.Proto == ProtoTCP
		return f
	}
	// translated is f as the program rewrites it for v's backend, before
	// the TTL and the MACs (which the kernel does when it forwards).
	translated := func(v natVIP, f flow) []byte {
		f.dst, f.dport = v.backend, v.bport()
		return f.build(t)
	}
	big := make([]byte, 1400-14-20-20) // a 1400-byte IPv4 frame; IPv6 takes 20 bytes fewer
	// answer is the error a router sends about in, from the address in
	// was sent to, back out of the interface it came from: fragmentation
	// needed / packet too big (MTU 1280), or time exceeded.
	answer := func(in []byte, tooBig bool) []byte {
		l3 := ipOffset(in)
		e := icmpError{ttl: 64, quote: quoted(in, 8), srcMAC: net.HardwareAddr(in[0:6]), dstMAC: net.HardwareAddr(in[6:12])}
		if l3 == 18 {
			e.vlan = vlan8021Q
		}
		v6 := in[l3]>>4 == 6
		if v6 {
			e.src, e.dst = netip.AddrFrom16([16]byte(in[l3+24:])), netip.AddrFrom16([16]byte(in[l3+8:]))
		} else {
			e.src, e.dst = netip.AddrFrom4([4]byte(in[l3+16:])), netip.AddrFrom4([4]byte(in[l3+12:]))
		}
		e.typ, e.code = pick46[uint8](v6, 11, 3), 0
		if tooBig {
			e.typ, e.code, e.mtu = pick46[uint8](v6, 3, 2), pick46[uint8](v6, 4, 0), 1280
		}
		return e.build(t)
	}
	tooBig := func(_ flow, in []byte) []byte { return answer(in, true) }
	timeExceeded := func(_ flow, in []byte) []byte { return answer(in, false) }
	tests := []struct {
		name    string
		in      flow
		setup   func(t *testing.T, in flow) flow // optional: sends in first, returns the reply to test
		mtu     *net.Interface                   // gets MTU 1280 for the case
		verdict uint32                           // 0: pass
		want    func(f flow, in []byte) []byte   // nil: untouched
		event   string
	}{
		{name: "ttl 1", in: syn(nat4, flow{ttl: 1}), verdict: xdpTX, want: timeExceeded, event: "ttl_exceeded"},
		{name: "hop limit 1", in: syn(nat6, flow{ttl: 1}), verdict: xdpTX, want: timeExceeded, event: "ttl_exceeded"},
		{name: "ttl 1 802.1q", in: syn(full4, flow{ttl: 1, vlan: vlan8021Q}), verdict: xdpTX, want: timeExceeded, event: "ttl_exceeded"},
		// The answer quotes an IPv4 header without options only: the
		// kernel answers this one.
		{name: "ttl 1 ipv4 options", in: syn(nat4, flow{ttl: 1, ipv4Options: true}), event: "ttl_exceeded"},
		{name: "no neighbour v4", in: syn(noNeigh4, flow{}), want: func(f flow, _ []byte) []byte { return translated(noNeigh4, f) }, event: "fib_no_neigh"},
		{name: "no neighbour v6", in: syn(noNeigh6, flow{}), want: func(f flow, _ []byte) []byte { return translated(noNeigh6, f) }, event: "fib_no_neigh"},
		{name: "larger than the mtu v4", in: syn(nat4, flow{payload: big}), mtu: lab.srv, verdict: xdpTX,
			want: tooBig, event: "frag_needed"},
		{name: "larger than the mtu v4 802.1q", in: syn(nat4, flow{payload: big, vlan: vlan8021Q}), mtu: lab.srv, verdict: xdpTX,
			want: tooBig, event: "frag_needed"},
		{name: "larger than the mtu v6", in: syn(nat6, flow{payload: big[20:]}), mtu: lab.srv, verdict: xdpTX,
			want: tooBig, event: "frag_needed"},
		// Without DF the kernel fragments it: passed translated.
		{name: "larger than the mtu v4 without df", in: syn(nat4, flow{payload: big, noDF: true}), mtu: lab.srv,
			want: func(f flow, _ []byte) []byte { return translated(nat4, f) }, event: "frag_needed"},
		{name: "no route v4", in: syn(noRoute4, flow{}), event: "fib_failed"},
		{name: "no route v6", in: syn(noRoute6, flow{}), event: "fib_failed"},
		{name: "egress without xdp v4", in: syn(notXDP4, flow{}), want: func(f flow, _ []byte) []byte { return translated(notXDP4, f) }, event: "egress_not_xdp"},
		{name: "egress without xdp v6", in: syn(notXDP6, flow{}), want: func(f flow, _ []byte) []byte { return translated(notXDP6, f) }, event: "egress_not_xdp"},
		// The backend is told, from the address it sent to.
		{name: "reply ttl 1", in: syn(nat4, flow{}), verdict: xdpTX, setup: func(t *testing.T, f flow) flow {
			lab.run(t, f.build(t), lab.cli)
			return flow{src: nat4.backend, sport: nat4.bport(), dst: f.src, dport: f.sport, syn: true, ack: true, ttl: 1,
				srcMAC: lab.srvPeerMAC, dstMAC: lab.srv.HardwareAddr}
		}, want: timeExceeded, event: "ttl_exceeded"},
		{name: "reply with no route to the client", in: syn(full4, flow{src: netip.MustParseAddr("198.51.100.7")}), setup: func(t *testing.T, f flow) flow {
			f.src = netip.MustParseAddr("198.51.100.7")
			r := lab.run(t, f.build(t), lab.cli)
			if r.verdict != xdpRedirect {
				t.Fatalf("flow from an unrouted client: verdict %d, want redirect", r.verdict)
			}
			sport, _ := l4Ports(r.out)
			return flow{src: full4.backend, sport: full4.bport(), dst: full4.snat, dport: sport, proto: ProtoUDP}
		}, event: "fib_failed"},
		// The backend is told, from the address it sent to: the SNAT
		// address, which the LB owns.
		{name: "reply larger than the client's mtu", in: syn(full4, flow{}), mtu: lab.cli, verdict: xdpTX, setup: func(t *testing.T, f flow) flow {
			r := lab.run(t, f.build(t), lab.cli)
			sport, _ := l4Ports(r.out)
			return flow{src: full4.backend, sport: full4.bport(), dst: full4.snat, dport: sport, proto: ProtoUDP,
				srcMAC: lab.srvPeerMAC, dstMAC: lab.srv.HardwareAddr, payload: big[8:]}
		}, want: tooBig, event: "frag_needed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, ingress := tt.in, lab.cli
			if tt.setup != nil {
				f, ingress = tt.setup(t, f), lab.srv
			}
			if tt.mtu != nil {
				lab.setMTU(t, tt.mtu, 1280)
			}
			in := f.build(t)
			ev := lab.events(t)
			r := lab.run(t, in, ingress)
			want, verdict := in, tt.verdict
			if tt.want != nil {
				want = tt.want(f, in)
			}
			if verdict == 0 {
				verdict = xdpPass
			}
			if r.verdict != verdict || !bytes.Equal(r.out, want) {
				t.Fatalf("verdict %d, want %d\n got %x\nwant %x", r.verdict, verdict, r.out, want)
			}
			verifyChecksums(t, r.out)
			wantEv := map[string]uint64{tt.event: 1}
			if tt.setup != nil {
				// A reply is counted as one before it is routed.
				wantEv["nat_reply"] = 1
			}
			lab.checkEvents(t, ev, wantEv)
		})
	}
}

// snatLab is a lab with one full-NAT VIP (v4 TCP, id 1) and the given
// SNAT port range.
func snatLab(t *testing.T, ports PortRange) (*natLab, natVIP) {
	opts := testOptions("")
	opts.SNATPorts = ports
	lab := newNATLab(t, opts)
	v := findVIP(natVIPs(), ModeFullNAT, false, ProtoTCP)
	v.id = 1
	lab.putNATVIP(t, v)
	return lab, v
}

// snatFlow is one client flow of a snatLab VIP.
type snatFlow struct {
	client netip.Addr
	cport  uint16
}

func (f snatFlow) packet(t testing.TB, v natVIP, syn, ack, fin bool) []byte {
	return flow{src: f.client, sport: f.cport, dst: v.key.Addr, dport: v.key.Port, syn: syn, ack: ack, fin: fin}.build(t)
}

func (f snatFlow) ctKey(v natVIP) xdplbFlowKey {
	return flowKey(f.client, f.cport, v.key.Addr, v.key.Port, v.key.Proto)
}

func replyKey(v natVIP, port uint16) xdplbFlowKey {
	return flowKey(v.backend, v.bport(), v.snat, port, v.key.Proto)
}

// send runs one packet of f and returns the SNAT port it left with, or 0
// if it was dropped; anything else fails the test.
func (lab *natLab) send(t *testing.T, v natVIP, f snatFlow, syn, ack, fin bool) uint16 {
	t.Helper()
	r := lab.run(t, f.packet(t, v, syn, ack, fin), lab.cli)
	switch r.verdict {
	case xdpDrop:
		return 0
	case xdpRedirect:
		src, dst := ipAddrs(r.out)
		sport, dport := l4Ports(r.out)
		if src != v.snat || dst != v.backend || dport != v.bport() {
			t.Fatalf("flow %v sent from %s to %s:%d, want from %s to %s:%d", f, src, dst, dport, v.snat, v.backend, v.bport())
		}
		return sport
	}
	t.Fatalf("flow %v: verdict %d", f, r.verdict)
	return 0
}

// establish completes the handshake of f, which left from SNAT port
// port: the backend's SYN-ACK, translated back to the client, then the
// client's ACK, after which the flow is established (in the connection
// table, its translation marked so), safe from early drop.
func (lab *natLab) establish(t *testing.T, v natVIP, f snatFlow, port uint16) {
	t.Helper()
	synAck := flow{src: v.backend, sport: v.bport(), dst: v.snat, dport: port, syn: true, ack: true,
		srcMAC: lab.srvPeerMAC, dstMAC: lab.srv.HardwareAddr}
	// Passed when the lab has no route to the client (only to
	// 10.0.0.0/24): translated all the same.
	if r := lab.run(t, synAck.build(t), lab.srv); r.verdict != xdpRedirect && r.verdict != xdpPass {
		t.Fatalf("syn-ack of %v: verdict %d", f, r.verdict)
	}
	if p := lab.send(t, v, f, false, true, false); p != port {
		t.Fatalf("ack of %v left from port %d, want %d", f, p, port)
	}
	if _, half, ok := flowEntry(t, lab.d, f.ctKey(v)); !ok || half {
		t.Fatalf("flow %v not established after its handshake (found %v, half-open %v)", f, ok, half)
	}
	ns, ok := lab.natFlow(t, replyKey(v, port))
	if !ok || ns.Flags&uint32(xdplbNatFlagsNAT_F_ESTABLISHED) == 0 {
		t.Fatalf("translation of %v: %+v (found %v), want established", f, ns, ok)
	}
}

// ipAddrs are the addresses of an IP frame's header.
func ipAddrs(frame []byte) (src, dst netip.Addr) {
	ip := frame[ipOffset(frame):]
	if ip[0]>>4 == 4 {
		return netip.AddrFrom4([4]byte(ip[12:])), netip.AddrFrom4([4]byte(ip[16:]))
	}
	return netip.AddrFrom16([16]byte(ip[8:])), netip.AddrFrom16([16]byte(ip[24:]))
}

func (lab *natLab) drops(t testing.TB, reason string) uint64 {
	t.Helper()
	d, err := lab.d.DropCounters()
	must(t, err)
	return d[reason]
}

// A range of 4 ports holds 4 established flows; the 5th is dropped and
// counted as snat_exhausted, never given an established flow's port. A
// flow placed again gets its own port back, even with the range full; a
// closed flow's port is reclaimed once its closing timeout has passed, an
// idle flow's once its idle timeout has. (A half-open flow's port goes to
// a new flow sooner: TestSNATEarlyDrop.)
func TestSNATPortAllocation(t *testing.T) {
	ports := PortRange{Lo: 20000, Hi: 20003}
	lab, v := snatLab(t, ports)
	flows := make([]snatFlow, 7)
	for i := range flows {
		flows[i] = snatFlow{client4, uint16(50001 + i)}
	}
	held := map[uint16]int{} // port -> flow index
	for i, f := range flows[:4] {
		p := lab.send(t, v, f, true, false, false)
		if p == 0 {
			t.Fatalf("flow %d of 4 dropped with a range of 4 ports", i)
		}
		if p < ports.Lo || p > ports.Hi {
			t.Fatalf("snat port %d outside %s", p, ports)
		}
		if j, ok := held[p]; ok {
			t.Fatalf("flows %d and %d both got snat port %d", j, i, p)
		}
		held[p] = i
		lab.establish(t, v, f, p)
	}
	st, err := lab.d.ExpireNAT()
	must(t, err)
	if st.SNATPortsInUse != 4 || st.Entries != 4 {
		t.Errorf("nat stats %+v, want 4 entries, 4 ports in use", st)
	}
	if p := lab.send(t, v, flows[4], true, false, false); p != 0 {
		t.Fatalf("5th flow got port %d of a full range", p)
	}
	if n := lab.drops(t, "snat_exhausted"); n != 1 {
		t.Fatalf("snat_exhausted = %d, want 1", n)
	}
	if _, ok := lab.conntrack(t, flows[4].ctKey(v)); ok {
		t.Error("the dropped flow has a connection-table entry")
	}
	portOf := func(i int) uint16 {
		for p, j := range held {
			if j == i {
				return p
			}
		}
		t.Fatalf("flow %d holds no port", i)
		return 0
	}

	// Flow 0 placed again (its connection-table entry lost, as after an
	// eviction or a restart), by a plain ACK: its own port, and still
	// established; by a SYN (a new connection on the same 5-tuple): its
	// own port, half-open until its handshake is done.
	for _, syn := range []bool{false, true} {
		if !ctDel(t, lab.d, flows[0].ctKey(v)) {
			t.Fatal("flow 0 had no connection-table slot to delete")
		}
		if p := lab.send(t, v, flows[0], syn, !syn, false); p != portOf(0) {
			t.Fatalf("flow 0 placed again (syn %v) got port %d, want its own %d", syn, p, portOf(0))
		}
		if _, half, _ := flowEntry(t, lab.d, flows[0].ctKey(v)); half != syn {
			t.Fatalf("flow 0 placed again (syn %v): half-open %v", syn, half)
		}
	}
	lab.establish(t, v, flows[0], portOf(0))

	// Flow 1 closes: its port stays its own for NATClosingTimeout.
	p1 := portOf(1)
	if p := lab.send(t, v, flows[1], false, true, true); p != p1 {
		t.Fatalf("flow 1's FIN left from port %d, want %d", p, p1)
	}
	if p := lab.send(t, v, flows[4], true, false, false); p != 0 {
		t.Fatalf("a new flow took port %d of a flow closed just now", p)
	}
	hz, err := lab.d.ticks.rate()
	must(t, err)
	closing := uint64(NATClosingTimeout.Seconds() * float64(hz))
	// Just inside the timeout: still held.
	lab.age(t, flows[1].ctKey(v), replyKey(v, p1), closing-2*hz)
	if p := lab.send(t, v, flows[4], true, false, false); p != 0 {
		t.Fatalf("a new flow took port %d of a flow closed %v ago", p, NATClosingTimeout-2*time.Second)
	}
	// Beyond it: the port goes to the next new flow.
	lab.age(t, flows[1].ctKey(v), replyKey(v, p1), closing+hz)
	if p := lab.send(t, v, flows[4], true, false, false); p != p1 {
		t.Fatalf("new flow got port %d, want %d reclaimed from the closed flow", p, p1)
	}
	if n := lab.drops(t, "snat_exhausted"); n != 3 {
		t.Errorf("snat_exhausted = %d, want 3", n)
	}
	if ns, _ := lab.natFlow(t, replyKey(v, p1)); fromNetPort(ns.ClientPort) != flows[4].cport || ns.Flags&uint32(xdplbNatFlagsNAT_F_CLOSING) != 0 {
		t.Errorf("reclaimed port's translation %+v, want flow 4's, open", ns)
	}
	lab.establish(t, v, flows[4], p1)
	// Flow 1's stale packet after that finds its port taken: placed
	// again, and with the range full it is dropped, not sent from flow
	// 4's port.
	if p := lab.send(t, v, flows[1], false, true, false); p != 0 {
		t.Fatalf("expired flow 1 sent from port %d, now flow 4's", p)
	}

	// An idle flow (no FIN) is reclaimed after the idle timeout only.
	p2 := portOf(2)
	idle := uint64(OpenFlowIdleTCP.Seconds() * float64(hz))
	lab.age(t, flows[2].ctKey(v), replyKey(v, p2), closing+hz)
	if p := lab.send(t, v, flows[5], true, false, false); p != 0 {
		t.Fatalf("a new flow took port %d of an open flow idle for only %v", p, NATClosingTimeout+time.Second)
	}
	lab.age(t, flows[2].ctKey(v), replyKey(v, p2), idle+hz)
	if p := lab.send(t, v, flows[5], true, false, false); p != p2 {
		t.Fatalf("new flow got port %d, want %d reclaimed from the idle flow", p, p2)
	}
	// The other flows kept theirs.
	for _, i := range []int{0, 3} {
		if p := lab.send(t, v, flows[i], false, true, false); p != portOf(i) {
			t.Errorf("flow %d left from port %d, want its %d", i, p, portOf(i))
		}
	}
}

// A property of full NAT's port allocation, over 300 random client flows
// on a 64-port range with random handshakes, closes, expiries and
// established packets: after every step, every live flow's entry (in the
// connection table, or ct_half while half-open) names a port whose
// nat_flows translation is that flow's own (no live flow ever lost its
// mapping to another but by early drop), no other translation is live,
// and a new flow gets exactly the first port of its 16 probes (from the
// 5-tuple hash on) that no live flow holds, else the port of the oldest
// half-open flow among them (which is gone then, counted as an early
// drop), or is dropped as snat_exhausted only when all 16 are held by
// established flows.
func TestSNATNeverShared(t *testing.T) {
	ports := PortRange{Lo: 30000, Hi: 30063}
	lab, v := snatLab(t, ports)
	hz, err := lab.d.ticks.rate()
	must(t, err)
	closing := uint64(NATClosingTimeout.Seconds()*float64(hz)) + hz
	idle := uint64(OpenFlowIdleTCP.Seconds()*float64(hz)) + hz
	rng := rand.New(rand.NewPCG(11, 2026))

	type mflow struct {
		snatFlow
		port        uint16
		closed, est bool
	}
	live := map[uint16]*mflow{} // port -> the live flow holding it
	used := map[snatFlow]bool{}
	var drops, reclaims, taken, early int
	pick := func(ok func(*mflow) bool) *mflow {
		var c []*mflow
		for p := ports.Lo; p <= ports.Hi; p++ {
			if m := live[p]; m != nil && ok(m) {
				c = append(c, m)
			}
		}
		if len(c) == 0 {
			return nil
		}
		return c[rng.IntN(len(c))]
	}
	check := func(step string) {
		t.Helper()
		nat := map[xdplbFlowKey]xdplbNatState{}
		must(t, iterate(lab.d.objs.NatFlows, func(k xdplbFlowKey, s xdplbNatState) { nat[k] = s }))
		now := lab.now(t)
		liveEntries := 0
		for k, s := range nat {
			if !natExpired(k, s, now, lab.d.natParams, lab.d.halfTicks) {
				liveEntries++
			}
		}
		if liveEntries != len(live) {
			t.Fatalf("%s: %d live translations, want %d (one per live flow)", step, liveEntries, len(live))
		}
		for port, m := range live {
			ct, ok := lab.conntrack(t, m.ctKey(v))
			if !ok || snatPortOf(ct) != port {
				t.Fatalf("%s: flow %v holds port %d, its connection-table entry %+v (found %v)", step, m.snatFlow, port, ct, ok)
			}
			s, ok := nat[replyKey(v, port)]
			if !ok || s.Client != m.client.As16() || s.ClientPort != toNetPort(m.cport) || s.VipId != v.id {
				t.Fatalf("%s: port %d of live flow %v translates to %+v (found %v)", step, port, m.snatFlow, s, ok)
			}
			if closing := s.Flags&uint32(xdplbNatFlagsNAT_F_CLOSING) != 0; closing != m.closed {
				t.Fatalf("%s: flow %v closing %v in nat_flows, want %v", step, m.snatFlow, closing, m.closed)
			}
		}
	}

	for n := range 300 {
		var f snatFlow
		for f.cport == 0 || used[f] {
			f = snatFlow{netip.AddrFrom4([4]byte{198, 51, 100, byte(rng.IntN(256))}), uint16(1024 + rng.IntN(64000))}
		}
		used[f] = true
		want := uint16(0)
		probes := snatProbes(lab.d, f.ctKey(v), ports)
		for _, p := range probes {
			if live[p] == nil {
				want = p
				break
			}
		}
		if want == 0 {
			// The oldest half-open holder's, the last tried of equals.
			var oldest uint64
			for _, p := range probes {
				if live[p].est {
					continue
				}
				ns, _ := lab.natFlow(t, replyKey(v, p))
				if want == 0 || ns.LastSeen <= oldest {
					want, oldest = p, ns.LastSeen
				}
			}
		}
		before := lab.drops(t, "snat_exhausted")
		earlyBefore := lab.events(t)["early_drop"]
		got := lab.send(t, v, f, true, false, false)
		if got != want {
			t.Fatalf("new flow %d %v: port %d, want %d (probes %v)", n, f, got, want, probes)
		}
		wantEarly := uint64(0)
		switch {
		case want == 0:
			drops++
			if after := lab.drops(t, "snat_exhausted"); after != before+1 {
				t.Fatalf("new flow %d dropped, snat_exhausted %d -> %d", n, before, after)
			}
		case live[got] != nil:
			if _, _, ok := flowEntry(t, lab.d, live[got].ctKey(v)); ok {
				t.Fatalf("new flow %d took port %d of %v, which kept its entry", n, got, live[got].snatFlow)
			}
			early++
			wantEarly = 1
			fallthrough
		default:
			live[got] = &mflow{snatFlow: f, port: got}
			taken++
		}
		if d := lab.events(t)["early_drop"] - earlyBefore; d != wantEarly {
			t.Fatalf("new flow %d: early_drop rose by %d, want %d", n, d, wantEarly)
		}
		check("new flow")
		// Most flows finish their handshake at once, so that the range
		// fills with established flows too.
		if m := live[got]; got != 0 && rng.Float64() < 0.7 {
			lab.establish(t, v, m.snatFlow, m.port)
			m.est = true
			check("handshake")
		}

		for range 1 + rng.IntN(3) {
			switch r := rng.Float64(); {
			case r < 0.2:
				if m := pick(func(m *mflow) bool { return !m.closed && !m.est }); m != nil {
					lab.establish(t, v, m.snatFlow, m.port)
					m.est = true
				}
			case r < 0.4:
				if m := pick(func(m *mflow) bool { return !m.closed }); m != nil {
					if p := lab.send(t, v, m.snatFlow, false, true, true); p != m.port {
						t.Fatalf("FIN of %v left from port %d, want %d", m.snatFlow, p, m.port)
					}
					m.closed = true
				}
			case r < 0.6:
				if m := pick(func(m *mflow) bool { return m.closed }); m != nil {
					lab.age(t, m.ctKey(v), replyKey(v, m.port), closing)
					delete(live, m.port)
					reclaims++
				}
			case r < 0.68:
				if m := pick(func(m *mflow) bool { return !m.closed }); m != nil {
					lab.age(t, m.ctKey(v), replyKey(v, m.port), idle)
					delete(live, m.port)
					reclaims++
				}
			default:
				if m := pick(func(*mflow) bool { return true }); m != nil {
					if p := lab.send(t, v, m.snatFlow, false, true, false); p != m.port {
						t.Fatalf("established packet of %v left from port %d, want %d", m.snatFlow, p, m.port)
					}
				}
			}
			check("after an action")
		}
	}
	t.Logf("%d flows placed, %d of them on a half-open flow's port, %d dropped as exhausted, %d expired", taken, early, drops, reclaims)
	if drops == 0 || reclaims == 0 || early == 0 {
		t.Errorf("the run never exhausted the range (%d), reclaimed a port (%d) or took a half-open flow's (%d): it proves less than it says",
			drops, reclaims, early)
	}
}

// A NAT (not full) flow's reply key is (backend, client): with the client
// address a SNAT address (spoofed: the LB's own) and its port a live SNAT
// port, it is the key of a full-NAT flow to the same backend. Placing it
// must not take that live mapping over: the full-NAT flow's replies still
// reach its client.
func TestNATCannotTakeFullNATMapping(t *testing.T) {
	lab := newNATLab(t, testOptions(""))
	vips := natVIPs()
	lab.putNATVIPs(t, vips)
	nat, full := findVIP(vips, ModeNAT, false, ProtoTCP), findVIP(vips, ModeFullNAT, false, ProtoTCP)
	if nat.backend != full.backend || nat.bport() != full.bport() {
		t.Fatal("the two VIPs must share a backend address and port")
	}
	c := lab.connect(t, full, 48000)
	spoofed := flow{src: c.source, sport: c.sport, dst: nat.key.Addr, dport: nat.key.Port, syn: true}.build(t)
	r := lab.run(t, spoofed, lab.cli)
	t.Logf("spoofed flow from %s:%d to %s: verdict %d", c.source, c.sport, nat, r.verdict)

	ns, ok := lab.natFlow(t, replyKey(full, c.sport))
	if !ok || ns.Flags&uint32(xdplbNatFlagsNAT_F_FULL) == 0 || ns.Client != c.client.As16() || fromNetPort(ns.ClientPort) != c.cport {
		t.Errorf("full-NAT mapping of %s:%d is now %+v (found %v), want its client %s:%d's", c.source, c.sport, ns, ok, c.client, c.cport)
	}
	reply := c.fromBackend()
	reply.syn, reply.ack, reply.srcMAC, reply.dstMAC = true, true, lab.srvPeerMAC, lab.srv.HardwareAddr
	want := c.toClient()
	want.syn, want.ack, want.ttl, want.srcMAC, want.dstMAC = true, true, reply.ttl-1, lab.cli.HardwareAddr, lab.cliPeerMAC
	lab.expectFrame(t, reply.build(t), lab.srv, xdpRedirect, want.build(t))
}
