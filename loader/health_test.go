package loader

import (
	"bytes"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

// as returns f with exactly the TCP flags named: S(YN) A(CK) F(IN) R(ST).
func (f flow) as(flags string) flow {
	f.syn = strings.Contains(flags, "S")
	f.ack = strings.Contains(flags, "A")
	f.fin = strings.Contains(flags, "F")
	f.rst = strings.Contains(flags, "R")
	return f
}

// ctKey is the connection-table key of f's frames (defaults as in build).
func ctKey(f flow) xdplbFlowKey {
	if f.proto == 0 {
		f.proto = ProtoTCP
	}
	if f.sport == 0 {
		f.sport = 40000
	}
	return xdplbFlowKey{Src: f.src.As16(), Dst: f.dst.As16(), Sport: toNetPort(f.sport),
		Dport: toNetPort(f.dport), Proto: uint8(f.proto)}
}

// ctEntry is f's entry in the connection table or, for a half-open flow,
// its way in ct_half (flowEntry).
func ctEntry(t testing.TB, d *Datapath, f flow) flowVal {
	t.Helper()
	v, _, ok := flowEntry(t, d, ctKey(f))
	if !ok {
		t.Fatalf("no entry for the flow from port %d in either table", f.sport)
	}
	return v
}

const (
	closing     = uint32(xdplbFlowFlagsFLOW_F_CLOSING)
	established = uint32(xdplbFlowFlagsFLOW_F_ESTABLISHED)
)

// sendTo runs f's frame, asserts that it leaves for backend id with only
// the MACs changed, and returns the frame's length.
func sendTo(t testing.TB, d *Datapath, f flow, id uint32) uint64 {
	t.Helper()
	in := f.build(t)
	r := mustRun(t, d.Program(), in)
	if r.verdict != xdpTX {
		t.Fatalf("port %d: verdict %d, want tx to backend %d", f.sport, r.verdict, id)
	}
	if want := rewritten(in, id); !bytes.Equal(r.out, want) {
		t.Fatalf("port %d: sent to backend %d, want %d\n got %x\nwant %x", f.sport, r.out[5], id, r.out, want)
	}
	return uint64(len(in))
}

func backendAt(vip VIPKey, id uint32) Backend {
	addr := netip.AddrFrom4([4]byte{10, 0, 1, byte(id)})
	if vip.Addr.Is6() {
		addr = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, 15: byte(id)})
	}
	return Backend{ID: id, VIPID: 1, Addr: addr, MAC: backendMAC(id), SrcMAC: lbOutMAC, Mode: ModeDR, Ifindex: loIfindex}
}

// flowsByBackend is every backend's open flows, of either phase.
func flowsByBackend(t testing.TB, d *Datapath) map[uint32]int {
	t.Helper()
	fc, err := d.FlowCountsByBackend()
	must(t, err)
	fb := make(map[uint32]int, len(fc))
	for id, c := range fc {
		fb[id] = c.Open()
	}
	return fb
}

