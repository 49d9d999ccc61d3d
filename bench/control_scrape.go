package bench

import (
	"context"
	"fmt"
	"slices"
	"time"

	xmodel "github.com/xdplb/xdplb/control/model"
)

// ctlCheckAddrs is how many backend addresses answer health checks in the
// backend namespace: the largest pool a checked state uses.
const ctlCheckAddrs = 32

// ctlScrapeProbes is the probe rate the scrape targets hold at.
const ctlScrapeProbes = 10000

// ctlScrapeCase is one state the scrape is timed in: VIPs x pool backends,
// idle (no checks) and then checked at ctlScrapeProbes probes/s.
type ctlScrapeCase struct{ vips, pool int }

func ctlScrapeCases(quick bool) []ctlScrapeCase {
	if quick {
		return []ctlScrapeCase{{100, 10}, {100, 32}}
	}
	return []ctlScrapeCase{{1000, 10}, {1000, 32}}
}

// ctlScrapeRounds scrapes per measurement, a second apart; the median
// counts.
const ctlScrapeRounds = 7

// scrapeCost times GET /metrics (request sent to body parsed) with each
// state of ctlScrapeCases, first without checks (an idle daemon), then
// with tcp checks whose interval gives ctlScrapeProbes probes/s (1 s for
// 10 backends a VIP, 3.2 s for 32), side by side in the same run. It
// returns a row per measurement and a target per checked state: the
// median at most 200 ms.
func (m *ctlMeasure) scrapeCost(ctx context.Context, z ctlSizes) (rows [][]string, targets []Target, err error) {
	cases := ctlScrapeCases(m.c.Quick)
	ports := make([]int, slices.MaxFunc(cases, func(a, b ctlScrapeCase) int { return a.vips - b.vips }).vips)
	for i := range ports {
		ports[i] = ctlCheckPort0 + i
	}
	ls, err := m.env.listen(ports)
	if err != nil {
		return nil, nil, err
	}
	defer ls.Close()
	defer func() {
		if err := m.applyCLI(ctx, m.writeState(xmodel.State{VIPs: []xmodel.VIP{}})); err != nil {
			m.c.Log.Warn("control: clear scrape state", "err", err)
		}
	}()
	for _, sc := range cases {
		desc := fmt.Sprintf("%d VIPs x %d backends", sc.vips, sc.pool)
		idle := ctlState{vips: sc.vips, pool: sc.pool, poolBase: ctlCheckBase, changedVIP: -1}
		if err := m.applyCLI(ctx, m.writeState(idle.build())); err != nil {
			return rows, targets, fmt.Errorf("%s idle: %w", desc, err)
		}
		if err := ctlSleep(ctx, 2*time.Second); err != nil {
			return rows, targets, err
		}
		ds, _, err := m.scrapeTimes(ctx)
		if err != nil {
			return rows, targets, fmt.Errorf("%s idle: %w", desc, err)
		}
		rows = append(rows, ctlDurRow(fmt.Sprintf("scrape /metrics, %s, idle (ms)", desc), ds, time.Millisecond,
			"no health checks; from the request to the last byte"))

		interval := time.Duration(sc.pool) * time.Second * time.Duration(sc.vips) / ctlScrapeProbes
		checked := idle
		checked.check, checked.checkInterval = true, interval
		if err := m.applyCLI(ctx, m.writeState(xmodel.State{VIPs: []xmodel.VIP{}})); err != nil {
			return rows, targets, err
		}
		if err := m.applyCLI(ctx, m.writeState(checked.build())); err != nil {
			return rows, targets, fmt.Errorf("%s checked: %w", desc, err)
		}
		if err := ctlSleep(ctx, z.warmup+2*interval); err != nil {
			return rows, targets, err
		}
		ds, probed, err := m.scrapeTimes(ctx)
		if err != nil {
			return rows, targets, fmt.Errorf("%s checked: %w", desc, err)
		}
		asked := float64(sc.vips*sc.pool) / interval.Seconds()
		rows = append(rows, ctlDurRow(fmt.Sprintf("scrape /metrics, %s, checks at %.0f probes/s (ms)", desc, asked), ds,
			time.Millisecond, fmt.Sprintf("tcp checks every %s; the daemon ran %.0f probes/s meanwhile", interval, probed)))
		targets = append(targets, Target{Name: fmt.Sprintf("control: scrape %s, checks at %.0f probes/s", desc, asked),
			Got: float64(ctlMedian(ds)) / 1e6, Limit: 200, AtMost: true, Unit: "ms"})
		m.c.Log.Info("control: scrape", "state", desc, "checked_median", ctlMedian(ds), "probed", probed)
		if err := m.applyCLI(ctx, m.writeState(xmodel.State{VIPs: []xmodel.VIP{}})); err != nil {
			return rows, targets, err
		}
	}
	return rows, targets, nil
}

// scrapeTimes scrapes ctlScrapeRounds times a second apart and returns the
// times and the probes/s the daemon ran between the first and the last.
func (m *ctlMeasure) scrapeTimes(ctx context.Context) ([]time.Duration, float64, error) {
	var ds []time.Duration
	var first, last ctlHealthScrape
	for i := range ctlScrapeRounds {
		s, err := m.scrapeHealth(ctx)
		if err != nil {
			return ds, 0, err
		}
		if i == 0 {
			first = s
		}
		last = s
		ds = append(ds, s.took)
		if err := ctlSleep(ctx, time.Second); err != nil {
			return ds, 0, err
		}
	}
	probed := 0.0
	if el := last.at.Sub(first.at).Seconds(); el > 0 {
		probed = (last.probes - first.probes) / el
	}
	return ds, probed, nil
}
