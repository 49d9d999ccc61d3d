package bench

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	xmodel "github.com/xdplb/xdplb/control/model"
)

// ctlSlowProbe: a probe of a listening port that took this long is
// counted as failed (the timeout is 500 ms; the histogram has a bucket
// here).
const ctlSlowProbe = 0.25

// ctlHealthRun is one health-check run at one probe rate; rates are per
// second of wall time.
type ctlHealthRun struct {
	vips          int
	asked         float64 // probes/s the state asks for
	probed        float64 // probes/s the daemon ran (its histogram)
	slow          float64 // of which took ctlSlowProbe or more
	accepted      float64 // connections/s the listeners accepted
	user, sys     float64 // daemon CPU-s/s
	lnUser, lnSys float64 // listener thread CPU-s/s
	up, checked   int     // backends up at the end, of all checked
	scrape        time.Duration
	steal         float64 // share of the machine's CPU time the hypervisor took
	scrapeErr     error   // the daemon's metrics could not be read: probed is the listeners' accepts
}

func (r ctlHealthRun) cpu() float64 { return r.user + r.sys }

// sustained: the daemon ran (nearly) every probe asked for, and (nearly)
// all of them were answered in time.
func (r ctlHealthRun) sustained() bool {
	return r.scrapeErr == nil && r.probed >= 0.95*r.asked && r.slow <= 0.01*r.probed
}

// healthCPU runs the health checks at each size of z.checkVIPs and returns
// a row per run, the per-probe cost and the figure at 10,000 probes/s.
func (m *ctlMeasure) healthCPU(ctx context.Context, z ctlSizes) (rows [][]string, notes []string, err error) {
	ports := make([]int, slices.Max(z.checkVIPs))
	for i := range ports {
		ports[i] = ctlCheckPort0 + i
	}
	ls, err := m.env.listen(ports)
	if err != nil {
		return nil, nil, err
	}
	defer ls.Close()
	var runs []ctlHealthRun
	for _, n := range z.checkVIPs {
		r, err := m.healthRun(ctx, z, n, ls)
		if err != nil {
			rows, notes = append(rows, ctlHealthSummary(runs)...), append(notes, ctlHealthNotes(runs)...)
			return rows, notes, fmt.Errorf("%d VIPs: %w", n, err)
		}
		m.c.Log.Info("control: health checks", "asked", r.asked, "probed", r.probed, "slow", r.slow,
			"user", r.user, "sys", r.sys, "listener", r.lnUser+r.lnSys, "up", r.up, "checked", r.checked)
		runs = append(runs, r)
		if r.scrapeErr != nil {
			rows = append(rows, []string{
				fmt.Sprintf("health checks at %.0f probes/s asked: daemon CPU (s/s)", r.asked),
				fmt.Sprintf("%.3f", r.cpu()), "", "", "1",
				fmt.Sprintf("user %.3f + sys %.3f; the daemon's metrics could not be scraped (%v), so probes run "+
					"and failed are unknown: the listeners accepted %.0f/s (%.1f µs daemon CPU per accepted probe) on "+
					"%.3f CPU-s/s; steal %.0f%%", r.user, r.sys, r.scrapeErr, r.accepted, r.cpu()/r.accepted*1e6,
					r.lnUser+r.lnSys, 100*r.steal),
			})
			continue
		}
		rows = append(rows, []string{
			fmt.Sprintf("health checks at %.0f probes/s asked: daemon CPU (s/s)", r.asked),
			fmt.Sprintf("%.3f", r.cpu()), "", "", "1",
			fmt.Sprintf("user %.3f + sys %.3f; ran %.0f probes/s, %.0f/s took %g s or more; %.1f µs CPU per probe "+
				"run; listeners accepted %.0f/s on %.3f CPU-s/s; %d of %d backends up at the end; scrape %s; "+
				"steal %.0f%%", r.user, r.sys, r.probed, r.slow, ctlSlowProbe, r.cpu()/r.probed*1e6, r.accepted,
				r.lnUser+r.lnSys, r.up, r.checked, r.scrape.Round(time.Millisecond), 100*r.steal),
		})
	}
	rows, notes = append(rows, ctlHealthSummary(runs)...), append(notes, ctlHealthNotes(runs)...)
	return rows, notes, nil
}