// A down backend takes no packets: its established flow is placed again
// from the current table, and stays on its new backend when the old one
// comes back, while new flows follow the restored table.
func TestDownBackendFlowsMove(t *testing.T) {
	tests := []struct {
		name string
		vip  VIPKey
		f    flow
	}{
		{"ipv4 tcp", vip4TCP, flow{src: client4, dst: vipAddr4, dport: 80, sport: 50001}},
		{"ipv6 tcp", vip6TCP, flow{src: client6, dst: vipAddr6, dport: 80, sport: 50001}},
		{"ipv4 udp", vip4UDP, flow{src: client4, dst: vipAddr4, dport: 53, sport: 50001, proto: ProtoUDP}},
		{"ipv6 udp", vip6UDP, flow{src: client6, dst: vipAddr6, dport: 53, sport: 50001, proto: ProtoUDP}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newDatapath(t)
			size := d.LookupTableSize()
			must(t, d.PutVIP(tt.vip, VIPMeta{ID: 1, Mode: ModeDR, Hash: HashMaglev}))
			a, b := backendAt(tt.vip, 10), backendAt(tt.vip, 11)
			must(t, d.PutBackend(a))
			must(t, d.PutBackend(b))
			must(t, d.PutLookupTable(1, fill(size, 10)))
			est := tt.f.as("A")
			want := map[uint32]Counters{}
			add := func(id uint32, n uint64, newFlow bool) {
				c := want[id]
				c.Packets++
				c.Bytes += n
				if newFlow {
					c.Flows++
				}
				want[id] = c
			}

			add(10, sendTo(t, d, tt.f.as("S"), 10), true)
			add(10, sendTo(t, d, est, 10), false)

			// 10 fails its checks: the table without it first, then the flag.
			must(t, d.PutLookupTable(1, fill(size, 11)))
			a.Down = true
			must(t, d.PutBackend(a))
			bes, err := d.Backends()
			must(t, err)
			if !reflect.DeepEqual(bes[10], a) {
				t.Fatalf("backend 10 reads back as %+v, want %+v", bes[10], a)
			}
			add(11, sendTo(t, d, est, 11), true) // placed again: a flow for 11
			add(11, sendTo(t, d, est, 11), false)
			if fb := flowsByBackend(t, d); !reflect.DeepEqual(fb, map[uint32]int{11: 1}) {
				t.Fatalf("flows by backend %v while 10 is down, want 11:1", fb)
			}

			// 10 is back: the moved flow stays where it is, a new one
			// follows the table.
			a.Down = false
			must(t, d.PutBackend(a))
			must(t, d.PutLookupTable(1, fill(size, 10)))
			add(11, sendTo(t, d, est, 11), false)
			f2 := tt.f
			f2.sport++
			add(10, sendTo(t, d, f2.as("S"), 10), true)
			if fb := flowsByBackend(t, d); !reflect.DeepEqual(fb, map[uint32]int{10: 1, 11: 1}) {
				t.Fatalf("flows by backend %v, want 10:1 11:1", fb)
			}
			// Down and up again kept backend 10's counters.
			bc, err := d.BackendCounters()
			must(t, err)
			for id, c := range want {
				if bc[id] != c {
					t.Errorf("backend %d counters %+v, want %+v", id, bc[id], c)
				}
			}
			// Moved on a packet after the opening: established.
			if got, want := ctEntry(t, d, tt.f).Flags, established; got != want {
				t.Errorf("moved flow has flags %d, want %d", got, want)
			}
		})
	}
}

// FIN or RST on a tracked flow marks its entry closing, so it no longer
// counts as open; the packet itself still goes to the flow's backend.
func TestTCPFlagsMarkClosing(t *testing.T) {
	d := newDatapath(t)
	must(t, d.PutVIP(vip4TCP, VIPMeta{ID: 1, Mode: ModeDR, Hash: HashMaglev}))
	must(t, d.PutBackend(backendAt(vip4TCP, 10)))
	must(t, d.PutBackend(backendAt(vip4TCP, 11)))
	must(t, d.PutLookupTable(1, fill(d.LookupTableSize(), 10)))

	tests := []struct {
		name      string
		untracked bool   // no SYN first: the flow was placed before a restart
		flags     string // the packet after the SYN
		closing   bool
	}{
		{"fin ack", false, "FA", true},
		{"fin", false, "F", true},
		{"rst", false, "R", true},
		{"rst ack", false, "RA", true},
		{"ack", false, "A", false},
		{"syn retransmit", false, "S", false},
		{"fin of an untracked flow", true, "FA", true},
		{"ack of an untracked flow", true, "A", false},
	}
	base := flow{src: client4, dst: vipAddr4, dport: 80}
	open := 0
	for i, tt := range tests {
		f := base
		f.sport = uint16(50100 + i)
		t.Run(tt.name, func(t *testing.T) {
			if !tt.untracked {
				sendTo(t, d, f.as("S"), 10)
			}
			sendTo(t, d, f.as(tt.flags), 10)
			want := uint32(0)
			if tt.closing {
				want = closing
			}
			// TestFlowPhases checks the established bit.
			if v := ctEntry(t, d, f); v.Flags&closing != want || v.BackendId != 10 {
				t.Fatalf("entry %+v, want backend 10 closing flag %d", v, want)
			}
			// The rest of the flow (the last ACK, a repeated FIN) still
			// goes to its backend and does not change the mark.
			sendTo(t, d, f.as("A"), 10)
			sendTo(t, d, f.as(tt.flags), 10)
			if v := ctEntry(t, d, f); v.Flags&closing != want {
				t.Fatalf("flags %d after more packets, want %d", v.Flags, want)
			}
		})
		if !tt.closing {
			open++
		}
	}
	if fb := flowsByBackend(t, d); fb[10] != open || len(fb) != 1 {
		t.Errorf("flows by backend %v, want 10:%d", fb, open)
	}
	if n, err := d.ConntrackEntries(); err != nil || n != len(tests) {
		t.Errorf("conntrack entries %d (%v), want all %d", n, err, len(tests))
	}

	// 10 goes down: every flow moves to 11, and a closing one stays closing.
	must(t, d.PutLookupTable(1, fill(d.LookupTableSize(), 11)))
	down := backendAt(vip4TCP, 10)
	down.Down = true
	must(t, d.PutBackend(down))
	for i, tt := range tests {
		f := base
		f.sport = uint16(50100 + i)
		sendTo(t, d, f.as("A"), 11)
		want := uint32(0)
		if tt.closing {
			want = closing
		}
		if v := ctEntry(t, d, f); v.Flags&closing != want || v.BackendId != 11 {
			t.Errorf("%s: moved entry %+v, want backend 11 closing flag %d", tt.name, v, want)
		}
	}
	if fb := flowsByBackend(t, d); fb[11] != open || len(fb) != 1 {
		t.Errorf("flows by backend %v after the move, want 11:%d", fb, open)
	}
}

