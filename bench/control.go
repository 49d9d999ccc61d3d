package bench

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/xdplb/xdplb/control/config"
	"github.com/xdplb/xdplb/control/model"
)

// ctlSizes are the section's state sizes and repeat counts.
type ctlSizes struct {
	vips, pool, big, checkPool int
	checkVIPs                  []int // one health-check run per entry: VIPs x checkPool probes/s
	rounds, changes            int
	cpuWindow, warmup          time.Duration
}

func ctlSizesFor(quick bool) ctlSizes {
	if quick {
		return ctlSizes{vips: 200, pool: 32, big: 1000, checkVIPs: []int{50, 100}, checkPool: 10,
			rounds: 1, changes: 4, cpuWindow: 3 * time.Second, warmup: 3 * time.Second}
	}
	return ctlSizes{vips: 1000, pool: 32, big: 1000, checkVIPs: []int{100, 250, 500, 1000}, checkPool: 10,
		rounds: 2, changes: 15, cpuWindow: 10 * time.Second, warmup: 5 * time.Second}
}

// runControlPlane measures section 4 of the issue against the real daemon.
func runControlPlane(ctx context.Context, c Config) (Section, error) {
	z := ctlSizesFor(c.Quick)
	sec := Section{
		Title: "Control plane",
		Method: fmt.Sprintf("The real daemon (`%s daemon`, native XDP on a veth) in a lab namespace of its own, with a "+
			"private bpffs mounted by the bench so that it reads the daemon's pinned maps itself. The LB interface "+
			"holds 10.201.0.0/16; backends are permanent neighbour entries (made-up MACs) there, as an operator "+
			"would configure static backends, so no real hosts are needed; the daemon must use them and leave "+
			"them PERMANENT (checked). VIPs are 10.250.x.y:80/tcp (outside the subnet: nothing to announce), "+
			"every VIP with the same %d backends (one server pool behind many service addresses). \"Fully in "+
			"the maps\" means: `status` shows every VIP entry and every backend entry, and every VIP's lookup "+
			"table read from the pinned map is the Maglev table of its backends (compared up to the renaming of "+
			"backend ids). Apply time is the wall time of `xdplb apply -f` (the API reconciles before answering); "+
			"if the maps were not complete by then, the time until a poll found them complete. A single change "+
			"is a weight change of one backend of a VIP with %d backends in a state of %d VIPs, timed over the "+
			"API socket (the target), through the CLI (adds a process start), and by the daemon's own log of the "+
			"reconcile it ran. Memory is VmRSS of the daemon (minus any mmapped map pages) and the memlock of "+
			"every BPF map it holds, lookup tables included (fdinfo). Health-check CPU: N VIPs x %d backends "+
			"(N = %s, so %s probes/s asked for) with tcp checks every 1 s, timeout 500 ms, to listeners in the "+
			"backend namespace (each VIP its own check port, so no probes are shared); one run per N, each "+
			"from an empty state, %s to settle, then a %s window: the daemon's utime and stime (/proc), the "+
			"probes it ran (the count of its xdplb_healthcheck_duration_seconds, scraped before and after) and "+
			"those that took 250 ms or more (the histogram's buckets; a probe to a listening port that slow "+
			"is a timeout or close to one), the connections the listeners accepted and their own CPU (one "+
			"thread, epoll, accept and close, in the bench process; its CPU read from /proc apart). Medians "+
			"over rounds; the machine is shared, so absolute times are noisy.",
			c.Binary, z.pool, z.big, z.vips, z.checkPool, ctlInts(z.checkVIPs, ", "),
			ctlInts(ctlScale(z.checkVIPs, z.checkPool), ", "), z.warmup, z.cpuWindow),
		Header: []string{"measure", "median", "min", "max", "n", "detail"},
	}
	env, err := newCtlEnv(ctx, c)
	if err != nil {
		return sec, err
	}
	defer func() {
		if err := env.Close(); err != nil {
			c.Log.Warn("control bench cleanup", "err", err)
		}
	}()

	pool := ctlAddrRange(ctlPoolBase, z.pool)
	big := ctlAddrRange(ctlBigBase, z.big)
	if err := env.addNeighbours(ctx, append(slices.Clone(pool), big...)); err != nil {
		return sec, err
	}
	m := &ctlMeasure{env: env, c: c, layouts: map[string][]uint32{}}

	// (a) apply
	full := ctlState{vips: z.vips, pool: z.pool, poolBase: ctlPoolBase, changedVIP: -1}
	changed := full
	changed.changedVIP = z.vips / 2
	var tEmpty, tNoop, tOne []time.Duration
	for r := range z.rounds {
		if _, err := m.apply(ctx, model.State{VIPs: []model.VIP{}}); err != nil {
			return sec, err
		}
		d, err := m.apply(ctx, full.build())
		if err != nil {
			return sec, fmt.Errorf("round %d, apply to empty: %w", r, err)
		}
		tEmpty = append(tEmpty, d)
		if d, err = m.apply(ctx, full.build()); err != nil {
			return sec, fmt.Errorf("round %d, identical apply: %w", r, err)
		}
		tNoop = append(tNoop, d)
		if d, err = m.apply(ctx, changed.build()); err != nil {
			return sec, fmt.Errorf("round %d, one VIP changed: %w", r, err)
		}
		tOne = append(tOne, d)
		c.Log.Info("control: apply round", "round", r, "empty", tEmpty[r], "noop", tNoop[r], "one_vip", tOne[r])
	}
	stDesc := fmt.Sprintf("%d VIPs x %d backends", z.vips, z.pool)
	sec.Rows = append(sec.Rows,
		ctlDurRow("apply to empty (s)", tEmpty, time.Second, stDesc),
		ctlDurRow("apply identical state (s)", tNoop, time.Second, "no-op"),
		ctlDurRow("apply with one VIP changed (s)", tOne, time.Second, "one backend weight of one VIP"))
	n, err := env.permanentNeighbours(ctx, pool)
	if err != nil {
		return sec, err
	}
	if n != len(pool) {
		sec.Notes = append(sec.Notes, fmt.Sprintf("the daemon changed %d of %d permanent neighbour entries", len(pool)-n, len(pool)))
	}

	// (c) memory with that state
	time.Sleep(2 * time.Second) // let the last pass's garbage be collected
	rss, mapMem, err := m.memory()
	if err != nil {
		return sec, err
	}
	sec.Rows = append(sec.Rows,
		[]string{"daemon RSS beyond map memory (MiB)", ctlMiB(rss), "", "", "1", stDesc},
		[]string{"BPF map memory (MiB)", ctlMiB(mapMem), "", "", "1", "memlock of every map, lookup tables included"})

	// (b) single change on a VIP with many backends
	bigSt := ctlState{vips: z.vips, pool: z.pool, big: z.big, poolBase: ctlPoolBase, changedVIP: -1}
	if _, err := m.apply(ctx, bigSt.build()); err != nil {
		return sec, fmt.Errorf("apply state with a big VIP: %w", err)
	}
	api, cli, daemon, err := m.singleChanges(ctx, bigSt, z.changes)
	if err != nil {
		return sec, err
	}
	desc := fmt.Sprintf("VIP with %d backends, %d VIPs in all", z.big, z.vips)
	sec.Rows = append(sec.Rows,
		ctlDurRow("single weight change, API round trip (ms)", api, time.Millisecond, desc),
		ctlDurRow("single weight change, CLI round trip (ms)", cli, time.Millisecond, "includes starting the CLI process"),
		ctlDurRow("single weight change, daemon reconcile (ms)", daemon, time.Millisecond, "from the daemon's log"))
	rssBig, _, err := m.memory()
	if err != nil {
		return sec, err
	}
	sec.Rows = append(sec.Rows, []string{"daemon RSS beyond map memory (MiB)", ctlMiB(rssBig), "", "", "1",
		fmt.Sprintf("%d VIPs, one with %d backends", z.vips, z.big)})

	// (d) health-check CPU at several probe rates
	// An empty state first: the checked state then replaces nothing.
	if _, err := m.apply(ctx, model.State{VIPs: []model.VIP{}}); err != nil {
		return sec, err
	}
	rows, notes, err := m.healthCPU(ctx, z)
	sec.Rows = append(sec.Rows, rows...)
	sec.Notes = append(sec.Notes, notes...)
	if err != nil {
		// The other figures stand; say why this one is missing.
		sec.Notes = append(sec.Notes, fmt.Sprintf("health-check CPU not (fully) measured: %v", err))
	}

	// (e) what a scrape costs, idle and beside health checks
	scrapeRows, scrapeTargets, err := m.scrapeCost(ctx, z)
	sec.Rows = append(sec.Rows, scrapeRows...)
	if err != nil {
		sec.Notes = append(sec.Notes, fmt.Sprintf("scrape cost not (fully) measured: %v", err))
	}

	sec.Targets = []Target{
		{Name: "control: full apply " + stDesc, Got: ctlMedian(tEmpty).Seconds(), Limit: 2, AtMost: true, Unit: "s"},
		{Name: "control: single change (API)", Got: float64(ctlMedian(api)) / 1e6, Limit: 10, AtMost: true, Unit: "ms"},
		{Name: "control: RSS beyond map memory", Got: float64(rss) / (1 << 20), Limit: 150, AtMost: true, Unit: "MiB"},
	}
	sec.Targets = append(sec.Targets, scrapeTargets...)
	if c.Quick {
		sec.Notes = append(sec.Notes, "quick run: smaller states than the targets name; figures are a smoke test only")
	}
	return sec, nil
}

