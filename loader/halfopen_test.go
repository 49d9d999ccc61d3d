package loader

import (
	"maps"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/xdplb/xdplb/internal/testutil"
)

// newDatapathWith is newDatapath with its options edited first.
func newDatapathWith(t *testing.T, edit func(*Options)) *Datapath {
	t.Helper()
	testutil.RequireRoot(t)
	opts := testOptions(testutil.MountBPFFS(t))
	edit(&opts)
	d := load(t, opts)
	t.Cleanup(func() {
		if err := d.Remove(); err != nil {
			t.Errorf("remove: %v", err)
		}
	})
	return d
}

// bucketVIPs counts a bucket's ways in use by VIP id.
func bucketVIPs(b xdplbHalfBucket) map[uint32]int {
	out := map[uint32]int{}
	for _, w := range b.Ways {
		if w.VipId != 0 {
			out[w.VipId]++
		}
	}
	return out
}

// ageBucket moves the stamp of every way of k's bucket ticks into the past.
func ageBucket(t testing.TB, d *Datapath, k xdplbFlowKey, ticks uint64) {
	t.Helper()
	now := tickNow(t, d)
	b, idx := halfBucket(t, d, k)
	for i := range b.Ways {
		b.Ways[i].Stamp = uint32(now - ticks)
	}
	must(t, d.objs.CtHalf.Update(idx, &b, ebpf.UpdateLock))
}

func tickRate(t testing.TB, d *Datapath) uint64 {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	hz, err := d.ticks.rate()
	must(t, err)
	return hz
}