// A SYN on the 5-tuple of a closing flow is a new connection from a reused
// client port: it is placed by the current table, so it never lands on a
// drained backend. A SYN retransmit of a live flow keeps its backend.
func TestSYNOnTrackedFlow(t *testing.T) {
	d := newDatapath(t)
	size := d.LookupTableSize()
	must(t, d.PutVIP(vip4TCP, VIPMeta{ID: 1, Mode: ModeDR, Hash: HashMaglev}))
	must(t, d.PutBackend(backendAt(vip4TCP, 10)))
	must(t, d.PutBackend(backendAt(vip4TCP, 11)))

	tests := []struct {
		name   string
		before []string // packets after the SYN, on the old table
		after  string   // the packet once the table names only 11
		want   uint32
		flags  uint32
	}{
		{"syn after fin goes by the new table", []string{"FA", "A"}, "S", 11, 0},
		{"syn after rst goes by the new table", []string{"R"}, "S", 11, 0},
		{"syn retransmit keeps its backend", nil, "S", 10, 0},
		{"syn after data keeps its backend", []string{"A"}, "S", 10, established},
		{"ack after fin keeps its backend", []string{"FA"}, "A", 10, established | closing},
	}
	var flows10, flows11 uint64
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := flow{src: client4, dst: vipAddr4, dport: 80, sport: uint16(50200 + i)}
			must(t, d.PutLookupTable(1, fill(size, 10)))
			sendTo(t, d, f.as("S"), 10)
			for _, fl := range tt.before {
				sendTo(t, d, f.as(fl), 10)
			}
			must(t, d.PutLookupTable(1, fill(size, 11)))
			sendTo(t, d, f.as(tt.after), tt.want)
			if v := ctEntry(t, d, f); v.BackendId != tt.want || v.Flags != tt.flags {
				t.Fatalf("entry %+v, want backend %d flags %d", v, tt.want, tt.flags)
			}
		})
		flows10++
		if tt.want == 11 {
			flows11++
		}
	}
	bc, err := d.BackendCounters()
	must(t, err)
	if bc[10].Flows != flows10 || bc[11].Flows != flows11 {
		t.Errorf("backend flow counters 10:%d 11:%d, want 10:%d 11:%d", bc[10].Flows, bc[11].Flows, flows10, flows11)
	}
}

