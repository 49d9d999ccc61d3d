package reconcile

import (
	"log/slog"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/control/reconcile/reconciletest"
)

// pool is a backend of weight 100 in pool prio.
func pool(a string, prio uint32) model.Backend {
	b := be(a, 100)
	b.Priority = prio
	return b
}

// newPoolsFixture is newHealthFixture with vip1's backends bs (each
// resolved, MAC by its index) and failover_below pct: a primary AZ and
// its backups. Backend ids follow the backends' address order.
func newPoolsFixture(t *testing.T, tableSize, pct uint32, bs ...model.Backend) *healthFixture {
	t.Helper()
	f := newRecFixture(t, reconciletest.NewDatapath(tableSize, 16, 64))
	h := newFakeHealth()
	buf := &syncBuffer{}
	f.rec = NewReconciler(f.store, f.dp, f.nw, h, slog.New(slog.NewTextHandler(buf, nil)))
	for i, b := range bs {
		f.nw.setMAC(b.Address.String(), mac(byte(i+1)))
	}
	if err := f.store.AddVIP(model.VIP{Address: vip1.Addr, Port: vip1.Port, Protocol: vip1.Protocol,
		FailoverBelow: pct, Backends: bs}); err != nil {
		t.Fatal(err)
	}
	f.reconcile(t)
	return &healthFixture{recFixture: f, health: h, logBuf: buf}
}

// pools is what the reconciler says vip1's active pools are.
func (f *healthFixture) pools(t *testing.T) []uint32 {
	t.Helper()
	p, ok := f.rec.ActivePools(vip1)
	if !ok {
		t.Fatal("vip1 not planned")
	}
	return p
}

// wantPools checks vip1's active pools and the backend ids its table
// points at.
func (f *healthFixture) wantPools(t *testing.T, what string, pools []uint32, ids ...uint32) {
	t.Helper()
	if got := f.pools(t); !slices.Equal(got, pools) {
		t.Fatalf("%s: active pools %v, want %v", what, got, pools)
	}
	if got := tableIDs(t, f.dp, 1); !slices.Equal(got, ids) {
		t.Fatalf("%s: table points at %v, want %v", what, got, ids)
	}
}

// poolLogs are the "vip active pool changed" lines of the log, as
// "LEVEL from->to".
func (f *healthFixture) poolLogs() []string {
	re := regexp.MustCompile(`level=(\w+) msg="vip active pool changed" vip=10\.0\.0\.100:80/tcp from=(\S+) to=(\S+)`)
	var out []string
	for _, m := range re.FindAllStringSubmatch(f.logBuf.String(), -1) {
		out = append(out, m[1]+" "+m[2]+"->"+m[3])
	}
	return out
}

