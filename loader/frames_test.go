package loader

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// MACs of the test topology. The frame arrives for lbInMAC; DR sends it
// from lbOutMAC so the source rewrite is visible in the bytes.
var (
	clientMAC = net.HardwareAddr{0x02, 0, 0, 0, 0xcc, 0x01}
	lbInMAC   = net.HardwareAddr{0x02, 0, 0, 0, 0xaa, 0x01}
	lbOutMAC  = net.HardwareAddr{0x02, 0, 0, 0, 0xaa, 0x02}
)

func backendMAC(id uint32) net.HardwareAddr {
	return net.HardwareAddr{0x02, 0, 0, 0, 0xbb, byte(id)}
}

type vlanKind int

const (
	noVLAN vlanKind = iota
	vlan8021Q
	vlan8021AD
)

// flow describes a test frame; zero fields take defaults in build.
type flow struct {
	src, dst     netip.Addr
	sport, dport uint16
	proto        Protocol
	vlan         vlanKind
	syn, ack     bool
	fin, rst     bool
	payload      []byte
	ipv4Options  bool
	// ttl is the TTL or hop limit, 64 if zero; srcMAC and dstMAC default
	// to clientMAC and lbInMAC.
	ttl            uint8
	srcMAC, dstMAC net.HardwareAddr
	noUDPChecksum  bool // IPv4 UDP sent without a checksum (zero)
	noDF           bool // IPv4 without Don't Fragment
}

func serialize(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
		t.Fatalf("serialize: %v", err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

func ethLayers(ethType layers.EthernetType, v vlanKind) []gopacket.SerializableLayer {
	return ethLayersFrom(clientMAC, lbInMAC, ethType, v)
}

func ethLayersFrom(src, dst net.HardwareAddr, ethType layers.EthernetType, v vlanKind) []gopacket.SerializableLayer {
	eth := &layers.Ethernet{SrcMAC: src, DstMAC: dst, EthernetType: ethType}
	switch v {
	case vlan8021Q:
		eth.EthernetType = layers.EthernetTypeDot1Q
		return []gopacket.SerializableLayer{eth, &layers.Dot1Q{VLANIdentifier: 42, Type: ethType}}
	case vlan8021AD:
		eth.EthernetType = layers.EthernetTypeQinQ
		return []gopacket.SerializableLayer{eth, &layers.Dot1Q{VLANIdentifier: 43, Type: ethType}}
	}
	return []gopacket.SerializableLayer{eth}
}

// build serialises f with valid lengths and checksums.
func (f flow) build(t testing.TB) []byte {
	t.Helper()
	if f.proto == 0 {
		f.proto = ProtoTCP
	}
	if f.sport == 0 {
		f.sport = 40000
	}
	if f.payload == nil {
		f.payload = []byte("hello xdplb")
	}
	if f.ttl == 0 {
		f.ttl = 64
	}
	if f.srcMAC == nil {
		f.srcMAC = clientMAC
	}
	if f.dstMAC == nil {
		f.dstMAC = lbInMAC
	}
	var ls []gopacket.SerializableLayer
	var nl gopacket.NetworkLayer
	if f.dst.Is4() {
		ip := &layers.IPv4{Version: 4, TTL: f.ttl, SrcIP: f.src.AsSlice(), DstIP: f.dst.AsSlice(),
			Protocol: layers.IPProtocol(f.proto), Flags: layers.IPv4DontFragment, Id: 7}
		if f.ipv4Options {
			// Record-route with room for two addresses, padded by an
			// end-of-list: ihl becomes 8.
			ip.Options = []layers.IPv4Option{
				{OptionType: 7, OptionLength: 11, OptionData: []byte{4, 0, 0, 0, 0, 0, 0, 0, 0}},
				{OptionType: 0, OptionLength: 1},
			}
		}
		if f.noDF {
			ip.Flags = 0
		}
		ls, nl = append(ethLayersFrom(f.srcMAC, f.dstMAC, layers.EthernetTypeIPv4, f.vlan), ip), ip
	} else {
		ip := &layers.IPv6{Version: 6, HopLimit: f.ttl, SrcIP: f.src.AsSlice(), DstIP: f.dst.AsSlice(),
			NextHeader: layers.IPProtocol(f.proto)}
		ls, nl = append(ethLayersFrom(f.srcMAC, f.dstMAC, layers.EthernetTypeIPv6, f.vlan), ip), ip
	}
	switch f.proto {
	case ProtoTCP:
		tcp := &layers.TCP{SrcPort: layers.TCPPort(f.sport), DstPort: layers.TCPPort(f.dport),
			Seq: 1000, SYN: f.syn, ACK: f.ack, FIN: f.fin, RST: f.rst, Window: 65535}
		if err := tcp.SetNetworkLayerForChecksum(nl); err != nil {
			t.Fatal(err)
		}
		ls = append(ls, tcp)
	case ProtoUDP:
		udp := &layers.UDP{SrcPort: layers.UDPPort(f.sport), DstPort: layers.UDPPort(f.dport)}
		if err := udp.SetNetworkLayerForChecksum(nl); err != nil {
			t.Fatal(err)
		}
		ls = append(ls, udp)
	}
	ls = append(ls, gopacket.Payload(f.payload))
	b := serialize(t, ls...)
	if f.noUDPChecksum && f.proto == ProtoUDP && f.dst.Is4() {
		l3 := ipOffset(b)
		l4 := l3 + int(b[l3]&0xf)*4
		b[l4+6], b[l4+7] = 0, 0
	}
	return b
}

// ipOffset is where the IP header of an Ethernet frame starts: after one
// VLAN tag if there is one.
func ipOffset(frame []byte) int {
	if et := binary.BigEndian.Uint16(frame[12:]); et == 0x8100 || et == 0x88a8 {
		return 18
	}
	return 14
}

func arpRequest(t testing.TB, target netip.Addr) []byte {
	arp := &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4,
		HwAddressSize: 6, ProtAddressSize: 4, Operation: layers.ARPRequest,
		SourceHwAddress: clientMAC, SourceProtAddress: []byte{10, 0, 0, 1},
		DstHwAddress: make([]byte, 6), DstProtAddress: target.AsSlice()}
	eth := &layers.Ethernet{SrcMAC: clientMAC, DstMAC: layers.EthernetBroadcast, EthernetType: layers.EthernetTypeARP}
	return serialize(t, eth, arp)
}

func neighborSolicitation(t testing.TB, src, target netip.Addr) []byte {
	t16 := target.As16()
	dst := netip.AddrFrom16([16]byte{0xff, 0x02, 11: 1, 12: 0xff, 13: t16[13], 14: t16[14], 15: t16[15]})
	ip := &layers.IPv6{Version: 6, HopLimit: 255, SrcIP: src.AsSlice(), DstIP: dst.AsSlice(), NextHeader: layers.IPProtocolICMPv6}
	icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeNeighborSolicitation, 0)}
	if err := icmp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	ns := &layers.ICMPv6NeighborSolicitation{TargetAddress: target.AsSlice(),
		Options: layers.ICMPv6Options{{Type: layers.ICMPv6OptSourceAddress, Data: clientMAC}}}
	eth := &layers.Ethernet{SrcMAC: clientMAC, DstMAC: net.HardwareAddr{0x33, 0x33, 0xff, t16[13], t16[14], t16[15]}, EthernetType: layers.EthernetTypeIPv6}
	return serialize(t, eth, ip, icmp, ns)
}