// ctlHealthSummary gives the per-probe cost (a least-squares line through
// the sustained runs) and the daemon's CPU at 10,000 probes/s: measured if
// a run asked for that and sustained it, otherwise read off the line.
func ctlHealthSummary(runs []ctlHealthRun) [][]string {
	var ok []ctlHealthRun
	for _, r := range runs {
		if r.sustained() {
			ok = append(ok, r)
		}
	}
	var rows [][]string
	if len(ok) >= 2 {
		a, b := ctlFit(ok, ctlHealthRun.cpu)
		_, bu := ctlFit(ok, func(r ctlHealthRun) float64 { return r.user })
		_, bs := ctlFit(ok, func(r ctlHealthRun) float64 { return r.sys })
		rows = append(rows, []string{"health checks: daemon CPU per probe (µs)", fmt.Sprintf("%.1f", b*1e6), "", "",
			strconv.Itoa(len(ok)), fmt.Sprintf("slope of a least-squares line through the %d sustained runs (user %.1f, sys %.1f); "+
				"intercept %.3f CPU-s/s", len(ok), bu*1e6, bs*1e6, a)})
		if i := slices.IndexFunc(ok, func(r ctlHealthRun) bool { return r.asked >= 10000 }); i >= 0 {
			rows = append(rows, []string{"health checks: daemon CPU at 10,000 probes/s (s/s)", fmt.Sprintf("%.3f", ok[i].cpu()),
				"", "", "1", fmt.Sprintf("measured: %.0f probes/s run, user %.3f + sys %.3f", ok[i].probed, ok[i].user, ok[i].sys)})
		} else {
			rows = append(rows, []string{"health checks: daemon CPU at 10,000 probes/s (s/s)", fmt.Sprintf("%.3f", a+b*10000),
				"", "", "0", fmt.Sprintf("EXTRAPOLATED from the line above: no run at 10,000 probes/s was sustained "+
					"(sustained up to %.0f probes/s)", slices.MaxFunc(ok, func(x, y ctlHealthRun) int {
					return cmp.Compare(x.probed, y.probed)
				}).probed)})
		}
	} else if len(runs) >= 2 {
		// Nothing to extrapolate from honestly; still, the CPU per probe
		// run is a cost, of an overloaded daemon.
		a, b := ctlFit(runs, ctlHealthRun.cpu)
		rows = append(rows, []string{"health checks: daemon CPU per probe (µs)", fmt.Sprintf("%.1f", b*1e6), "", "",
			strconv.Itoa(len(runs)), fmt.Sprintf("slope of a least-squares line through ALL %d runs, of which only %d "+
				"sustained their rate (intercept %.3f CPU-s/s): an overloaded daemon's cost; no figure at 10,000 "+
				"probes/s is given", len(runs), len(ok), a)})
	}
	return rows
}

func ctlHealthNotes(runs []ctlHealthRun) []string {
	var notes []string
	for _, r := range runs {
		if r.scrapeErr != nil {
			notes = append(notes, fmt.Sprintf("health checks at %.0f probes/s asked: the metrics scrape failed "+
				"(%v): the daemon fell behind; its CPU is measured, its probe count is not, so the run is left "+
				"out of the line", r.asked, r.scrapeErr))
			continue
		}
		if !r.sustained() {
			notes = append(notes, fmt.Sprintf("health checks at %.0f probes/s asked were not sustained: %.0f/s ran, "+
				"%.0f/s took %g s or more (steal %.0f%% meanwhile); its CPU figure is of a daemon that fell behind, "+
				"left out of the line", r.asked, r.probed, r.slow, ctlSlowProbe, 100*r.steal))
		}
	}
	notes = append(notes, "health-check CPU: over veth the whole handshake of a probe (SYN, SYN-ACK, ACK, RST and "+
		"the listener's side) mostly runs in softirq context on the sending CPU, i.e. inside the daemon's connect "+
		"and close, and is charged to the daemon as system time; the listeners' accept work, the bench and the "+
		"other helpers share the same 2 CPUs. On a real network the receiving side's work is on the backend.")
	return notes
}

// ctlStealTicks returns the machine's steal time and all its CPU time, in
// ticks, from /proc/stat.
func ctlStealTicks() ([2]uint64, error) {
	var out [2]uint64
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return out, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return out, fmt.Errorf("parse /proc/stat: %q", line)
	}
	// user nice system idle iowait irq softirq steal (guest time is in user).
	for i, x := range f[1:9] {
		n, err := strconv.ParseUint(x, 10, 64)
		if err != nil {
			return out, fmt.Errorf("parse /proc/stat: %w", err)
		}
		out[1] += n
		if i == 7 {
			out[0] = n
		}
	}
	return out, nil
}

// ctlFit is the least-squares line y = a + b*probed through runs.
func ctlFit(runs []ctlHealthRun, y func(ctlHealthRun) float64) (a, b float64) {
	var sx, sy, sxx, sxy float64
	n := float64(len(runs))
	for _, r := range runs {
		x, v := r.probed, y(r)
		sx, sy, sxx, sxy = sx+x, sy+v, sxx+x*x, sxy+x*v
	}
	d := n*sxx - sx*sx
	if d == 0 {
		return math.NaN(), math.NaN()
	}
	b = (n*sxy - sx*sy) / d
	return (sy - b*sx) / n, b
}

