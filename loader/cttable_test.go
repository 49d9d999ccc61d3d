package loader

import (
	"math/rand/v2"
	"testing"
	"unsafe"
)

// The connection table's layout is what the loader assumes of the C
// types: 16-byte slots, buckets of two cache lines, keys of five.
func TestCTLayout(t *testing.T) {
	if ctSlotSize != 16 || ctBucketSize != 128 || ctKeyBucketLen != 320 || ctBucketSlots != 8 {
		t.Fatalf("slot %d, bucket %d, keys %d bytes, %d slots", ctSlotSize, ctBucketSize, ctKeyBucketLen, ctBucketSlots)
	}
	for _, c := range []struct{ flows, buckets uint32 }{{1, 1}, {5, 1}, {6, 2}, {4096, 732}, {1 << 20, 187246}} {
		if got := ctBuckets(c.flows); got != c.buckets {
			t.Errorf("ctBuckets(%d) = %d, want %d", c.flows, got, c.buckets)
		}
		if slots := ctBuckets(c.flows) * uint32(ctBucketSlots); uint64(c.flows)*100 > uint64(slots)*ctLoadPercent {
			t.Errorf("%d flows in %d slots: over %d%%", c.flows, slots, ctLoadPercent)
		}
	}
}

// The Go hash is the program's: a flow the program inserts is where Go
// looks for it, its key in ct_keys beside it, and its half-open way where
// halfIndex says (halfWay finds it). IPv4 and IPv6, TCP and UDP, random
// ports.
func TestCTHashMatchesProgram(t *testing.T) {
	d := newDatapath(t)
	setupVIPs(t, d)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 200 {
		f := flow{src: client4, dst: vipAddr4, dport: 80, sport: uint16(1024 + i*250 + rng.IntN(250)), ack: true}
		id := uint32(1)
		switch i % 4 {
		case 1:
			f.dport, f.proto, f.ack, id = 53, ProtoUDP, false, 2
		case 2:
			f.src, f.dst, id = client6, vipAddr6, 3
		case 3:
			f.src, f.dst, f.dport, f.proto, f.ack, id = client6, vipAddr6, 53, ProtoUDP, false, 4
		}
		k := ctKey(f)
		sendTo(t, d, f, id)
		if _, ok := halfWay(t, d, k); !ok {
			t.Fatalf("flow %d: not in its ct_half bucket after its first packet", i)
		}
		sendTo(t, d, f, id)
		s, pos, ok := d.ct.lookup(&k)
		if !ok {
			t.Fatalf("flow %d (%v): not where Go looks for it after its second packet", i, k)
		}
		if got := uint32(s.Tag & ctBackendMask); got != id {
			t.Errorf("flow %d: backend %d, want %d", i, got, id)
		}
		if got := *d.ct.key(pos); got != k {
			t.Errorf("flow %d: ct_keys holds %v, want %v", i, got, k)
		}
		udp := s.Meta&uint32(xdplbFlowFlagsFLOW_F_UDP) != 0
		if udp != (f.proto == ProtoUDP) {
			t.Errorf("flow %d: udp flag %v", i, udp)
		}
	}
}

// ctHashBytes agrees with a hash written out from the C text word by word
// on fixed bytes (a change to either side changes these).
func TestCTHashVector(t *testing.T) {
	var b [40]byte
	for i := range b {
		b[i] = byte(i)
	}
	h := ctHashBytes(0x0123456789abcdef, &b)
	// Recomputed by hand from flow_hash64's steps.
	want := uint64(0x0123456789abcdef)
	for i := 0; i < 40; i += 8 {
		var w uint64
		for j := 7; j >= 0; j-- {
			w = w<<8 | uint64(b[i+j])
		}
		want = (want ^ w) * 0x9e3779b97f4a7c15
		want = want<<31 | want>>33
	}
	if h != fmix64(want) {
		t.Fatalf("ctHashBytes %#x, want %#x", h, fmix64(want))
	}
	k := ctFlowKey(7)
	if ctHash(1, &k) != ctHashBytes(1, (*[40]byte)(unsafe.Pointer(&k))) {
		t.Fatal("ctHash of a key is not the hash of its bytes")
	}
}

// oneBucket loads a table of one bucket (8 slots: --conntrack-size 5), so
// that every flow competes for the same slots, with the VIPs of setupVIPs.
func oneBucket(t *testing.T) *Datapath {
	t.Helper()
	d := newDatapathWith(t, func(o *Options) { o.ConntrackSize, o.HalfOpenSize = 5, 64 })
	if d.ct.buckets != 1 {
		t.Fatalf("%d buckets, want 1", d.ct.buckets)
	}
	setupVIPs(t, d)
	return d
}

