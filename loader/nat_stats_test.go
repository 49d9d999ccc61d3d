package loader

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

// ExpireNAT deletes the translations whose flow closed or idled out and
// counts the rest; status counts the table live, before any sweep.
func TestExpireNATAndStatus(t *testing.T) {
	opts := testOptions("")
	opts.SNATPorts = PortRange{Lo: 2000, Hi: 2999}
	lab := newNATLab(t, opts)
	d := lab.d
	must(t, d.PutVIP(VIPKey{Addr: vipAddr4, Port: 80, Proto: ProtoTCP}, VIPMeta{ID: 1, Mode: ModeNAT, Hash: HashMaglev}))
	must(t, d.PutBackend(Backend{ID: 1, VIPID: 1, Addr: natBackend4, Port: 8080, Mode: ModeNAT}))
	must(t, d.PutLookupTable(1, fill(d.LookupTableSize(), 1)))
	must(t, d.PutVIP(VIPKey{Addr: vipAddr4, Port: 81, Proto: ProtoUDP}, VIPMeta{ID: 2, Mode: ModeFullNAT, Hash: HashMaglev, SNATAddr: natSNAT4}))
	must(t, d.PutBackend(Backend{ID: 2, VIPID: 2, Addr: natBackend4, Port: 8080, Mode: ModeFullNAT}))
	must(t, d.PutLookupTable(2, fill(d.LookupTableSize(), 2)))

	for sport := uint16(40000); sport < 40003; sport++ {
		for _, f := range []flow{
			{src: client4, dst: vipAddr4, sport: sport, dport: 80, syn: true},
			{src: client4, dst: vipAddr4, sport: sport, dport: 81, proto: ProtoUDP},
		} {
			if r := lab.run(t, f.build(t), lab.cli); r.verdict != xdpRedirect {
				t.Fatalf("flow %+v: verdict %d", f, r.verdict)
			}
		}
	}
	st, err := d.Status()
	must(t, err)
	if fill := mapFill(t, st, "nat_flows"); fill != 6 {
		t.Fatalf("status before any sweep: nat_flows %d, want 6", fill)
	}

	// One TCP flow closed long ago, one UDP flow idle beyond its timeout.
	now, err := d.ticks.now()
	must(t, err)
	var k xdplbFlowKey
	var v xdplbNatState
	var closed, idle xdplbFlowKey
	it := d.objs.NatFlows.Iterate()
	for it.Next(&k, &v) {
		switch {
		case Protocol(k.Proto) == ProtoTCP && closed == (xdplbFlowKey{}):
			closed = k
			v.Flags |= uint32(xdplbNatFlagsNAT_F_CLOSING)
			v.LastSeen = now - d.natParams.ClosingTicks - 10
			must(t, d.objs.NatFlows.Put(k, v))
		case Protocol(k.Proto) == ProtoUDP && idle == (xdplbFlowKey{}):
			idle = k
			v.LastSeen = now - d.natParams.UdpIdleTicks - 10
			must(t, d.objs.NatFlows.Put(k, v))
		}
	}
	must(t, it.Err())
	got, err := d.ExpireNAT()
	must(t, err)
	if got != (NATStats{Entries: 4, SNATPortsInUse: 2}) {
		t.Errorf("after the sweep %+v, want 4 entries, 2 SNAT ports in use", got)
	}
	for _, gone := range []xdplbFlowKey{closed, idle} {
		if err := d.objs.NatFlows.Lookup(gone, &v); err == nil {
			t.Errorf("expired translation %v still there", addrFrom16(gone.Dst))
		}
	}
	if cached, err := d.NATStats(); err != nil || cached != got {
		t.Errorf("NATStats %+v (%v), want the sweep's %+v", cached, err, got)
	}
}

func mapFill(t *testing.T, st Status, name string) int {
	t.Helper()
	for _, m := range st.Maps {
		if m.Name == name {
			return m.Entries
		}
	}
	t.Fatalf("no map %s in status", name)
	return 0
}

// A flow placed while its VIP was nat is placed again when the VIP becomes
// full NAT: its next packet leaves from the SNAT address and a port of the
// range, never port 0.
func TestNATToFullNATReplacesFlows(t *testing.T) {
	opts := testOptions("")
	opts.SNATPorts = PortRange{Lo: 2000, Hi: 2999}
	lab := newNATLab(t, opts)
	d := lab.d
	k := VIPKey{Addr: vipAddr4, Port: 80, Proto: ProtoTCP}
	must(t, d.PutVIP(k, VIPMeta{ID: 1, Mode: ModeNAT, Hash: HashMaglev}))
	must(t, d.PutBackend(Backend{ID: 1, VIPID: 1, Addr: natBackend4, Port: 8080, Mode: ModeNAT}))
	must(t, d.PutLookupTable(1, fill(d.LookupTableSize(), 1)))
	if r := lab.run(t, flow{src: client4, dst: vipAddr4, dport: 80, syn: true}.build(t), lab.cli); r.verdict != xdpRedirect {
		t.Fatalf("syn: verdict %d", r.verdict)
	}
	must(t, d.PutVIP(k, VIPMeta{ID: 1, Mode: ModeFullNAT, Hash: HashMaglev, SNATAddr: natSNAT4}))
	must(t, d.PutBackend(Backend{ID: 1, VIPID: 1, Addr: natBackend4, Port: 8080, Mode: ModeFullNAT}))
	r := lab.run(t, flow{src: client4, dst: vipAddr4, dport: 80, ack: true}.build(t), lab.cli)
	if r.verdict != xdpRedirect {
		t.Fatalf("ack: verdict %d", r.verdict)
	}
	src := netip.AddrFrom4([4]byte(r.out[14+12 : 14+16]))
	sport := binary.BigEndian.Uint16(r.out[14+20:])
	if src != natSNAT4 || sport < 2000 || sport > 2999 {
		t.Errorf("ack after the switch sent from %s:%d, want %s and a port of 2000-2999", src, sport, natSNAT4)
	}
}
