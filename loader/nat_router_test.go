package loader

import (
	"bytes"
	"fmt"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/vishvananda/netlink"

	"github.com/xdplb/xdplb/internal/testutil"
)

// A NAT packet larger than the egress MTU is answered as a router does:
// ICMP fragmentation needed (DF set) or ICMPv6 packet too big, back out of
// the interface it came in on, from the VIP, quoting the packet as it came.
func TestNATTooBigAnswered(t *testing.T) {
	lab := newNATLab(t, testOptions(""))
	d := lab.d
	const mtu = 1280
	testutil.InNetNS(t, lab.ns, func() error {
		l, err := netlink.LinkByName("srv")
		if err != nil {
			return err
		}
		return netlink.LinkSetMTU(l, mtu)
	})
	for i, fam := range []struct {
		vip, client, backend netip.Addr
	}{{vipAddr4, client4, natBackend4}, {vipAddr6, client6, natBackend6}} {
		id := uint32(i + 1)
		k := VIPKey{Addr: fam.vip, Port: 80, Proto: ProtoTCP}
		must(t, d.PutVIP(k, VIPMeta{ID: id, Mode: ModeNAT, Hash: HashMaglev}))
		must(t, d.PutBackend(Backend{ID: id, VIPID: id, Addr: fam.backend, Port: 8080, Mode: ModeNAT}))
		must(t, d.PutLookupTable(id, fill(d.LookupTableSize(), id)))

		t.Run(fmt.Sprint(fam.vip), func(t *testing.T) {
			in := flow{src: fam.client, dst: fam.vip, dport: 80, ack: true, payload: make([]byte, 1400)}.build(t)
			before := eventCount(t, d, "frag_needed")
			r := lab.run(t, in, lab.cli)
			if r.verdict != xdpTX {
				t.Fatalf("verdict %d, want XDP_TX", r.verdict)
			}
			if got := eventCount(t, d, "frag_needed"); got != before+1 {
				t.Errorf("frag_needed %d, want %d", got, before+1)
			}
			out := gopacket.NewPacket(r.out, layers.LayerTypeEthernet, gopacket.Default)
			eth := out.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
			inEth := gopacket.NewPacket(in, layers.LayerTypeEthernet, gopacket.Default).Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
			if !bytes.Equal(eth.DstMAC, inEth.SrcMAC) || !bytes.Equal(eth.SrcMAC, inEth.DstMAC) {
				t.Errorf("MACs %s -> %s, want swapped %s -> %s", eth.SrcMAC, eth.DstMAC, inEth.DstMAC, inEth.SrcMAC)
			}
			ipStart := 14
			var want []byte
			if fam.vip.Is4() {
				quoted := in[ipStart : ipStart+28]
				ip := &layers.IPv4{Version: 4, IHL: 5, TOS: 0xc0, TTL: 64, Protocol: layers.IPProtocolICMPv4,
					SrcIP: fam.vip.AsSlice(), DstIP: fam.client.AsSlice()}
				icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(3, 4), Seq: mtu}
				want = serialize(t, &layers.Ethernet{SrcMAC: inEth.DstMAC, DstMAC: inEth.SrcMAC, EthernetType: layers.EthernetTypeIPv4},
					ip, icmp, gopacket.Payload(quoted))
			} else {
				quoted := in[ipStart : ipStart+48]
				ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolICMPv6,
					SrcIP: fam.vip.AsSlice(), DstIP: fam.client.AsSlice()}
				icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(2, 0)}
				if err := icmp.SetNetworkLayerForChecksum(ip); err != nil {
					t.Fatal(err)
				}
				// The MTU is the first 4 bytes of the ICMPv6 body.
				body := append([]byte{0, 0, mtu >> 8, mtu & 0xff}, quoted...)
				want = serialize(t, &layers.Ethernet{SrcMAC: inEth.DstMAC, DstMAC: inEth.SrcMAC, EthernetType: layers.EthernetTypeIPv6},
					ip, icmp, gopacket.Payload(body))
			}
			if got := r.out; !bytes.Equal(got, want) {
				t.Errorf("answer\n got % x\nwant % x", got, want)
			}
		})
	}
}