// ctlMeasure holds what the measurements share.
type ctlMeasure struct {
	env     *ctlEnv
	c       Config
	layouts map[string][]uint32 // expected tables by backend set
	bigID   uint32              // VIP id of the VIP with many backends
}

// apply applies st with the CLI and returns the time until the maps held
// it fully.
func (m *ctlMeasure) apply(ctx context.Context, st model.State) (time.Duration, error) {
	b, err := config.Marshal(st)
	if err != nil {
		return 0, err
	}
	f := filepath.Join(m.env.dir, "state-apply.yaml")
	if err := os.WriteFile(f, b, 0o600); err != nil {
		return 0, err
	}
	t0 := time.Now()
	if err := m.applyCLI(ctx, f); err != nil {
		return 0, err
	}
	d := time.Since(t0)
	m.c.Log.Debug("control: applied", "vips", len(st.VIPs), "cli", d)
	deadline := time.Now().Add(60 * time.Second)
	for first := true; ; first = false {
		err := m.verify(ctx, st)
		if err == nil {
			if !first {
				d = time.Since(t0)
			}
			return d, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return 0, fmt.Errorf("maps do not hold the applied state: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// applyCLI runs `xdplb apply -f file`, allowing it far longer than the
// lab's 30 s for CLI calls: a slow apply is a figure, not a failure.
func (m *ctlMeasure) applyCLI(ctx context.Context, file string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, m.c.Binary, "--socket", m.env.daemon.Socket, "apply", "-f", file).CombinedOutput()
	if err != nil {
		return fmt.Errorf("xdplb apply -f %s: %w: %s", file, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// verify checks that the maps hold st fully (see the section's method).
func (m *ctlMeasure) verify(ctx context.Context, st model.State) error {
	ds, err := m.env.client.Status(ctx)
	if err != nil {
		return err
	}
	backends := 0
	for _, v := range st.VIPs {
		backends += len(v.Backends)
	}
	fill := map[string]int{}
	for _, mi := range ds.Maps {
		fill[mi.Name] = mi.Entries
	}
	if fill["vips"] != len(st.VIPs) || fill["backends"] != backends || fill["lookup"] != len(st.VIPs) {
		return fmt.Errorf("map fill %v, want %d vips, %d backends, %d tables", fill, len(st.VIPs), backends, len(st.VIPs))
	}
	tables, _, err := ctlPinnedTables(m.env.pinDir())
	if err != nil {
		return err
	}
	// Every table must be the layout of one VIP, as many times as VIPs
	// have that backend set.
	want := map[string]int{}
	keys := make([]string, 0, len(st.VIPs))
	for _, v := range st.VIPs {
		k := ctlLayoutKey(v)
		if want[k] == 0 {
			keys = append(keys, k)
		}
		want[k]++
	}
	byKey := map[string]model.VIP{}
	for _, v := range st.VIPs {
		byKey[ctlLayoutKey(v)] = v
	}
	for id, t := range tables {
		var lastErr error
		matched := false
		for _, k := range keys {
			if want[k] == 0 {
				continue
			}
			if lastErr = ctlSameUpToRenaming(t, m.layout(byKey[k], uint32(len(t)))); lastErr == nil {
				want[k]--
				matched = true
				if len(byKey[k].Backends) > 200 {
					m.bigID = id
				}
				break
			}
		}
		if !matched {
			return fmt.Errorf("table of vip id %d matches no expected table (%v)", id, lastErr)
		}
	}
	return nil
}

func ctlLayoutKey(v model.VIP) string {
	var b strings.Builder
	for _, be := range v.Backends {
		fmt.Fprintf(&b, "%s/%d,", be.Address, be.Weight)
	}
	return b.String()
}

func (m *ctlMeasure) layout(v model.VIP, size uint32) []uint32 {
	k := ctlLayoutKey(v)
	if t, ok := m.layouts[k]; ok {
		return t
	}
	addrs := make([]netip.Addr, len(v.Backends))
	ws := make([]uint32, len(v.Backends))
	for i, b := range v.Backends {
		addrs[i], ws[i] = b.Address, b.Weight
	}
	t := ctlMaglevLayout(addrs, ws, size)
	m.layouts[k] = t
	return t
}

// singleChanges changes the weight of one backend of the big VIP n times
// over the API and n times over the CLI, checking after each that its
// table is the new one, and reads the daemon's own reconcile times.
func (m *ctlMeasure) singleChanges(ctx context.Context, s ctlState, n int) (api, cli, daemon []time.Duration, err error) {
	st := s.build()
	vip := st.VIPs[0]
	vid := vip.ID()
	if m.bigID == 0 {
		return nil, nil, nil, fmt.Errorf("no table of the big VIP found")
	}
	logStart := len(m.env.daemon.Log())
	for i := range 2 * n {
		w := uint32(model.DefaultWeight / 2)
		if i%2 == 1 {
			w = model.DefaultWeight
		}
		idx := (i / 2) % len(vip.Backends)
		addr := vip.Backends[idx].Address
		t0 := time.Now()
		viaCLI := i >= n
		if viaCLI {
			_, err = m.env.daemon.CLI(ctx, "backend", "set", vid.String(), addr.String(), "--weight", fmt.Sprint(w))
		} else {
			err = m.env.client.SetBackend(ctx, vid, addr, 0, model.BackendPatch{Weight: &w})
		}
		d := time.Since(t0)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("weight change: %w", err)
		}
		// The expected table of VIP 0 now.
		exp := vip
		exp.Backends = slices.Clone(vip.Backends)
		exp.Backends[idx].Weight = w
		if err := m.checkTable(m.bigID, exp); err != nil {
			return nil, nil, nil, fmt.Errorf("after weight change %d: %w", i, err)
		}
		if viaCLI {
			cli = append(cli, d)
		} else {
			api = append(api, d)
		}
	}
	daemon = ctlAppliedTimes(m.env.daemon.Log()[logStart:])
	return api, cli, daemon, nil
}

func (m *ctlMeasure) checkTable(id uint32, v model.VIP) error {
	t, err := ctlPinnedTable(m.env.pinDir(), id)
	if err != nil {
		return err
	}
	return ctlSameUpToRenaming(t, m.layout(v, uint32(len(t))))
}

var ctlAppliedRE = regexp.MustCompile(`msg="api change applied".* took=([0-9.]+[a-zµ]+)`)

// ctlAppliedTimes are the reconcile times the daemon logged for API changes.
func ctlAppliedTimes(log string) []time.Duration {
	var out []time.Duration
	for _, l := range strings.Split(log, "\n") {
		if mm := ctlAppliedRE.FindStringSubmatch(l); mm != nil {
			if d, err := time.ParseDuration(mm[1]); err == nil {
				out = append(out, d)
			}
		}
	}
	return out
}

// memory returns the daemon's RSS beyond mapped map pages, and the memory
// of every map it holds or its lookup map holds.
func (m *ctlMeasure) memory() (rss, maps uint64, err error) {
	r, mapped, err := ctlProcRSS(m.env.pid)
	if err != nil {
		return 0, 0, err
	}
	held, err := ctlProcessMapMemory(m.env.pid)
	if err != nil {
		return 0, 0, err
	}
	_, inner, err := ctlPinnedTables(m.env.pinDir())
	if err != nil {
		return 0, 0, err
	}
	for id, mem := range inner {
		held[id] = mem
	}
	for _, mem := range held {
		maps += mem
	}
	return r - mapped, maps, nil
}

func (m *ctlMeasure) writeState(st model.State) string {
	b, err := config.Marshal(st)
	f := filepath.Join(m.env.dir, "state-health.yaml")
	if err == nil {
		err = os.WriteFile(f, b, 0o600)
	}
	if err != nil {
		m.c.Log.Error("write state", "err", err)
	}
	return f
}

func ctlMedian(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func ctlDurRow(name string, ds []time.Duration, unit time.Duration, detail string) []string {
	f := func(d time.Duration) string { return fmt.Sprintf("%.3g", float64(d)/float64(unit)) }
	if len(ds) == 0 {
		return []string{name, "-", "-", "-", "0", detail}
	}
	return []string{name, f(ctlMedian(ds)), f(slices.Min(ds)), f(slices.Max(ds)), fmt.Sprint(len(ds)), detail}
}

func ctlMiB(b uint64) string { return fmt.Sprintf("%.1f", float64(b)/(1<<20)) }
