package bench

// The connection table at scale (issue 14): established lookups among
// millions of live flows, the cache-line table beside the LRU hash it
// replaced in the same run; live-flow loss of the real data plane at 50,
// 70 and 90% of --conntrack-size; memory per flow of capacity.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cilium/ebpf"

	"github.com/xdplb/xdplb/bench/progs"
	"github.com/xdplb/xdplb/internal/nsthread"
	"github.com/xdplb/xdplb/loader"
)

// ctParams size a run.
type ctParams struct {
	sizes  []uint32 // --conntrack-size, and the LRU's entries
	rounds int      // each times every row once, side by side
	repeat int      // BPF_PROG_TEST_RUN repeats of a timed run: that many lookups
	batch  int      // flows per pair of passes when xdplb fills its table
}

func ctParamsFor(quick bool) ctParams {
	if quick {
		return ctParams{sizes: []uint32{1 << 18, 1 << 20}, rounds: 3, repeat: 50_000, batch: 1 << 12}
	}
	return ctParams{sizes: []uint32{1 << 20, 8 << 20}, rounds: 11, repeat: 200_000, batch: 1 << 12}
}

// ctLoadLevels are the fills, in percent of --conntrack-size, at which
// the live-flow loss is read; ctLossTargetLevel is the one with a target.
var ctLoadLevels = []int{50, 70, 90, 100}

const (
	ctLossTargetLevel = 70
	ctLossLimit       = 100 // live flows evicted per million inserted
	ctLookupLimit     = 0.5 // cache-line / LRU, random established lookups
	ctFillChunk       = 1 << 18
	ctLRUHeadroom     = 50 // the LRU hash gets size/this more entries, and 1024 a CPU
	ctSeed            = 0x5eed_c0ff_ee14_0014
)

// ctLoss is the real data plane's table at one fill level.
type ctLoss struct {
	percent             int
	inserted            int    // flows established (moved from ct_half into the table)
	evicted, earlyDrops uint64 // ct_evicted_live, early_drop so far
	held                int    // slots in use
	simEvicted          int    // the simulation's evictions after as many flows
}

// ctSize is one size's figures; the series have one value per round.
type ctSize struct {
	size, slots uint32
	lruEntries  uint32 // the LRU hash's max_entries: size and headroom
	// The isolated tables, each behind the flow-set harness: random
	// lookups among size flows, and one flow (hot); floorRand/floorHot the
	// floor behind the same harness.
	lruRand, newRand, floorRand []float64
	lruHot, newHot, floorHot    []float64
	lruFill, newFill            time.Duration
	lruMisses, newMisses        uint64
	lookups                     int
	lruBytes, newBytes          uint64
	// The real program on established ACKs, behind the harness; floor the
	// floor alone on the ACK.
	xRand, xHot, xFloorRand, xFloorHot, xFloor []float64
	xFill                                      time.Duration
	xBytes                                     uint64
	loss                                       []ctLoss
}

// ctBench is the section's state.
type ctBench struct {
	p     ctParams
	log   *slog.Logger
	timer *pktBench // perPacketRun's timing and its disturbance counts
	floor *ebpf.Program
	ack   []byte // IPv4 TCP ACK to the VIP; the harness writes its source
	held  int    // hold's calls, which name its veths
	sizes []*ctSize
}

// runConnTable is the connection-table section.
func runConnTable(ctx context.Context, c Config) (Section, error) {
	p := ctParamsFor(c.Quick)
	fam := pktFamilies[0]
	ack, err := pktFlow{src: fam.client, dst: fam.vip, sport: 40000, dport: pktTCPPort, ack: true}.frame()
	if err != nil {
		return Section{}, err
	}
	b := &ctBench{p: p, log: c.Log, ack: ack,
		timer: &pktBench{p: pktParams{retries: pktParamsFor(c.Quick).retries}, log: c.Log}}
	if b.floor, err = progs.LoadFloor(); err != nil {
		return Section{}, err
	}
	defer b.floor.Close()
	// Everything runs on one locked OS thread (perPacketRun reads its CPU
	// time) in a network namespace of the section's own, anonymous: it
	// goes, with the veths that hold the timed programs, when its handle
	// is closed or the process ends.
	ns, err := nsthread.New()
	if err != nil {
		return Section{}, fmt.Errorf("create netns: %w", err)
	}
	defer ns.Close()
	start := time.Now()
	err = nsthread.Do(ns, "ct bench", func() error {
		for _, size := range p.sizes {
			s := &ctSize{size: size}
			// The real data plane first: its table's slots size the
			// benchmark's copy of it, as --conntrack-size sizes the
			// product's.
			if err := b.measureXdplb(ctx, s); err != nil {
				return fmt.Errorf("xdplb with %d flows: %w", size, err)
			}
			if err := b.measureTables(ctx, s); err != nil {
				return fmt.Errorf("tables of %d flows: %w", size, err)
			}
			b.sizes = append(b.sizes, s)
			c.Log.Info("connection table measured", "flows", size, "elapsed", time.Since(start).Round(time.Millisecond))
		}
		return nil
	})
	if err != nil {
		return Section{}, err
	}
	return b.section(), nil
}

