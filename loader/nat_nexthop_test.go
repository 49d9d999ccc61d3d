package loader

import (
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/xdplb/xdplb/internal/testutil"
)

// The next hop of a NAT backend is reused for NextHopReuse, then asked of
// the FIB again; a longer packet than any the MTU check passed asks at
// once; a backend id given to another address forgets it.
func TestNATNextHopReuse(t *testing.T) {
	lab := newNATLab(t, testOptions(""))
	d := lab.d
	k := VIPKey{Addr: vipAddr4, Port: 80, Proto: ProtoTCP}
	must(t, d.PutVIP(k, VIPMeta{ID: 1, Mode: ModeNAT, Hash: HashMaglev}))
	must(t, d.PutBackend(Backend{ID: 1, VIPID: 1, Addr: natBackend4, Port: 8080, Mode: ModeNAT}))
	must(t, d.PutLookupTable(1, fill(d.LookupTableSize(), 1)))
	send := func(payload int) result {
		t.Helper()
		return lab.run(t, flow{src: client4, dst: vipAddr4, dport: 80, ack: true, payload: make([]byte, payload)}.build(t), lab.cli)
	}
	if r := send(100); r.verdict != xdpRedirect {
		t.Fatalf("first packet: verdict %d", r.verdict)
	}
	var nh xdplbNextHop
	must(t, d.objs.BackendNh.Lookup(uint32(1), &nh))
	if nh.Stamp == 0 || nh.Ifindex != uint32(lab.srv.Index) || nh.InIfindex != uint32(lab.cli.Index) {
		t.Fatalf("next hop after the first packet %+v, want one via srv for cli", nh)
	}

	// The neighbour goes: the reused next hop still forwards...
	testutil.InNetNS(t, lab.ns, func() error {
		return netlink.NeighDel(&netlink.Neigh{LinkIndex: lab.srv.Index, Family: netlink.FAMILY_V4, IP: natBackend4.AsSlice()})
	})
	if r := send(100); r.verdict != xdpRedirect {
		t.Fatalf("within the reuse time: verdict %d, want the next hop reused", r.verdict)
	}
	// ... a longer packet than any checked asks the FIB (no neighbour) ...
	before := lab.events(t)
	if r := send(600); r.verdict != xdpPass {
		t.Fatalf("longer packet: verdict %d, want passed for want of a neighbour", r.verdict)
	}
	lab.checkEvents(t, before, map[string]uint64{"fib_no_neigh": 1})
	// ... and so does any packet once the reuse time is over.
	must(t, d.objs.BackendNh.Lookup(uint32(1), &nh))
	nh.Stamp -= d.natParams.FibCacheTicks + 1
	must(t, d.objs.BackendNh.Put(uint32(1), nh))
	before = lab.events(t)
	if r := send(100); r.verdict != xdpPass {
		t.Fatalf("after the reuse time: verdict %d, want passed for want of a neighbour", r.verdict)
	}
	lab.checkEvents(t, before, map[string]uint64{"fib_no_neigh": 1})

	// The id goes to another address: its next hop is forgotten.
	must(t, d.objs.BackendNh.Put(uint32(1), xdplbNextHop{Ifindex: 9, Stamp: 1}))
	must(t, d.PutBackend(Backend{ID: 1, VIPID: 1, Addr: natBackend4.Next(), Port: 8080, Mode: ModeNAT}))
	must(t, d.objs.BackendNh.Lookup(uint32(1), &nh))
	if nh != (xdplbNextHop{}) {
		t.Errorf("next hop of a reused id %+v, want none", nh)
	}
}