func TestNoHealthyBackend(t *testing.T) {
	d := newDatapath(t)
	setupVIPs(t, d)
	size := d.LookupTableSize()
	// VIP 5: no table, every backend down. VIP 6: no table, none in
	// service (drained or absent). VIP 7: a table of empty slots, every
	// backend down. VIP 8: a table that still names a down backend.
	keys := map[uint32]VIPKey{}
	for id := uint32(5); id <= 8; id++ {
		keys[id] = VIPKey{Addr: vipAddr4, Port: uint16(1000 + id), Proto: ProtoTCP}
		must(t, d.PutVIP(keys[id], VIPMeta{ID: id, Mode: ModeDR, Hash: HashMaglev, NoHealthy: id == 5 || id == 7}))
	}
	must(t, d.PutLookupTable(7, make([]uint32, size)))
	down := Backend{ID: 9, VIPID: 8, Addr: netip.MustParseAddr("10.0.1.9"), MAC: backendMAC(9), SrcMAC: lbOutMAC, Mode: ModeDR, Ifindex: loIfindex, Down: true}
	must(t, d.PutBackend(down))
	must(t, d.PutLookupTable(8, fill(size, 9)))

	// VIP 1 loses its only backend with a flow established on it.
	est := flow{src: client4, dst: vipAddr4, dport: 80, sport: 50300}
	sendTo(t, d, est.as("S"), 1)
	must(t, d.DeleteLookupTable(1))
	be1 := backendAt(vip4TCP, 1)
	be1.Down = true
	must(t, d.PutBackend(be1))
	must(t, d.PutVIP(vip4TCP, VIPMeta{ID: 1, Mode: ModeDR, Hash: HashMaglev, NoHealthy: true}))

	to := func(id uint32) []byte {
		return flow{src: client4, dst: vipAddr4, dport: keys[id].Port, syn: true}.build(t)
	}
	checkDrops(t, d, []dropCase{
		{"no table, all down", to(5), "no_healthy_backend"},
		{"no table, none in service", to(6), "no_backend"},
		{"empty slots, all down", to(7), "no_healthy_backend"},
		{"table names a down backend", to(8), "backend_invalid"},
		{"established flow, all down", est.as("A").build(t), "no_healthy_backend"},
		{"new flow, all down", est.as("S").build(t), "no_healthy_backend"},
	})
	vips, err := d.VIPs()
	must(t, err)
	for id := uint32(5); id <= 8; id++ {
		if got, want := vips[keys[id]].NoHealthy, id == 5 || id == 7; got != want {
			t.Errorf("vip %d NoHealthy %v, want %v", id, got, want)
		}
	}
	vc, err := d.VIPCounters()
	must(t, err)
	for id := uint32(5); id <= 8; id++ {
		if vc[id] != (Counters{Packets: 1, Bytes: vc[id].Bytes}) {
			t.Errorf("vip %d counters %+v, want 1 packet and no flow", id, vc[id])
		}
	}

	// One backend is back: the VIP recovers and the flow is placed again.
	must(t, d.PutVIP(vip4TCP, VIPMeta{ID: 1, Mode: ModeDR, Hash: HashMaglev}))
	be1.Down = false
	must(t, d.PutBackend(be1))
	must(t, d.PutLookupTable(1, fill(size, 1)))
	sendTo(t, d, est.as("A"), 1)
}

