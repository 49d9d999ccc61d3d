package loader

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestCTModel drives random packet sequences (ACKs, UDP datagrams, SYNs,
// FINs, RSTs) of a pool of flows far larger than a small table, and ages
// random slots, against a Go model of the connection table (ctTable over
// memory of its own, the same seed and limits): after every batch the
// kernel's table and keys, mapped, must equal the model's byte for byte,
// and ct_evicted_live must have risen as the model's live evictions.
//
// The model holds the connection table only: which flows are half-open
// (ct_half, where a flow waits for its second packet) it reads from the
// kernel before each packet. The kernel's stamps are taken over where the
// program writes one (an insert, a touch), once checked to lie between
// the clock before and after the packet; the ages chosen stay clear of
// the idle limits, so a tick passing during a run changes no decision.
func TestCTModel(t *testing.T) {
	d := newDatapathWith(t, func(o *Options) { o.ConntrackSize, o.HalfOpenSize = 40, 4096 })
	setupVIPs(t, d)
	model := &ctTable{
		slots:   make([]byte, len(d.ct.slots)),
		keys:    make([]byte, len(d.ct.keys)),
		buckets: d.ct.buckets,
		seed:    d.ct.seed,
	}
	limits := d.ctLimits()
	rng := rand.New(rand.NewPCG(14, 70))
	const nflows = 160
	type mflow struct {
		f   flow
		bid uint32
	}
	pool := make([]mflow, nflows)
	for i := range pool {
		sport := uint16(1024 + i*371%60000)
		if i%3 == 2 {
			pool[i] = mflow{flow{src: client4, dst: vipAddr4, dport: 53, sport: sport, proto: ProtoUDP}, 2}
		} else {
			pool[i] = mflow{flow{src: client4, dst: vipAddr4, dport: 80, sport: sport}, 1}
		}
	}
	ages := []uint64{0, 50, 300, 2000, limits.closing + 500, limits.udp + 500, limits.tcp + 500, limits.tcp * 3}
	var wantEvicted uint64
	evictedBefore := eventCount(t, d, "ct_evicted_live")
	est, cls := uint32(xdplbFlowFlagsFLOW_F_ESTABLISHED), uint32(xdplbFlowFlagsFLOW_F_CLOSING)

	// adopt takes the kernel's stamp of pos into the model, if the
	// program wrote it during the packet.
	adopt := func(pos int, before, after uint64, what string) {
		t.Helper()
		st := d.ct.slot(pos).Stamp
		if uint32(st-uint32(before)) > uint32(after-before) {
			t.Fatalf("%s: kernel stamp %d not within [%d, %d]", what, st, uint32(before), uint32(after))
		}
		model.slot(pos).Stamp = st
	}

	for batch := range 60 {
		for op := range 25 {
			what := fmt.Sprintf("batch %d op %d", batch, op)
			if rng.IntN(8) == 0 {
				// Age a random slot in use, in both.
				pos := rng.IntN(int(model.buckets) * ctBucketSlots)
				if model.tag(pos) == 0 {
					continue
				}
				st := uint32(tickNow(t, d) - ages[rng.IntN(len(ages))])
				d.ct.slot(pos).Stamp = st
				model.slot(pos).Stamp = st
				continue
			}
			m := pool[rng.IntN(nflows)]
			f := m.f
			if f.proto != ProtoUDP {
				switch r := rng.IntN(10); {
				case r < 6:
					f.ack = true
				case r < 8:
					f.syn = true
				case r < 9:
					f.fin, f.ack = true, true
				default:
					f.rst = true
				}
			}
			k := ctKey(f)
			syn, end := f.syn, f.fin || f.rst
			hw, half := halfWay(t, d, k)
			before := tickNow(t, d)
			r := mustRun(t, d.Program(), f.build(t))
			after := tickNow(t, d)
			if r.verdict != xdpTX {
				t.Fatalf("%s: verdict %d", what, r.verdict)
			}
			mr := ctRefOf(ctHash(model.seed, &k), model.buckets)
			if pos := model.find(mr); pos >= 0 {
				s := model.slot(pos)
				switch {
				case syn && s.Meta&cls != 0:
					// A new connection on a closing flow's 5-tuple.
					model.delete(&k)
				case end && s.Meta&cls == 0:
					s.Meta |= cls
				}
				// Touched (FLOW_TOUCH_TICKS: the ages above are 0, 50 or
				// beyond 256 ticks, so it was or was not, whatever the tick).
				if model.tag(pos) != 0 && uint32(before)-s.Stamp > 256 {
					adopt(pos, before, after, what)
				}
				continue
			}
			// Not in the table: half-open. Its second packet that is
			// no SYN moves it to the table, unless it must be placed
			// again (a SYN on a closing way is, and goes nowhere here).
			if !half || syn {
				continue
			}
			flags := hw.Flags | est
			if end {
				flags |= cls
			}
			res, ok := model.insert(&k, m.bid, flags, uint32(before), limits)
			if !ok {
				t.Fatalf("%s: model insert lost a race", what)
			}
			if res.evictedLive {
				wantEvicted++
			}
			adopt(res.pos, before, after, what)
		}
		if !bytes.Equal(d.ct.slots, model.slots) {
			for pos := range int(model.buckets) * ctBucketSlots {
				if *d.ct.slot(pos) != *model.slot(pos) {
					t.Errorf("batch %d: slot %d: kernel %+v, model %+v", batch, pos, *d.ct.slot(pos), *model.slot(pos))
				}
			}
			t.FailNow()
		}
		if !bytes.Equal(d.ct.keys, model.keys) {
			t.Fatalf("batch %d: ct_keys differ from the model's", batch)
		}
		if got := eventCount(t, d, "ct_evicted_live") - evictedBefore; got != wantEvicted {
			t.Fatalf("batch %d: ct_evicted_live rose by %d, the model evicted %d live flows", batch, got, wantEvicted)
		}
	}
	if n := eventCount(t, d, "early_drop"); n != 0 {
		t.Errorf("early_drop %d: the half-open table overflowed, and the model does not hold it", n)
	}
	t.Logf("%d live flows evicted; %d of %d slots in use", wantEvicted, model.count(), int(model.buckets)*ctBucketSlots)
}
