package loader

import (
	"bytes"
	"net/netip"
	"testing"
)

func filterBits(t testing.TB, d *Datapath) map[uint32]bool {
	t.Helper()
	var f xdplbVipBitmap
	must(t, d.objs.VipFilter.Lookup(uint32(0), &f))
	out := map[uint32]bool{}
	for w, bits := range f.Bits {
		for b := range 64 {
			if bits&(1<<b) != 0 {
				out[uint32(w*64+b)] = true
			}
		}
	}
	return out
}

func bitOf(t testing.TB, k VIPKey) uint32 {
	t.Helper()
	return vipFilterBit(mustVIPKey(t, k))
}

func passesUntouched(t testing.TB, d *Datapath, in []byte) {
	t.Helper()
	r := mustRun(t, d.Program(), in)
	if r.verdict != xdpPass || !bytes.Equal(r.out, in) {
		t.Fatalf("verdict %d, want pass untouched", r.verdict)
	}
}

// The filter holds exactly the bits of the configured VIPs, follows
// deletes, and is rebuilt by Load when it falls behind the VIP map (pins
// of a build without it, or an interrupted update).
func TestVIPFilterBits(t *testing.T) {
	d := newDatapath(t)
	setupVIPs(t, d)
	want := map[uint32]bool{}
	for _, k := range []VIPKey{vip4TCP, vip4UDP, vip6TCP, vip6UDP} {
		want[bitOf(t, k)] = true
	}
	if got := filterBits(t, d); len(got) != len(want) {
		t.Fatalf("filter bits %v, want %v", got, want)
	}
	for b := range want {
		if !filterBits(t, d)[b] {
			t.Fatalf("bit %d of a VIP is clear", b)
		}
	}

	must(t, d.DeleteVIP(vip6UDP))
	delete(want, bitOf(t, vip6UDP))
	for _, k := range []VIPKey{vip4TCP, vip4UDP, vip6TCP} {
		want[bitOf(t, k)] = true // in case vip6UDP shared a bit
	}
	if got := filterBits(t, d); len(got) != len(want) {
		t.Fatalf("filter bits after delete %v, want %v", got, want)
	}

	// Wipe both derived maps, as a build without them would leave them.
	must(t, d.objs.VipFilter.Put(uint32(0), xdplbVipBitmap{}))
	for id := range d.MaxVIPs() {
		must(t, d.objs.VipKeys.Put(id, xdplbVipKey{}))
	}
	in := flow{src: client4, dst: vipAddr4, dport: 80, ack: true}.build(t)
	passesUntouched(t, d, in) // no bit: the VIP map is never consulted
	must(t, d.Close())
	d2 := load(t, testOptions(d.opts.BPFFS))
	t.Cleanup(func() { d2.Close() })
	if got := filterBits(t, d2); len(got) != len(want) {
		t.Fatalf("filter bits after reload %v, want %v", got, want)
	}
	sendTo(t, d2, flow{src: client4, dst: vipAddr4, dport: 80, ack: true}, 1)
}

// A set bit is only a hint: a frame whose (address, port, protocol) folds
// onto a VIP's bit without being one takes the long way and still passes.
func TestVIPFilterFalsePositive(t *testing.T) {
	d := newDatapath(t)
	setupVIPs(t, d)
	target := bitOf(t, vip4TCP)
	var hits []VIPKey
	for host := 1; host < 255 && len(hits) < 3; host++ {
		addr := netip.AddrFrom4([4]byte{10, 0, 2, byte(host)})
		for port := 1; port < 65536; port++ {
			k := VIPKey{Addr: addr, Port: uint16(port), Proto: ProtoTCP}
			if bitOf(t, k) == target {
				hits = append(hits, k)
				break
			}
		}
	}
	if len(hits) == 0 {
		t.Fatal("no colliding key found")
	}
	// Same address and port as a VIP, other protocol: only the fold can
	// tell, so whatever its bit says, the answer is pass.
	hits = append(hits, VIPKey{Addr: vipAddr4, Port: 80, Proto: ProtoUDP})
	for _, k := range hits {
		for _, f := range []flow{
			{src: client4, dst: k.Addr, dport: k.Port, proto: k.Proto, syn: k.Proto == ProtoTCP},
			{src: client4, dst: k.Addr, dport: k.Port, proto: k.Proto, ack: k.Proto == ProtoTCP},
		} {
			passesUntouched(t, d, f.build(t))
		}
	}
	vc, err := d.VIPCounters()
	must(t, err)
	for id, c := range vc {
		if c != (Counters{}) {
			t.Errorf("vip %d counted %+v for passed traffic", id, c)
		}
	}
	if n, err := d.ConntrackEntries(); err != nil || n != 0 {
		t.Errorf("conntrack entries %d (%v) for passed traffic, want 0", n, err)
	}
}

