package loader

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// The NAT tests' shared pieces: the VIPs of the lab, ICMP error frames,
// two independent checksum checks (gopacket's and one written here, which
// also reads the packet an ICMP error quotes), the map keys the program
// writes, and the flow hash that orders SNAT ports.

// natVIP is one VIP of the NAT lab, with its single backend (same id).
type natVIP struct {
	key     VIPKey
	id      uint32
	mode    ForwardMode
	backend netip.Addr
	port    uint16     // the backend's port as configured: 0 is the VIP's
	snat    netip.Addr // full NAT only
}

// bport is the port the backend is sent to.
func (v natVIP) bport() uint16 {
	if v.port == 0 {
		return v.key.Port
	}
	return v.port
}

func (v natVIP) String() string { return fmt.Sprintf("%s %s", modeName(v.mode), v.key) }

func modeName(m ForwardMode) string {
	switch m {
	case ModeDR:
		return "dr"
	case ModeNAT:
		return "nat"
	case ModeFullNAT:
		return "fullnat"
	}
	return fmt.Sprint(uint8(m))
}

// natVIPs is every mode x family x protocol on vipAddr4/vipAddr6, ids
// 1..12, all sent to natBackend4/6. NAT UDP keeps the VIP's port (backend
// port 0); the others move to 8080 (TCP) or 5353 (UDP), but DR, which
// cannot change a port.
func natVIPs() []natVIP {
	var out []natVIP
	modes := []struct {
		mode             ForwardMode
		tcp, udp         uint16 // VIP ports
		tcpPort, udpPort uint16 // backend ports
	}{
		{ModeNAT, 80, 53, 8080, 0},
		{ModeFullNAT, 81, 54, 8080, 5353},
		{ModeDR, 82, 55, 0, 0},
	}
	for _, m := range modes {
		for _, v6 := range []bool{false, true} {
			for _, proto := range []Protocol{ProtoTCP, ProtoUDP} {
				v := natVIP{id: uint32(len(out) + 1), mode: m.mode, backend: natBackend4, key: VIPKey{Addr: vipAddr4, Proto: proto}}
				if v6 {
					v.backend, v.key.Addr = natBackend6, vipAddr6
				}
				v.key.Port, v.port = m.tcp, m.tcpPort
				if proto == ProtoUDP {
					v.key.Port, v.port = m.udp, m.udpPort
				}
				if m.mode == ModeFullNAT {
					v.snat = natSNAT4
					if v6 {
						v.snat = natSNAT6
					}
				}
				out = append(out, v)
			}
		}
	}
	return out
}

func findVIP(vips []natVIP, mode ForwardMode, v6 bool, proto Protocol) natVIP {
	for _, v := range vips {
		if v.mode == mode && v.key.Addr.Is6() == v6 && v.key.Proto == proto {
			return v
		}
	}
	panic(fmt.Sprintf("no %s vip v6=%v proto %d", modeName(mode), v6, proto))
}

// putNATVIP configures v and its backend; a DR backend is the neighbour
// behind "srv".
func (lab *natLab) putNATVIP(t testing.TB, v natVIP) {
	t.Helper()
	d := lab.d
	must(t, d.PutVIP(v.key, VIPMeta{ID: v.id, Mode: v.mode, Hash: HashMaglev, SNATAddr: v.snat}))
	be := Backend{ID: v.id, VIPID: v.id, Addr: v.backend, Port: v.port, Mode: v.mode}
	if v.mode == ModeDR {
		be.MAC, be.SrcMAC, be.Ifindex = lab.srvPeerMAC, lab.srv.HardwareAddr, uint32(lab.srv.Index)
	}
	must(t, d.PutBackend(be))
	must(t, d.PutLookupTable(v.id, fill(d.LookupTableSize(), v.id)))
}

func (lab *natLab) putNATVIPs(t testing.TB, vips []natVIP) {
	t.Helper()
	for _, v := range vips {
		lab.putNATVIP(t, v)
	}
}

