package loader

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/xdplb/xdplb/internal/testutil"
)

const (
	testLookupSize = 251 // prime, small: tables are written per test
	loIfindex      = 1   // BPF_PROG_RUN's default ingress device is lo
)

var (
	client4  = netip.MustParseAddr("10.0.0.1")
	client6  = netip.MustParseAddr("2001:db8::1")
	vipAddr4 = netip.MustParseAddr("10.0.0.100")
	vipAddr6 = netip.MustParseAddr("2001:db8::100")
	other4   = netip.MustParseAddr("10.0.0.200")
	other6   = netip.MustParseAddr("2001:db8::200")

	vip4TCP = VIPKey{Addr: vipAddr4, Port: 80, Proto: ProtoTCP}
	vip4UDP = VIPKey{Addr: vipAddr4, Port: 53, Proto: ProtoUDP}
	vip6TCP = VIPKey{Addr: vipAddr6, Port: 80, Proto: ProtoTCP}
	vip6UDP = VIPKey{Addr: vipAddr6, Port: 53, Proto: ProtoUDP}
)

func testOptions(bpffs string) Options {
	return Options{
		BPFFS:         bpffs,
		LookupSize:    testLookupSize,
		ConntrackSize: 4096,
		MaxVIPs:       16,
		MaxBackends:   64,
		Logger:        slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
}

func load(t testing.TB, opts Options) *Datapath {
	t.Helper()
	d, err := Load(opts)
	if err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			t.Fatalf("load: %+v", verr)
		}
		t.Fatalf("load: %v", err)
	}
	return d
}