// In a bucket whose ways all hold live half-open flows, a new flow takes
// the oldest way of the VIP with the most ways, counting the new flow as
// one of its VIP's and a tie going against it: a flood of one VIP takes
// only its own ways, two floods share the bucket evenly, a quiet VIP's
// flow keeps its way (and so its backend) through any flood of another,
// and every way so taken is an early drop. Expired and closing ways are
// taken first, and are no early drop. One bucket (8 ways): every flow is
// in it.
func TestHalfOpenEarlyDrop(t *testing.T) {
	d := newDatapathWith(t, func(o *Options) { o.HalfOpenSize = 8 })
	setupVIPs(t, d)
	if d.HalfOpenSize() != 8 {
		t.Fatalf("half-open table of %d flows, want 8", d.HalfOpenSize())
	}
	// New flows of VIPs 1 (a), 3 (b) and 2 (c).
	a := func(port int) flow {
		return flow{src: client4, dst: vipAddr4, dport: 80, sport: uint16(port), syn: true}
	}
	b := func(port int) flow {
		return flow{src: client6, dst: vipAddr6, dport: 80, sport: uint16(port), syn: true}
	}
	c := func(port int) flow {
		return flow{src: client4, dst: vipAddr4, dport: 53, sport: uint16(port), proto: ProtoUDP}
	}
	early := func() uint64 { return eventCount(t, d, "early_drop") }
	has := func(f flow) bool { _, ok := halfWay(t, d, ctKey(f)); return ok }
	bucket := func() map[uint32]int {
		bk, _ := halfBucket(t, d, ctKey(a(0)))
		return bucketVIPs(bk)
	}
	want := func(step string, drops uint64, vips map[uint32]int) {
		t.Helper()
		if n := early(); n != drops {
			t.Fatalf("%s: early_drop %d, want %d", step, n, drops)
		}
		if got := bucket(); !maps.Equal(got, vips) {
			t.Fatalf("%s: ways by vip %v, want %v", step, got, vips)
		}
	}

	for i := range 8 {
		sendTo(t, d, a(1000+i), 1)
	}
	for i := range 8 { // 1000 the oldest, 1007 the youngest
		ageHalf(t, d, ctKey(a(1000+i)), uint64(80-10*i))
	}
	want("8 flows of A", 0, map[uint32]int{1: 8})

	sendTo(t, d, a(1008), 1)
	if has(a(1000)) || !has(a(1001)) || !has(a(1008)) {
		t.Fatal("a ninth flow of A did not take A's oldest way")
	}
	want("a ninth flow of A", 1, map[uint32]int{1: 8})

	sendTo(t, d, b(2000), 3)
	if has(a(1001)) || !has(b(2000)) {
		t.Fatal("B's first flow did not take A's oldest way")
	}
	want("B's first flow", 2, map[uint32]int{1: 7, 3: 1})

	// A floods: A's ways only. B's flow keeps its way, and its backend:
	// B's table now names backend 9, yet B's ACK goes to 3 and
	// establishes the flow, in the connection table.
	for i := range 1000 {
		sendTo(t, d, a(3000+i), 1)
	}
	want("A's flood", 1002, map[uint32]int{1: 7, 3: 1})
	putBackend(t, d, 9, 3, netip.MustParseAddr("2001:db8:1::9"), loIfindex)
	must(t, d.PutLookupTable(3, fill(d.LookupTableSize(), 9)))
	sendTo(t, d, b(2000).as("A"), 3)
	if v, half, ok := flowEntry(t, d, ctKey(b(2000))); !ok || half || v.BackendId != 3 || v.Flags != established {
		t.Fatalf("B's flow after its ACK: %+v (found %v, half-open %v), want established on 3 in the connection table", v, ok, half)
	}
	want("B's flow established", 1002, map[uint32]int{1: 7})

	// A and B both flood: the bucket is shared evenly.
	for i := range 200 {
		sendTo(t, d, a(5000+i), 1)
		sendTo(t, d, b(6000+i), 9)
	}
	want("A and B flood", 1002+399, map[uint32]int{1: 4, 3: 4})

	// Every way expired: C's flows take them, none an early drop.
	hz := tickRate(t, d)
	ageBucket(t, d, ctKey(a(0)), uint64(DefaultHalfOpenTimeout.Seconds())*hz+hz)
	for i := range 8 {
		sendTo(t, d, c(7000+i), 2)
	}
	want("C's flows in expired ways", 1401, map[uint32]int{2: 8})

	// An RST, the first packet seen of a flow of A, takes C's oldest way
	// (an early drop) and is closing: the next new flow takes its way,
	// no early drop.
	rst := a(8000).as("R")
	sendTo(t, d, rst, 1)
	if v, half, ok := flowEntry(t, d, ctKey(rst)); !ok || !half || v.Flags&closing == 0 {
		t.Fatalf("an RST of an unknown flow: %+v (found %v, half-open %v), want a closing way", v, ok, half)
	}
	want("an RST", 1402, map[uint32]int{1: 1, 2: 7})
	sendTo(t, d, b(9000), 9)
	if has(rst) {
		t.Fatal("a new flow did not take the closing flow's way")
	}
	want("a flow after the RST", 1402, map[uint32]int{2: 7, 3: 1})

	// Every flow of the bucket counts in the connection table's entries,
	// and the table's fill; B's established flow in the connection table.
	n, err := d.ConntrackEntries()
	must(t, err)
	st, err := d.Status()
	must(t, err)
	if n != 9 || mapFill(t, st, "ct_half") != 8 || mapFill(t, st, "conntrack") != 1 {
		t.Errorf("%d entries, status %+v, want 9: 8 half-open and 1 in the connection table", n, st.Maps)
	}
}

// A half-open flow lives --half-open-timeout without a packet: its way
// keeps its backend until then (and it counts as open), and its next
// packet after that is placed again, by the table as it is then.
func TestHalfOpenTimeout(t *testing.T) {
	d := newDatapathWith(t, func(o *Options) { o.HalfOpenTimeout = 5 * time.Second })
	setupVIPs(t, d)
	putBackend(t, d, 9, 1, netip.MustParseAddr("10.0.1.9"), loIfindex)
	hz := tickRate(t, d)
	timeout := 5 * hz
	young := flow{src: client4, dst: vipAddr4, dport: 80, sport: 1, syn: true}
	old := young
	old.sport = 2
	sendTo(t, d, young, 1)
	sendTo(t, d, old, 1)
	must(t, d.PutLookupTable(1, fill(d.LookupTableSize(), 9)))
	ageHalf(t, d, ctKey(young), timeout-hz)
	ageHalf(t, d, ctKey(old), timeout+hz)
	if fb := flowsByBackend(t, d); !maps.Equal(fb, map[uint32]int{1: 1}) {
		t.Errorf("open flows %v, want the young one only, on 1", fb)
	}

	sendTo(t, d, young.as("A"), 1)
	if v, half, ok := flowEntry(t, d, ctKey(young)); !ok || half || v.BackendId != 1 {
		t.Errorf("young flow after its ACK: %+v (found %v, half-open %v), want established on 1", v, ok, half)
	}
	sendTo(t, d, old.as("A"), 9)
	if v, half, ok := flowEntry(t, d, ctKey(old)); !ok || !half || v.BackendId != 9 || v.Flags != established {
		t.Errorf("expired flow after its ACK: %+v (found %v, half-open %v), want placed again on 9, picked up established", v, ok, half)
	}
	sendTo(t, d, old.as("A"), 9)
	if _, half, _ := flowEntry(t, d, ctKey(old)); half {
		t.Error("the flow placed again did not move to the connection table on its next packet")
	}
	if n := eventCount(t, d, "early_drop"); n != 0 {
		t.Errorf("early_drop %d, want 0", n)
	}
}