// flowKey is the connection-table and nat_flows key of a 5-tuple.
func flowKey(src netip.Addr, sport uint16, dst netip.Addr, dport uint16, proto Protocol) xdplbFlowKey {
	return xdplbFlowKey{Src: src.Unmap().As16(), Dst: dst.Unmap().As16(),
		Sport: toNetPort(sport), Dport: toNetPort(dport), Proto: uint8(proto)}
}

// snatPortOf is the SNAT port a full-NAT flow's connection-table entry
// holds (network order in the top half of flags).
func snatPortOf(v flowVal) uint16 {
	return fromNetPort(uint16(v.Flags >> uint32(xdplbFlowFlagsFLOW_SNAT_PORT_SHIFT)))
}

// conntrack is k's entry in the connection table or, for a half-open
// flow, its way in ct_half (flowEntry).
func (lab *natLab) conntrack(t testing.TB, k xdplbFlowKey) (flowVal, bool) {
	t.Helper()
	v, _, ok := flowEntry(t, lab.d, k)
	return v, ok
}

func (lab *natLab) natFlow(t testing.TB, k xdplbFlowKey) (xdplbNatState, bool) {
	t.Helper()
	var v xdplbNatState
	err := lab.d.objs.NatFlows.Lookup(k, &v)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return v, false
	}
	must(t, err)
	return v, true
}

// now is the program's clock, in kernel ticks.
func (lab *natLab) now(t testing.TB) uint64 {
	t.Helper()
	lab.d.mu.Lock()
	defer lab.d.mu.Unlock()
	n, err := lab.d.ticks.now()
	must(t, err)
	return n
}

// age moves a NAT flow's stamps, in the connection table or ct_half (ct)
// and in nat_flows (reply), ticks into the past: the time the test cannot
// wait.
func (lab *natLab) age(t testing.TB, ct, reply xdplbFlowKey, ticks uint64) {
	t.Helper()
	then := lab.now(t) - ticks
	if v, half, ok := flowEntry(t, lab.d, ct); ok && half {
		ageHalf(t, lab.d, ct, ticks)
	} else if ok {
		v.LastSeen = then
		ctPut(t, lab.d, ct, v)
	}
	ns, ok := lab.natFlow(t, reply)
	if !ok {
		t.Fatalf("age: no nat flow %v", reply)
	}
	ns.LastSeen = then
	must(t, lab.d.objs.NatFlows.Put(reply, ns))
}

// snatTries is SNAT_TRIES of bpf/nat.h.
const snatTries = 16

// snatProbes are the ports a new full-NAT flow with client key k tries,
// in order: from the low half of its flow_hash64.
func snatProbes(d *Datapath, k xdplbFlowKey, r PortRange) []uint16 {
	h := uint32(ctHash(d.ct.seed, &k))
	out := make([]uint16, snatTries)
	for i := range out {
		out[i] = r.Lo + uint16((h+uint32(i))%uint32(r.Size()))
	}
	return out
}

// icmpError describes an ICMP or ICMPv6 error frame (the family is dst's).
type icmpError struct {
	src, dst       netip.Addr
	ttl            uint8 // 64 if zero
	typ, code      uint8
	mtu            uint16 // next-hop MTU (IPv4 type 3 code 4) or packet too big MTU
	quote          []byte // the quoted IP packet, or its first bytes
	srcMAC, dstMAC net.HardwareAddr
	vlan           vlanKind
}