// newDatapath loads into a private bpffs; Remove runs at cleanup.
func newDatapath(t *testing.T) *Datapath {
	t.Helper()
	testutil.RequireRoot(t)
	d := load(t, testOptions(testutil.MountBPFFS(t)))
	t.Cleanup(func() {
		if err := d.Remove(); err != nil {
			t.Errorf("remove: %v", err)
		}
	})
	return d
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func fill(n uint32, ids ...uint32) []uint32 {
	tbl := make([]uint32, n)
	for i := range tbl {
		tbl[i] = ids[i%len(ids)]
	}
	return tbl
}

func putBackend(t testing.TB, d *Datapath, id, vipID uint32, addr netip.Addr, ifindex uint32) {
	t.Helper()
	must(t, d.PutBackend(Backend{ID: id, VIPID: vipID, Addr: addr, MAC: backendMAC(id), SrcMAC: lbOutMAC, Ifindex: ifindex}))
}

// setupVIPs configures four VIPs (v4/v6 x tcp/udp), ids 1..4, each with
// one backend of the same id whose table fills every slot.
func setupVIPs(t testing.TB, d *Datapath) {
	t.Helper()
	for i, k := range []VIPKey{vip4TCP, vip4UDP, vip6TCP, vip6UDP} {
		id := uint32(i + 1)
		must(t, d.PutVIP(k, VIPMeta{ID: id, Mode: ModeDR, Hash: HashMaglev}))
		be := netip.MustParseAddr(fmt.Sprintf("10.0.1.%d", id))
		if k.Addr.Is6() {
			be = netip.MustParseAddr(fmt.Sprintf("2001:db8:1::%d", id))
		}
		putBackend(t, d, id, id, be, loIfindex)
		must(t, d.PutLookupTable(id, fill(d.LookupTableSize(), id)))
	}
}

type result struct {
	verdict uint32
	out     []byte
}

func run(t testing.TB, prog *ebpf.Program, in []byte) (result, error) {
	t.Helper()
	opts := ebpf.RunOptions{Data: in, DataOut: make([]byte, len(in)+256)}
	v, err := prog.Run(&opts)
	return result{v, opts.DataOut}, err
}

func mustRun(t testing.TB, prog *ebpf.Program, in []byte) result {
	t.Helper()
	r, err := run(t, prog, in)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	return r
}

const (
	xdpAborted  = 0
	xdpDrop     = 1
	xdpPass     = 2
	xdpTX       = 3
	xdpRedirect = 4
)

// rewritten is in with the MACs DR writes for backend id.
func rewritten(in []byte, id uint32) []byte {
	out := append([]byte(nil), in...)
	copy(out[0:6], backendMAC(id))
	copy(out[6:12], lbOutMAC)
	return out
}

func TestForwardDR(t *testing.T) {
	d := newDatapath(t)
	setupVIPs(t, d)
	// Backend 5 leaves by another interface: bpf_redirect.
	vipRedir := VIPKey{Addr: vipAddr4, Port: 443, Proto: ProtoTCP}
	must(t, d.PutVIP(vipRedir, VIPMeta{ID: 5, Mode: ModeDR, Hash: HashSource}))
	putBackend(t, d, 5, 5, netip.MustParseAddr("10.0.1.5"), 7)
	must(t, d.PutLookupTable(5, fill(testLookupSize, 5)))

	tests := []struct {
		name    string
		in      []byte
		verdict uint32
		backend uint32
	}{
		{"ipv4 tcp", flow{src: client4, dst: vipAddr4, dport: 80, syn: true}.build(t), xdpTX, 1},
		{"ipv4 udp", flow{src: client4, dst: vipAddr4, dport: 53, proto: ProtoUDP}.build(t), xdpTX, 2},
		{"ipv6 tcp", flow{src: client6, dst: vipAddr6, dport: 80, syn: true}.build(t), xdpTX, 3},
		{"ipv6 udp", flow{src: client6, dst: vipAddr6, dport: 53, proto: ProtoUDP}.build(t), xdpTX, 4},
		{"ipv4 tcp 802.1q", flow{src: client4, dst: vipAddr4, dport: 80, vlan: vlan8021Q}.build(t), xdpTX, 1},
		{"ipv6 udp 802.1ad", flow{src: client6, dst: vipAddr6, dport: 53, proto: ProtoUDP, vlan: vlan8021AD}.build(t), xdpTX, 4},
		{"ipv4 options", flow{src: client4, dst: vipAddr4, dport: 80, ipv4Options: true}.build(t), xdpTX, 1},
		{"ipv4 tcp empty payload", flow{src: client4, dst: vipAddr4, dport: 80, payload: []byte{}}.build(t), xdpTX, 1},
		{"redirect to other interface", flow{src: client4, dst: vipAddr4, dport: 443}.build(t), xdpRedirect, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustRun(t, d.Program(), tt.in)
			if r.verdict != tt.verdict {
				t.Fatalf("verdict %d, want %d", r.verdict, tt.verdict)
			}
			if want := rewritten(tt.in, tt.backend); !bytes.Equal(r.out, want) {
				t.Fatalf("output\n got %x\nwant %x", r.out, want)
			}
		})
	}
	if t.Failed() {
		return
	}
	drops, err := d.DropCounters()
	must(t, err)
	for reason, n := range drops {
		if n != 0 {
			t.Errorf("drop %s = %d, want 0", reason, n)
		}
	}
}

func TestPassUntouched(t *testing.T) {
	d := newDatapath(t)
	setupVIPs(t, d)
	qinq := flow{src: client4, dst: vipAddr4, dport: 80, vlan: vlan8021Q}.build(t)
	// A second 802.1Q tag inside the first one: not parsed, so passed.
	qinq = append(qinq[:16:16], append([]byte{0x81, 0x00, 0x00, 0x07}, qinq[16:]...)...)
	nonIP := append(rawEth(0x88cc), make([]byte, 46)...) // LLDP

	tests := []struct {
		name string
		in   []byte
	}{
		{"vip address wrong port", flow{src: client4, dst: vipAddr4, dport: 81}.build(t)},
		{"vip address wrong proto", flow{src: client4, dst: vipAddr4, dport: 80, proto: ProtoUDP}.build(t)},
		{"ipv6 vip address wrong port", flow{src: client6, dst: vipAddr6, dport: 8080}.build(t)},
		{"ipv6 vip address wrong proto", flow{src: client6, dst: vipAddr6, dport: 53}.build(t)},
		{"other address", flow{src: client4, dst: other4, dport: 80}.build(t)},
		{"other ipv6 address", flow{src: client6, dst: other6, dport: 80}.build(t)},
		{"arp for vip", arpRequest(t, vipAddr4)},
		{"ndp solicitation for vip", neighborSolicitation(t, client6, vipAddr6)},
		{"icmp echo to vip", icmpEcho(t, client4, vipAddr4)},
		{"icmpv6 echo to vip", icmpEcho(t, client6, vipAddr6)},
		{"non-ip", nonIP},
		{"two vlan tags", qinq},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustRun(t, d.Program(), tt.in)
			if r.verdict != xdpPass {
				t.Fatalf("verdict %d, want pass", r.verdict)
			}
			if !bytes.Equal(r.out, tt.in) {
				t.Fatalf("frame changed\n got %x\nwant %x", r.out, tt.in)
			}
		})
	}
	vc, err := d.VIPCounters()
	must(t, err)
	for id, c := range vc {
		if c != (Counters{}) {
			t.Errorf("vip %d counted %+v for passed traffic", id, c)
		}
	}
}