// completeNAT does what c's backend and client do after its first packet:
// the backend's answer (a SYN-ACK, a UDP reply) is translated back to the
// client, the client's next packet to the backend, which establishes the
// flow; every frame compared byte for byte.
func (lab *natLab) completeNAT(t *testing.T, c natConn) {
	t.Helper()
	tcp := c.tcp()
	reply := flow{src: c.v.backend, sport: c.v.bport(), dst: c.source, dport: c.sport, proto: c.v.key.Proto,
		syn: tcp, ack: tcp, srcMAC: lab.srvPeerMAC, dstMAC: lab.srv.HardwareAddr}
	back := flow{src: c.v.key.Addr, sport: c.v.key.Port, dst: c.client, dport: c.cport, proto: c.v.key.Proto,
		syn: tcp, ack: tcp, ttl: 63, srcMAC: lab.cli.HardwareAddr, dstMAC: lab.cliPeerMAC}
	lab.expectFrame(t, reply.build(t), lab.srv, xdpRedirect, back.build(t))
	lab.clientAgain(t, c)
	lab.checkEstablished(t, c)
}

// clientAgain sends c's next packet from its client (an ACK, a UDP
// datagram) and expects it translated to the backend (DR: only the MACs).
func (lab *natLab) clientAgain(t *testing.T, c natConn) {
	t.Helper()
	in := c.fromClient(false)
	in.ack = c.tcp()
	if c.v.mode == ModeDR {
		b := in.build(t)
		lab.expectFrame(t, b, lab.cli, xdpRedirect, rewrittenMACs(b, lab.srvPeerMAC, lab.srv.HardwareAddr))
		return
	}
	out := flow{src: c.source, sport: c.sport, dst: c.v.backend, dport: c.v.bport(), proto: c.v.key.Proto,
		ack: c.tcp(), ttl: 63, srcMAC: lab.srv.HardwareAddr, dstMAC: lab.srvPeerMAC}
	lab.expectFrame(t, in.build(t), lab.cli, xdpRedirect, out.build(t))
}

func (c natConn) ctKey() xdplbFlowKey {
	return flowKey(c.client, c.cport, c.v.key.Addr, c.v.key.Port, c.v.key.Proto)
}

func (c natConn) replyKey() xdplbFlowKey {
	return flowKey(c.v.backend, c.v.bport(), c.source, c.sport, c.v.key.Proto)
}

// checkHalfOpen: c has a way in ct_half and no connection-table entry,
// and its translation (NAT) is not established.
func (lab *natLab) checkHalfOpen(t *testing.T, c natConn) {
	t.Helper()
	v, half, ok := flowEntry(t, lab.d, c.ctKey())
	if !ok || !half || v.BackendId != c.v.id {
		t.Fatalf("%s flow from port %d: %+v (found %v, half-open %v), want a way in ct_half", c.v, c.cport, v, ok, half)
	}
	if c.v.mode == ModeDR {
		return
	}
	ns, ok := lab.natFlow(t, c.replyKey())
	if !ok || ns.Flags&uint32(xdplbNatFlagsNAT_F_ESTABLISHED) != 0 {
		t.Fatalf("%s flow from port %d: translation %+v (found %v), want a half-open one", c.v, c.cport, ns, ok)
	}
}