func (e icmpError) build(t testing.TB) []byte {
	t.Helper()
	if e.ttl == 0 {
		e.ttl = 64
	}
	if e.srcMAC == nil {
		e.srcMAC = clientMAC
	}
	if e.dstMAC == nil {
		e.dstMAC = lbInMAC
	}
	if e.dst.Is4() {
		ip := &layers.IPv4{Version: 4, TTL: e.ttl, SrcIP: e.src.AsSlice(), DstIP: e.dst.AsSlice(),
			Protocol: layers.IPProtocolICMPv4, TOS: 0xc0}
		icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(e.typ, e.code), Seq: e.mtu}
		return serialize(t, append(ethLayersFrom(e.srcMAC, e.dstMAC, layers.EthernetTypeIPv4, e.vlan), ip, icmp, gopacket.Payload(e.quote))...)
	}
	ip := &layers.IPv6{Version: 6, HopLimit: e.ttl, SrcIP: e.src.AsSlice(), DstIP: e.dst.AsSlice(),
		NextHeader: layers.IPProtocolICMPv6}
	icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(e.typ, e.code)}
	if err := icmp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	body := binary.BigEndian.AppendUint32(nil, uint32(e.mtu))
	body = append(body, e.quote...)
	return serialize(t, append(ethLayersFrom(e.srcMAC, e.dstMAC, layers.EthernetTypeIPv6, e.vlan), ip, icmp, gopacket.Payload(body))...)
}

// quoted is the IP packet of an Ethernet frame as an ICMP error quotes
// it: whole (l4 < 0) or its IP header and first l4 bytes after it.
func quoted(frame []byte, l4 int) []byte {
	l3 := ipOffset(frame)
	ip := frame[l3:]
	switch ip[0] >> 4 {
	case 4:
		ip = ip[:binary.BigEndian.Uint16(ip[2:])]
	case 6:
		ip = ip[:40+int(binary.BigEndian.Uint16(ip[4:]))]
	}
	if l4 >= 0 {
		hl := 40
		if ip[0]>>4 == 4 {
			hl = int(ip[0]&0xf) * 4
		}
		if hl+l4 < len(ip) {
			ip = ip[:hl+l4]
		}
	}
	return append([]byte(nil), ip...)
}

// reserialized decodes frame with gopacket down to its TCP, UDP, ICMP or
// ICMPv6 header and serialises the decoded layers again, what follows as
// a payload, with ComputeChecksums (lengths as decoded): a frame whose
// checksums are right comes out as it went in. An IPv4 UDP checksum of
// zero (none) is kept.
func reserialized(t testing.TB, frame []byte) []byte {
	t.Helper()
	pkt := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	var ls []gopacket.SerializableLayer
	var nl gopacket.NetworkLayer
	off, udpAt := 0, -1 // where each layer starts; the zero UDP checksum's header
	for _, l := range pkt.Layers() {
		var err error
		l4 := true
		switch l := l.(type) {
		case *layers.IPv4:
			nl, l4 = l, false
		case *layers.IPv6:
			nl, l4 = l, false
		case *layers.TCP:
			err = l.SetNetworkLayerForChecksum(nl)
		case *layers.UDP:
			err = l.SetNetworkLayerForChecksum(nl)
			if _, v4 := nl.(*layers.IPv4); v4 && l.Checksum == 0 {
				udpAt = off
			}
		case *layers.ICMPv6:
			err = l.SetNetworkLayerForChecksum(nl)
		case *layers.ICMPv4:
		default:
			l4 = false
		}
		if err != nil {
			t.Fatal(err)
		}
		s, ok := l.(gopacket.SerializableLayer)
		if !ok {
			t.Fatalf("decode %x: layer %v before L4 cannot be serialised (%v)", frame, l.LayerType(), pkt.ErrorLayer())
		}
		ls = append(ls, s)
		if l4 {
			ls = append(ls, gopacket.Payload(l.LayerPayload()))
			break
		}
		off += len(l.LayerContents())
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true}, ls...); err != nil {
		t.Fatalf("serialize: %v", err)
	}
	out := append([]byte(nil), buf.Bytes()...)
	if udpAt >= 0 && udpAt+8 <= len(out) {
		out[udpAt+6], out[udpAt+7] = 0, 0
	}
	return out
}

// verifyChecksums checks every checksum of frame twice: gopacket's
// decoding and serialising again must give the frame back, and
// checksumErr (which also reads a quoted packet) must find none wrong.
func verifyChecksums(t testing.TB, frame []byte) {
	t.Helper()
	if got := reserialized(t, frame); !bytes.Equal(got, frame) {
		t.Errorf("checksums: serialised again the frame differs\n got %x\nwant %x", frame, got)
	}
	if err := checksumErr(frame); err != nil {
		t.Errorf("checksums: %v in %x", err, frame)
	}
}