// Every prefix of a VIP frame: below 14 bytes BPF_PROG_RUN refuses the
// input; any other cut is passed untouched (policy in bpf/parse.h: an L2
// or L3 header cut short, or an IP length beyond the frame, is not
// provably ours); only the whole frame is forwarded.
func TestTruncatedFrames(t *testing.T) {
	d := newDatapath(t)
	setupVIPs(t, d)
	frames := map[string][]byte{
		"ipv4 tcp":         flow{src: client4, dst: vipAddr4, dport: 80}.build(t),
		"ipv4 udp":         flow{src: client4, dst: vipAddr4, dport: 53, proto: ProtoUDP}.build(t),
		"ipv6 tcp":         flow{src: client6, dst: vipAddr6, dport: 80}.build(t),
		"ipv6 udp":         flow{src: client6, dst: vipAddr6, dport: 53, proto: ProtoUDP}.build(t),
		"ipv4 tcp vlan":    flow{src: client4, dst: vipAddr4, dport: 80, vlan: vlan8021Q}.build(t),
		"ipv4 tcp options": flow{src: client4, dst: vipAddr4, dport: 80, ipv4Options: true}.build(t),
	}
	passes, txs := uint64(0), uint64(0)
	for name, full := range frames {
		t.Run(name, func(t *testing.T) {
			end := ipEnd(t, full)
			for n := 0; n <= len(full); n++ {
				in := append([]byte(nil), full[:n]...)
				r, err := run(t, d.Program(), in)
				switch {
				case n < 14:
					if err == nil {
						t.Fatalf("len %d: kernel ran a frame shorter than ethernet (verdict %d)", n, r.verdict)
					}
				case n < end:
					if err != nil {
						t.Fatalf("len %d: %v", n, err)
					}
					if r.verdict != xdpPass || !bytes.Equal(r.out, in) {
						t.Fatalf("len %d: verdict %d out %x, want pass untouched", n, r.verdict, r.out)
					}
					passes++
				default:
					// Complete up to the IP length: only Ethernet
					// padding is missing, the frame is whole.
					if err != nil || r.verdict != xdpTX {
						t.Fatalf("len %d (ip ends at %d): verdict %d err %v, want tx", n, end, r.verdict, err)
					}
					if !bytes.Equal(r.out[12:], in[12:]) {
						t.Fatalf("len %d: forwarded frame changed beyond the MACs", n)
					}
					txs++
				}
			}
		})
	}
	drops, err := d.DropCounters()
	must(t, err)
	for reason, n := range drops {
		if n != 0 {
			t.Errorf("drop %s = %d, want 0", reason, n)
		}
	}
	acts := actionsOn(t, d, loIfindex)
	if acts["pass"] != passes || acts["tx"] != txs || acts["aborted"] != 0 {
		t.Errorf("actions %v, want pass %d tx %d", acts, passes, txs)
	}
}

// ipEnd is where the IP packet of a well-formed frame ends; gopacket pads
// short frames to the 60-byte Ethernet minimum beyond it.
func ipEnd(t testing.TB, frame []byte) int {
	t.Helper()
	l2 := 14
	if et := binary.BigEndian.Uint16(frame[12:]); et == 0x8100 || et == 0x88a8 {
		l2 += 4
	}
	switch frame[l2] >> 4 {
	case 4:
		return l2 + int(binary.BigEndian.Uint16(frame[l2+2:]))
	case 6:
		return l2 + 40 + int(binary.BigEndian.Uint16(frame[l2+4:]))
	}
	t.Fatalf("frame has no ip header at %d", l2)
	return 0
}