// A primary AZ and a backup AZ, failover_below 0: the backup holds no slot
// while a primary backend is up and has the whole table once none is;
// when one is up again, new flows return to the primary and the backup's
// entries stay as they were, not down, so its open flows drain on it.
func TestReconcilePoolsFailoverAndBack(t *testing.T) {
	f := newPoolsFixture(t, testTableSize, 0,
		pool("10.0.0.1", 0), pool("10.0.0.2", 0), pool("10.0.1.1", 1), pool("10.0.1.2", 1))
	f.wantPools(t, "all up", []uint32{0}, 1, 2)
	primary := BuildMaglev([]MaglevBackend{{1, "10.0.0.1:80", 100}, {2, "10.0.0.2:80", 100}}, testTableSize)
	if !slices.Equal(f.table(t), primary) {
		t.Fatal("all up: the table is not the primary pool's alone")
	}
	entries := dpBackends(t, f.dp)
	if len(entries) != 4 || entries[3].Down || entries[4].Down {
		t.Fatalf("entries %+v: want the backups' too, not down", entries)
	}
	for a, want := range map[string]string{"10.0.0.1": model.BackendUp, "10.0.1.1": model.BackendStandby, "10.0.1.2": model.BackendStandby} {
		if got := f.state(t, a); got != want {
			t.Errorf("%s: state %s, want %s", a, got, want)
		}
	}

	// One primary backend down: the other suffices.
	f.health.set(vip1, "10.0.0.1", false, "connect refused")
	f.reconcile(t)
	f.wantPools(t, "one primary down", []uint32{0}, 2)

	// Both down: the backup takes the table; the VIP still places new flows.
	f.health.set(vip1, "10.0.0.2", false, "connect refused")
	w := f.reconcile(t)
	if want := []string{"put-table 1", "put-backend 2"}; !slices.Equal(w, want) {
		t.Fatalf("failover: writes %v, want %v (the table, then the primary's Down)", w, want)
	}
	f.wantPools(t, "primary down", []uint32{1}, 3, 4)
	if m := dpVIPs(t, f.dp)[VIPKeyOf(vip1)]; m.NoHealthy {
		t.Fatal("NoHealthy while the backup pool is up")
	}
	if got := f.state(t, "10.0.1.1"); got != model.BackendUp {
		t.Fatalf("active backup: state %s", got)
	}
	if w := f.reconcile(t); len(w) != 0 {
		t.Fatalf("second pass writes %v", w)
	}
	backup := dpBackends(t, f.dp)

	// Recovery: the table is the primary's again, as it was with that
	// backend alone; the backup's entries, with the flows they took, are
	// untouched.
	f.health.set(vip1, "10.0.0.2", true, "")
	w = f.reconcile(t)
	if want := []string{"put-backend 2", "put-table 1"}; !slices.Equal(w, want) {
		t.Fatalf("fail-back: writes %v, want %v", w, want)
	}
	f.wantPools(t, "primary back", []uint32{0}, 2)
	for _, id := range []uint32{3, 4} {
		if e := dpBackends(t, f.dp)[id]; !sameBackend(e, backup[id]) || e.Down {
			t.Fatalf("backup entry %d after fail-back %+v, was %+v", id, e, backup[id])
		}
	}
	if got := f.state(t, "10.0.1.2"); got != model.BackendStandby {
		t.Fatalf("backup after fail-back: state %s", got)
	}
	f.health.set(vip1, "10.0.0.1", true, "")
	f.reconcile(t)
	if !slices.Equal(f.table(t), primary) {
		t.Fatal("the table with the primary all up again differs from the first")
	}

	if got, want := f.poolLogs(), []string{"WARN 0->1", "INFO 1->0"}; !slices.Equal(got, want) {
		t.Errorf("pool changes logged %v, want %v; log:\n%s", got, want, f.logBuf.String())
	}
	if strings.Contains(f.logBuf.String(), "no healthy backend") {
		t.Error("the VIP logged no healthy backend while its backup was up")
	}
}

// failover_below 50: the backup shares new flows once the primary's
// healthy weight is below half its configured weight (drained backends
// not counted), the pools' backends mixing by weight.
func TestReconcilePoolsFailoverBelow(t *testing.T) {
	const size = 4099
	f := newPoolsFixture(t, size, 50, pool("10.0.0.1", 0), pool("10.0.0.2", 0), pool("10.0.0.3", 0), pool("10.0.0.4", 0),
		pool("10.0.1.1", 1), pool("10.0.1.2", 1))
	f.wantPools(t, "all up", []uint32{0}, 1, 2, 3, 4)

	f.health.set(vip1, "10.0.0.1", false, "timeout")
	f.health.set(vip1, "10.0.0.2", false, "timeout")
	f.reconcile(t)
	f.wantPools(t, "half the primary up", []uint32{0}, 3, 4)

	f.health.set(vip1, "10.0.0.3", false, "timeout")
	f.reconcile(t)
	f.wantPools(t, "a quarter of the primary up", []uint32{0, 1}, 4, 5, 6)
	// By weight: 100 of the primary beside 200 of the backup.
	n := 0
	for _, id := range f.table(t) {
		if id == 4 {
			n++
		}
	}
	if share := float64(n) / size; share < 0.32 || share > 0.35 {
		t.Errorf("the primary backend has %.3f of the table, want about 1/3", share)
	}
	for _, a := range []string{"10.0.0.4", "10.0.1.1"} {
		if got := f.state(t, a); got != model.BackendUp {
			t.Errorf("%s: state %s while the pools share, want up", a, got)
		}
	}

	// Drained backends are not configured weight: with two of the down
	// ones drained, the one left up is half the primary again.
	for _, a := range []string{"10.0.0.1", "10.0.0.2"} {
		if err := f.store.SetBackend(vip1, netip.MustParseAddr(a), 0, model.BackendPatch{Drain: new(true)}); err != nil {
			t.Fatal(err)
		}
	}
	f.reconcileChanged(t)
	f.wantPools(t, "drained", []uint32{0}, 4)

	f.health.set(vip1, "10.0.0.4", false, "timeout")
	f.reconcile(t)
	f.wantPools(t, "primary down", []uint32{1}, 5, 6)

	// vip set --failover-below 100 (a pass after a change): any primary
	// backend down shares with the backup.
	f.health.set(vip1, "10.0.0.4", true, "")
	f.reconcile(t)
	pct := uint32(100)
	if err := f.store.SetVIP(vip1, model.VIPPatch{FailoverBelow: &pct}); err != nil {
		t.Fatal(err)
	}
	f.reconcileChanged(t)
	f.wantPools(t, "failover_below 100", []uint32{0, 1}, 4, 5, 6)
	if got, want := f.poolLogs(), []string{"WARN 0->0+1", "INFO 0+1->0", "WARN 0->1", "INFO 1->0", "WARN 0->0+1"}; !slices.Equal(got, want) {
		t.Errorf("pool changes logged %v, want %v", got, want)
	}
}

