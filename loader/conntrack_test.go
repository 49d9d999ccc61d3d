package loader

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/xdplb/xdplb/internal/testutil"
)

// An upgrade from a build whose connection table was an LRU hash: Load
// replaces the pinned table with the cache-line one, carries its flows
// over (a flow keeps its backend even where the lookup table now names
// another) and says so once; the next Load keeps the new table.
func TestUpgradeFromLRUConntrack(t *testing.T) {
	testutil.RequireRoot(t)
	opts := testOptions(testutil.MountBPFFS(t))
	var logs bytes.Buffer
	opts.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	old, err := ebpf.NewMap(&ebpf.MapSpec{Name: "conntrack", Type: ebpf.LRUHash, KeySize: 40, ValueSize: 16,
		MaxEntries: opts.ConntrackSize})
	must(t, err)
	t.Cleanup(func() { old.Close() })
	dir := filepath.Join(opts.BPFFS, pinSubdir)
	must(t, os.MkdirAll(dir, 0o700))
	must(t, old.Pin(filepath.Join(dir, "conntrack")))

	// Flows of the old table: on backend 2, which the lookup table below
	// does not name (its flows would go to 1 if placed again), and a
	// full-NAT flow's SNAT port in the flags.
	clock, err := newTickClock()
	must(t, err)
	now, err := clock.now()
	clock.Close()
	must(t, err)
	est := flow{src: client4, dst: vipAddr4, dport: 80, sport: 40001, ack: true}
	snat := uint32(toNetPort(20001)) << uint32(xdplbFlowFlagsFLOW_SNAT_PORT_SHIFT)
	must(t, old.Put(ctKey(est), legacyFlowVal{BackendID: 2, Flags: established, LastSeen: now}))
	other := flowKey(client4, 40002, vipAddr4, 80, ProtoTCP)
	must(t, old.Put(other, legacyFlowVal{BackendID: 3, Flags: established | snat, LastSeen: now}))

	d := load(t, opts)
	t.Cleanup(func() { d.Remove() })
	pinnedCT, err := ebpf.LoadPinnedMap(filepath.Join(dir, "conntrack"), nil)
	must(t, err)
	if typ := pinnedCT.Type(); typ != ebpf.Array {
		t.Errorf("pinned conntrack is a %s after the upgrade, want an array", typ)
	}
	pinnedCT.Close()
	if n := strings.Count(logs.String(), "connection table of an earlier build was replaced"); n != 1 {
		t.Errorf("the replacement was logged %d times, want once:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "carried=2") {
		t.Errorf("the log does not say 2 flows were carried over:\n%s", logs.String())
	}
	if v, ok := ctGet(t, d, other); !ok || v.BackendId != 3 || v.Flags != established|snat {
		t.Errorf("full-NAT flow after the upgrade: %+v (found %v), want backend 3 with its SNAT port", v, ok)
	}

	must(t, d.PutVIP(vip4TCP, VIPMeta{ID: 1, Mode: ModeDR, Hash: HashMaglev}))
	for _, id := range []uint32{1, 2} {
		putBackend(t, d, id, 1, netip.MustParseAddr(fmt.Sprintf("10.0.1.%d", id)), loIfindex)
	}
	must(t, d.PutLookupTable(1, fill(d.LookupTableSize(), 1)))
	if got := backendOf(t, mustRun(t, d.Program(), est.build(t))); got != 2 {
		t.Errorf("established flow forwarded to backend %d after the upgrade, want its own 2", got)
	}

	// A restart on the new layout keeps the table and says nothing.
	must(t, d.Close())
	logs.Reset()
	d = load(t, opts)
	if strings.Contains(logs.String(), "earlier build") {
		t.Errorf("a restart on the same layout logged an upgrade:\n%s", logs.String())
	}
	if got := backendOf(t, mustRun(t, d.Program(), est.build(t))); got != 2 {
		t.Errorf("established flow forwarded to backend %d after a restart, want 2", got)
	}
}

// A pinned table of this layout but another size is refused, not
// replaced: that would drop the flows.
func TestLoadRefusesResizedConntrackPin(t *testing.T) {
	testutil.RequireRoot(t)
	opts := testOptions(testutil.MountBPFFS(t))
	d := load(t, opts)
	must(t, d.Close())
	opts.ConntrackSize *= 2
	if d, err := Load(opts); !errors.Is(err, ErrIncompatiblePin) {
		if err == nil {
			d.Remove()
		}
		t.Fatalf("load over a conntrack pin of another size: %v, want ErrIncompatiblePin", err)
	}
}

// One CPU can fill the whole table: the table is shared, with no per-CPU
// share or free list (an LRU with per-CPU lists would give it size/CPUs).
func TestConntrackOneCPUFillsTable(t *testing.T) {
	testutil.RequireRoot(t)
	opts := testOptions(testutil.MountBPFFS(t))
	d := load(t, opts)
	t.Cleanup(func() { d.Remove() })
	setupVIPs(t, d)
	// One CPU only: the thread is thrown away when the test ends locked.
	runtime.LockOSThread()
	var one unix.CPUSet
	one.Set(0)
	must(t, unix.SchedSetaffinity(0, &one))
	// As many established flows as the table holds.
	n := int(opts.ConntrackSize)
	newFlows(t, d, n, true)
	got, err := d.ConntrackEntries()
	must(t, err)
	// At the design load an insert finds a free slot in one of its two
	// buckets all but very rarely.
	if got < n-n/1000 {
		t.Fatalf("%d entries after %d new flows into a table of %d", got, n, n)
	}
}

// A full connection table degrades gracefully: newly established flows
// evict the least recently stamped ones, and an established flow whose
// entry was evicted is placed again by the Maglev table, on the backend it
// had, as long as the backend set did not change meanwhile.
func TestFullConntrackKeepsBackends(t *testing.T) {
	d := newDatapath(t)
	must(t, d.PutVIP(vip4TCP, VIPMeta{ID: 1, Mode: ModeDR, Hash: HashMaglev}))
	for _, id := range []uint32{1, 2, 3} {
		putBackend(t, d, id, 1, netip.MustParseAddr(fmt.Sprintf("10.0.1.%d", id)), loIfindex)
	}
	must(t, d.PutLookupTable(1, fill(d.LookupTableSize(), 1, 2, 3)))

	const early = 64
	placed := map[uint16]uint32{}
	for i := range early {
		sport := uint16(20000 + i)
		placed[sport] = backendOf(t, mustRun(t, d.Program(), flow{src: client4, dst: vipAddr4, dport: 80, sport: sport, syn: true}.build(t)))
		backendOf(t, mustRun(t, d.Program(), flow{src: client4, dst: vipAddr4, dport: 80, sport: sport, ack: true}.build(t)))
	}
	spread := map[uint32]bool{}
	for _, b := range placed {
		spread[b] = true
	}
	if len(spread) < 3 {
		t.Fatalf("the early flows went to %d of 3 backends: %v", len(spread), placed)
	}

	// Three tables' worth of established flows: every early entry is
	// evicted.
	size := int(d.ConntrackSize())
	newFlows(t, d, 3*size, true)
	n, err := d.ConntrackEntries()
	must(t, err)
	if n > int(d.ConntrackSlots())+int(d.HalfOpenSize()) {
		t.Fatalf("%d entries in tables of %d and %d", n, d.ConntrackSlots(), d.HalfOpenSize())
	}
	for sport := range placed {
		if _, _, ok := flowEntry(t, d, ctKey(flow{src: client4, dst: vipAddr4, dport: 80, sport: sport})); ok {
			t.Fatalf("the flow from port %d was not evicted", sport)
		}
	}

	for sport, want := range placed {
		ack := flow{src: client4, dst: vipAddr4, dport: 80, sport: sport, ack: true}.build(t)
		if got := backendOf(t, mustRun(t, d.Program(), ack)); got != want {
			t.Errorf("flow from port %d went to backend %d after eviction, want %d", sport, got, want)
		}
	}
	drops, err := d.DropCounters()
	must(t, err)
	for reason, c := range drops {
		if c != 0 {
			t.Errorf("%d packets dropped (%s)", c, reason)
		}
	}
}

// newFlows runs n SYNs of distinct 5-tuples (a new source port each, the
// source address moving on every 65,536) to vipAddr4:80/tcp, each of
// which must be forwarded; established: two ACKs instead, the second of
// which moves the flow to the connection table.
func newFlows(t *testing.T, d *Datapath, n int, established bool) {
	t.Helper()
	f := flow{src: client4, dst: vipAddr4, dport: 80, syn: !established, ack: established}.build(t)
	for i := range n {
		f[sport4], f[sport4+1] = byte(i>>8), byte(i)
		f[srcLastByte4] = byte(10 + i>>16)
		for range 1 + btoi(established) {
			if r := mustRun(t, d.Program(), f); r.verdict != xdpTX {
				t.Fatalf("new flow %d: verdict %d", i, r.verdict)
			}
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
