package api

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/loader"
)

// stats --zero: Stats counts from the zero on, every counter it shows
// (VIPs, backends, ICMP errors, actions, drivers' tx errors, drops); the metrics, read from
// the same maps, keep counting from the start.
func TestStatsZero(t *testing.T) {
	f := newAPIFixture(t)
	ctx := t.Context()
	f.nw.setMAC("10.0.0.1", mac(1))
	if err := f.client.AddVIP(ctx, model.VIP{Address: vip1.Addr, Port: 80, Protocol: model.TCP, Backends: []model.Backend{be("10.0.0.1", 100)}}, false); err != nil {
		t.Fatal(err)
	}
	set := func(n uint64) {
		f.dp.SetVIPCounters(1, loader.Counters{Packets: 10 * n, Bytes: 1000 * n, Flows: n, ICMPErrors: n})
		f.dp.SetBackendCounters(1, loader.Counters{Packets: 10 * n, Bytes: 1000 * n, Flows: n})
		f.dp.SetActions(loader.ActionCount{Ifindex: 1, Action: "tx", Count: 10 * n})
		f.dp.SetTxErrors(loader.TxErrorCount{Ifindex: 1, Count: 3 * n})
		f.dp.SetDrops("no_backend", n)
		f.dp.SetVIPDrops(1, "rate_limited", 3*n)
	}
	set(5)
	st, err := f.client.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Since.IsZero() || st.VIPs[0].Packets != 50 || st.VIPs[0].Drops["rate_limited"] != 15 {
		t.Fatalf("before zero: %+v", st)
	}

	before := time.Now()
	if err := f.client.ZeroStats(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err = f.client.Stats(ctx); err != nil {
		t.Fatal(err)
	}
	v := st.VIPs[0]
	if st.Since.Before(before) || st.Since.After(st.Time) || v.CounterSet != (CounterSet{}) || v.ICMPErrors != 0 ||
		v.Backends[0].CounterSet != (CounterSet{}) || st.Actions[0].Count != 0 || st.TxErrors[0].Count != 0 || st.Drops["no_backend"] != 0 || v.Drops["rate_limited"] != 0 {
		t.Fatalf("right after zero: %+v", st)
	}

	set(7)
	if st, err = f.client.Stats(ctx); err != nil {
		t.Fatal(err)
	}
	v = st.VIPs[0]
	want := CounterSet{Packets: 20, Bytes: 2000, Flows: 2}
	if v.CounterSet != want || v.ICMPErrors != 2 || v.Backends[0].CounterSet != want || st.Actions[0].Count != 20 || st.TxErrors[0].Count != 6 || st.Drops["no_backend"] != 2 ||
		v.Drops["rate_limited"] != 6 {
		t.Fatalf("after zero and more traffic: %+v", st)
	}

	// The metrics were not zeroed.
	c := NewCollector(f.dp, f.store, f.rec, "test", nil)
	err = testutil.CollectAndCompare(c, strings.NewReader(`
# HELP xdplb_vip_packets_total Packets received for a VIP.
# TYPE xdplb_vip_packets_total counter
xdplb_vip_packets_total{vip="10.0.0.100:80/tcp"} 70
# HELP xdplb_drops_total Packets dropped by the XDP program, per reason.
# TYPE xdplb_drops_total counter
xdplb_drops_total{reason="no_backend"} 7
# HELP xdplb_xdp_tx_errors_total Frames returned with XDP_TX or redirected that the interface's driver refused to send (lost), from its ethtool statistics; absent where the driver counts none.
# TYPE xdplb_xdp_tx_errors_total counter
xdplb_xdp_tx_errors_total{iface="lo"} 21
# HELP xdplb_vip_drops_total New flows of a VIP dropped, per reason (also in xdplb_drops_total).
# TYPE xdplb_vip_drops_total counter
xdplb_vip_drops_total{reason="rate_limited",vip="10.0.0.100:80/tcp"} 21
`), "xdplb_vip_packets_total", "xdplb_drops_total", "xdplb_xdp_tx_errors_total", "xdplb_vip_drops_total")
	if err != nil {
		t.Error(err)
	}

	// Counters that went below the zero (the program was loaded afresh)
	// count from nothing, not from the zero.
	set(1)
	if st, err = f.client.Stats(ctx); err != nil {
		t.Fatal(err)
	}
	if st.VIPs[0].Packets != 10 || st.VIPs[0].Backends[0].Packets != 10 || st.Actions[0].Count != 10 || st.TxErrors[0].Count != 3 || st.Drops["no_backend"] != 1 ||
		st.VIPs[0].Drops["rate_limited"] != 3 {
		t.Fatalf("after a reload: %+v", st)
	}
}

// A VIP deleted and added again after the zero has new counters in the
// maps: they count from its creation, not less the old VIP's.
func TestStatsZeroNewVIP(t *testing.T) {
	base := Stats{Time: time.Unix(100, 0), VIPs: []VIPStats{{VIP: "10.0.0.100:80/tcp", mapped: true, id: 1,
		CounterSet: CounterSet{Packets: 100, Bytes: 100, Flows: 100},
		Backends:   []BackendStats{{Address: vip1.Addr, mapped: true, id: 3, CounterSet: CounterSet{Packets: 100}}}}}}
	cur := Stats{Time: time.Unix(200, 0), VIPs: []VIPStats{{VIP: "10.0.0.100:80/tcp", mapped: true, id: 2,
		CounterSet: CounterSet{Packets: 150, Bytes: 150, Flows: 150},
		Backends:   []BackendStats{{Address: vip1.Addr, mapped: true, id: 4, CounterSet: CounterSet{Packets: 150}}}}}}
	got := subtract(cur, base)
	if got.VIPs[0].Packets != 150 || got.VIPs[0].Backends[0].Packets != 150 || !got.Since.Equal(base.Time) {
		t.Errorf("re-created vip: %+v", got)
	}
	// The same ids: less the zero.
	cur.VIPs[0].id, cur.VIPs[0].Backends[0].id = 1, 3
	if got = subtract(cur, base); got.VIPs[0].Packets != 50 || got.VIPs[0].Backends[0].Packets != 50 {
		t.Errorf("same vip: %+v", got)
	}
	if base.VIPs[0].Packets != 100 || cur.VIPs[0].Packets != 150 {
		t.Errorf("subtract changed its arguments")
	}
}