// Random packet sequences over many flows: after every packet each flow's
// phase bits match a reference model, and FlowCountsByBackend counts every
// backend's flows by phase. A flow that saw only its opening is half-open
// for DefaultHalfOpenTimeout; one that saw more is established for its
// protocol's limit; a closing one is ended at once.
func TestFlowPhases(t *testing.T) {
	d := newDatapath(t)
	setupVIPs(t, d)
	const (
		est   = established
		phase = closing | est
	)
	type tracked struct {
		f     flow
		id    uint32 // the VIP's only backend
		flags uint32 // model; absent until the first packet
		seen  bool
	}
	var flows []*tracked
	for i := 0; i < 24; i++ {
		sport := uint16(41000 + i)
		switch i % 4 {
		case 0:
			flows = append(flows, &tracked{f: flow{src: client4, dst: vipAddr4, dport: 80, sport: sport}, id: 1})
		case 1:
			flows = append(flows, &tracked{f: flow{src: client4, dst: vipAddr4, dport: 53, sport: sport, proto: ProtoUDP}, id: 2})
		case 2:
			flows = append(flows, &tracked{f: flow{src: client6, dst: vipAddr6, dport: 80, sport: sport}, id: 3})
		default:
			flows = append(flows, &tracked{f: flow{src: client6, dst: vipAddr6, dport: 53, sport: sport, proto: ProtoUDP}, id: 4})
		}
	}
	// The model of bpf/conntrack.h, one packet at a time.
	step := func(tr *tracked, tcp string) {
		if tr.f.proto == ProtoUDP {
			if tr.seen {
				tr.flags |= est
			}
			tr.seen = true
			return
		}
		syn, end := strings.Contains(tcp, "S"), strings.ContainsAny(tcp, "FR")
		switch {
		case syn && (!tr.seen || tr.flags&closing != 0):
			tr.flags = 0 // a new connection
		case syn: // a retransmit on a live flow
		default:
			tr.flags |= est
			if end {
				tr.flags |= closing
			}
		}
		tr.seen = true
	}
	r := rand.New(rand.NewPCG(5, 2026))
	for i := 0; i < 600; i++ {
		tr := flows[r.IntN(len(flows))]
		tcp := []string{"S", "S", "A", "PA", "FA", "R"}[r.IntN(6)]
		f := tr.f
		if f.proto != ProtoUDP {
			f = f.as(tcp)
		}
		sendTo(t, d, f, tr.id)
		step(tr, tcp)
		if got := ctEntry(t, d, tr.f).Flags & phase; got != tr.flags {
			t.Fatalf("packet %d (%s) on port %d: flags %#x, want %#x", i, tcp, tr.f.sport, got, tr.flags)
		}
		if i%50 != 0 {
			continue
		}
		want := map[uint32]FlowCount{}
		for _, tr := range flows {
			if !tr.seen || tr.flags&closing != 0 {
				continue
			}
			c := want[tr.id]
			// Picked up mid-stream and not seen since: in ct_half,
			// half-open until its next packet.
			if _, half, _ := flowEntry(t, d, ctKey(tr.f)); tr.flags&est != 0 && !half {
				c.Established++
			} else {
				c.HalfOpen++
			}
			want[tr.id] = c
		}
		got, err := d.FlowCountsByBackend()
		must(t, err)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("after packet %d: counts %v, want %v", i, got, want)
		}
	}

	// Every flow's idle limit is its phase's, on the table's own stamps.
	const hz = 250
	ticks := func(d time.Duration) uint64 { return uint64(d.Seconds() * hz) }
	for _, tr := range flows {
		if !tr.seen {
			continue
		}
		k := ctKey(tr.f)
		v, half, _ := flowEntry(t, d, k)
		wantPhase, idle := FlowHalfOpen, DefaultHalfOpenTimeout
		switch {
		case tr.flags&closing != 0:
			wantPhase = FlowEnded
		case half:
			// Picked up mid-stream and not seen since: half-open.
		case tr.flags&est != 0 && tr.f.proto == ProtoUDP:
			wantPhase, idle = FlowEstablished, OpenFlowIdleUDP
		case tr.flags&est != 0:
			wantPhase, idle = FlowEstablished, OpenFlowIdleTCP
		}
		for _, c := range []struct {
			now  uint64
			want FlowPhase
		}{
			{v.LastSeen - hz, wantPhase}, // stamped while we walked
			{v.LastSeen, wantPhase},
			{v.LastSeen + ticks(idle) - 1, wantPhase},
			{v.LastSeen + ticks(idle), FlowEnded},
			{v.LastSeen + ticks(OpenFlowIdleTCP+time.Hour), FlowEnded},
		} {
			if got := flowPhase(k, v, c.now, hz, DefaultHalfOpenTimeout, half); got != c.want {
				t.Errorf("port %d flags %#x, %d ticks after its last packet: %v, want %v",
					tr.f.sport, tr.flags, int64(c.now-v.LastSeen), got, c.want)
			}
		}
	}
}