// checkEstablished: c is in the connection table, established, with no
// way in ct_half, and its translation (NAT) is established.
func (lab *natLab) checkEstablished(t *testing.T, c natConn) {
	t.Helper()
	v, half, ok := flowEntry(t, lab.d, c.ctKey())
	if !ok || half || v.BackendId != c.v.id || v.Flags&established == 0 {
		t.Fatalf("%s flow from port %d: %+v (found %v, half-open %v), want established in the connection table", c.v, c.cport, v, ok, half)
	}
	if _, ok := halfWay(t, lab.d, c.ctKey()); ok {
		t.Fatalf("%s flow from port %d kept its way in ct_half", c.v, c.cport)
	}
	if c.v.mode == ModeDR {
		return
	}
	ns, ok := lab.natFlow(t, c.replyKey())
	want := uint32(xdplbNatFlagsNAT_F_REPLIED | xdplbNatFlagsNAT_F_ESTABLISHED)
	if !ok || ns.Flags&want != want {
		t.Fatalf("%s flow from port %d: translation %+v (found %v), want replied and established", c.v, c.cport, ns, ok)
	}
}

// A NAT flow is half-open until its client speaks after the backend
// answered: a client's packet before that (a blind ACK, which is all a
// spoofed source can send; a UDP client's second datagram) goes to the
// backend but leaves it half-open; the backend's SYN-ACK (reply) marks the
// translation replied; the client's next packet establishes the flow.
func TestNATHandshake(t *testing.T) {
	lab := newNATLab(t, testOptions(""))
	vips := natVIPs()
	lab.putNATVIPs(t, vips)
	for i, v := range vips {
		t.Run(v.String(), func(t *testing.T) {
			c := lab.connect(t, v, uint16(42000+i))
			lab.checkHalfOpen(t, c)
			if v.mode == ModeDR {
				// DR sees no answer: the client's second packet is enough.
				lab.clientAgain(t, c)
				lab.checkEstablished(t, c)
				return
			}
			lab.clientAgain(t, c)
			lab.checkHalfOpen(t, c)
			lab.completeNAT(t, c)
		})
	}
}

// A NAT flow's translation lives --half-open-timeout idle while the flow
// is half-open, its idle timeout once established: the sweep drops the
// one and keeps the other, and the half-open flow's next packet finds no
// translation and is placed again.
func TestNATHalfOpenTimeout(t *testing.T) {
	opts := testOptions("")
	opts.HalfOpenTimeout = 5 * time.Second
	lab := newNATLab(t, opts)
	vips := natVIPs()
	lab.putNATVIPs(t, vips)
	hz := tickRate(t, lab.d)
	var half, est []natConn
	for i, v := range vips {
		if v.mode == ModeDR {
			continue
		}
		h, e := lab.connect(t, v, uint16(43000+2*i)), lab.connect(t, v, uint16(43001+2*i))
		lab.completeNAT(t, e)
		half, est = append(half, h), append(est, e)
	}
	for _, c := range append(append([]natConn(nil), half...), est...) {
		lab.age(t, c.ctKey(), c.replyKey(), 5*hz+hz)
	}
	st, err := lab.d.ExpireNAT()
	must(t, err)
	if st.Entries != len(est) {
		t.Errorf("after the sweep %d translations, want the %d established ones", st.Entries, len(est))
	}
	for _, c := range half {
		if _, ok := lab.natFlow(t, c.replyKey()); ok {
			t.Errorf("%s: a half-open translation idle beyond the half-open timeout is still there", c.v)
		}
		// Its way expired too: its next packet is a new flow, half-open.
		r := lab.run(t, c.fromClient(true).build(t), lab.cli)
		if r.verdict != xdpRedirect {
			t.Fatalf("%s: packet after the timeout: verdict %d", c.v, r.verdict)
		}
		if _, ok := lab.natFlow(t, c.replyKey()); !ok && c.v.mode == ModeNAT {
			t.Errorf("%s: no translation for the flow placed again", c.v)
		}
	}
	for _, c := range est {
		if _, ok := lab.natFlow(t, c.replyKey()); !ok {
			t.Errorf("%s: an established translation idle for less than its timeout was dropped", c.v)
		}
		lab.clientAgain(t, c)
		lab.checkEstablished(t, c)
	}
}

