package main

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/xdplb/xdplb/control/api"
	"github.com/xdplb/xdplb/control/model"
)

func (e *env) statsCommand() *cli.Command {
	return &cli.Command{
		Name:  "stats",
		Usage: "per VIP and backend packets, bytes, flows and rates",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "watch", Aliases: []string{"w"}, Usage: "print again every interval until interrupted"},
			&cli.BoolFlag{Name: "zero", Aliases: []string{"Z"}, Usage: "zero the counters stats shows (not the metrics), then print nothing, or watch with --watch"},
			&cli.StringFlag{Name: "interval", Value: "1s", Usage: "time between the two samples that give rates"},
			outputFlag(),
		},
		Action: e.stats,
	}
}

func (e *env) stats(c *cli.Context) error {
	if err := wantArgs(c, 0, "no arguments"); err != nil {
		return err
	}
	format, err := outputFormat(c)
	if err != nil {
		return err
	}
	interval, err := parseDuration(c, "interval")
	if err != nil {
		return err
	}
	cl := client(c)
	if c.Bool("zero") {
		if err := cl.ZeroStats(c.Context); err != nil {
			return apiError(c, err)
		}
		if !c.Bool("watch") {
			return nil
		}
	}
	cur, err := sample(c, cl)
	if err != nil {
		return err
	}
	if format == "json" && !c.Bool("watch") {
		return writeJSON(e.stdout, cur)
	}

	// On a terminal --watch redraws the table in place; elsewhere (a
	// pipe, a file, a log) it prints one block after the other, plain.
	var scr *screen
	if _, tty := terminalRows(e.stdout); tty && c.Bool("watch") && format == "table" {
		scr = &screen{w: e.stdout, rows: func() int { n, _ := terminalRows(e.stdout); return n }}
		defer scr.close()
	}
	// Rates need a second sample: one interval later.
	timer := time.NewTimer(interval)
	defer timer.Stop()
	for {
		select {
		case <-c.Context.Done():
			if c.Bool("watch") {
				return nil // the normal way to end --watch
			}
			return apiError(c, c.Context.Err())
		case <-timer.C:
		}
		prev := cur
		if cur, err = sample(c, cl); err != nil {
			if c.Bool("watch") && c.Context.Err() != nil {
				return nil
			}
			return err
		}
		switch {
		case format == "json":
			err = writeJSON(e.stdout, cur)
		case scr != nil:
			var frame bytes.Buffer
			err = writeWatchTable(&frame, prev, cur, interval)
			if err == nil {
				err = scr.draw(frame.Bytes())
			}
		default:
			err = writeStatsTable(e.stdout, localTimes(prev), localTimes(cur))
		}
		if err != nil || !c.Bool("watch") {
			return err
		}
		if format == "table" && scr == nil {
			fmt.Fprintln(e.stdout)
		}
		timer.Reset(interval)
	}
}

// localTimes is st with its times in the local zone, as tables show them.
func localTimes(st api.Stats) api.Stats {
	st.Time, st.Since = st.Time.Local(), st.Since.Local()
	return st
}

// writeWatchTable is a frame of stats --watch on a terminal: a first line
// as watch(1) has (what, how often, how to stop), then the table.
func writeWatchTable(w io.Writer, prev, cur api.Stats, interval time.Duration) error {
	fmt.Fprintf(w, "Every %s: xdplb stats (Ctrl-C to quit)\n", interval)
	return writeStatsTable(w, localTimes(prev), localTimes(cur))
}

// sample reads the counters once; rates divide by the time between two
// samples, taken from the daemon (when it read the maps) or else from here.
func sample(c *cli.Context, cl *api.Client) (api.Stats, error) {
	st, err := cl.Stats(c.Context)
	if err != nil {
		return st, apiError(c, err)
	}
	if st.Time.IsZero() {
		st.Time = time.Now()
	}
	return st, nil
}

type counterKey struct {
	vip, backend string // backend "" for the VIP's own counters
}

// rate is (cur - prev) per second; 0 when a counter went backwards (the
// program was reloaded) or the samples are not ordered in time.
func rate(prev, cur uint64, dt time.Duration) float64 {
	if cur < prev || dt <= 0 {
		return 0
	}
	return float64(cur-prev) / dt.Seconds()
}

// statsName is how `stats` names a backend: its fallback marked so.
func statsName(b api.BackendStats) string {
	if b.Fallback {
		return backendString(b.Address, b.Port) + " (fallback)"
	}
	return backendString(b.Address, b.Port)
}

// statsTime is how a stats table writes a time: in the time's location.
const statsTime = "2006-01-02 15:04:05 MST"