// Three pools and a fallback: the ladder is primary, backup 1, backup 2,
// the fallback, then the drop; a better pool up again takes the new flows
// back from any step below it. backend set --priority moves a backend.
func TestReconcilePoolsLadder(t *testing.T) {
	f := newPoolsFixture(t, testTableSize, 0, pool("10.0.0.1", 0), pool("10.0.1.1", 1), pool("10.0.2.1", 2))
	f.nw.setMAC("10.0.0.99", mac(99))
	f.setFallback(t, "10.0.0.99") // id 4
	f.wantPools(t, "all up", []uint32{0}, 1)

	steps := []struct {
		addr  string
		up    bool
		pools []uint32
		ids   []uint32
	}{
		{"10.0.0.1", false, []uint32{1}, []uint32{2}},
		{"10.0.1.1", false, []uint32{2}, []uint32{3}},
		{"10.0.2.1", false, nil, []uint32{4}}, // the fallback
		{"10.0.1.1", true, []uint32{1}, []uint32{2}},
		{"10.0.0.1", true, []uint32{0}, []uint32{1}},
	}
	for _, s := range steps {
		f.health.set(vip1, s.addr, s.up, "timeout")
		f.reconcile(t)
		f.wantPools(t, s.addr, s.pools, s.ids...)
		if fb := f.fallback(t); (fb.State == model.FallbackActive) != (len(s.pools) == 0) {
			t.Fatalf("%s: fallback %s with pools %v", s.addr, fb.State, s.pools)
		}
	}

	// Without the fallback, the last step is the drop.
	f.setFallback(t, "")
	for _, a := range []string{"10.0.0.1", "10.0.1.1"} {
		f.health.set(vip1, a, false, "timeout")
	}
	f.reconcile(t)
	if m := dpVIPs(t, f.dp)[VIPKeyOf(vip1)]; !m.NoHealthy {
		t.Fatalf("vip meta %+v with every pool down and no fallback: want NoHealthy", m)
	}
	if tbl, _ := f.dp.LookupTable(1); tbl != nil {
		t.Fatal("a table with every pool down")
	}
	if got := f.pools(t); len(got) != 0 {
		t.Fatalf("active pools %v, want none", got)
	}

	// A backend moved to a better pool takes the flows there (a pass
	// after a change).
	f.health.set(vip1, "10.0.0.1", true, "")
	f.reconcile(t)
	if err := f.store.SetBackend(vip1, netip.MustParseAddr("10.0.2.1"), 0, model.BackendPatch{Priority: new(uint32(0))}); err != nil {
		t.Fatal(err)
	}
	f.health.set(vip1, "10.0.2.1", true, "")
	f.reconcile(t)
	f.wantPools(t, "moved", []uint32{0}, 1, 3)

	want := []string{"WARN 0->1", "WARN 1->2", "WARN 2->none", "INFO none->1", "INFO 1->0", "WARN 0->none", "INFO none->0"}
	if got := f.poolLogs(); !slices.Equal(got, want) {
		t.Errorf("pool changes logged %v, want %v", got, want)
	}
}

