package loader

import (
	"bytes"
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

func ctEntry(t testing.TB, d *Datapath, f flow) xdplbFlowVal {
	t.Helper()
	var v xdplbFlowVal
	if err := d.objs.Conntrack.Lookup(ctKey(f), &v); err != nil {
		t.Fatalf("conntrack entry of port %d: %v", f.sport, err)
	}
	return v
}

const closing = uint32(xdplbFlowFlagsFLOW_F_CLOSING)

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

func flowsByBackend(t testing.TB, d *Datapath) map[uint32]int {
	t.Helper()
	fb, err := d.FlowsByBackend()
	must(t, err)
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
			if got := ctEntry(t, d, tt.f).Flags; got != 0 {
				t.Errorf("moved flow has flags %d, want 0", got)
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
			if v := ctEntry(t, d, f); v.Flags != want || v.BackendId != 10 {
				t.Fatalf("entry %+v, want backend 10 flags %d", v, want)
			}
			// The rest of the flow (the last ACK, a repeated FIN) still
			// goes to its backend and does not change the mark.
			sendTo(t, d, f.as("A"), 10)
			sendTo(t, d, f.as(tt.flags), 10)
			if v := ctEntry(t, d, f); v.Flags != want {
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
		if v := ctEntry(t, d, f); v.Flags != want || v.BackendId != 11 {
			t.Errorf("%s: moved entry %+v, want backend 11 flags %d", tt.name, v, want)
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
		name    string
		before  []string // packets after the SYN, on the old table
		after   string   // the packet once the table names only 11
		want    uint32
		closing bool
	}{
		{"syn after fin goes by the new table", []string{"FA", "A"}, "S", 11, false},
		{"syn after rst goes by the new table", []string{"R"}, "S", 11, false},
		{"syn retransmit keeps its backend", nil, "S", 10, false},
		{"syn after data keeps its backend", []string{"A"}, "S", 10, false},
		{"ack after fin keeps its backend", []string{"FA"}, "A", 10, true},
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
			want := uint32(0)
			if tt.closing {
				want = closing
			}
			if v := ctEntry(t, d, f); v.BackendId != tt.want || v.Flags != want {
				t.Fatalf("entry %+v, want backend %d flags %d", v, tt.want, want)
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

// The idle limit of an open flow depends on its protocol; a packet
// refreshes the entry's stamp.
func TestOpenFlowIdle(t *testing.T) {
	d := newDatapath(t)
	setupVIPs(t, d)
	tests := []struct {
		name string
		f    flow
		id   uint32
		idle time.Duration
	}{
		{"ipv4 tcp", flow{src: client4, dst: vipAddr4, dport: 80, syn: true}, 1, OpenFlowIdleTCP},
		{"ipv4 udp", flow{src: client4, dst: vipAddr4, dport: 53, proto: ProtoUDP}, 2, OpenFlowIdleUDP},
		{"ipv6 tcp", flow{src: client6, dst: vipAddr6, dport: 80, syn: true}, 3, OpenFlowIdleTCP},
		{"ipv6 udp", flow{src: client6, dst: vipAddr6, dport: 53, proto: ProtoUDP}, 4, OpenFlowIdleUDP},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sendTo(t, d, tt.f, tt.id)
			// Stamped by the program, read with our clock: fresh.
			if fb := flowsByBackend(t, d); fb[tt.id] != 1 {
				t.Fatalf("fresh flow not open: %v", fb)
			}
			const hz = 250
			ticks := func(d time.Duration) uint64 { return uint64(d.Seconds() * hz) }
			seen := ctEntry(t, d, tt.f).LastSeen
			for _, c := range []struct {
				now  uint64
				open bool
			}{
				{seen - hz, true}, // stamped while we walked
				{seen, true},
				{seen + ticks(tt.idle) - 1, true},
				{seen + ticks(tt.idle), false},
				{seen + ticks(OpenFlowIdleTCP+time.Hour), false},
			} {
				fb, err := d.openFlowsByBackend(c.now, hz)
				must(t, err)
				if got := fb[tt.id] == 1; got != c.open {
					t.Errorf("%d ticks after the last packet: open %v, want %v (%v)", int64(c.now-seen), got, c.open, fb)
				}
			}

			// Age the entry through the map: the next packet stamps it anew.
			old := ctEntry(t, d, tt.f)
			old.LastSeen -= 2 * 256 // FLOW_TOUCH_TICKS twice
			must(t, d.objs.Conntrack.Put(ctKey(tt.f), old))
			sendTo(t, d, tt.f, tt.id)
			if v := ctEntry(t, d, tt.f); v.LastSeen < seen {
				t.Errorf("a packet after 512 idle ticks left last_seen at %d, want >= %d", v.LastSeen, seen)
			}
		})
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