// hold attaches the timed programs to veths that stay down, in the
// section's namespace (pktNAT.hold says why), until the returned function
// detaches them.
func (b *ctBench) hold(ps ...*ebpf.Program) (func(), error) {
	closers, err := pktHold(ps, fmt.Sprintf("ct%d-", b.held))
	b.held++
	release := func() {
		for _, c := range closers {
			if err := c(); err != nil {
				b.log.Error("detach held program", "err", err)
			}
		}
	}
	if err != nil {
		release()
		return nil, err
	}
	return release, nil
}

// harness loads a flow-set harness on the IPv4 ACK's source, in front of
// target.
func (b *ctBench) harness(target *ebpf.Program) (*progs.FlowSetHarness, error) {
	fam := pktFamilies[0]
	return progs.LoadFlowSetHarness(target, fam.sportOff, fam.saddrOff)
}

// fillInOrder runs h (in front of a program that puts the frame's flow
// in) on flows first..first+n-1, in chunks, checking ctx between them.
func (b *ctBench) fillInOrder(ctx context.Context, h *progs.FlowSetHarness, first, n int) error {
	if err := h.InOrder(uint64(first)); err != nil {
		return err
	}
	for done := 0; done < n; {
		if err := ctx.Err(); err != nil {
			return err
		}
		k := min(ctFillChunk, n-done)
		v, _, err := h.Program().Benchmark(b.ack, k, nil)
		if err != nil {
			return fmt.Errorf("fill: %w", err)
		}
		if v != pktXDPTX {
			return fmt.Errorf("fill: verdict %d, want tx", v)
		}
		// A run the kernel interrupted and cilium/ebpf ran again moved
		// the sequence on: follow it, so that no flow is left out.
		next, err := h.Next()
		if err != nil {
			return err
		}
		done = int(next) - first
	}
	return nil
}

// ctTimed is one row's timed program: a harness and the set it draws from.
type ctTimed struct {
	h *progs.FlowSetHarness
	n uint32 // flows to draw from: the table's, or 1 (hot)
	// to is where the figure goes; nil for a plain program run without
	// harness (prog, the floor alone).
	to   *[]float64
	prog *ebpf.Program
	// mayMiss: the program passes a frame whose flow it does not find
	// (the tables' lookup programs count those); else it must send it.
	mayMiss bool
}

// round times runs side by side, in order in even rounds and reversed in
// odd ones; every harnessed run draws the same flows (the round's seed).
func (b *ctBench) round(r int, runs []ctTimed) error {
	seed := uint64(r+1) * 0x9e3779b97f4a7c15
	for i := range runs {
		if r%2 == 1 {
			i = len(runs) - 1 - i
		}
		t := runs[i]
		run := pktRun{in: b.ack, verdict: pktXDPTX, repeat: b.p.repeat}
		if t.mayMiss {
			run.check = func(v uint32, _ []byte) error {
				if v != pktXDPTX && v != pktXDPPass {
					return fmt.Errorf("verdict %d, want tx (a hit) or pass (a miss)", v)
				}
				return nil
			}
		}
		if t.h != nil {
			run.prog = t.h.Program()
			run.before = func() error { return t.h.Random(t.n, seed) }
		} else {
			run.prog = t.prog
		}
		ns, err := b.timer.perPacketRun(run)
		if err != nil {
			return err
		}
		*t.to = append(*t.to, ns)
	}
	return nil
}