func actionsOn(t testing.TB, d *Datapath, ifindex uint32) map[string]uint64 {
	t.Helper()
	acs, err := d.ActionCounters()
	must(t, err)
	out := map[string]uint64{}
	for _, a := range acs {
		if a.Ifindex == ifindex {
			out[a.Action] += a.Count
		}
	}
	return out
}

// checkDrops runs frames expected to be dropped (for a reason) or passed
// untouched, then compares the drop counters with the expectation.
type dropCase struct {
	name   string
	in     []byte
	reason string // "" means pass untouched
}

func checkDrops(t *testing.T, d *Datapath, tests []dropCase) {
	t.Helper()
	want := map[string]uint64{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustRun(t, d.Program(), tt.in)
			switch {
			case tt.reason == "" && (r.verdict != xdpPass || !bytes.Equal(r.out, tt.in)):
				t.Errorf("verdict %d out %x, want pass untouched", r.verdict, r.out)
			case tt.reason != "" && r.verdict != xdpDrop:
				t.Errorf("verdict %d, want drop (%s)", r.verdict, tt.reason)
			}
		})
		if tt.reason != "" {
			want[tt.reason]++
		}
	}
	got, err := d.DropCounters()
	must(t, err)
	for reason, n := range got {
		if n != want[reason] {
			t.Errorf("drop %s = %d, want %d", reason, n, want[reason])
		}
	}
	for reason := range want {
		if _, ok := got[reason]; !ok {
			t.Errorf("no drop counter named %s", reason)
		}
	}
}

// L4 headers that are short by the IP header's own length (so the frame
// is complete): dropped when addressed to a VIP address, else passed.
func TestMalformedL4(t *testing.T) {
	d := newDatapath(t)
	setupVIPs(t, d)
	var tests []dropCase
	for _, dst := range []netip.Addr{vipAddr4, other4, vipAddr6, other6} {
		reason := ""
		if dst == vipAddr4 || dst == vipAddr6 {
			reason = "malformed_l4"
		}
		frame := func(proto uint8, l4 []byte) []byte {
			if dst.Is4() {
				return rawIPv4(client4, dst, proto, 0, l4)
			}
			return rawIPv6(client6, dst, proto, l4)
		}
		add := func(name string, proto uint8, l4 []byte) {
			tests = append(tests, dropCase{fmt.Sprintf("%s to %s", name, dst), frame(proto, l4), reason})
		}
		add("tcp 12 bytes", 6, tcpHeader(1, 80, 5, 12))
		add("tcp doff 4", 6, tcpHeader(1, 80, 4, 20))
		add("tcp doff beyond length", 6, tcpHeader(1, 80, 15, 24))
		add("udp 4 bytes", 17, udpHeader(1, 53, 8, 4))
		add("udp length 4", 17, udpHeader(1, 53, 4, 8))
		add("udp length beyond", 17, udpHeader(1, 53, 30, 12))
	}
	// The same checks accept a header that is exactly right.
	okTCP := rawIPv4(client4, other4, 6, 0, tcpHeader(1, 80, 5, 20))
	okUDP := rawIPv6(client6, other6, 17, udpHeader(1, 53, 8, 8))
	tests = append(tests, dropCase{"minimal tcp not a vip", okTCP, ""}, dropCase{"minimal udp not a vip", okUDP, ""})
	checkDrops(t, d, tests)
}

