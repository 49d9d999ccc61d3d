package reconcile

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
)

// New VIPs of one pass publish their tables in one batch, and each VIP entry
// only after its table: no packet sees a VIP without a table.
func TestReconcileBatchesNewTables(t *testing.T) {
	f := newRecFixture(t, nil)
	f.nw.setMAC("10.0.0.1", mac(1))
	f.nw.setMAC("10.0.0.2", mac(2))
	addVIP(t, f.store, vip1, be("10.0.0.1", 100))
	addVIP(t, f.store, vip2, be("10.0.0.2", 100))
	f.dp.TakeWrites()

	w := f.reconcile(t)
	want := []string{"put-backend 1", "put-backend 2", "put-table 1", "put-table 2", "put-vip 1", "put-vip 2"}
	if !slices.Equal(w, want) {
		t.Fatalf("writes %v, want %v", w, want)
	}
	if w := f.reconcile(t); len(w) != 0 {
		t.Fatalf("second pass writes %v, want none", w)
	}
}

// A failed batch publishes no VIP entry, the pass reports it, and the next
// pass (a full one) writes the missing tables and entries.
func TestReconcileBatchFailureRecovers(t *testing.T) {
	f := newRecFixture(t, nil)
	f.nw.setMAC("10.0.0.1", mac(1))
	addVIP(t, f.store, vip1, be("10.0.0.1", 100))
	f.dp.TakeWrites()

	boom := errors.New("boom")
	f.dp.SetFailTables(boom)
	if err := f.rec.ReconcileChanged(context.Background()); !errors.Is(err, boom) {
		t.Fatalf("reconcile with a failing batch: %v, want boom", err)
	}
	if w := f.dp.TakeWrites(); slices.Contains(w, "put-vip 1") || slices.Contains(w, "put-table 1") {
		t.Fatalf("failed batch still published: %v", w)
	}
	f.dp.SetFailTables(nil)
	if err := f.rec.ReconcileChanged(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The entry-less id of the failed pass is freed: the VIP may come back
	// under a new id, with its orphan backend removed.
	w := f.dp.TakeWrites()
	meta, ok := dpVIPs(t, f.dp)[VIPKeyOf(vip1)]
	if !ok {
		t.Fatalf("vip missing after recovery; writes %v", w)
	}
	table, vip := fmt.Sprintf("put-table %d", meta.ID), fmt.Sprintf("put-vip %d", meta.ID)
	if i, j := slices.Index(w, table), slices.Index(w, vip); i < 0 || j < i {
		t.Fatalf("recovery writes %v: want %q, then %q", w, table, vip)
	}
	if got := tableIDs(t, f.dp, meta.ID); len(got) != 1 {
		t.Fatalf("recovered table points at %v, want one backend", got)
	}
	if n := len(dpBackends(t, f.dp)); n != 1 {
		t.Fatalf("%d backend entries after recovery, want 1 (orphan removed)", n)
	}
}