// measureTables fills an LRU hash and the cache-line table (the benchmark's
// programs, bench/progs/ctlookup.c) with s.size flows each and times
// random established lookups of both side by side, and one hot flow.
func (b *ctBench) measureTables(ctx context.Context, s *ctSize) error {
	// The LRU hash takes free entries from per-CPU lists and evicts before
	// its last free entry is used: sized exactly, it lost up to half the
	// flows here, the hot one among them. Given headroom, it holds them.
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return err
	}
	s.lruEntries = s.size + s.size/ctLRUHeadroom + uint32(1024*cpus)
	lru, err := progs.LoadLRUTable(s.lruEntries)
	if err != nil {
		return err
	}
	defer lru.Close()
	nt, err := progs.LoadCacheLineTable(s.slots/uint32(progs.CTBucketSlots), ctSeed)
	if err != nil {
		return err
	}
	defer nt.Close()
	var hs []*progs.FlowSetHarness
	defer func() {
		for _, h := range hs {
			h.Close()
		}
	}()
	load := func(p *ebpf.Program) (*progs.FlowSetHarness, error) {
		h, err := b.harness(p)
		if err == nil {
			hs = append(hs, h)
		}
		return h, err
	}
	var fills [2]*progs.FlowSetHarness
	for i, t := range []*progs.ConnTable{lru, nt} {
		if fills[i], err = load(t.Fill); err != nil {
			return err
		}
	}
	releaseFills, err := b.hold(fills[0].Program(), fills[1].Program())
	if err != nil {
		return err
	}
	defer releaseFills()
	n := int(s.size)
	start := time.Now()
	if err := b.fillInOrder(ctx, fills[0], 0, n); err != nil {
		return fmt.Errorf("lru: %w", err)
	}
	s.lruFill = time.Since(start)
	start = time.Now()
	if err := b.fillInOrder(ctx, fills[1], 0, n); err != nil {
		return fmt.Errorf("cache-line table: %w", err)
	}
	s.newFill = time.Since(start)
	if s.lruBytes, err = lru.Bytes(); err != nil {
		return err
	}
	if s.newBytes, err = nt.Bytes(); err != nil {
		return err
	}
	hf, err := load(b.floor)
	if err != nil {
		return err
	}
	hl, err := load(lru.Lookup)
	if err != nil {
		return err
	}
	hn, err := load(nt.Lookup)
	if err != nil {
		return err
	}
	release, err := b.hold(hf.Program(), hl.Program(), hn.Program())
	if err != nil {
		return err
	}
	defer release()
	runs := []ctTimed{
		{h: hf, n: s.size, to: &s.floorRand},
		{h: hl, n: s.size, to: &s.lruRand, mayMiss: true}, {h: hn, n: s.size, to: &s.newRand, mayMiss: true},
		{h: hf, n: 1, to: &s.floorHot},
		{h: hl, n: 1, to: &s.lruHot, mayMiss: true}, {h: hn, n: 1, to: &s.newHot, mayMiss: true},
	}
	for r := range b.p.rounds {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := b.round(r, runs); err != nil {
			return fmt.Errorf("round %d: %w", r, err)
		}
	}
	if s.lruMisses, err = lru.Misses(); err != nil {
		return err
	}
	if s.newMisses, err = nt.Misses(); err != nil {
		return err
	}
	// At least: runs the machine disturbed were repeated.
	s.lookups = 2 * b.p.rounds * b.p.repeat
	// Every flow was put in: a miss means a table lost flows it was
	// given, and the figure would be a miss's cost. A few are reported.
	if s.newMisses > uint64(s.lookups)/100 || s.lruMisses > uint64(s.lookups)/100 {
		return fmt.Errorf("lookups missed: lru %d, cache-line %d of %d each", s.lruMisses, s.newMisses, s.lookups)
	}
	return nil
}

