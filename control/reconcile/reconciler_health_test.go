package reconcile

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/control/reconcile/reconciletest"
	"github.com/xdplb/xdplb/control/state"
	"github.com/xdplb/xdplb/healthcheck"
	"github.com/xdplb/xdplb/loader"
)

// healthFixture is a reconciler over a fake data plane of the given table
// size, with fakeHealth and a log the test can read.
type healthFixture struct {
	*recFixture
	health *fakeHealth
	logBuf *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newHealthFixture(t *testing.T, tableSize uint32, backends ...string) *healthFixture {
	t.Helper()
	f := newRecFixture(t, reconciletest.NewDatapath(tableSize, 16, 64))
	h := newFakeHealth()
	buf := &syncBuffer{}
	f.rec = NewReconciler(f.store, f.dp, f.nw, h, slog.New(slog.NewTextHandler(buf, nil)))
	var bs []model.Backend
	for i, a := range backends {
		f.nw.setMAC(a, mac(byte(i+1)))
		bs = append(bs, be(a, 100))
	}
	addVIP(t, f.store, vip1, bs...)
	f.reconcile(t)
	return &healthFixture{recFixture: f, health: h, logBuf: buf}
}

func (f *healthFixture) table(t *testing.T) []uint32 {
	t.Helper()
	tbl, err := f.dp.LookupTable(1)
	if err != nil {
		t.Fatal(err)
	}
	return tbl
}

func (f *healthFixture) state(t *testing.T, addr string) string {
	t.Helper()
	bi, ok := f.rec.Backend(vip1, netip.MustParseAddr(addr), 0)
	if !ok {
		t.Fatalf("backend %s unknown to the reconciler", addr)
	}
	return bi.State
}

func TestReconcileHealthDownMovesOnlyItsShare(t *testing.T) {
	const size = 4099
	f := newHealthFixture(t, size, "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4")
	before := f.table(t)

	f.health.set(vip1, "10.0.0.2", false, "connect refused")
	w := f.reconcile(t)
	// The table stops pointing at the backend before its entry is marked
	// down; the VIP entry does not change.
	if want := []string{"put-table 1", "put-backend 2"}; !slices.Equal(w, want) {
		t.Fatalf("writes %v, want %v", w, want)
	}
	b2, ok := dpBackends(t, f.dp)[2]
	if !ok || !b2.Down || b2.MAC.String() != mac(2).String() {
		t.Fatalf("down backend entry %+v (present %v): want kept, Down", b2, ok)
	}
	after := f.table(t)
	own, others := 0, 0
	for i := range before {
		switch {
		case before[i] == 2:
			own++
			if after[i] == 2 {
				t.Fatalf("slot %d still points at the down backend", i)
			}
		case after[i] != before[i]:
			others++
		}
	}
	t.Logf("backend down: its %d slots moved, %d of the other %d slots moved (%.2f%%)",
		own, others, size-own, 100*float64(others)/float64(size-own))
	if others > size/100 {
		t.Errorf("%d slots of healthy backends moved, want at most 1%% of %d", others, size)
	}
	if got := f.state(t, "10.0.0.2"); got != model.BackendDown {
		t.Errorf("state %q, want down", got)
	}
	if m := dpVIPs(t, f.dp)[VIPKeyOf(vip1)]; m.NoHealthy {
		t.Error("NoHealthy with three healthy backends")
	}
	if w := f.reconcile(t); len(w) != 0 {
		t.Fatalf("second pass writes %v, want none", w)
	}

	// Back up: the entry first, then the very same table as before.
	f.health.set(vip1, "10.0.0.2", true, "")
	if w := f.reconcile(t); !slices.Equal(w, []string{"put-backend 2", "put-table 1"}) {
		t.Fatalf("writes %v", w)
	}
	if !slices.Equal(f.table(t), before) {
		t.Error("table after the backend came back differs from the table before it went down")
	}
	if dpBackends(t, f.dp)[2].Down {
		t.Error("entry still down")
	}

	logs := f.logBuf.String()
	if n := strings.Count(logs, `msg="backend down"`); n != 1 || !strings.Contains(logs, `backend=10.0.0.2 reason="connect refused"`) {
		t.Errorf("want one 'backend down' line with the reason, log:\n%s", logs)
	}
	if n := strings.Count(logs, `msg="backend up"`); n != 1 {
		t.Errorf("want one 'backend up' line, log:\n%s", logs)
	}
}

func TestReconcileAllDownNoHealthy(t *testing.T) {
	f := newHealthFixture(t, testTableSize, "10.0.0.1", "10.0.0.2")
	f.health.set(vip1, "10.0.0.1", false, "timeout")
	f.reconcile(t)
	f.health.set(vip1, "10.0.0.2", false, "timeout")
	w := f.reconcile(t)
	// The VIP entry is flagged before the table goes, so new flows are
	// counted as no_healthy_backend from the first packet.
	if want := []string{"put-vip 1", "del-table 1", "put-backend 2"}; !slices.Equal(w, want) {
		t.Fatalf("writes %v, want %v", w, want)
	}
	if m := dpVIPs(t, f.dp)[VIPKeyOf(vip1)]; !m.NoHealthy || m.ID != 1 {
		t.Fatalf("vip meta %+v, want NoHealthy", m)
	}
	if _, ok := f.dp.LookupTables()[1]; ok {
		t.Fatal("table kept with every backend down")
	}
	if bs := dpBackends(t, f.dp); len(bs) != 2 || !bs[1].Down || !bs[2].Down {
		t.Fatalf("backends %+v: want both kept, down", bs)
	}
	if !strings.Contains(f.logBuf.String(), "vip has no healthy backend") {
		t.Errorf("no log line for the VIP without healthy backend:\n%s", f.logBuf.String())
	}
	if w := f.reconcile(t); len(w) != 0 {
		t.Fatalf("second pass writes %v", w)
	}

	// One back: entry, table, then the flag cleared.
	f.health.set(vip1, "10.0.0.1", true, "")
	if w := f.reconcile(t); !slices.Equal(w, []string{"put-backend 1", "put-table 1", "put-vip 1"}) {
		t.Fatalf("writes %v", w)
	}
	if m := dpVIPs(t, f.dp)[VIPKeyOf(vip1)]; m.NoHealthy {
		t.Fatal("NoHealthy with a healthy backend")
	}
	if got := tableIDs(t, f.dp, 1); !slices.Equal(got, []uint32{1}) {
		t.Fatalf("table points at %v", got)
	}
}

func TestReconcileDrainedAndDown(t *testing.T) {
	f := newHealthFixture(t, testTableSize, "10.0.0.1", "10.0.0.2")
	drain := true
	if err := f.store.SetBackend(vip1, netip.MustParseAddr("10.0.0.1"), 0, model.BackendPatch{Drain: &drain}); err != nil {
		t.Fatal(err)
	}
	f.reconcile(t)
	// The only backend that takes new flows fails: no healthy backend,
	// though the drained one passes its checks.
	f.health.set(vip1, "10.0.0.2", false, "timeout")
	f.reconcile(t)
	if m := dpVIPs(t, f.dp)[VIPKeyOf(vip1)]; !m.NoHealthy {
		t.Fatal("NoHealthy not set: the only active backend is down")
	}
	if got := f.state(t, "10.0.0.1"); got != model.BackendDraining {
		t.Errorf("drained backend state %q", got)
	}
	// Drained wins over down in the display; the entry is marked down,
	// so the flows of a dead drained backend move rather than vanish.
	f.health.set(vip1, "10.0.0.1", false, "timeout")
	f.reconcile(t)
	if got := f.state(t, "10.0.0.1"); got != model.BackendDraining {
		t.Errorf("drained and failing backend state %q, want draining", got)
	}
	if !dpBackends(t, f.dp)[1].Down {
		t.Error("entry of a failing drained backend not marked down")
	}
	// Everything drained: no backend takes new flows by the operator's
	// choice; that is no_backend, not no_healthy_backend.
	if err := f.store.SetBackend(vip1, netip.MustParseAddr("10.0.0.2"), 0, model.BackendPatch{Drain: &drain}); err != nil {
		t.Fatal(err)
	}
	f.reconcile(t)
	if m := dpVIPs(t, f.dp)[VIPKeyOf(vip1)]; m.NoHealthy {
		t.Error("NoHealthy with every backend drained")
	}
	if _, ok := f.dp.LookupTables()[1]; ok {
		t.Error("table kept with every backend drained")
	}
}

func TestReconcilePendingBackendJoinsWhenUp(t *testing.T) {
	f := newHealthFixture(t, testTableSize, "10.0.0.1")
	before := f.table(t)
	f.nw.setMAC("10.0.0.2", mac(2))
	f.health.set(vip1, "10.0.0.2", false, "") // the checker's view of a new backend: pending
	if err := f.store.AddBackend(vip1, be("10.0.0.2", 100)); err != nil {
		t.Fatal(err)
	}
	w := f.reconcile(t)
	if !slices.Equal(w, []string{"put-backend 2"}) {
		t.Fatalf("writes %v: want the entry only, down", w)
	}
	if !dpBackends(t, f.dp)[2].Down || !slices.Equal(f.table(t), before) {
		t.Fatal("pending backend in the table or not marked down")
	}
	if !strings.Contains(f.logBuf.String(), "backend waits for its health checks") {
		t.Errorf("no log line for the pending backend:\n%s", f.logBuf.String())
	}
	f.health.set(vip1, "10.0.0.2", true, "")
	if w := f.reconcile(t); !slices.Equal(w, []string{"put-backend 2", "put-table 1"}) {
		t.Fatalf("writes %v", w)
	}
	if got := tableIDs(t, f.dp, 1); !slices.Equal(got, []uint32{1, 2}) {
		t.Fatalf("table points at %v", got)
	}
}

func TestReconcileSyncsHealthEveryPass(t *testing.T) {
	f := newHealthFixture(t, testTableSize, "10.0.0.1")
	f.reconcile(t)
	synced := f.health.Synced()
	if len(synced) != 2 {
		t.Fatalf("%d Syncs for 2 passes", len(synced))
	}
	if got := synced[1]; len(got.VIPs) != 1 || got.VIPs[0].ID() != vip1 || len(got.VIPs[0].Backends) != 1 {
		t.Fatalf("synced %+v", got)
	}
}

func TestReconcileUnresolvedFollowsHealth(t *testing.T) {
	f := newHealthFixture(t, testTableSize, "10.0.0.1", "10.0.0.2")
	f.nw.setMAC("10.0.0.2", nil)
	f.reconcile(t)
	// Unresolved, then failing: the kept entry is marked down.
	f.health.set(vip1, "10.0.0.2", false, "no route")
	if w := f.reconcile(t); !slices.Equal(w, []string{"put-backend 2"}) {
		t.Fatalf("writes %v", w)
	}
	if b := dpBackends(t, f.dp)[2]; !b.Down || b.MAC.String() != mac(2).String() {
		t.Fatalf("entry %+v", b)
	}
	if got := f.state(t, "10.0.0.2"); got != model.BackendDown {
		t.Errorf("state %q, want down (checks say more than the missing MAC)", got)
	}
}

// notifyingDatapath tells when a lookup table is written.
type notifyingDatapath struct {
	*reconciletest.Datapath
	tableWritten chan time.Time
}

func (d *notifyingDatapath) PutLookupTable(id uint32, t []uint32) error {
	err := d.Datapath.PutLookupTable(id, t)
	d.notify()
	return err
}

func (d *notifyingDatapath) PutLookupTables(tables map[uint32][]uint32) error {
	err := d.Datapath.PutLookupTables(tables)
	d.notify()
	return err
}

func (d *notifyingDatapath) notify() {
	select {
	case d.tableWritten <- time.Now():
	default:
	}
}

// TestRunAppliesHealthChangeAtOnce runs the reconciler with a real Manager
// (fake clock, fake prober) and measures the time from the transition to
// the table write.
func TestRunAppliesHealthChangeAtOnce(t *testing.T) {
	clock := healthcheck.NewFakeClock(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	prober := &switchProber{fail: map[netip.Addr]bool{}}
	var transitionAt sync.Map // id -> time.Time (wall clock)
	mgr := healthcheck.NewManager(healthcheck.Options{Clock: clock, Prober: prober,
		OnTransition: func(tr healthcheck.Transition) { transitionAt.Store(tr.ID, time.Now()) }})

	dp := &notifyingDatapath{Datapath: reconciletest.NewDatapath(loader.DefaultLookupSize, 16, 64), tableWritten: make(chan time.Time, 1)}
	st, err := state.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	nw := newFakeNetwork()
	for i, a := range []string{"10.0.0.1", "10.0.0.2", "10.0.0.3"} {
		nw.setMAC(a, mac(byte(i+1)))
	}
	v := model.VIP{Address: vip1.Addr, Port: vip1.Port, Protocol: model.TCP,
		HealthCheck: &model.HealthCheck{Type: model.CheckTCP, Interval: model.Duration(200 * time.Millisecond), Timeout: model.Duration(100 * time.Millisecond), Rise: 2, Fall: 3},
		Backends:    []model.Backend{be("10.0.0.1", 100), be("10.0.0.2", 100), be("10.0.0.3", 100)}}
	if err := st.AddVIP(v); err != nil {
		t.Fatal(err)
	}
	rec := NewReconciler(st, dp, nw, NewHealthChecker(mgr), nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := rec.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	<-dp.tableWritten
	if got := tableIDs(t, dp, 1); !slices.Equal(got, []uint32{1, 2, 3}) {
		t.Fatalf("backends present at start not all in the table: %v", got)
	}

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); mgr.Run(ctx) }()
	go func() { defer wg.Done(); rec.Run(ctx) }()
	defer wg.Wait()
	defer cancel()

	// Three probe loops (the backends' specs differ by address).
	if err := clock.WaitTimers(ctx, 3); err != nil {
		t.Fatal(err)
	}
	prober.setFail(netip.MustParseAddr("10.0.0.2"), true)
	// Each advance fires one round of every loop; a loop records its
	// result before it rearms, so once all three are rearmed the round
	// is in. fall is 3: the third failing round brings the transition.
	id := model.HealthTargetID(vip1, netip.MustParseAddr("10.0.0.2"), 0)
	rounds := 0
	for ; rounds < 10; rounds++ {
		if _, ok := transitionAt.Load(id); ok {
			break
		}
		clock.Advance(250 * time.Millisecond)
		if err := clock.WaitTimers(ctx, 3); err != nil {
			t.Fatal(err)
		}
	}
	at, ok := transitionAt.Load(id)
	if !ok {
		t.Fatal("backend never went down")
	}
	if rounds < 3 {
		t.Errorf("down after %d failing rounds, want fall = 3", rounds)
	}
	var written time.Time
	select {
	case written = <-dp.tableWritten:
	case <-time.After(5 * time.Second):
		t.Fatal("no table write within 5s of the transition")
	}
	t.Logf("transition to table write: %v", written.Sub(at.(time.Time)))
	if got := tableIDs(t, dp, 1); !slices.Equal(got, []uint32{1, 3}) {
		t.Fatalf("table points at %v after the failure", got)
	}
	if bi, _ := rec.Backend(vip1, netip.MustParseAddr("10.0.0.2"), 0); bi.State != model.BackendDown {
		t.Fatalf("state %q", bi.State)
	}
}

// switchProber fails the probes of the addresses set to fail.
type switchProber struct {
	mu   sync.Mutex
	fail map[netip.Addr]bool
}

func (p *switchProber) setFail(a netip.Addr, fail bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fail[a] = fail
}

func (p *switchProber) Probe(_ context.Context, s healthcheck.Spec) healthcheck.Result {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fail[s.Target.Addr()] {
		return healthcheck.Result{Reason: "connect refused"}
	}
	return healthcheck.Result{OK: true, Reason: "ok"}
}

// BenchmarkReconcileHealthFlip is one pass over 1,000 VIPs of 10 backends
// each, all with tcp checks, in which one backend changes between up and
// down: the cost of a failover in a large configuration (one table
// rebuilt, the rest compared with what the reconciler last wrote; Sync of
// 10,000 unchanged targets).
func BenchmarkReconcileHealthFlip(b *testing.B) {
	const vips, per = 1000, 10
	dp := reconciletest.NewDatapath(4099, vips+1, vips*per+1)
	st, err := state.Open(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	nw := newFakeNetwork()
	var state model.State
	for i := range vips {
		v := model.VIP{Address: netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), Port: 80, Protocol: model.TCP,
			HealthCheck: &model.HealthCheck{Type: model.CheckTCP}}
		for j := range per {
			a := netip.AddrFrom4([4]byte{10, 2, byte(j), 1})
			v.Backends = append(v.Backends, model.Backend{Address: a, Weight: 100})
		}
		state.VIPs = append(state.VIPs, v)
	}
	for j := range per {
		nw.setMAC(netip.AddrFrom4([4]byte{10, 2, byte(j), 1}).String(), mac(byte(j+1)))
	}
	if err := st.Replace(state); err != nil {
		b.Fatal(err)
	}
	ft := newFakeTargets()
	rec := NewReconciler(st, dp, nw, NewHealthChecker(ft), nil)
	ctx := context.Background()
	if err := rec.Reconcile(ctx); err != nil {
		b.Fatal(err)
	}
	victim := model.HealthTargetID(state.VIPs[500].ID(), netip.MustParseAddr("10.2.3.1"), 0)
	b.ResetTimer()
	for i := range b.N {
		ft.mu.Lock()
		ft.status[victim] = healthcheck.Status{Up: i%2 == 1, Known: true, Reason: "timeout"}
		ft.mu.Unlock()
		if err := rec.Reconcile(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// Decisions is what Backend and ActivePools say, as of the moment it was
// taken: a later pass decides anew without changing it.
func TestDecisionsAsOfOnePass(t *testing.T) {
	f := newHealthFixture(t, 251, "10.0.0.1", "10.0.0.2")
	a2 := netip.MustParseAddr("10.0.0.2")
	before := f.rec.Decisions()
	f.health.set(vip1, "10.0.0.2", false, "connect refused")
	f.reconcile(t)
	after := f.rec.Decisions()
	for _, c := range []struct {
		name string
		d    Decisions
		want string
	}{{"before", before, model.BackendUp}, {"after", after, model.BackendDown}} {
		if bi, ok := c.d.Backend(vip1, a2, 0); !ok || bi.State != c.want {
			t.Errorf("%s the pass: %s is %q (%v), want %q", c.name, a2, bi.State, ok, c.want)
		}
	}
	if bi, _ := after.Backend(vip1, a2, 0); bi.State != f.state(t, "10.0.0.2") {
		t.Errorf("Decisions says %q, Backend %q", bi.State, f.state(t, "10.0.0.2"))
	}
	pools, ok := after.ActivePools(vip1)
	want, _ := f.rec.ActivePools(vip1)
	if !ok || !slices.Equal(pools, want) {
		t.Errorf("Decisions' pools %v (%v), ActivePools %v", pools, ok, want)
	}
	if _, ok := after.Backend(model.VIPID{Addr: netip.MustParseAddr("10.9.9.9"), Port: 80, Protocol: model.TCP}, a2, 0); ok {
		t.Error("a backend of an unknown VIP")
	}
}

// Decisions does not wait for a pass under way (one holding the pass
// lock): it answers with the last pass to end.
func TestDecisionsDuringPass(t *testing.T) {
	f := newHealthFixture(t, 251, "10.0.0.1", "10.0.0.2")
	a2 := netip.MustParseAddr("10.0.0.2")
	f.rec.mu.Lock() // a pass under way
	got := make(chan Decisions, 1)
	go func() { got <- f.rec.Decisions() }()
	select {
	case d := <-got:
		if bi, ok := d.Backend(vip1, a2, 0); !ok || bi.State != model.BackendUp {
			t.Errorf("during a pass: %s is %q (%v), want %q", a2, bi.State, ok, model.BackendUp)
		}
	case <-time.After(5 * time.Second):
		t.Error("Decisions waited for the pass")
	}
	f.rec.mu.Unlock()
}