// establish sends f twice (ACKs): the second moves it to the table.
func establish(t *testing.T, d *Datapath, f flow) {
	t.Helper()
	sendTo(t, d, f, 1)
	sendTo(t, d, f, 1)
	if _, ok := ctGet(t, d, ctKey(f)); !ok {
		t.Fatalf("flow from port %d not in the table after two packets", f.sport)
	}
}

// setStamp moves f's slot's stamp ticks into the past.
func setStamp(t *testing.T, d *Datapath, f flow, ticks uint64) {
	t.Helper()
	k := ctKey(f)
	_, pos, ok := d.ct.lookup(&k)
	if !ok {
		t.Fatalf("flow from port %d not in the table", f.sport)
	}
	d.ct.slot(pos).Stamp = uint32(tickNow(t, d) - ticks)
}

// Insert, lookup, expiry, closing and eviction in a full bucket: empty
// slots first, then a slot idle past its limit, then a closing flow's,
// then the least recently stamped live flow's, which alone counts as
// ct_evicted_live; a SYN on a closing flow frees its slot.
func TestCTBucketPolicy(t *testing.T) {
	d := oneBucket(t)
	hz := float64(tickRate(t, d))
	idle := uint64(OpenFlowIdleTCP.Seconds() * hz)
	evicted := func() uint64 { return eventCount(t, d, "ct_evicted_live") }
	flows := make([]flow, 12)
	for i := range flows {
		flows[i] = flow{src: client4, dst: vipAddr4, dport: 80, sport: uint16(30000 + i), ack: true}
	}
	in := func(i int) bool { _, ok := ctGet(t, d, ctKey(flows[i])); return ok }

	// Eight flows fill the bucket, oldest first.
	for i := range 8 {
		establish(t, d, flows[i])
		setStamp(t, d, flows[i], uint64(100-i))
	}
	if n := evicted(); n != 0 {
		t.Fatalf("ct_evicted_live %d while the bucket filled", n)
	}

	// Flow 3 idle past the TCP limit: the next flow takes its slot,
	// no live flow lost.
	setStamp(t, d, flows[3], idle+10)
	establish(t, d, flows[8])
	if in(3) || evicted() != 0 {
		t.Fatalf("expired flow kept (%v) or a live one counted (%d)", in(3), evicted())
	}

	// Flow 5 closing (a FIN): taken before any live flow, uncounted.
	sendTo(t, d, flow{src: client4, dst: vipAddr4, dport: 80, sport: flows[5].sport, fin: true, ack: true}, 1)
	if v, _ := ctGet(t, d, ctKey(flows[5])); v.Flags&closing == 0 {
		t.Fatalf("flow 5 not closing after its FIN: flags %#x", v.Flags)
	}
	establish(t, d, flows[9])
	if in(5) || evicted() != 0 {
		t.Fatalf("closing flow kept (%v) or a live one counted (%d)", in(5), evicted())
	}

	// Full of live flows: the least recently stamped (flow 0) goes, counted.
	establish(t, d, flows[10])
	if in(0) || evicted() != 1 {
		t.Fatalf("oldest live flow kept (%v), ct_evicted_live %d, want 1", in(0), evicted())
	}
	for _, i := range []int{1, 2, 4, 6, 7, 8, 9, 10} {
		if !in(i) {
			t.Errorf("flow %d lost", i)
		}
	}

	// A SYN on a closing flow's 5-tuple frees its slot: the new
	// connection starts half-open.
	sendTo(t, d, flow{src: client4, dst: vipAddr4, dport: 80, sport: flows[1].sport, rst: true}, 1)
	sendTo(t, d, flow{src: client4, dst: vipAddr4, dport: 80, sport: flows[1].sport, syn: true}, 1)
	if in(1) {
		t.Error("a SYN on a closing flow left its slot")
	}
	if _, ok := halfWay(t, d, ctKey(flows[1])); !ok {
		t.Error("the new connection on flow 1's 5-tuple is not half-open")
	}
	// Its slot is free: the next flow evicts nobody.
	establish(t, d, flows[11])
	if evicted() != 1 {
		t.Errorf("ct_evicted_live %d after an insert into a freed slot, want 1", evicted())
	}
	// A flow with a slot is found by every packet: no new slot, and the
	// count is the bucket's.
	if n, err := d.ConntrackEntries(); err != nil || n != 8+1 { // 8 slots and one half-open way
		t.Errorf("%d entries (%v), want 9", n, err)
	}
}