// The established path finds a flow's VIP through its backend, not the VIP
// map. A flow must still stop when its VIP goes, and must not follow an id
// that now names another VIP.
func TestConntrackFirstFollowsVIPs(t *testing.T) {
	d := newDatapath(t)
	size := d.LookupTableSize()
	vipB := VIPKey{Addr: vipAddr4, Port: 8080, Proto: ProtoTCP}
	must(t, d.PutVIP(vip4TCP, VIPMeta{ID: 1, Mode: ModeDR, Hash: HashMaglev}))
	must(t, d.PutBackend(backendAt(vip4TCP, 10)))
	must(t, d.PutLookupTable(1, fill(size, 10)))
	f := flow{src: client4, dst: vipAddr4, dport: 80, sport: 50400}
	sendTo(t, d, f.as("S"), 10)
	sendTo(t, d, f.as("A"), 10)

	// Drained: out of the table, still up. Its flow stays.
	must(t, d.PutBackend(backendAt(vip4TCP, 11)))
	must(t, d.PutLookupTable(1, fill(size, 11)))
	sendTo(t, d, f.as("A"), 10)

	// VIP deleted, its backends and table left behind (a reconcile in
	// progress): the flow's packets are no longer ours.
	must(t, d.DeleteVIP(vip4TCP))
	passesUntouched(t, d, f.as("A").build(t))

	// Id 1 reused by another VIP that takes over backend id 10: the old
	// flow still has no VIP, and B's own traffic is B's.
	must(t, d.PutVIP(vipB, VIPMeta{ID: 1, Mode: ModeDR, Hash: HashMaglev}))
	must(t, d.PutLookupTable(1, fill(size, 10)))
	passesUntouched(t, d, f.as("A").build(t))
	sendTo(t, d, flow{src: client4, dst: vipAddr4, dport: 8080, sport: 50401, syn: true}, 10)

	// The first VIP comes back under id 2 with backend 12: the old flow's
	// entry names backend 10, which belongs to id 1, so it is placed again.
	must(t, d.PutVIP(vip4TCP, VIPMeta{ID: 2, Mode: ModeDR, Hash: HashMaglev}))
	b12 := backendAt(vip4TCP, 12)
	b12.VIPID = 2
	must(t, d.PutBackend(b12))
	must(t, d.PutLookupTable(2, fill(size, 12)))
	sendTo(t, d, f.as("A"), 12)
	if v := ctEntry(t, d, f); v.BackendId != 12 {
		t.Fatalf("entry %+v, want backend 12", v)
	}

	// Renumbered in place (same key, id 2 -> 3): id 2 is freed, so the flow
	// on backend 12 (of id 2) is placed again by id 3's table.
	must(t, d.PutVIP(vip4TCP, VIPMeta{ID: 3, Mode: ModeDR, Hash: HashMaglev}))
	b13 := backendAt(vip4TCP, 13)
	b13.VIPID = 3
	must(t, d.PutBackend(b13))
	must(t, d.PutLookupTable(3, fill(size, 13)))
	sendTo(t, d, f.as("A"), 13)
	var k xdplbVipKey
	must(t, d.objs.VipKeys.Lookup(uint32(2), &k))
	if k != (xdplbVipKey{}) {
		t.Errorf("vip key of freed id 2 is %+v, want zero", k)
	}

	// Down: the flow moves off its backend even though the entry and the
	// VIP are intact.
	must(t, d.PutLookupTable(3, fill(size, 12)))
	b12.VIPID = 3
	must(t, d.PutBackend(b12))
	b13.Down = true
	must(t, d.PutBackend(b13))
	sendTo(t, d, f.as("A"), 12)
}