// healthRun applies n checked VIPs from an empty state, lets the checks
// settle and measures one window.
func (m *ctlMeasure) healthRun(ctx context.Context, z ctlSizes, n int, ls *ctlCheckListeners) (ctlHealthRun, error) {
	r := ctlHealthRun{vips: n, asked: float64(n * z.checkPool)}
	s := ctlState{vips: n, pool: z.checkPool, poolBase: ctlCheckBase, check: true, changedVIP: -1}
	if err := m.applyCLI(ctx, m.writeState(s.build())); err != nil {
		return r, err
	}
	// Leave the daemon without checks afterwards, so that the next run
	// starts from nothing.
	defer func() {
		if err := m.applyCLI(ctx, m.writeState(xmodel.State{VIPs: []xmodel.VIP{}})); err != nil {
			m.c.Log.Warn("control: clear checks", "err", err)
		}
	}()
	if err := ctlSleep(ctx, z.warmup); err != nil {
		return r, err
	}
	// A scrape that fails (an overloaded daemon) leaves the CPU figures
	// standing; the probe rate then comes from the listeners.
	s0, err0 := m.scrapeHealth(ctx)
	u0, y0, err := ctlProcCPU(m.env.pid)
	if err != nil {
		return r, err
	}
	lu0, ly0, err := ls.cpu()
	if err != nil {
		return r, err
	}
	st0, err := ctlStealTicks()
	if err != nil {
		return r, err
	}
	a0, t0 := ls.accepted.Load(), time.Now()
	if err := ctlSleep(ctx, z.cpuWindow); err != nil {
		return r, err
	}
	st1, err := ctlStealTicks()
	if err != nil {
		return r, err
	}
	if all := st1[1] - st0[1]; all > 0 {
		r.steal = float64(st1[0]-st0[0]) / float64(all)
	}
	u1, y1, err := ctlProcCPU(m.env.pid)
	if err != nil {
		return r, err
	}
	lu1, ly1, err := ls.cpu()
	if err != nil {
		return r, err
	}
	a1, el := ls.accepted.Load(), time.Since(t0).Seconds()
	r.user, r.sys = (u1-u0).Seconds()/el, (y1-y0).Seconds()/el
	r.lnUser, r.lnSys = (lu1-lu0).Seconds()/el, (ly1-ly0).Seconds()/el
	r.accepted = float64(a1-a0) / el
	var err1 error
	if err0 == nil {
		s1, err := m.scrapeHealth(ctx)
		// The probe counts are from the scrapes (taken about when each
		// request was sent), the CPU from just inside them.
		if pe := s1.at.Sub(s0.at).Seconds(); err == nil {
			r.probed, r.slow = (s1.probes-s0.probes)/pe, (s1.slow-s0.slow)/pe
			r.up, r.checked, r.scrape = s1.up, s1.backends, s1.took
		}
		err1 = err
	}
	if r.scrapeErr = cmp.Or(err0, err1); r.scrapeErr != nil {
		r.probed, r.slow = r.accepted, math.NaN()
	}
	return r, nil
}

// ctlHealthScrape is what one scrape says of the health checks.
type ctlHealthScrape struct {
	at           time.Time // the request was sent
	took         time.Duration
	probes, slow float64
	up, backends int
}

// scrapeHealth scrapes the daemon with a generous timeout: a slow scrape
// is a figure here, not a failure.
func (m *ctlMeasure) scrapeHealth(ctx context.Context) (ctlHealthScrape, error) {
	d := m.env.daemon
	tr := &http.Transport{DisableKeepAlives: true, DialContext: d.Node.DialContext}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+d.MetricsAddr+"/metrics", nil)
	if err != nil {
		return ctlHealthScrape{}, err
	}
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	s := ctlHealthScrape{at: time.Now()}
	resp, err := c.Do(req)
	if err != nil {
		return s, fmt.Errorf("scrape metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return s, fmt.Errorf("scrape metrics: %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	// The scrape's time is the daemon's: until its last byte, before our
	// own parse of it.
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return s, fmt.Errorf("scrape metrics: %w", err)
	}
	s.took = time.Since(s.at)
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return s, fmt.Errorf("scrape metrics: parse: %w", err)
	}
	if mf, ok := mfs["xdplb_healthcheck_duration_seconds"]; ok {
		for _, x := range mf.GetMetric() {
			h := x.GetHistogram()
			s.probes += float64(h.GetSampleCount())
			s.slow += float64(h.GetSampleCount()) - ctlBucketCount(h, ctlSlowProbe)
		}
	}
	if mf, ok := mfs["xdplb_backend_up"]; ok {
		for _, x := range mf.GetMetric() {
			s.backends++
			if x.GetGauge().GetValue() == 1 {
				s.up++
			}
		}
	}
	return s, nil
}

// ctlBucketCount is the cumulative count of h's bucket with upper bound le.
func ctlBucketCount(h *dto.Histogram, le float64) float64 {
	for _, b := range h.GetBucket() {
		if b.GetUpperBound() == le {
			return float64(b.GetCumulativeCount())
		}
	}
	return float64(h.GetSampleCount()) // no such bucket: count none as slow
}

func ctlSleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

func ctlInts(xs []int, sep string) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, sep)
}

func ctlScale(xs []int, k int) []int {
	out := make([]int, len(xs))
	for i, x := range xs {
		out[i] = x * k
	}
	return out
}