func TestFragmentsAndExtensionHeaders(t *testing.T) {
	d := newDatapath(t)
	setupVIPs(t, d)
	tcp := tcpHeader(40000, 80, 5, 20)
	fragHdr := append([]byte{6, 0, 0, 1, 0, 0, 0, 9}, tcp...)  // offset 0, MF, next TCP
	hopByHop := append([]byte{6, 0, 1, 4, 0, 0, 0, 0}, tcp...) // PadN, next TCP
	dstOpts := append([]byte{17, 0, 1, 4, 0, 0, 0, 0}, udpHeader(1, 53, 8, 8)...)
	checkDrops(t, d, []dropCase{
		{"ipv4 first fragment to vip", rawIPv4(client4, vipAddr4, 6, 0x2000, tcp), "fragment"},
		{"ipv4 later fragment to vip", rawIPv4(client4, vipAddr4, 6, 0x0010, make([]byte, 16)), "fragment"},
		{"ipv4 fragment to vip address other port", rawIPv4(client4, vipAddr4, 6, 0x2000, tcpHeader(1, 9999, 5, 20)), "fragment"},
		{"ipv4 fragment to other", rawIPv4(client4, other4, 6, 0x2000, tcp), ""},
		{"ipv4 df is not a fragment", rawIPv4(client4, other4, 6, 0x4000, tcp), ""},
		{"ipv6 fragment to vip", rawIPv6(client6, vipAddr6, 44, fragHdr), "fragment"},
		{"ipv6 fragment to other", rawIPv6(client6, other6, 44, fragHdr), ""},
		{"ipv6 hop-by-hop to vip", rawIPv6(client6, vipAddr6, 0, hopByHop), "ipv6_ext"},
		{"ipv6 dst options to vip", rawIPv6(client6, vipAddr6, 60, dstOpts), "ipv6_ext"},
		{"ipv6 hop-by-hop to other", rawIPv6(client6, other6, 0, hopByHop), ""},
	})
}

func TestNoBackend(t *testing.T) {
	d := newDatapath(t)
	setupVIPs(t, d)
	// VIP 5: no table at all. VIP 6: a table of empty slots. VIP 7: a
	// table naming a backend that does not exist. VIP 8: a table naming
	// VIP 1's backend.
	for i, port := range []uint16{1005, 1006, 1007, 1008} {
		must(t, d.PutVIP(VIPKey{Addr: vipAddr4, Port: port, Proto: ProtoTCP}, VIPMeta{ID: uint32(5 + i), Mode: ModeDR, Hash: HashMaglev}))
	}
	must(t, d.PutLookupTable(6, make([]uint32, testLookupSize)))
	must(t, d.PutLookupTable(7, fill(testLookupSize, 33)))
	must(t, d.PutLookupTable(8, fill(testLookupSize, 1)))
	to := func(port uint16) []byte { return flow{src: client4, dst: vipAddr4, dport: port, syn: true}.build(t) }
	checkDrops(t, d, []dropCase{
		{"no table", to(1005), "no_backend"},
		{"empty slots", to(1006), "no_backend"},
		{"missing backend", to(1007), "backend_invalid"},
		{"backend of another vip", to(1008), "backend_invalid"},
	})
	must(t, d.DeleteLookupTable(8))
	tbl, err := d.LookupTable(8)
	must(t, err)
	if tbl != nil {
		t.Errorf("deleted table still has %d entries", len(tbl))
	}
	vc, err := d.VIPCounters()
	must(t, err)
	for id := uint32(5); id <= 8; id++ {
		if vc[id].Packets != 1 || vc[id].Flows != 0 {
			t.Errorf("vip %d counters %+v, want 1 packet and no flow", id, vc[id])
		}
	}
}

func backendOf(t *testing.T, r result) uint32 {
	t.Helper()
	if r.verdict != xdpTX {
		t.Fatalf("verdict %d, want tx", r.verdict)
	}
	return uint32(r.out[5])
}