// Full NAT's ports: when every port a new flow tries is held, the oldest
// half-open flow's goes to it (an early drop), and that flow loses its
// way too, so its next packet is placed again; an established flow's port
// never goes.
func TestSNATEarlyDrop(t *testing.T) {
	ports := PortRange{Lo: 20000, Hi: 20003}
	lab, v := snatLab(t, ports)
	early := func() uint64 { return lab.events(t)["early_drop"] }
	flows := make([]snatFlow, 8)
	portOf := map[snatFlow]uint16{}
	for i := range flows {
		flows[i] = snatFlow{client4, uint16(51001 + i)}
	}
	// Four half-open flows, flows[0] the oldest.
	for i, f := range flows[:4] {
		portOf[f] = lab.send(t, v, f, true, false, false)
		lab.age(t, f.ctKey(v), replyKey(v, portOf[f]), uint64(40-10*i))
	}
	p := lab.send(t, v, flows[4], true, false, false)
	if p != portOf[flows[0]] || early() != 1 {
		t.Fatalf("5th flow got port %d (early_drop %d), want the oldest half-open flow's %d", p, early(), portOf[flows[0]])
	}
	portOf[flows[4]] = p
	if _, _, ok := flowEntry(t, lab.d, flows[0].ctKey(v)); ok {
		t.Fatal("the flow whose port went kept its way")
	}
	// Its next packet is placed again, on the oldest half-open flow's
	// port: flows[1]'s.
	if p := lab.send(t, v, flows[0], false, true, false); p != portOf[flows[1]] || early() != 2 {
		t.Fatalf("flow 0 placed again on port %d (early_drop %d), want flow 1's %d", p, early(), portOf[flows[1]])
	}
	portOf[flows[0]] = portOf[flows[1]]
	// Established flows hold their ports: with all four established,
	// a new flow is dropped.
	for _, f := range []snatFlow{flows[0], flows[2], flows[3], flows[4]} {
		lab.establish(t, v, f, portOf[f])
	}
	if p := lab.send(t, v, flows[5], true, false, false); p != 0 {
		t.Fatalf("a new flow took port %d of an established flow", p)
	}
	if n := lab.drops(t, "snat_exhausted"); n != 1 || early() != 2 {
		t.Errorf("snat_exhausted %d, early_drop %d, want 1 and 2", n, early())
	}
}

// A flood of spoofed SYNs (random sources, each seen once) against one
// VIP, beside quiet VIPs of every mode, with tables the flood overflows
// 20 times (--conntrack-size 1024: 256 half-open flows in 32 buckets, a
// NAT table of 1024): established flows are untouched, nothing is dropped,
// the NAT table holds at most the half-open table's size of half-open
// translations, and the quiet VIPs' new flows all complete their handshake
// when answered after 250 flood packets, the time the flood takes to turn
// a bucket's ways over (8 SYNs in each of 32 buckets): the flooded VIP
// never takes their ways. Its own new flows keep their way for about its
// share of the table in flood packets: all complete when answered within
// 16 flood packets, about half within 250, few within 1000 (harmless in
// DR, where Maglev places them again; a retransmitted SYN in NAT).
func TestFloodIsolation(t *testing.T) {
	for _, mode := range []ForwardMode{ModeDR, ModeNAT, ModeFullNAT} {
		t.Run(modeName(mode), func(t *testing.T) { floodIsolation(t, mode) })
	}
}