// The plan depends on the config and the health alone: the same state
// reached by other histories, or written in another order, gives the same
// table on every node.
func TestReconcilePoolsDeterministic(t *testing.T) {
	bs := []model.Backend{pool("10.0.0.1", 0), pool("10.0.0.2", 0), pool("10.0.1.1", 1), pool("10.0.1.2", 1), pool("10.0.2.1", 2)}
	a := newPoolsFixture(t, 4099, 60, bs...)
	a.health.set(vip1, "10.0.0.2", false, "timeout")
	a.health.set(vip1, "10.0.1.1", false, "timeout")
	a.reconcile(t)
	a.health.set(vip1, "10.0.1.1", true, "")
	a.health.set(vip1, "10.0.0.1", false, "timeout")
	a.reconcile(t)

	rev := slices.Clone(bs)
	slices.Reverse(rev)
	b := newPoolsFixture(t, 4099, 60, rev...)
	b.health.set(vip1, "10.0.0.1", false, "timeout")
	b.health.set(vip1, "10.0.0.2", false, "timeout")
	b.reconcile(t)
	if !slices.Equal(a.table(t), b.table(t)) {
		t.Fatal("two nodes with the same state and health have different tables")
	}
	a.wantPools(t, "node a", []uint32{1}, 3, 4)
}

// The ladder's walk, pool by pool.
func TestActivePools(t *testing.T) {
	w := func(prio uint32, configured, healthy uint64) poolWeight { return poolWeight{prio, configured, healthy} }
	for _, tc := range []struct {
		name  string
		pools []poolWeight
		pct   uint32
		want  []uint32
	}{
		{"none", nil, 0, nil},
		{"primary up", []poolWeight{w(0, 200, 100), w(1, 100, 100)}, 0, []uint32{0}},
		{"primary down", []poolWeight{w(0, 200, 0), w(1, 100, 100)}, 0, []uint32{1}},
		{"all down", []poolWeight{w(0, 200, 0), w(1, 100, 0)}, 0, nil},
		{"at the threshold", []poolWeight{w(0, 200, 100), w(1, 100, 100)}, 50, []uint32{0}},
		{"below the threshold", []poolWeight{w(0, 200, 99), w(1, 100, 100)}, 50, []uint32{0, 1}},
		{"100%: any down", []poolWeight{w(0, 300, 200), w(1, 100, 100)}, 100, []uint32{0, 1}},
		{"100%: all up", []poolWeight{w(0, 300, 300), w(1, 100, 100)}, 100, []uint32{0}},
		{"every pool below", []poolWeight{w(0, 200, 50), w(1, 200, 50), w(2, 100, 10)}, 50, []uint32{0, 1, 2}},
		{"a down pool is passed", []poolWeight{w(0, 200, 50), w(1, 200, 0), w(2, 100, 100)}, 50, []uint32{0, 2}},
		{"a drained pool is no step", []poolWeight{w(0, 0, 0), w(3, 100, 100), w(4, 100, 100)}, 100, []uint32{3}},
	} {
		if got := activePools(tc.pools, tc.pct); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// A fresh reconciler (a restart) logs no pool change for the pools it
// finds; the metrics read ActivePools.
func TestReconcilePoolsRestart(t *testing.T) {
	f := newPoolsFixture(t, testTableSize, 0, pool("10.0.0.1", 0), pool("10.0.1.1", 1))
	f.health.set(vip1, "10.0.0.1", false, "timeout")
	f.reconcile(t)
	buf := &syncBuffer{}
	f.rec = NewReconciler(f.store, f.dp, f.nw, f.health, slog.New(slog.NewTextHandler(buf, nil)))
	if _, ok := f.rec.ActivePools(vip1); ok {
		t.Fatal("active pools known before the first pass")
	}
	if w := f.reconcile(t); len(w) != 0 {
		t.Fatalf("restart writes %v", w)
	}
	f.wantPools(t, "after restart", []uint32{1}, 2)
	if strings.Contains(buf.String(), "active pool") {
		t.Fatalf("restart logged a pool change:\n%s", buf.String())
	}
}
