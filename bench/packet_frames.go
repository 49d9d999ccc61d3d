package bench

// Frames and addresses of the per-packet cost section (packet.go).

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// pktFrameLen is the frame length the program sees (no FCS) wherever the
// headers fit in it; an IPv6 TCP frame's headers alone take 74 bytes.
const pktFrameLen = 64

// MACs of the test-run topology: the frame arrives from the client for the
// load balancer; DR rewrites it to the backend, from the balancer's egress
// MAC, so a rewrite is visible in the bytes.
var (
	pktClientMAC  = net.HardwareAddr{0x02, 0, 0, 0, 0xcc, 0x01}
	pktLBMAC      = net.HardwareAddr{0x02, 0, 0, 0, 0xaa, 0x01}
	pktLBOutMAC   = net.HardwareAddr{0x02, 0, 0, 0, 0xaa, 0x02}
	pktBackendMAC = net.HardwareAddr{0x02, 0, 0, 0, 0xbb, 0x01}
)

// pktFamily is one address family of the benchmark.
type pktFamily struct {
	name    string     // "IPv4", "IPv6"
	client  netip.Addr // first client address; new flows count up from it
	vip     netip.Addr
	other   netip.Addr // an address that is no VIP
	backend netip.Addr
	// Frame offsets the new-flow harness rewrites: the TCP source port
	// and the last 4 bytes of the source address.
	sportOff, saddrOff uint32
}

var pktFamilies = []pktFamily{
	{"IPv4", netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.100"),
		netip.MustParseAddr("10.0.0.200"), netip.MustParseAddr("10.0.1.1"),
		14 + 20, 14 + 12},
	{"IPv6", netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::100"),
		netip.MustParseAddr("2001:db8::200"), netip.MustParseAddr("2001:db8:1::1"),
		14 + 40, 14 + 8 + 12},
}

// Service ports of the VIPs.
const (
	pktTCPPort = 80
	pktUDPPort = 53
)

// pktFlow describes one frame from the client.
type pktFlow struct {
	src, dst     netip.Addr
	sport, dport uint16
	udp          bool
	syn, ack     bool
	// The frame's MACs and TTL (hop limit); zero: from the client to the
	// balancer, TTL 64.
	srcMAC, dstMAC [6]byte
	ttl            uint8
}

// frame serialises f with valid lengths and checksums, padding the L4
// payload so that the frame is pktFrameLen bytes when the headers fit.
func (f pktFlow) frame() ([]byte, error) {
	eth := &layers.Ethernet{SrcMAC: pktClientMAC, DstMAC: pktLBMAC}
	if f.srcMAC != ([6]byte{}) {
		eth.SrcMAC = net.HardwareAddr(f.srcMAC[:])
	}
	if f.dstMAC != ([6]byte{}) {
		eth.DstMAC = net.HardwareAddr(f.dstMAC[:])
	}
	ttl := f.ttl
	if ttl == 0 {
		ttl = 64
	}
	var ip gopacket.SerializableLayer
	var nl gopacket.NetworkLayer
	hdr := 14
	proto := layers.IPProtocolTCP
	if f.udp {
		proto = layers.IPProtocolUDP
	}
	if f.dst.Is4() {
		eth.EthernetType = layers.EthernetTypeIPv4
		v4 := &layers.IPv4{Version: 4, TTL: ttl, Id: 7, Flags: layers.IPv4DontFragment,
			SrcIP: f.src.AsSlice(), DstIP: f.dst.AsSlice(), Protocol: proto}
		ip, nl, hdr = v4, v4, hdr+20
	} else {
		eth.EthernetType = layers.EthernetTypeIPv6
		v6 := &layers.IPv6{Version: 6, HopLimit: ttl, SrcIP: f.src.AsSlice(), DstIP: f.dst.AsSlice(), NextHeader: proto}
		ip, nl, hdr = v6, v6, hdr+40
	}
	var l4 gopacket.SerializableLayer
	if f.udp {
		udp := &layers.UDP{SrcPort: layers.UDPPort(f.sport), DstPort: layers.UDPPort(f.dport)}
		if err := udp.SetNetworkLayerForChecksum(nl); err != nil {
			return nil, fmt.Errorf("udp checksum layer: %w", err)
		}
		l4, hdr = udp, hdr+8
	} else {
		tcp := &layers.TCP{SrcPort: layers.TCPPort(f.sport), DstPort: layers.TCPPort(f.dport),
			Seq: 1000, Ack: 0, SYN: f.syn, ACK: f.ack, Window: 65535}
		if f.ack {
			tcp.Ack = 2000
		}
		if err := tcp.SetNetworkLayerForChecksum(nl); err != nil {
			return nil, fmt.Errorf("tcp checksum layer: %w", err)
		}
		l4, hdr = tcp, hdr+20
	}
	payload := gopacket.Payload(make([]byte, max(0, pktFrameLen-hdr)))
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, eth, ip, l4, payload); err != nil {
		return nil, fmt.Errorf("serialize frame: %w", err)
	}
	return append([]byte(nil), buf.Bytes()...), nil
}

// pktNewFlow is the i-th new flow of a family: distinct source ports, and
// a new source address every 60,000 flows, so no 5-tuple repeats.
func pktNewFlow(fam pktFamily, i int, syn bool) pktFlow {
	src := fam.client
	for range i/60000 + 1 {
		src = src.Next()
	}
	return pktFlow{src: src, dst: fam.vip, sport: uint16(1024 + i%60000), dport: pktTCPPort, syn: syn, ack: !syn}
}

// pktDRRewrite is in as xdplb's DR forwarding must send it: only the MACs
// change, to the backend's and the egress interface's.
func pktDRRewrite(in []byte) []byte {
	out := append([]byte(nil), in...)
	copy(out[0:6], pktBackendMAC)
	copy(out[6:12], pktLBOutMAC)
	return out
}

// pktMACSwap is in as the floor program sends it.
func pktMACSwap(in []byte) []byte {
	out := append([]byte(nil), in...)
	copy(out[0:6], in[6:12])
	copy(out[6:12], in[0:6])
	return out
}