func floodIsolation(t *testing.T, mode ForwardMode) {
	opts := testOptions("")
	opts.ConntrackSize = 1024
	lab := newNATLab(t, opts)
	vips := natVIPs()
	lab.putNATVIPs(t, vips)
	flooded := findVIP(vips, mode, false, ProtoTCP)
	var tcpVIPs, quiet []natVIP
	for _, v := range vips {
		if v.key.Proto == ProtoTCP {
			tcpVIPs = append(tcpVIPs, v)
			if v.id != flooded.id {
				quiet = append(quiet, v)
			}
		}
	}
	complete := func(c natConn) {
		t.Helper()
		if c.v.mode == ModeDR {
			lab.clientAgain(t, c)
			lab.checkEstablished(t, c)
			return
		}
		lab.completeNAT(t, c)
	}
	natEstablished := 0
	cport := uint16(20000)
	open := func(v natVIP) natConn {
		t.Helper()
		cport++
		return lab.connect(t, v, cport)
	}

	// Two established flows per TCP VIP before the flood.
	var before []natConn
	for _, v := range tcpVIPs {
		for range 2 {
			c := open(v)
			complete(c)
			before = append(before, c)
			if v.mode != ModeDR {
				natEstablished++
			}
		}
	}

	const floodN, every = 5000, 25
	type pending struct {
		c    natConn
		kind int // index in lags: 0 quiet, then the flooded VIP's
	}
	lags := [...]int{250, 16, 250, 1000}
	var ok, total [len(lags)]int
	due := map[int][]pending{}
	finish := func(p pending) {
		t.Helper()
		total[p.kind]++
		if _, held := halfWay(t, lab.d, p.c.ctKey()); !held {
			return
		}
		complete(p.c)
		ok[p.kind]++
		if p.c.v.mode != ModeDR {
			natEstablished++
		}
	}
	rng := rand.New(rand.NewPCG(24, 2026))
	spoof := flow{src: netip.MustParseAddr("198.18.0.1"), dst: flooded.key.Addr, dport: flooded.key.Port, syn: true}.build(t)
	for i := range floodN {
		if i%every == 0 {
			q := quiet[(i/every)%len(quiet)]
			due[i+lags[0]] = append(due[i+lags[0]], pending{open(q), 0})
			for k := 1; k < len(lags); k++ {
				due[i+lags[k]] = append(due[i+lags[k]], pending{open(flooded), k})
			}
		}
		// A new source (198.18.0.0/15) and port each time; the frame's
		// checksums go stale, which the program does not check.
		spoof[srcLastByte4-2] = 18 + byte(rng.IntN(2))
		spoof[srcLastByte4-1], spoof[srcLastByte4] = byte(rng.IntN(256)), byte(rng.IntN(256))
		spoof[sport4], spoof[sport4+1] = byte(rng.IntN(256)), byte(rng.IntN(256))
		if r := lab.run(t, spoof, lab.cli); r.verdict != xdpRedirect {
			t.Fatalf("flood packet %d: verdict %d", i, r.verdict)
		}
		for _, p := range due[i] {
			finish(p)
		}
		delete(due, i)
	}
	for i := floodN; len(due) > 0; i++ {
		for _, p := range due[i] {
			finish(p)
		}
		delete(due, i)
	}

	early := lab.events(t)["early_drop"]
	nat := 0
	must(t, iterate(lab.d.objs.NatFlows, func(xdplbFlowKey, xdplbNatState) { nat++ }))
	st, err := lab.d.Status()
	must(t, err)
	t.Logf("%s flooded with %d SYNs: quiet VIPs' new flows answered after %d flood packets completed %d/%d; "+
		"the flooded VIP's answered after %d: %d/%d, after %d: %d/%d, after %d: %d/%d; early drops %d; "+
		"NAT table %d entries (%d established); half-open table %d/%d",
		flooded, floodN, lags[0], ok[0], total[0], lags[1], ok[1], total[1], lags[2], ok[2], total[2],
		lags[3], ok[3], total[3], early, nat, natEstablished, mapFill(t, st, "ct_half"), lab.d.HalfOpenSize())
	if ok[0] != total[0] {
		t.Errorf("%d of %d new flows of the quiet VIPs lost their way to the flood", total[0]-ok[0], total[0])
	}
	if ok[1] != total[1] {
		t.Errorf("the flooded VIP's flows answered within %d flood packets: %d of %d completed, want all", lags[1], ok[1], total[1])
	}
	if ok[2]*4 > total[2]*3 || ok[3]*10 > total[3] {
		t.Errorf("the flooded VIP's flows answered late completed %d/%d and %d/%d: more than its share of the table allows",
			ok[2], total[2], ok[3], total[3])
	}
	if early < floodN-uint64(lab.d.HalfOpenSize()) {
		t.Errorf("early_drop %d, want at least %d", early, floodN-int(lab.d.HalfOpenSize()))
	}
	if nat > int(lab.d.HalfOpenSize())+natEstablished {
		t.Errorf("NAT table %d entries: more than %d half-open and %d established", nat, lab.d.HalfOpenSize(), natEstablished)
	}
	drops, err := lab.d.DropCounters()
	must(t, err)
	for reason, n := range drops {
		if n != 0 {
			t.Errorf("drop %s = %d, want 0", reason, n)
		}
	}
	// The flows established before the flood are where they were.
	for _, c := range before {
		lab.checkEstablished(t, c)
		lab.clientAgain(t, c)
	}
}