func TestConntrackKeepsBackend(t *testing.T) {
	d := newDatapath(t)
	must(t, d.PutVIP(vip4TCP, VIPMeta{ID: 1, Mode: ModeDR, Hash: HashMaglev}))
	putBackend(t, d, 10, 1, netip.MustParseAddr("10.0.1.10"), loIfindex)
	putBackend(t, d, 11, 1, netip.MustParseAddr("10.0.1.11"), loIfindex)
	must(t, d.PutLookupTable(1, fill(testLookupSize, 10)))

	flow1 := flow{src: client4, dst: vipAddr4, dport: 80, sport: 50001}
	syn1, ack1 := flow1, flow1
	syn1.syn, ack1.ack = true, true
	if got := backendOf(t, mustRun(t, d.Program(), syn1.build(t))); got != 10 {
		t.Fatalf("syn went to backend %d, want 10", got)
	}

	// Every slot now names backend 11.
	must(t, d.PutLookupTable(1, fill(testLookupSize, 11)))
	if got := backendOf(t, mustRun(t, d.Program(), ack1.build(t))); got != 10 {
		t.Fatalf("established flow moved to backend %d after the table changed", got)
	}
	flow2 := flow{src: client4, dst: vipAddr4, dport: 80, sport: 50002, syn: true}
	if got := backendOf(t, mustRun(t, d.Program(), flow2.build(t))); got != 11 {
		t.Fatalf("new flow went to backend %d, want 11 from the new table", got)
	}
	fb := flowsByBackend(t, d)
	if fb[10] != 1 || fb[11] != 1 || len(fb) != 2 {
		t.Fatalf("flows by backend %v, want 10:1 11:1", fb)
	}

	// Backend 10 goes away: its flow is scheduled again, by the new table.
	must(t, d.DeleteBackend(10))
	if got := backendOf(t, mustRun(t, d.Program(), ack1.build(t))); got != 11 {
		t.Fatalf("flow of a deleted backend went to %d, want 11", got)
	}
	fb = flowsByBackend(t, d)
	if fb[11] != 2 || len(fb) != 1 {
		t.Fatalf("flows by backend %v, want 11:2", fb)
	}
	n, err := d.ConntrackEntries()
	must(t, err)
	if n != 2 {
		t.Fatalf("conntrack entries %d, want 2", n)
	}
	bc, err := d.BackendCounters()
	must(t, err)
	// Backend 11: the new flow, then flow 1's rescheduled packet.
	if bc[11] != (Counters{Packets: 2, Bytes: bc[11].Bytes, Flows: 2}) || bc[11].Bytes == 0 {
		t.Errorf("backend 11 counters %+v", bc[11])
	}
	if _, ok := bc[10]; !ok {
		t.Errorf("deleted backend 10 with traffic missing from counters %v", bc)
	}
}

