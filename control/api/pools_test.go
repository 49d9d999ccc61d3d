package api

import (
	"context"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/xdplb/xdplb/control/model"
)

// Backup pools through the API: a backend's priority on add and set, a
// VIP's failover_below on add and set; GET /v1/vips says which pools take
// new flows, GET .../backends which backends stand by, and
// xdplb_vip_active_priority the worst active pool (-1: none).
func TestAPIPools(t *testing.T) {
	h := newFakeHealth()
	f := newAPIFixtureWithHealth(t, h)
	ctx := context.Background()
	for i, a := range []string{"10.0.0.1", "10.0.0.2", "10.0.1.1"} {
		f.nw.setMAC(a, mac(byte(i+1)))
	}
	if err := f.client.AddVIP(ctx, model.VIP{Address: vip1.Addr, Port: 80, Protocol: model.TCP, FailoverBelow: 60}, false); err != nil {
		t.Fatal(err)
	}
	backup := be("10.0.1.1", 100)
	backup.Priority = 1
	for _, b := range []model.Backend{be("10.0.0.1", 100), be("10.0.0.2", 100), backup} {
		if err := f.client.AddBackend(ctx, vip1, b); err != nil {
			t.Fatal(err)
		}
	}
	c := NewCollector(f.dp, f.store, f.rec, "dev", nil)
	check := func(what string, pools []uint32, prio int, states ...string) {
		t.Helper()
		vips, err := f.client.VIPs(ctx)
		if err != nil || len(vips) != 1 {
			t.Fatalf("%s: vips %+v %v", what, vips, err)
		}
		v := vips[0]
		if v.FailoverBelow == 0 || !slices.Equal(v.ActivePools, pools) || v.ActivePriority == nil || *v.ActivePriority != prio {
			t.Fatalf("%s: vip %+v: want failover_below, active pools %v, priority %d", what, v, pools, prio)
		}
		bs, err := f.client.Backends(ctx, vip1)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, b := range bs {
			got = append(got, b.State)
		}
		if !slices.Equal(got, states) || bs[2].Priority != 1 || bs[0].Priority != 0 {
			t.Fatalf("%s: backends %+v: want states %v", what, bs, states)
		}
		want := "# HELP xdplb_vip_active_priority Worst (highest) priority of the backend pools taking a VIP's new flows: " +
			"0 on its primary pool; -1 when no pool takes them (its fallback, or dropped).\n" +
			"# TYPE xdplb_vip_active_priority gauge\n" +
			`xdplb_vip_active_priority{vip="10.0.0.100:80/tcp"} ` + strconv.Itoa(prio) + "\n"
		if err := testutil.CollectAndCompare(c, strings.NewReader(want), "xdplb_vip_active_priority"); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	check("all up", []uint32{0}, 0, model.BackendUp, model.BackendUp, model.BackendStandby)

	// One of two primary backends down: 50% < 60%, the backup shares.
	h.set(vip1, "10.0.0.1", false, "timeout")
	if err := f.rec.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	check("primary at half", []uint32{0, 1}, 1, model.BackendDown, model.BackendUp, model.BackendUp)

	// vip set --failover-below 50: the primary suffices again.
	pct := uint32(50)
	if err := f.client.SetVIP(ctx, vip1, model.VIPPatch{FailoverBelow: &pct}, false); err != nil {
		t.Fatal(err)
	}
	check("failover_below 50", []uint32{0}, 0, model.BackendDown, model.BackendUp, model.BackendStandby)

	// backend set --priority: the last primary backend up moves to pool
	// 2, behind the backup.
	two := uint32(2)
	if err := f.client.SetBackend(ctx, vip1, netip.MustParseAddr("10.0.0.2"), 0, model.BackendPatch{Priority: &two}); err != nil {
		t.Fatal(err)
	}
	bs, _ := f.client.Backends(ctx, vip1)
	if bs[1].Priority != 2 || bs[1].State != model.BackendStandby || bs[2].State != model.BackendUp {
		t.Fatalf("after backend set --priority 2: %+v", bs)
	}

	// Every backend down, no fallback: no pool, -1.
	h.set(vip1, "10.0.0.2", false, "timeout")
	h.set(vip1, "10.0.1.1", false, "timeout")
	if err := f.rec.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	vips, _ := f.client.VIPs(ctx)
	if v := vips[0]; v.ActivePools != nil || v.ActivePriority == nil || *v.ActivePriority != -1 {
		t.Fatalf("all down: %+v", v)
	}
	want := `
# HELP xdplb_vip_active_priority Worst (highest) priority of the backend pools taking a VIP's new flows: 0 on its primary pool; -1 when no pool takes them (its fallback, or dropped).
# TYPE xdplb_vip_active_priority gauge
xdplb_vip_active_priority{vip="10.0.0.100:80/tcp"} -1
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "xdplb_vip_active_priority"); err != nil {
		t.Fatal(err)
	}

	// Out of range: refused by the daemon.
	bad := uint32(256)
	if err := f.client.SetBackend(ctx, vip1, netip.MustParseAddr("10.0.0.2"), 0, model.BackendPatch{Priority: &bad}); err == nil ||
		!strings.Contains(err.Error(), "priority 256: want 0-255") {
		t.Fatalf("priority 256: %v", err)
	}
	pct = 101
	if err := f.client.SetVIP(ctx, vip1, model.VIPPatch{FailoverBelow: &pct}, false); err == nil ||
		!strings.Contains(err.Error(), "failover_below 101: want a percentage, 0-100") {
		t.Fatalf("failover_below 101: %v", err)
	}
}