// A SYN flood never evicts an established flow: the connection table is
// full of established flows (as many as it holds, less the LRU's per-CPU
// slack), and ten times its size in spoofed SYNs go to the half-open
// table only. Every established flow keeps its entry, and so its backend
// when the lookup table changes, which Maglev alone would not give.
func TestSYNFloodKeepsEstablished(t *testing.T) {
	d := newDatapathWith(t, func(o *Options) { o.ConntrackSize = 1024 })
	setupVIPs(t, d)
	putBackend(t, d, 9, 1, netip.MustParseAddr("10.0.1.9"), loIfindex)
	const est = 512
	for i := range est {
		f := flow{src: client4, dst: vipAddr4, dport: 80, sport: uint16(10000 + i)}
		sendTo(t, d, f.as("S"), 1)
		sendTo(t, d, f.as("A"), 1)
	}
	spoof := flow{src: netip.MustParseAddr("198.18.0.1"), dst: vipAddr4, dport: 80, syn: true}.build(t)
	rng := rand.New(rand.NewPCG(7, 24))
	for i := range 10 * int(d.ConntrackSize()) {
		spoof[srcLastByte4-1], spoof[srcLastByte4] = byte(rng.IntN(256)), byte(rng.IntN(256))
		spoof[sport4], spoof[sport4+1] = byte(rng.IntN(256)), byte(rng.IntN(256))
		if r := mustRun(t, d.Program(), spoof); r.verdict != xdpTX {
			t.Fatalf("flood packet %d: verdict %d", i, r.verdict)
		}
	}
	must(t, d.PutLookupTable(1, fill(d.LookupTableSize(), 9)))
	for i := range est {
		f := flow{src: client4, dst: vipAddr4, dport: 80, sport: uint16(10000 + i)}
		if _, half, ok := flowEntry(t, d, ctKey(f)); !ok || half {
			t.Fatalf("established flow %d lost its entry to the flood (found %v, half-open %v)", i, ok, half)
		}
		sendTo(t, d, f.as("A"), 1)
	}
	if n := eventCount(t, d, "early_drop"); n < uint64(10*d.ConntrackSize()-d.HalfOpenSize()) {
		t.Errorf("early_drop %d after %d SYNs into %d ways", n, 10*d.ConntrackSize(), d.HalfOpenSize())
	}
}

// Two full-NAT VIPs on the same SNAT address and backend share its ports:
// when every port a new flow tries is held by a half-open flow, it takes
// the oldest of its own VIP's, and another VIP's only when its own holds
// none of them.
func TestSNATEarlyDropOwnVIPFirst(t *testing.T) {
	lab, v1 := snatLab(t, PortRange{Lo: 20000, Hi: 20003})
	v2 := v1
	v2.id, v2.key.Port = 2, 82
	lab.putNATVIP(t, v2)
	type held struct {
		v natVIP
		f snatFlow
	}
	var hs []held
	port := map[uint16]held{}
	// Three flows of VIP 1 (the oldest), then one of VIP 2.
	for i, v := range []natVIP{v1, v1, v1, v2} {
		h := held{v, snatFlow{client4, uint16(52001 + i)}}
		p := lab.send(t, h.v, h.f, true, false, false)
		lab.age(t, h.f.ctKey(h.v), replyKey(h.v, p), uint64(40-10*i))
		hs = append(hs, h)
		port[p] = h
	}
	p2 := lab.send(t, v2, snatFlow{client4, 52100}, true, false, false)
	if h := port[p2]; h != hs[3] {
		t.Fatalf("VIP 2's new flow took port %d of %v, want VIP 2's own flow's", p2, h)
	}
	p1 := lab.send(t, v1, snatFlow{client4, 52101}, true, false, false)
	if h := port[p1]; h != hs[0] {
		t.Fatalf("VIP 1's new flow took port %d of %v, want VIP 1's oldest", p1, h)
	}
	if n := lab.events(t)["early_drop"]; n != 2 {
		t.Errorf("early_drop %d, want 2", n)
	}
}