func TestCounters(t *testing.T) {
	d := newDatapath(t)
	setupVIPs(t, d)
	must(t, d.PutBackend(Backend{ID: 9, VIPID: 1, Addr: netip.MustParseAddr("10.0.1.9"), MAC: backendMAC(9), SrcMAC: lbOutMAC, Ifindex: loIfindex}))
	must(t, d.PutLookupTable(1, fill(testLookupSize, 1, 9)))

	var want4, wantUDP6 Counters
	perBackend := map[uint32]Counters{}
	for f := range 20 {
		for p := range 3 { // three packets per flow, growing payloads
			in := flow{src: client4, dst: vipAddr4, dport: 80, sport: uint16(30000 + f), payload: make([]byte, 10*p)}.build(t)
			be := backendOf(t, mustRun(t, d.Program(), in))
			want4.Packets++
			want4.Bytes += uint64(len(in))
			c := perBackend[be]
			c.Packets++
			c.Bytes += uint64(len(in))
			if p == 0 {
				want4.Flows++
				c.Flows++
			}
			perBackend[be] = c
		}
	}
	in := flow{src: client6, dst: vipAddr6, dport: 53, proto: ProtoUDP}.build(t)
	for range 5 {
		mustRun(t, d.Program(), in)
		wantUDP6.Packets++
		wantUDP6.Bytes += uint64(len(in))
	}
	wantUDP6.Flows = 1
	mustRun(t, d.Program(), arpRequest(t, vipAddr4))

	vc, err := d.VIPCounters()
	must(t, err)
	if vc[1] != want4 || vc[4] != wantUDP6 || vc[2] != (Counters{}) || vc[3] != (Counters{}) {
		t.Errorf("vip counters %+v, want 1:%+v 4:%+v and zero 2, 3 present", vc, want4, wantUDP6)
	}
	if len(perBackend) != 2 {
		t.Errorf("20 flows over a 2-backend table used backends %v", perBackend)
	}
	bc, err := d.BackendCounters()
	must(t, err)
	for id, c := range perBackend {
		if bc[id] != c {
			t.Errorf("backend %d counters %+v, want %+v", id, bc[id], c)
		}
	}
	if bc[4] != wantUDP6 {
		t.Errorf("backend 4 counters %+v, want %+v", bc[4], wantUDP6)
	}
	// BackendCountsByID: the backends of Backends, by ascending id, with
	// the counters of BackendCounters.
	bes, err := d.Backends()
	must(t, err)
	counts, err := d.BackendCountsByID()
	must(t, err)
	if len(counts) != len(bes) {
		t.Errorf("BackendCountsByID has %d backends, Backends %d", len(counts), len(bes))
	}
	for i, c := range counts {
		b := bes[c.ID]
		want := BackendCount{ID: c.ID, VIPID: b.VIPID, Addr: b.Addr, Port: b.Port, Counters: bc[c.ID]}
		if c != want || (i > 0 && counts[i-1].ID >= c.ID) {
			t.Errorf("BackendCountsByID[%d] %+v, want %+v, ids ascending", i, c, want)
		}
	}
	acts := actionsOn(t, d, loIfindex)
	if acts["tx"] != want4.Packets+wantUDP6.Packets || acts["pass"] != 1 || acts["drop"] != 0 {
		t.Errorf("actions on lo %v, want tx %d pass 1", acts, want4.Packets+wantUDP6.Packets)
	}
	drops, err := d.DropCounters()
	must(t, err)
	names := []string{"no_backend", "backend_invalid", "malformed_l4", "fragment", "ipv6_ext", "redirect_failed", "no_healthy_backend", "snat_exhausted", "nat_table_full", "nat_conflict", "answer_failed", "rate_limited", "backends_full"}
	if len(drops) != len(names) {
		t.Errorf("drop reasons %v, want exactly %v", drops, names)
	}
	for _, n := range names {
		if v, ok := drops[n]; !ok || v != 0 {
			t.Errorf("drop %s = %d (present %v), want 0", n, v, ok)
		}
	}

	// A VIP re-created on a used id starts from zero.
	must(t, d.DeleteVIP(vip4TCP))
	must(t, d.PutVIP(VIPKey{Addr: vipAddr4, Port: 8080, Proto: ProtoTCP}, VIPMeta{ID: 1, Mode: ModeDR, Hash: HashMaglev}))
	vc, err = d.VIPCounters()
	must(t, err)
	if vc[1] != (Counters{}) {
		t.Errorf("re-created vip counters %+v, want zero", vc[1])
	}
}

// Source hashing keeps a client on one backend for new flows, but a TCP
// packet of an unknown flow that is not a SYN (placed before a restart, or
// by another node) must be found with the 5-tuple hash every node shares.
func TestSourceHashAndUnknownNonSYN(t *testing.T) {
	d := newDatapath(t)
	must(t, d.PutVIP(vip4TCP, VIPMeta{ID: 1, Mode: ModeDR, Hash: HashSource}))
	ids := []uint32{10, 11, 12, 13, 14, 15, 16, 17}
	for _, id := range ids {
		putBackend(t, d, id, 1, netip.AddrFrom4([4]byte{10, 0, 1, byte(id)}), loIfindex)
	}
	must(t, d.PutLookupTable(1, fill(testLookupSize, ids...)))

	synTargets, ackTargets := map[uint32]int{}, map[uint32]int{}
	for i := range 20 {
		syn := flow{src: client4, dst: vipAddr4, dport: 80, sport: uint16(41000 + i), syn: true}
		synTargets[backendOf(t, mustRun(t, d.Program(), syn.build(t)))]++
		ack := flow{src: client4, dst: vipAddr4, dport: 80, sport: uint16(42000 + i), ack: true}
		ackTargets[backendOf(t, mustRun(t, d.Program(), ack.build(t)))]++
	}
	if len(synTargets) != 1 {
		t.Errorf("SYNs from one source spread over %v, want one backend", synTargets)
	}
	if len(ackTargets) < 2 {
		t.Errorf("non-SYN packets of unknown flows all went to %v: not hashed on the 5-tuple", ackTargets)
	}
}
