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
//     VIP's address.
//
// `go test` runs the seeds; `make fuzz` (and CI, for a bounded time) runs
// `go test -fuzz FuzzXDP`.

// frameKind is what the policy makes of a frame.
type frameKind int

const (
	kindPass      frameKind = iota // not provably ours
	kindFlow                       // well-formed TCP/UDP: flow holds it
	kindFragment                   // dst is set
	kindIPv6Ext                    // dst is set
	kindMalformed                  // L4 header broken; dst is set
)

type frameClass struct {
	kind  frameKind
	dst   netip.Addr
	dport uint16
	proto Protocol
}

// classifyFrame reads b as the policy table in bpf/parse.h describes.
func classifyFrame(b []byte) frameClass {
	if len(b) < 14 {
		return frameClass{}
	}
	etype := binary.BigEndian.Uint16(b[12:])
	l3 := b[14:]
	if etype == 0x8100 || etype == 0x88a8 {
		if len(l3) < 4 {
			return frameClass{}
		}
		etype = binary.BigEndian.Uint16(l3[2:])
		l3 = l3[4:]
	}
	switch etype {
	case 0x0800:
		return classifyIPv4(l3)
	case 0x86dd:
		return classifyIPv6(l3)
	}
	return frameClass{}
}

func classifyIPv4(ip []byte) frameClass {
	if len(ip) < 20 || ip[0]>>4 != 4 || ip[0]&0xf < 5 {
		return frameClass{}
	}
	hlen := int(ip[0]&0xf) * 4
	total := int(binary.BigEndian.Uint16(ip[2:]))
	if total < hlen || total > len(ip) {
		return frameClass{}
	}
	proto := ip[9]
	if proto != 6 && proto != 17 {
		return frameClass{}
	}
	dst := netip.AddrFrom4([4]byte(ip[16:20]))
	if binary.BigEndian.Uint16(ip[6:])&0x3fff != 0 { // MF or an offset
		return frameClass{kind: kindFragment, dst: dst}
	}
	return classifyL4(proto, ip[hlen:total], dst)
}

func classifyIPv6(ip []byte) frameClass {
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
	case 6, 17:
		return classifyL4(nh, ip[40:40+plen], dst)
	}
	return frameClass{}
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
		return frameClass{kind: kindFlow, dst: dst, dport: binary.BigEndian.Uint16(l4[2:]), proto: ProtoTCP}
	}
	if len(l4) < 8 {
		return bad
	}
	if ulen := int(binary.BigEndian.Uint16(l4[4:])); ulen < 8 || ulen > len(l4) {
		return bad
	}
	return frameClass{kind: kindFlow, dst: dst, dport: binary.BigEndian.Uint16(l4[2:]), proto: ProtoUDP}
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