// An upgrade from a build before the half-open table (pins without
// ct_half) finds NAT translations that build never marked established:
// the load marks them, once, so that an idle established flow keeps its
// 15 minutes. A load over this build's pins leaves the marks as they are.
func TestLoadMarksEarlierNATEstablished(t *testing.T) {
	testutil.RequireRoot(t)
	opts := testOptions(testutil.MountBPFFS(t))
	d := load(t, opts)
	k := flowKey(natBackend4, 8080, client4, 40000, ProtoTCP)
	must(t, d.objs.NatFlows.Put(k, xdplbNatState{Vip: vipAddr4.As16(), VipPort: toNetPort(80), VipId: 1, LastSeen: 1}))
	must(t, d.Close())
	flags := func(d *Datapath) uint32 {
		var v xdplbNatState
		must(t, d.objs.NatFlows.Lookup(k, &v))
		return v.Flags
	}

	d2 := load(t, opts) // this build's pins: nothing marked
	if f := flags(d2); f != 0 {
		t.Errorf("a reload of this build's pins changed a translation's flags to %#x", f)
	}
	must(t, d2.Close())

	// The pins as the earlier build left them: no half-open table.
	dir := filepath.Join(opts.BPFFS, pinSubdir)
	must(t, os.Remove(filepath.Join(dir, xdplbMapCtHalf)))
	must(t, os.Remove(filepath.Join(dir, xdplbMapHalfCount)))
	d3 := load(t, opts)
	t.Cleanup(func() { d3.Remove() })
	want := uint32(xdplbNatFlagsNAT_F_ESTABLISHED | xdplbNatFlagsNAT_F_REPLIED)
	if f := flags(d3); f != want {
		t.Errorf("a translation of an earlier build has flags %#x after the upgrade, want %#x", f, want)
	}
}

// A NAT flow that loses its way to an early drop loses its translation
// with it: the NAT table holds no more half-open translations than the
// half-open table holds flows, and the dropped flow's SYN-ACK, which no
// translation matches, goes to the kernel as it came. One bucket.
func TestNATEarlyDropForgetsTranslation(t *testing.T) {
	vips := natVIPs()
	for _, v := range []natVIP{findVIP(vips, ModeNAT, false, ProtoTCP), findVIP(vips, ModeFullNAT, true, ProtoTCP)} {
		t.Run(v.String(), func(t *testing.T) {
			opts := testOptions("")
			opts.HalfOpenSize = 8
			lab := newNATLab(t, opts)
			lab.putNATVIPs(t, vips)
			var cs []natConn
			for i := range 9 {
				cs = append(cs, lab.connect(t, v, uint16(44000+i)))
			}
			if _, ok := lab.natFlow(t, cs[0].replyKey()); ok {
				t.Fatal("the early-dropped flow kept its translation")
			}
			if _, _, ok := flowEntry(t, lab.d, cs[0].ctKey()); ok {
				t.Fatal("the early-dropped flow kept its entry")
			}
			for _, c := range cs[1:] {
				lab.checkHalfOpen(t, c)
			}
			synAck := flow{src: v.backend, sport: v.bport(), dst: cs[0].source, dport: cs[0].sport, syn: true, ack: true,
				srcMAC: lab.srvPeerMAC, dstMAC: lab.srv.HardwareAddr}.build(t)
			lab.expectFrame(t, synAck, lab.srv, xdpPass, synAck)
			// Its client's retransmitted SYN starts it again, at the cost
			// of another flow's place.
			c := lab.connect(t, v, cs[0].cport)
			lab.completeNAT(t, c)
			if n := lab.events(t)["early_drop"]; n != 2 {
				t.Errorf("early_drop %d, want 2 (a ninth flow, a retransmitted SYN)", n)
			}
		})
	}
}
