package bench

import (
	"math"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

func TestPacketFrames(t *testing.T) {
	for _, fam := range pktFamilies {
		tests := []struct {
			name string
			f    pktFlow
			len  int
		}{
			{"tcp syn", pktFlow{src: fam.client, dst: fam.vip, sport: 1, dport: 80, syn: true}, 64},
			{"tcp ack", pktFlow{src: fam.client, dst: fam.vip, sport: 1, dport: 80, ack: true}, 64},
			{"udp", pktFlow{src: fam.client, dst: fam.vip, sport: 1, dport: 53, udp: true}, 64},
		}
		if fam.vip.Is6() {
			tests[0].len, tests[1].len = 74, 74 // 14+40+20: no room for padding
		}
		for _, tt := range tests {
			t.Run(fam.name+" "+tt.name, func(t *testing.T) {
				b, err := tt.f.frame()
				if err != nil {
					t.Fatal(err)
				}
				if len(b) != tt.len {
					t.Fatalf("frame is %d bytes, want %d", len(b), tt.len)
				}
				p := gopacket.NewPacket(b, layers.LayerTypeEthernet, gopacket.Default)
				// Zero padding to port 53 is no DNS message; only the
				// layers up to L4 must decode.
				if el := p.ErrorLayer(); el != nil && p.TransportLayer() == nil {
					t.Fatalf("decode: %v", el.Error())
				}
				// The IP length covers the whole frame: padding is payload.
				switch ip := p.NetworkLayer().(type) {
				case *layers.IPv4:
					if int(ip.Length) != len(b)-14 {
						t.Fatalf("ipv4 length %d in a %d-byte frame", ip.Length, len(b))
					}
				case *layers.IPv6:
					if int(ip.Length) != len(b)-54 {
						t.Fatalf("ipv6 payload length %d in a %d-byte frame", ip.Length, len(b))
					}
				default:
					t.Fatalf("no ip layer in %x", b)
				}
			})
		}
	}
}

func TestPacketNewFlowsDistinct(t *testing.T) {
	seen := map[pktFlow]bool{}
	for _, fam := range pktFamilies {
		for _, i := range []int{0, 1, 59999, 60000, 60001, 130000} {
			f := pktNewFlow(fam, i, true)
			if seen[f] || f.src == fam.client {
				t.Fatalf("flow %d of %s %+v repeats or uses the established flows' client", i, fam.name, f)
			}
			seen[f] = true
		}
	}
}

func TestPacketStats(t *testing.T) {
	xs := []float64{5, 1, 4, 2, 3}
	if got := pktMedian(xs); got != 3 {
		t.Errorf("median %v, want 3", got)
	}
	if got := pktQuantile(xs, 0.25); got != 2 {
		t.Errorf("p25 %v, want 2", got)
	}
	if got := pktQuantile([]float64{1, 2}, 0.5); got != 1.5 {
		t.Errorf("median of 1,2 = %v, want 1.5", got)
	}
	// Middle half of 1..8 is 3..6.
	if got := pktIQM([]float64{8, 1, 7, 2, 6, 3, 5, 4}); got != 4.5 {
		t.Errorf("iqm %v, want 4.5", got)
	}
	if !math.IsNaN(pktMedian(nil)) || !math.IsNaN(pktIQM(nil)) {
		t.Error("statistics of no samples are not NaN")
	}
	if xs[0] != 5 {
		t.Error("statistics sorted their input in place")
	}
}

func TestPacketNATFrameChecksums(t *testing.T) {
	for _, fam := range pktFamilies {
		f := pktFlow{src: fam.client, dst: fam.vip, sport: 40000, dport: 80, ack: true, ttl: 63,
			srcMAC: [6]byte(pktSrvMAC), dstMAC: [6]byte(pktBackendMAC)}
		b, err := f.frame()
		if err != nil {
			t.Fatal(err)
		}
		if err := pktCheckNATFrame(b); err != nil {
			t.Fatalf("%s: a frame gopacket made fails the check: %v", fam.name, err)
		}
		if b[0] != pktBackendMAC[0] || b[5] != pktBackendMAC[5] || b[11] != pktSrvMAC[5] {
			t.Fatalf("%s: MACs not the ones asked for: %x", fam.name, b[:12])
		}
		// One bit off in the last byte: the TCP checksum must fail.
		bad := append([]byte(nil), b...)
		bad[len(bad)-1] ^= 1
		if err := pktCheckNATFrame(bad); err == nil {
			t.Fatalf("%s: a corrupted frame passes the checksum check", fam.name)
		}
	}
}

func TestPacketHarnessedSeries(t *testing.T) {
	var s pktSeries
	// Floor alone 20 ns, behind the harness 30 (harness 10), xdplb behind
	// it 110: xdplb's own cost is 100 ns, 5x the floor's.
	s.addHarnessed(20, 30, 110)
	if s.harness[0] != 10 || s.own[0] != 5 || s.ratio[0] != 110.0/30 {
		t.Fatalf("harness %v, own %v, ratio %v; want 10, 5, %v", s.harness, s.own, s.ratio, 110.0/30)
	}
}

func TestPacketHarnessedVsSeries(t *testing.T) {
	var s pktSeries
	// Floor alone 20 ns, behind the harness 30 (harness 10); xdplb
	// without a limit 1010 ns behind it, with one 1060: 1050 ns of
	// xdplb's own against 1000, 1.05x.
	s.addHarnessedVs(20, 30, 1060, 1010)
	if len(s.vs) != 1 || math.Abs(s.vs[0]-1.05) > 1e-12 || s.harness[0] != 10 || s.xdplb[0] != 1060 {
		t.Fatalf("vs %v, harness %v, xdplb %v; want 1.05, 10, 1060", s.vs, s.harness, s.xdplb)
	}
}

func TestPacketVsRows(t *testing.T) {
	for path, vs := range pktVs {
		// Measured in the same rounds as their base, without a floor
		// target of their own.
		if pktTableFullOnly(path) != pktTableFullOnly(vs.base) || pktLimits[path] != 0 || vs.limit <= 1 {
			t.Errorf("%s against %s: rounds or targets do not match", pktPathNames[path], pktPathNames[vs.base])
		}
	}
}

// The rate-limited VIP's bucket holds every flow a full run can send it,
// retries included: no flow is refused even if the clock stood still.
func TestPacketRateLimitAdmitsAll(t *testing.T) {
	for _, quick := range []bool{false, true} {
		p := pktParamsFor(quick)
		if most := p.rounds*p.newRepeat*(p.retries+1) + 2; most >= int(pktRateLimit.Burst) {
			t.Errorf("quick %v: up to %d flows to a bucket of %d", quick, most, pktRateLimit.Burst)
		}
	}
}