// onesSum adds b as big-endian 16-bit words (an odd byte padded) to sum.
func onesSum(sum uint32, b []byte) uint32 {
	for len(b) >= 2 {
		sum += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	return sum
}

func foldSum(sum uint32) uint16 {
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}

// csumOK: a checksummed region (checksum field included) sums to -0.
func csumOK(sum uint32) bool { return foldSum(sum) == 0xffff }

func pseudoSum(src, dst []byte, proto uint8, length int) uint32 {
	s := onesSum(onesSum(0, src), dst)
	return s + uint32(proto) + uint32(length)&0xffff + uint32(length)>>16
}

// l4Err checks a TCP, UDP or ICMPv6 checksum over seg with the
// pseudo-header of src and dst (a UDP datagram is ulen bytes of seg; IPv4
// UDP without checksum passes).
func l4Err(src, dst []byte, proto uint8, seg []byte, what string) error {
	switch proto {
	case 6:
		if len(seg) < 20 {
			return nil
		}
	case 17:
		if len(seg) < 8 {
			return nil
		}
		if len(src) == 4 && seg[6] == 0 && seg[7] == 0 {
			return nil
		}
		if ulen := int(binary.BigEndian.Uint16(seg[4:])); ulen >= 8 && ulen <= len(seg) {
			seg = seg[:ulen]
		}
	case 58:
	default:
		return nil
	}
	if !csumOK(onesSum(pseudoSum(src, dst, proto, len(seg)), seg)) {
		return fmt.Errorf("%s checksum %04x wrong", what, l4Check(proto, seg))
	}
	return nil
}

func l4Check(proto uint8, seg []byte) uint16 {
	off := map[uint8]int{6: 16, 17: 6, 58: 2, 1: 2}[proto]
	if len(seg) < off+2 {
		return 0
	}
	return binary.BigEndian.Uint16(seg[off:])
}

// checksumErr checks every checksum in a frame, as far as it can read it:
// the IPv4 header, TCP or UDP with the pseudo-header, ICMP over the whole
// message, ICMPv6 with the pseudo-header, and in an ICMP error the quoted
// IPv4 header and, when the whole quoted segment is there, its TCP or UDP
// checksum. What it cannot read is not an error.
func checksumErr(frame []byte) error {
	if len(frame) < 14 {
		return nil
	}
	l3 := 14
	et := binary.BigEndian.Uint16(frame[12:])
	if et == 0x8100 || et == 0x88a8 {
		if len(frame) < 18 {
			return nil
		}
		et, l3 = binary.BigEndian.Uint16(frame[16:]), 18
	}
	switch et {
	case 0x0800:
		return ipv4Err(frame[l3:], "")
	case 0x86dd:
		return ipv6Err(frame[l3:], "")
	}
	return nil
}

// ipv4Err checks an IPv4 packet (of at most len(ip) bytes: a quoted one
// may be cut short) and what it carries; in names a quoted packet.
func ipv4Err(ip []byte, in string) error {
	if len(ip) < 20 || ip[0]>>4 != 4 || ip[0]&0xf < 5 {
		return nil
	}
	hl := int(ip[0]&0xf) * 4
	if hl > len(ip) {
		return nil
	}
	if !csumOK(onesSum(0, ip[:hl])) {
		return fmt.Errorf("%sIPv4 header checksum %04x wrong", in, binary.BigEndian.Uint16(ip[10:]))
	}
	total := int(binary.BigEndian.Uint16(ip[2:]))
	if total < hl || total > len(ip) || binary.BigEndian.Uint16(ip[6:])&0x3fff != 0 {
		return nil // cut short (a quote) or a fragment: L4 not checkable
	}
	body := ip[hl:total]
	src, dst := ip[12:16], ip[16:20]
	switch proto := ip[9]; proto {
	case 6, 17:
		return l4Err(src, dst, proto, body, in+map[uint8]string{6: "TCP", 17: "UDP"}[proto])
	case 1:
		if in != "" || len(body) < 8 {
			return nil
		}
		if !csumOK(onesSum(0, body)) {
			return fmt.Errorf("ICMP checksum %04x wrong", binary.BigEndian.Uint16(body[2:]))
		}
		if body[0] == 3 || body[0] == 11 {
			return ipv4Err(body[8:], "quoted ")
		}
	}
	return nil
}

func ipv6Err(ip []byte, in string) error {
	if len(ip) < 40 || ip[0]>>4 != 6 {
		return nil
	}
	plen := int(binary.BigEndian.Uint16(ip[4:]))
	if 40+plen > len(ip) {
		return nil
	}
	body := ip[40 : 40+plen]
	src, dst := ip[8:24], ip[24:40]
	switch nh := ip[6]; nh {
	case 6, 17:
		return l4Err(src, dst, nh, body, in+map[uint8]string{6: "TCP", 17: "UDP"}[nh])
	case 58:
		if in != "" || len(body) < 8 {
			return nil
		}
		if err := l4Err(src, dst, 58, body, "ICMPv6"); err != nil {
			return err
		}
		if body[0] >= 1 && body[0] <= 3 {
			return ipv6Err(body[8:], "quoted ")
		}
	}
	return nil
}

// The checksum checks the NAT tests rely on find a wrong checksum wherever
// it is, and take a right one (and IPv4 UDP's zero) as right. No root.
func TestChecksumChecks(t *testing.T) {
	tcp4 := flow{src: client4, dst: vipAddr4, dport: 80, syn: true, ipv4Options: true}.build(t)
	udp6 := flow{src: client6, dst: vipAddr6, dport: 53, proto: ProtoUDP, vlan: vlan8021Q}.build(t)
	zero := flow{src: client4, dst: vipAddr4, dport: 53, proto: ProtoUDP, noUDPChecksum: true}.build(t)
	icmp4 := icmpError{src: cliRouter4, dst: vipAddr4, typ: 3, code: 4, mtu: 1400,
		quote: quoted(flow{src: vipAddr4, sport: 80, dst: client4, dport: 40000, ack: true}.build(t), -1)}.build(t)
	icmp6 := icmpError{src: cliRouter6, dst: vipAddr6, typ: 2, mtu: 1280,
		quote: quoted(flow{src: vipAddr6, sport: 53, dst: client6, dport: 40000, proto: ProtoUDP}.build(t), -1)}.build(t)
	for name, f := range map[string][]byte{"tcp4": tcp4, "udp6": udp6, "zero udp": zero, "icmp4": icmp4, "icmp6": icmp6} {
		if err := checksumErr(f); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if got := reserialized(t, f); !bytes.Equal(got, f) {
			t.Errorf("%s: serialised again\n got %x\nwant %x", name, got, f)
		}
	}
	// Each offset is inside a checksummed region.
	for _, c := range []struct {
		name  string
		frame []byte
		at    int
	}{
		{"ipv4 header", tcp4, 14 + 8},
		{"tcp", tcp4, len(tcp4) - 1},
		{"udp over ipv6", udp6, 18 + 8},
		{"icmp", icmp4, 14 + 20 + 4},
		{"quoted ipv4 header", icmp4, 14 + 20 + 8 + 8},
		{"quoted tcp", icmp4, len(icmp4) - 1},
		{"icmpv6 pseudo-header", icmp6, 14 + 8},
		{"quoted udp over ipv6", icmp6, len(icmp6) - 1},
	} {
		bad := append([]byte(nil), c.frame...)
		bad[c.at] ^= 0x10
		if checksumErr(bad) == nil {
			t.Errorf("%s: a changed byte at %d went unseen", c.name, c.at)
		}
	}
	// A changed quoted byte breaks the outer ICMP checksum too, which
	// gopacket's check sees.
	bad := append([]byte(nil), icmp4...)
	bad[len(bad)-1] ^= 0x10
	if got := reserialized(t, bad); bytes.Equal(got, bad) {
		t.Error("serialising again did not fix the ICMP checksum of a changed quote")
	}
}
