package loader

import (
	"net/netip"
	"os"
	"testing"
	"time"
)

// TestScrapeReadCost times the reads behind a /metrics scrape and `xdplb
// stats` at the daemon's real map sizes with 1,000 VIPs x 32 backends
// (XDPLB_SCRAPE_COST=1; a measurement: it logs, it holds no limit).
func TestScrapeReadCost(t *testing.T) {
	if os.Getenv("XDPLB_SCRAPE_COST") == "" {
		t.Skip("a measurement: XDPLB_SCRAPE_COST=1 to run it")
	}
	d := newDatapathWith(t, func(o *Options) {
		o.MaxVIPs, o.MaxBackends, o.ConntrackSize = DefaultMaxVIPs, DefaultMaxBackends, 4096
	})
	const vips, pool = 1000, 32
	id := uint32(1)
	for v := range vips {
		a := netip.AddrFrom4([4]byte{10, 250, byte(v >> 8), byte(v)})
		must(t, d.PutVIP(VIPKey{Addr: a, Port: 80, Proto: ProtoTCP}, VIPMeta{ID: uint32(v + 1), Mode: ModeDR, Hash: HashMaglev}))
		for b := range pool {
			ba := netip.AddrFrom4([4]byte{10, 201, 1, byte(b + 1)})
			must(t, d.PutBackend(Backend{ID: id, VIPID: uint32(v + 1), Addr: ba, MAC: backendMAC(id), SrcMAC: lbOutMAC, Ifindex: loIfindex}))
			id++
		}
	}
	timeIt := func(name string, f func() error) {
		best := time.Hour
		for range 5 {
			t0 := time.Now()
			if err := f(); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			best = min(best, time.Since(t0))
		}
		t.Logf("%-20s %v", name, best)
	}
	timeIt("VIPs", func() error { _, err := d.VIPs(); return err })
	timeIt("Backends", func() error { _, err := d.Backends(); return err })
	timeIt("VIPCounters", func() error { _, err := d.VIPCounters(); return err })
	timeIt("VIPDropCounters", func() error { _, err := d.VIPDropCounters(); return err })
	timeIt("BackendCounters", func() error { _, err := d.BackendCounters(); return err })
	timeIt("BackendCountsByID", func() error { _, err := d.BackendCountsByID(); return err })
	timeIt("ActionCounters", func() error { _, err := d.ActionCounters(); return err })
	timeIt("DropCounters", func() error { _, err := d.DropCounters(); return err })
	timeIt("ConntrackEntries", func() error { _, err := d.ConntrackEntries(); return err })
	timeIt("NATStats", func() error { _, err := d.NATStats(); return err })
	timeIt("EventCounters", func() error { _, err := d.EventCounters(); return err })
	timeIt("DriverTxErrors", func() error { _, err := d.DriverTxErrors(); return err })
}