// A SYN the backend refuses with an RST (which a DR LB never sees) holds
// the backend for DefaultHalfOpenTimeout, not for an established flow's 15
// minutes; a packet refreshes a half-open flow's stamp, and its second
// packet (no SYN) moves it to the connection table, established.
func TestHalfOpenFlowIdle(t *testing.T) {
	d := newDatapath(t)
	setupVIPs(t, d)
	syn := flow{src: client4, dst: vipAddr4, dport: 80, syn: true}
	sendTo(t, d, syn, 1)
	if fb := flowsByBackend(t, d); fb[1] != 1 {
		t.Fatalf("fresh SYN not open: %v", fb)
	}
	if _, ok := halfWay(t, d, ctKey(syn)); !ok {
		t.Fatal("a SYN has no way in ct_half")
	}
	const hz = 250
	seen := ctEntry(t, d, syn).LastSeen
	later := seen + uint64(DefaultHalfOpenTimeout.Seconds()*hz)
	fc, err := d.flowCountsByBackend(later, hz)
	must(t, err)
	if fc[1].Open() != 0 {
		t.Errorf("a SYN %v ago still holds its backend: %+v", DefaultHalfOpenTimeout, fc[1])
	}

	// Age the way: the next packet, no SYN, moves the flow to the
	// connection table, stamped anew and established.
	ageHalf(t, d, ctKey(syn), 2*256) // FLOW_TOUCH_TICKS twice
	sendTo(t, d, syn.as("A"), 1)
	if _, ok := halfWay(t, d, ctKey(syn)); ok {
		t.Error("the flow kept its way in ct_half after its second packet")
	}
	v, ok := ctGet(t, d, ctKey(syn))
	if !ok {
		t.Fatal("the flow is not in the connection table after its second packet")
	}
	if v.LastSeen < seen {
		t.Errorf("a packet after 512 idle ticks left last_seen at %d, want >= %d", v.LastSeen, seen)
	}
	fc, err = d.flowCountsByBackend(v.LastSeen+uint64(DefaultHalfOpenTimeout.Seconds()*hz), hz)
	must(t, err)
	if fc[1] != (FlowCount{Established: 1}) {
		t.Errorf("an established flow %v after its last packet: %+v, want 1 established", DefaultHalfOpenTimeout, fc[1])
	}
}

func TestHealthFlagsRoundTrip(t *testing.T) {
	d := newDatapath(t)
	meta := VIPMeta{ID: 1, Mode: ModeDR, Hash: HashSource, NoHealthy: true}
	must(t, d.PutVIP(vip6UDP, meta))
	vips, err := d.VIPs()
	must(t, err)
	if vips[vip6UDP] != meta {
		t.Errorf("vip reads back as %+v, want %+v", vips[vip6UDP], meta)
	}
	var cm xdplbVipMeta
	must(t, d.objs.Vips.Lookup(mustVIPKey(t, vip6UDP), &cm))
	if cm.Flags != uint16(xdplbVipFlagsVIP_F_NO_HEALTHY) {
		t.Errorf("vip_meta.flags %#x, want VIP_F_NO_HEALTHY", cm.Flags)
	}
	meta.NoHealthy = false
	must(t, d.PutVIP(vip6UDP, meta))
	vips, err = d.VIPs()
	must(t, err)
	if vips[vip6UDP] != meta {
		t.Errorf("vip reads back as %+v, want %+v", vips[vip6UDP], meta)
	}

	for _, down := range []bool{true, false} {
		b := backendAt(vip6UDP, 7)
		b.Down = down
		must(t, d.PutBackend(b))
		bes, err := d.Backends()
		must(t, err)
		if !reflect.DeepEqual(bes[7], b) {
			t.Errorf("backend reads back as %+v, want %+v", bes[7], b)
		}
		var cb xdplbBackend
		must(t, d.objs.Backends.Lookup(uint32(7), &cb))
		want := uint16(xdplbBackendFlagsBACKEND_F_VALID)
		if down {
			want |= uint16(xdplbBackendFlagsBACKEND_F_DOWN)
		}
		if cb.Flags != want {
			t.Errorf("down %v: backend flags %#x, want %#x", down, cb.Flags, want)
		}
	}
}

func mustVIPKey(t testing.TB, k VIPKey) xdplbVipKey {
	t.Helper()
	ck, err := vipKeyToC(k)
	must(t, err)
	return ck
}