// A NAT packet whose TTL runs out here is answered with time exceeded,
// as a router does, quoting the packet as it came.
func TestNATTTLExceededAnswered(t *testing.T) {
	lab := newNATLab(t, testOptions(""))
	d := lab.d
	for i, fam := range []struct {
		vip, client, backend netip.Addr
	}{{vipAddr4, client4, natBackend4}, {vipAddr6, client6, natBackend6}} {
		id := uint32(i + 1)
		k := VIPKey{Addr: fam.vip, Port: 80, Proto: ProtoTCP}
		must(t, d.PutVIP(k, VIPMeta{ID: id, Mode: ModeNAT, Hash: HashMaglev}))
		must(t, d.PutBackend(Backend{ID: id, VIPID: id, Addr: fam.backend, Port: 8080, Mode: ModeNAT}))
		must(t, d.PutLookupTable(id, fill(d.LookupTableSize(), id)))

		t.Run(fmt.Sprint(fam.vip), func(t *testing.T) {
			in := withTTL(t, flow{src: fam.client, dst: fam.vip, dport: 80, syn: true}.build(t), 1)
			before := eventCount(t, d, "ttl_exceeded")
			r := lab.run(t, in, lab.cli)
			if r.verdict != xdpTX {
				t.Fatalf("verdict %d, want XDP_TX", r.verdict)
			}
			if got := eventCount(t, d, "ttl_exceeded"); got != before+1 {
				t.Errorf("ttl_exceeded %d, want %d", got, before+1)
			}
			inEth := gopacket.NewPacket(in, layers.LayerTypeEthernet, gopacket.Default).Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
			eth := &layers.Ethernet{SrcMAC: inEth.DstMAC, DstMAC: inEth.SrcMAC}
			var want []byte
			if fam.vip.Is4() {
				eth.EthernetType = layers.EthernetTypeIPv4
				ip := &layers.IPv4{Version: 4, IHL: 5, TOS: 0xc0, TTL: 64, Protocol: layers.IPProtocolICMPv4,
					SrcIP: fam.vip.AsSlice(), DstIP: fam.client.AsSlice()}
				want = serialize(t, eth, ip, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(11, 0)}, gopacket.Payload(in[14:14+28]))
			} else {
				eth.EthernetType = layers.EthernetTypeIPv6
				ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolICMPv6,
					SrcIP: fam.vip.AsSlice(), DstIP: fam.client.AsSlice()}
				icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(3, 0)}
				if err := icmp.SetNetworkLayerForChecksum(ip); err != nil {
					t.Fatal(err)
				}
				want = serialize(t, eth, ip, icmp, gopacket.Payload(append([]byte{0, 0, 0, 0}, in[14:14+48]...)))
			}
			if !bytes.Equal(r.out, want) {
				t.Errorf("answer\n got % x\nwant % x", r.out, want)
			}

			// No error to a source that is no single host's: the kernel
			// gets the packet untouched.
			for _, src := range []string{"224.0.0.1", "255.255.255.255", "0.0.0.1", "127.0.0.1", "169.254.1.1", "240.0.0.1", "ff02::1", "::", "::1", "fe80::1"} {
				a := netip.MustParseAddr(src)
				if a.Is4() != fam.vip.Is4() {
					continue
				}
				in := withTTL(t, flow{src: a, dst: fam.vip, dport: 80, sport: 1234, syn: true}.build(t), 1)
				before := eventCount(t, d, "ttl_exceeded")
				if r := lab.run(t, in, lab.cli); r.verdict != xdpPass || !bytes.Equal(r.out, in) {
					t.Errorf("out of TTL from %s: verdict %d, want pass untouched", a, r.verdict)
				}
				if got := eventCount(t, d, "ttl_exceeded"); got != before {
					t.Errorf("out of TTL from %s counted as answered", a)
				}
			}
		})
	}
}

// withTTL is frame with its TTL or hop limit set, checksums recomputed.
func withTTL(t *testing.T, frame []byte, ttl uint8) []byte {
	t.Helper()
	pkt := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	var ls []gopacket.SerializableLayer
	var nl gopacket.NetworkLayer
	for _, l := range pkt.Layers() {
		switch l := l.(type) {
		case *layers.IPv4:
			l.TTL = ttl
			nl = l
		case *layers.IPv6:
			l.HopLimit = ttl
			nl = l
		case *layers.TCP:
			must(t, l.SetNetworkLayerForChecksum(nl))
		case *layers.UDP:
			must(t, l.SetNetworkLayerForChecksum(nl))
		}
		ls = append(ls, l.(gopacket.SerializableLayer))
	}
	return serialize(t, ls...)
}

func eventCount(t *testing.T, d *Datapath, name string) uint64 {
	t.Helper()
	ev, err := d.EventCounters()
	must(t, err)
	if _, ok := ev[name]; !ok {
		t.Fatalf("no event %q in %v", name, ev)
	}
	return ev[name]
}