func icmpEcho(t testing.TB, src, dst netip.Addr) []byte {
	if dst.Is4() {
		ip := &layers.IPv4{Version: 4, TTL: 64, SrcIP: src.AsSlice(), DstIP: dst.AsSlice(), Protocol: layers.IPProtocolICMPv4}
		icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: 1, Seq: 1}
		return serialize(t, append(ethLayers(layers.EthernetTypeIPv4, noVLAN), ip, icmp, gopacket.Payload("ping"))...)
	}
	ip := &layers.IPv6{Version: 6, HopLimit: 64, SrcIP: src.AsSlice(), DstIP: dst.AsSlice(), NextHeader: layers.IPProtocolICMPv6}
	icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeEchoRequest, 0)}
	if err := icmp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	return serialize(t, append(ethLayers(layers.EthernetTypeIPv6, noVLAN), ip, icmp, &layers.ICMPv6Echo{Identifier: 1, SeqNumber: 1})...)
}

// Raw frames for what gopacket will not produce: inconsistent lengths,
// fragments, extension headers. No checksums: the program never reads them.

func rawEth(ethType uint16) []byte {
	b := append(append([]byte(nil), lbInMAC...), clientMAC...)
	return binary.BigEndian.AppendUint16(b, ethType)
}

// rawIPv4 is an IPv4 header with total length 20+len(l4) and the given
// flags/fragment-offset word.
func rawIPv4(src, dst netip.Addr, proto uint8, fragWord uint16, l4 []byte) []byte {
	h := make([]byte, 20)
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:], uint16(20+len(l4)))
	binary.BigEndian.PutUint16(h[6:], fragWord)
	h[8], h[9] = 64, proto
	s, d := src.As4(), dst.As4()
	copy(h[12:], s[:])
	copy(h[16:], d[:])
	f := append(rawEth(0x0800), h...)
	return append(f, l4...)
}

// rawIPv6 is an IPv6 header with payload length len(payload).
func rawIPv6(src, dst netip.Addr, nexthdr uint8, payload []byte) []byte {
	h := make([]byte, 40)
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(payload)))
	h[6], h[7] = nexthdr, 64
	s, d := src.As16(), dst.As16()
	copy(h[8:], s[:])
	copy(h[24:], d[:])
	f := append(rawEth(0x86dd), h...)
	return append(f, payload...)
}

// tcpHeader is a TCP header of hlen bytes with the given data offset.
func tcpHeader(sport, dport uint16, doff uint8, hlen int) []byte {
	h := make([]byte, hlen)
	binary.BigEndian.PutUint16(h[0:], sport)
	binary.BigEndian.PutUint16(h[2:], dport)
	if hlen > 12 {
		h[12] = doff << 4
	}
	return h
}

func udpHeader(sport, dport, ulen uint16, total int) []byte {
	h := make([]byte, total)
	binary.BigEndian.PutUint16(h[0:], sport)
	binary.BigEndian.PutUint16(h[2:], dport)
	if total >= 6 {
		binary.BigEndian.PutUint16(h[4:], ulen)
	}
	return h
}