// measureXdplb loads xdplb with --conntrack-size s.size, establishes
// s.size flows through the program itself (each flow's first ACK goes to
// ct_half, its second moves it into the table), reading the live-flow
// loss at each of ctLoadLevels, then times established ACKs of random
// flows of the table, and of one.
func (b *ctBench) measureXdplb(ctx context.Context, s *ctSize) error {
	dir, unmount, err := pktMountBPFFS(b.log)
	if err != nil {
		return err
	}
	defer unmount()
	dp, err := loader.Load(loader.Options{BPFFS: dir, ConntrackSize: s.size, Logger: b.log})
	if err != nil {
		return fmt.Errorf("load xdplb: %w", err)
	}
	defer func() {
		if err := dp.Remove(); err != nil {
			b.log.Error("remove xdplb data plane", "err", err)
		}
	}()
	s.slots, s.xBytes = dp.ConntrackSlots(), dp.ConntrackBytes()
	if err := ctConfigure(dp); err != nil {
		return err
	}
	h, err := b.harness(dp.Program())
	if err != nil {
		return err
	}
	defer h.Close()
	hf, err := b.harness(b.floor)
	if err != nil {
		return err
	}
	defer hf.Close()
	// Held from the fill on: a fill's run would otherwise wait for the
	// dispatcher's grace periods, thousands of times.
	release, err := b.hold(b.floor, hf.Program(), h.Program())
	if err != nil {
		return err
	}
	defer release()

	levels := make([]int, len(ctLoadLevels))
	for i, pct := range ctLoadLevels {
		levels[i] = int(uint64(s.size) * uint64(pct) / 100)
	}
	sim := ctSimEvictions(int(s.slots)/progs.CTBucketSlots, progs.CTBucketSlots, levels, ctSeed)
	start := time.Now()
	done := 0
	for li, level := range levels {
		for done < level {
			k := min(b.p.batch, level-done)
			// Twice the same flows: the first ACK of a flow it does not
			// know goes to ct_half, the second establishes it.
			for range 2 {
				if err := b.fillInOrder(ctx, h, done, k); err != nil {
					return err
				}
			}
			done += k
		}
		ev, err := dp.EventCounters()
		if err != nil {
			return err
		}
		ct, _, err := pktTableFill(dp)
		if err != nil {
			return err
		}
		s.loss = append(s.loss, ctLoss{percent: ctLoadLevels[li], inserted: level, evicted: ev["ct_evicted_live"],
			earlyDrops: ev["early_drop"], held: ct.Entries, simEvicted: sim[li]})
	}
	s.xFill = time.Since(start)
	if last := s.loss[len(s.loss)-1]; last.earlyDrops != 0 {
		// A flow whose ct_half way was taken before its second ACK was
		// never established: fewer inserted than counted.
		b.log.Warn("early drops while filling", "flows", s.size, "early_drop", last.earlyDrops)
	}

	runs := []ctTimed{
		{prog: b.floor, to: &s.xFloor},
		{h: hf, n: s.size, to: &s.xFloorRand}, {h: h, n: s.size, to: &s.xRand},
		{h: hf, n: 1, to: &s.xFloorHot}, {h: h, n: 1, to: &s.xHot},
	}
	for r := range b.p.rounds {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := b.round(r, runs); err != nil {
			return fmt.Errorf("xdplb round %d: %w", r, err)
		}
	}
	// Every timed ACK was of an established flow: none placed anew.
	ev, err := dp.EventCounters()
	if err != nil {
		return err
	}
	if n := ev["ct_evicted_live"]; n != s.loss[len(s.loss)-1].evicted {
		return fmt.Errorf("ct_evicted_live rose from %d to %d while timing established flows",
			s.loss[len(s.loss)-1].evicted, n)
	}
	drops, err := dp.DropCounters()
	if err != nil {
		return err
	}
	var errs []error
	for reason, n := range drops {
		if n != 0 {
			errs = append(errs, fmt.Errorf("xdplb dropped %d packets (%s)", n, reason))
		}
	}
	return errors.Join(errs...)
}

// ctConfigure writes the IPv4 TCP VIP of the packet section (DR, one
// backend leaving by lo, so forwarding is XDP_TX).
func ctConfigure(dp *loader.Datapath) error {
	fam := pktFamilies[0]
	const id = 1
	key := loader.VIPKey{Addr: fam.vip, Port: pktTCPPort, Proto: loader.ProtoTCP}
	if err := dp.PutVIP(key, loader.VIPMeta{ID: id, Mode: loader.ModeDR, Hash: loader.HashMaglev}); err != nil {
		return err
	}
	be := loader.Backend{ID: id, VIPID: id, Addr: fam.backend, MAC: pktBackendMAC, SrcMAC: pktLBOutMAC, Ifindex: 1}
	if err := dp.PutBackend(be); err != nil {
		return err
	}
	table := make([]uint32, dp.LookupTableSize())
	for i := range table {
		table[i] = id
	}
	return dp.PutLookupTable(id, table)
}