// writeStatsTable prints cur's counters with the rates since prev: CPS is
// new flows (connections), PPS packets and BPS bits a second. A first
// line says when, and since when the counters count if they were zeroed.
func writeStatsTable(w io.Writer, prev, cur api.Stats) error {
	dt := cur.Time.Sub(prev.Time)
	since := ""
	if !cur.Since.IsZero() {
		since = fmt.Sprintf("; counters since %s (stats --zero)", cur.Since.Format(statsTime))
	}
	fmt.Fprintf(w, "%s; rates over %s%s\n\n", cur.Time.Format(statsTime), dt.Round(time.Millisecond), since)
	old := map[counterKey]api.CounterSet{}
	for _, v := range prev.VIPs {
		old[counterKey{v.VIP, ""}] = v.CounterSet
		for _, b := range v.Backends {
			old[counterKey{v.VIP, statsName(b)}] = b.CounterSet
		}
	}

	vips := append([]api.VIPStats(nil), cur.VIPs...)
	sortVIPStats(vips)
	t := newTable(w, "VIP", "BACKEND", "PACKETS", "BYTES", "FLOWS", "CPS", "PPS", "BPS(bits/s)")
	add := func(vip, backend string, cs api.CounterSet) {
		p, ok := old[counterKey{vip, backend}]
		cps, pps, bps := "-", "-", "-"
		if ok {
			cps = si(rate(p.Flows, cs.Flows, dt))
			pps = si(rate(p.Packets, cs.Packets, dt))
			bps = si(8 * rate(p.Bytes, cs.Bytes, dt))
		}
		t.row(vip, orDash(backend), strconv.FormatUint(cs.Packets, 10), strconv.FormatUint(cs.Bytes, 10),
			strconv.FormatUint(cs.Flows, 10), cps, pps, bps)
	}
	for _, v := range vips {
		add(v.VIP, "", v.CounterSet)
		for _, b := range v.Backends {
			add(v.VIP, statsName(b), b.CounterSet)
		}
	}
	if err := t.flush(); err != nil {
		return err
	}

	if err := writeActions(w, cur); err != nil {
		return err
	}

	var reasons []string
	for r, n := range cur.Drops {
		if n > 0 {
			reasons = append(reasons, r)
		}
	}
	if len(reasons) > 0 {
		sort.Strings(reasons)
		fmt.Fprintln(w)
		t = newTable(w, "DROP REASON", "COUNT")
		for _, r := range reasons {
			t.row(r, strconv.FormatUint(cur.Drops[r], 10))
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	return writeVIPDrops(w, prev, cur, vips, dt)
}

// writeVIPDrops prints the new flows each VIP refused, by reason (those
// that counted), with their rate a second since prev.
func writeVIPDrops(w io.Writer, prev, cur api.Stats, vips []api.VIPStats, dt time.Duration) error {
	if !slices.ContainsFunc(vips, func(v api.VIPStats) bool { return len(v.Drops) > 0 }) {
		return nil
	}
	old := map[string]map[string]uint64{}
	for _, v := range prev.VIPs {
		old[v.VIP] = v.Drops
	}
	fmt.Fprintln(w)
	t := newTable(w, "VIP", "DROP REASON", "COUNT", "RATE")
	for _, v := range vips {
		for _, r := range slices.Sorted(maps.Keys(v.Drops)) {
			rt := "-"
			if p, ok := old[v.VIP]; ok {
				rt = si(rate(p[r], v.Drops[r], dt))
			}
			t.row(v.VIP, r, strconv.FormatUint(v.Drops[r], 10), rt)
		}
	}
	return t.flush()
}

// txErrorRow names, among the actions of an interface, what its driver
// refused to send of the frames the program returned with XDP_TX or
// redirected; it sorts right after tx.
const txErrorRow = "tx_error"

// writeActions prints the XDP actions per interface and, where the driver
// counts them, its tx errors, with a line that says what they are when
// there are any.
func writeActions(w io.Writer, cur api.Stats) error {
	acts := append([]api.ActionStats(nil), cur.Actions...)
	refused := false
	for _, e := range cur.TxErrors {
		acts = append(acts, api.ActionStats{Iface: e.Iface, Action: txErrorRow, Count: e.Count})
		refused = refused || e.Count > 0
	}
	if len(acts) == 0 {
		return nil
	}
	sort.SliceStable(acts, func(i, j int) bool {
		if acts[i].Iface != acts[j].Iface {
			return acts[i].Iface < acts[j].Iface
		}
		return acts[i].Action < acts[j].Action
	})
	fmt.Fprintln(w)
	t := newTable(w, "IFACE", "ACTION", "COUNT")
	for _, a := range acts {
		t.row(a.Iface, a.Action, strconv.FormatUint(a.Count, 10))
	}
	if err := t.flush(); err != nil {
		return err
	}
	if refused {
		fmt.Fprintf(w, "%s: counted as tx or redirect, then refused by the interface's driver (ethtool -S): lost\n", txErrorRow)
	}
	return nil
}

// sortVIPStats orders VIPs as `vip list` does and each VIP's backends by
// address, its fallback last; the strings that do not parse (none should) go last by name.
func sortVIPStats(vips []api.VIPStats) {
	sort.SliceStable(vips, func(i, j int) bool {
		a, errA := model.ParseVIPID(vips[i].VIP)
		b, errB := model.ParseVIPID(vips[j].VIP)
		switch {
		case errA == nil && errB == nil:
			return compareVIPID(a, b) < 0
		case errA == nil || errB == nil:
			return errA == nil
		default:
			return vips[i].VIP < vips[j].VIP
		}
	})
	for i := range vips {
		bs := append([]api.BackendStats(nil), vips[i].Backends...)
		sort.SliceStable(bs, func(x, y int) bool { // the fallback last
			if bs[x].Fallback != bs[y].Fallback {
				return bs[y].Fallback
			}
			return lessBackend(bs[x].Address, bs[x].Port, bs[y].Address, bs[y].Port)
		})
		vips[i].Backends = bs
	}
}
