package loader

import (
	"maps"
	"net/netip"
	"testing"
	"time"
)

// Conns lists the flows the program placed, each with its client, VIP,
// backend and phase: half-open after a SYN, established after more,
// ended and closing after a FIN, for TCP and UDP over both families; an
// entry with a SNAT port gives it back.
func TestConns(t *testing.T) {
	d := newDatapath(t)
	size := d.LookupTableSize()
	must(t, d.PutVIP(vip4TCP, VIPMeta{ID: 1, Mode: ModeDR, Hash: HashMaglev}))
	must(t, d.PutVIP(vip6UDP, VIPMeta{ID: 2, Mode: ModeDR, Hash: HashMaglev}))
	must(t, d.PutBackend(backendAt(vip4TCP, 10)))
	b6 := backendAt(vip6UDP, 11)
	b6.VIPID = 2
	must(t, d.PutBackend(b6))
	must(t, d.PutLookupTable(1, fill(size, 10)))
	must(t, d.PutLookupTable(2, fill(size, 11)))

	tcp := flow{src: client4, dst: vipAddr4, dport: 80}
	halfOpen, est, ended := tcp, tcp, tcp
	halfOpen.sport, est.sport, ended.sport = 50001, 50002, 50003
	sendTo(t, d, halfOpen.as("S"), 10)
	sendTo(t, d, est.as("S"), 10)
	sendTo(t, d, est.as("A"), 10)
	sendTo(t, d, ended.as("S"), 10)
	sendTo(t, d, ended.as("A"), 10)
	sendTo(t, d, ended.as("FA"), 10)
	udp := flow{src: client6, dst: vipAddr6, dport: 53, sport: 50004, proto: ProtoUDP}
	sendTo(t, d, udp, 11)
	sendTo(t, d, udp, 11)
	// A full-NAT flow's entry as the program writes it: its SNAT port,
	// network order, in the top half of the flags.
	now, err := d.ticks.now()
	must(t, err)
	nat := flowKey(client4, 50005, vipAddr4, 80, ProtoTCP)
	ctPut(t, d, nat, flowVal{BackendId: 10, LastSeen: now,
		Flags: established | uint32(toNetPort(20001))<<uint32(xdplbFlowFlagsFLOW_SNAT_PORT_SHIFT)})

	got := map[netip.AddrPort]Conn{}
	must(t, d.Conns(func(c Conn) bool {
		if c.Idle > time.Minute {
			t.Errorf("%s: idle %s", c.Client, c.Idle)
		}
		c.Idle = 0
		got[c.Client] = c
		return true
	}))
	want := map[netip.AddrPort]Conn{
		netip.AddrPortFrom(client4, 50005): {VIP: vip4TCP, BackendID: 10, Phase: FlowEstablished, SNATPort: 20001},
		netip.AddrPortFrom(client4, 50001): {VIP: vip4TCP, BackendID: 10, Phase: FlowHalfOpen},
		netip.AddrPortFrom(client4, 50002): {VIP: vip4TCP, BackendID: 10, Phase: FlowEstablished},
		netip.AddrPortFrom(client4, 50003): {VIP: vip4TCP, BackendID: 10, Phase: FlowEnded, Closing: true},
		netip.AddrPortFrom(client6, 50004): {VIP: vip6UDP, BackendID: 11, Phase: FlowEstablished},
	}
	for k, c := range want {
		c.Client = k
		want[k] = c
	}
	if !maps.Equal(got, want) {
		t.Errorf("conns:\n got %v\nwant %v", got, want)
	}

	// The walk stops when told.
	n := 0
	must(t, d.Conns(func(Conn) bool { n++; return n < 2 }))
	if n != 2 {
		t.Errorf("walk went on for %d entries after stopping at 2", n)
	}
}

// connOf decodes an entry without a kernel: addresses and ports, the
// SNAT port, idle time from ticks, and the phase at a given time.
func TestConnOf(t *testing.T) {
	const hz = 250
	k := flowKey(client6, 40000, vipAddr6, 443, ProtoTCP)
	for _, tc := range []struct {
		name     string
		v        flowVal
		now      uint64
		want     Conn
		wantIdle time.Duration
	}{
		{"half-open", flowVal{BackendId: 3, LastSeen: 1000}, 1000 + 10*hz,
			Conn{Phase: FlowHalfOpen}, 10 * time.Second},
		{"half-open past its timeout", flowVal{BackendId: 3, LastSeen: 1000}, 1000 + 61*hz,
			Conn{Phase: FlowEnded}, 61 * time.Second},
		{"established, snat port", flowVal{BackendId: 3, LastSeen: 1000,
			Flags: established | uint32(toNetPort(65535))<<16}, 1000 + hz/2,
			Conn{Phase: FlowEstablished, SNATPort: 65535}, 500 * time.Millisecond},
		{"closing", flowVal{BackendId: 3, LastSeen: 1000, Flags: established | closing}, 1000,
			Conn{Phase: FlowEnded, Closing: true}, 0},
		{"stamped after now", flowVal{BackendId: 3, LastSeen: 2000, Flags: established}, 1000,
			Conn{Phase: FlowEstablished}, 0},
		{"a year idle", flowVal{BackendId: 3, LastSeen: 5, Flags: established}, 5 + 365*24*3600*hz,
			Conn{Phase: FlowEnded}, 365 * 24 * time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := connOf(k, tc.v, tc.now, hz, DefaultHalfOpenTimeout, false)
			tc.want.Client = netip.AddrPortFrom(client6, 40000)
			tc.want.VIP = VIPKey{Addr: vipAddr6, Port: 443, Proto: ProtoTCP}
			tc.want.BackendID = 3
			tc.want.Idle = tc.wantIdle
			if c != tc.want {
				t.Errorf("connOf = %+v, want %+v", c, tc.want)
			}
		})
	}
}
