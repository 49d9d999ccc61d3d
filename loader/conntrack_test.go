package loader

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/xdplb/xdplb/internal/testutil"
)

// The connection table uses the common LRU list (bpf/maps.h): a table
// pinned by a build with per-CPU lists (BPF_F_NO_COMMON_LRU) has the same
// key, value and size but other flags, and must be refused, not reused.
func TestLoadRefusesPerCPULRUConntrackPin(t *testing.T) {
	testutil.RequireRoot(t)
	opts := testOptions(testutil.MountBPFFS(t))
	spec, err := loadXdplb()
	must(t, err)
	ct := spec.Maps["conntrack"].Copy()
	if ct.Flags&unix.BPF_F_NO_COMMON_LRU != 0 {
		t.Fatalf("conntrack flags %#x: per-CPU LRU lists", ct.Flags)
	}
	ct.Flags |= unix.BPF_F_NO_COMMON_LRU
	ct.MaxEntries = opts.ConntrackSize
	ct.Pinning = ebpf.PinNone
	old, err := ebpf.NewMap(ct)
	must(t, err)
	t.Cleanup(func() { old.Close() })
	dir := filepath.Join(opts.BPFFS, pinSubdir)
	must(t, os.MkdirAll(dir, 0o700))
	must(t, old.Pin(filepath.Join(dir, "conntrack")))

	if d, err := Load(opts); !errors.Is(err, ErrIncompatiblePin) {
		if err == nil {
			d.Remove()
		}
		t.Fatalf("load over a per-CPU LRU conntrack pin: %v, want ErrIncompatiblePin", err)
	}
}

// With the common LRU list one CPU can fill the whole table; per-CPU
// lists would give it size/CPUs entries and evict beyond that.
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
	// Per-CPU lists would cap one CPU at size/CPUs; the common list
	// keeps at most a small local cache per CPU free.
	cpus, err := ebpf.PossibleCPU()
	must(t, err)
	if got < n-128*cpus {
		t.Fatalf("%d entries after %d new flows into a table of %d", got, n, n)
	}
}

// A full connection table degrades gracefully: newly established flows
// evict the least recently used entries, and an established flow whose
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
	if n > size+int(d.HalfOpenSize()) {
		t.Fatalf("%d entries in tables of %d and %d", n, size, d.HalfOpenSize())
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
