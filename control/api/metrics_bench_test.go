package api

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/control/reconcile"
	"github.com/xdplb/xdplb/control/reconcile/reconciletest"
	"github.com/xdplb/xdplb/control/state"
	"github.com/xdplb/xdplb/loader"
)

// scrapeBench is a metrics server over a reconciled state of vips VIPs x
// pool backends, each VIP with a tcp check: the shapes of the control
// benchmark's scrape (bench/control_scrape.go), on the fake data plane.
type scrapeBench struct {
	srv *MetricsServer
	rec *reconcile.Reconciler
}

func newScrapeBench(b *testing.B, vips, pool int) *scrapeBench {
	b.Helper()
	store, err := state.Open(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	dp := reconciletest.NewDatapath(loader.DefaultLookupSize, 1024, 65536)
	nw := &fakeNetwork{reconciletest.NewNetwork()}
	var st model.State
	for i := range vips {
		v := model.VIP{Address: netip.AddrFrom4([4]byte{10, 250, byte(i >> 8), byte(i)}), Port: 80, Protocol: model.TCP,
			HealthCheck: &model.HealthCheck{Type: model.CheckTCP}}
		for j := range pool {
			a := netip.AddrFrom4([4]byte{10, 201, 1, byte(j)})
			v.Backends = append(v.Backends, model.Backend{Address: a, Weight: model.DefaultWeight})
			nw.setMAC(a.String(), mac(byte(j+1)))
		}
		st.VIPs = append(st.VIPs, v)
	}
	if err := store.Replace(st); err != nil {
		b.Fatal(err)
	}
	rec := reconcile.NewReconciler(store, dp, nw, nil, nil)
	if err := rec.Reconcile(context.Background()); err != nil {
		b.Fatal(err)
	}
	for id := range uint32(vips * pool) {
		dp.SetBackendCounters(id+1, loader.Counters{Packets: 1000 + uint64(id), Bytes: 150000, Flows: 10})
	}
	srv := NewMetricsServer(nil)
	c := NewCollector(dp, store, rec, "bench", nil)
	c.ifname = func(int) string { return "eth0" }
	if err := srv.Register(c, NewHealthMetrics(store)); err != nil {
		b.Fatal(err)
	}
	return &scrapeBench{srv: srv, rec: rec}
}

type discardResponse struct{ h http.Header }

func (d *discardResponse) Header() http.Header         { return d.h }
func (d *discardResponse) Write(p []byte) (int, error) { return io.Discard.Write(p) }
func (d *discardResponse) WriteHeader(int)             {}

func (s *scrapeBench) scrape(b *testing.B) {
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	h := s.srv.Handler()
	for b.Loop() {
		h.ServeHTTP(&discardResponse{h: http.Header{}}, req)
	}
}

// BenchmarkScrape1000x32 is one GET /metrics of 1,000 VIPs x 32 checked
// backends, the reconciler idle.
func BenchmarkScrape1000x32(b *testing.B) { newScrapeBench(b, 1000, 32).scrape(b) }

// BenchmarkScrape1000x32Passes is BenchmarkScrape1000x32 while full
// reconciler passes run back to back, as health changes make them on a
// busy daemon: the scrape must not queue behind each pass for every
// backend it reads.
func BenchmarkScrape1000x32Passes(b *testing.B) {
	s := newScrapeBench(b, 1000, 32)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for ctx.Err() == nil {
			if err := s.rec.Reconcile(ctx); err != nil && ctx.Err() == nil {
				b.Error(err)
				return
			}
			time.Sleep(time.Millisecond)
		}
	})
	s.scrape(b)
	cancel()
	wg.Wait()
}
