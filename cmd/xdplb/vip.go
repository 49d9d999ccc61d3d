package main

import (
	"fmt"
	"io"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/xdplb/xdplb/control/api"
	"github.com/xdplb/xdplb/control/model"
)

func (e *env) vipCommand() *cli.Command {
	return &cli.Command{
		Name:  "vip",
		Usage: "add, change, delete and list virtual services",
		Subcommands: []*cli.Command{
			{
				Name:      "add",
				Usage:     "add a VIP",
				ArgsUsage: "ADDR:PORT/PROTO",
				Flags: append(vipFlags(true),
					&cli.BoolFlag{Name: "force", Usage: "take the VIP even on an address of this host (its own connections to the port go to the VIP)"}),
				Action: e.vipAdd,
			},
			{
				Name: "set",
				Usage: "change options of a VIP; those not given stay as they are, and so do its open flows " +
					"(a change of mode, or of a fullnat VIP's SNAT address, is refused while the VIP has open flows, " +
					"and a removed or replaced fallback while it has: they would break)",
				ArgsUsage: "ADDR:PORT/PROTO",
				Flags: append(vipFlags(false),
					&cli.BoolFlag{Name: "force", Usage: "change the mode, the SNAT address or the fallback even with open flows (they break)"}),
				Action: e.vipSet,
			},
			{
				Name:      "del",
				Usage:     "delete a VIP and its backends (refused while they have open flows)",
				ArgsUsage: "ADDR:PORT/PROTO",
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "force", Usage: "delete even with open flows (their clients are reset)"},
				},
				Action: e.vipDel,
			},
			{
				Name:   "list",
				Usage:  "list VIPs, each with its backends and fallback, their weights, states and open flows",
				Flags:  []cli.Flag{outputFlag()},
				Action: e.vipList,
			},
		},
	}
}

// vipFlags are the options of a VIP, the same for `vip add` and `vip set`:
// add shows the defaults, set (which changes only what is given) says so.
func vipFlags(add bool) []cli.Flag {
	def := func(s string) string {
		if add {
			return s
		}
		return "unchanged"
	}
	snat, fallback := "ADDR or auto", "ADDR[:PORT], or none to remove it"
	if add {
		snat, fallback = "ADDR", "ADDR[:PORT]"
	}
	return []cli.Flag{
		&cli.StringFlag{Name: "mode", Usage: "forwarding mode: " + model.OneOf(model.Modes()), DefaultText: def(string(model.DefaultMode))},
		&cli.StringFlag{Name: "scheduler", Usage: "scheduler of new flows: " + model.OneOf(model.Schedulers()), DefaultText: def(string(model.DefaultScheduler))},
		&cli.StringFlag{Name: "check", Usage: "health check: tcp, http, udp or none", DefaultText: def("none")},
		&cli.IntFlag{Name: "check-port", Usage: "port probed", DefaultText: def("the backend's port")},
		&cli.StringFlag{Name: "check-path", Usage: "HTTP path probed", DefaultText: def("/")},
		&cli.StringFlag{Name: "check-expect", Usage: "HTTP statuses taken for up: LO-HI or one status, 100-599", DefaultText: def("200-399")},
		&cli.StringFlag{Name: "check-interval", Usage: "time between probes", DefaultText: def(model.DefaultCheckInterval.String())},
		&cli.StringFlag{Name: "check-timeout", Usage: "probe timeout", DefaultText: def(model.DefaultCheckTimeout.String())},
		&cli.IntFlag{Name: "rise", Usage: "successes before a backend is up", DefaultText: def(strconv.Itoa(model.DefaultRise))},
		&cli.IntFlag{Name: "fall", Usage: "failures before a backend is down", DefaultText: def(strconv.Itoa(model.DefaultFall))},
		&cli.BoolFlag{Name: "announce", Usage: "answer ARP/NDP for the VIP", DefaultText: def("on inside an attached interface's subnet")},
		&cli.BoolFlag{Name: "no-announce", Usage: "do not answer ARP/NDP for the VIP", DefaultText: def("off")},
		&cli.StringFlag{Name: "snat-addr", Usage: "fullnat: source address of the packets to the backends, an address of this host: " + snat,
			DefaultText: def("the primary address of the interface toward the first backend")},
		&cli.StringFlag{Name: "fallback", Usage: "server that takes the new flows while no backend can (all down, drained, full or unresolved), " +
			"reached as a backend; not health-checked: " + fallback, DefaultText: def("none")},
		&cli.IntFlag{Name: "failover-below", Usage: "backup pools (backend --priority): the next pool shares new flows once the healthy weight " +
			"of the one before falls below this percentage of its configured weight, 0-100 (0: only when none of its backends is healthy)",
			DefaultText: def("0")},
		&cli.StringFlag{Name: "max-new-flows", Usage: "new flows the VIP takes a second, " + maxNewFlowsUsage +
			": up to burst at once after a quiet spell (default RATE); more are dropped as rate_limited; 0 or none: no limit", DefaultText: def("none")},
		&cli.StringFlag{Name: "persistence", Usage: "send a client's new flows to the backend of its last one within this long (IPVS -p), " +
			"whatever the scheduler, in whole seconds up to " + model.MaxPersistence.String() + "; 0 or none: off", DefaultText: def("none")},
	}
}

// vipFromFlags builds the VIP of `vip add` from its argument and flags,
// checking everything that can be checked without the daemon.
func vipFromFlags(c *cli.Context) (model.VIP, error) {
	id, err := vipArg(c, 1, "ADDR:PORT/PROTO")
	if err != nil {
		return model.VIP{}, err
	}
	v := model.VIP{Address: id.Addr, Port: id.Port, Protocol: id.Protocol, Backends: []model.Backend{}}
	p, err := vipPatchFromFlags(c, true)
	if err != nil {
		return model.VIP{}, err
	}
	if err := p.Apply(&v); err != nil {
		return model.VIP{}, usageError{withPath(c, err)}
	}
	// The rules are the model's: what the daemon would refuse is a usage
	// error here, before the daemon is asked.
	check := v.Clone()
	model.NormalizeVIP(&check)
	if err := model.ValidateVIP(&check, 0); err != nil {
		return model.VIP{}, usageError{withPath(c, err)}
	}
	return v, nil
}

// vipPatchFromFlags reads the VIP options given on the command line (add:
// of `vip add`, which starts from no check) into a patch, checking their
// form; the daemon checks the VIP they make.
func vipPatchFromFlags(c *cli.Context, add bool) (model.VIPPatch, error) {
	var p model.VIPPatch
	if c.IsSet("mode") {
		m := model.Mode(strings.ToLower(c.String("mode")))
		p.Mode = &m
	}
	if c.IsSet("scheduler") {
		s := model.Scheduler(strings.ToLower(c.String("scheduler")))
		p.Scheduler = &s
	}
	if c.IsSet("snat-addr") {
		var a netip.Addr // auto: none of its own
		if s := c.String("snat-addr"); s != "auto" {
			var err error
			if a, err = netip.ParseAddr(s); err != nil {
				return p, usagef(c, "--snat-addr %q: want an IPv4 or IPv6 address, or auto", s)
			}
		}
		p.SNATAddr = &a
	}
	if c.IsSet("announce") && c.IsSet("no-announce") {
		return p, usagef(c, "--announce and --no-announce exclude each other")
	}
	if c.IsSet("announce") || c.IsSet("no-announce") {
		on := c.IsSet("announce") && c.Bool("announce") || c.IsSet("no-announce") && !c.Bool("no-announce")
		p.Announce = &on
	}
	if c.IsSet("fallback") {
		f := &model.Fallback{} // none: removed
		if s := c.String("fallback"); s != "none" {
			addr, port, err := model.ParseBackendAddr(s)
			if err != nil {
				return p, usagef(c, "--fallback %q: want ADDR or ADDR:PORT, or none", s)
			}
			f.Address, f.Port = addr, port
		}
		p.Fallback = f
	}
	if c.IsSet("failover-below") {
		pct := c.Int("failover-below")
		if pct < 0 || pct > model.MaxFailoverBelow {
			return p, usagef(c, "--failover-below %d: want a percentage, 0-%d", pct, model.MaxFailoverBelow)
		}
		v := uint32(pct)
		p.FailoverBelow = &v
	}
	if c.IsSet("max-new-flows") {
		l, err := newFlowLimitFlag(c)
		if err != nil {
			return p, err
		}
		p.MaxNewFlows = &l
	}
	if c.IsSet("persistence") {
		var d model.Duration
		if s := c.String("persistence"); s != "none" {
			if err := d.UnmarshalText([]byte(s)); err != nil {
				return p, usagef(c, "--persistence %q: want a duration like 300s or 10m, or none", s)
			}
		}
		p.Persistence = &d
	}
	hc, err := checkPatchFromFlags(c, add)
	if err != nil {
		return p, err
	}
	p.HealthCheck = hc
	return p, nil
}

// schedulerString is a VIP's SCHEDULER: its scheduler, and its
// persistence when it has one ("wrr,persist=5m0s").
func schedulerString(v model.VIP) string {
	s := orDash(string(v.Scheduler))
	if v.Persistence != 0 {
		s += ",persist=" + v.Persistence.String()
	}
	return s
}

// checkFlags are the flags of a health check.
var checkFlags = []string{"check", "check-port", "check-path", "check-expect", "check-interval", "check-timeout", "rise", "fall"}

// checkPatchFromFlags returns the change of the health check that the
// --check* flags give, or nil when none is given. add: the VIP has no
// check yet, so its type is needed.
func checkPatchFromFlags(c *cli.Context, add bool) (*model.HealthCheckPatch, error) {
	given := slices.ContainsFunc(checkFlags, c.IsSet)
	if !given {
		return nil, nil
	}
	hc := &model.HealthCheckPatch{}
	if c.IsSet("check") {
		t := strings.ToLower(c.String("check"))
		switch t {
		case model.CheckTCP, model.CheckHTTP, model.CheckUDP:
		case model.CheckNone:
			if slices.ContainsFunc(checkFlags[1:], c.IsSet) {
				return nil, usagef(c, "--check none takes no other check flags")
			}
		default:
			return nil, usagef(c, "unknown check %q: want tcp, http, udp or none", t)
		}
		hc.Type = &t
	} else if add {
		// Without a type the daemon would store "no check" and drop the
		// other settings silently.
		return nil, usagef(c, "check flags need --check tcp|http|udp")
	}
	http := !c.IsSet("check") || *hc.Type == model.CheckHTTP // set without --check: the daemon knows
	for _, f := range []string{"check-path", "check-expect"} {
		if c.IsSet(f) && !http {
			return nil, usagef(c, "--%s needs --check http", f)
		}
	}
	if c.IsSet("check-path") {
		path := c.String("check-path")
		hc.Path = &path
	}
	if c.IsSet("check-expect") {
		e, err := model.ParseExpect(c.String("check-expect"))
		if err != nil {
			return nil, usagef(c, "--check-%s", err)
		}
		hc.Expect = &e
	}
	if c.IsSet("check-port") {
		p := c.Int("check-port")
		if p < 1 || p > 65535 {
			return nil, usagef(c, "--check-port %d: want 1-65535", p)
		}
		port := uint16(p)
		hc.Port = &port
	}
	for _, d := range []struct {
		flag string
		dst  **model.Duration
	}{{"check-interval", &hc.Interval}, {"check-timeout", &hc.Timeout}} {
		if !c.IsSet(d.flag) {
			continue
		}
		v, err := parseDuration(c, d.flag)
		if err != nil {
			return nil, err
		}
		md := model.Duration(v)
		*d.dst = &md
	}
	for _, n := range []struct {
		flag string
		dst  **int
	}{{"rise", &hc.Rise}, {"fall", &hc.Fall}} {
		if !c.IsSet(n.flag) {
			continue
		}
		v := c.Int(n.flag)
		if v < 1 || v > model.MaxRiseFall {
			return nil, usagef(c, "--%s %d: want 1-%d", n.flag, v, model.MaxRiseFall)
		}
		*n.dst = &v
	}
	return hc, nil
}

// parseDuration reads a positive duration flag given as "1s" or "500ms".
func parseDuration(c *cli.Context, flag string) (time.Duration, error) {
	s := c.String(flag)
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, usagef(c, "--%s %q: want a duration like 1s or 500ms", flag, s)
	}
	if d <= 0 {
		return 0, usagef(c, "--%s %q: must be positive", flag, s)
	}
	return d, nil
}

func (e *env) vipAdd(c *cli.Context) error {
	v, err := vipFromFlags(c)
	if err != nil {
		return err
	}
	if err := client(c).AddVIP(c.Context, v, c.Bool("force")); err != nil {
		return apiError(c, err)
	}
	return nil
}

func (e *env) vipSet(c *cli.Context) error {
	id, err := vipArg(c, 1, "ADDR:PORT/PROTO")
	if err != nil {
		return err
	}
	p, err := vipPatchFromFlags(c, false)
	if err != nil {
		return err
	}
	if p.IsZero() {
		return usagef(c, "nothing to change: give the options to change, as for vip add")
	}
	if err := client(c).SetVIP(c.Context, id, p, c.Bool("force")); err != nil {
		return apiError(c, err)
	}
	return nil
}

func (e *env) vipDel(c *cli.Context) error {
	id, err := vipArg(c, 1, "ADDR:PORT/PROTO")
	if err != nil {
		return err
	}
	if err := client(c).DeleteVIP(c.Context, id, c.Bool("force")); err != nil {
		return apiError(c, err)
	}
	return nil
}

// vipArg checks there are exactly n arguments and parses the first as a VIP.
func vipArg(c *cli.Context, n int, usage string) (model.VIPID, error) {
	if err := wantArgs(c, n, usage); err != nil {
		return model.VIPID{}, err
	}
	id, err := model.ParseVIPID(c.Args().First())
	if err != nil {
		return model.VIPID{}, usageError{withPath(c, err)}
	}
	return id, nil
}

func (e *env) vipList(c *cli.Context) error {
	if err := wantArgs(c, 0, "no arguments"); err != nil {
		return err
	}
	format, err := outputFormat(c)
	if err != nil {
		return err
	}
	vips, err := client(c).VIPs(c.Context)
	if err != nil {
		return apiError(c, err)
	}
	sort.SliceStable(vips, func(i, j int) bool { return compareVIPID(vips[i].ID(), vips[j].ID()) < 0 })
	if format == "json" {
		if vips == nil {
			vips = []api.VIPStatus{}
		}
		return writeJSON(e.stdout, vips)
	}
	return writeVIPTree(e.stdout, vips)
}

// writeVIPTree is the table of `vip list`, as `ipvsadm -Ln` shows one:
// each VIP on a line with its open flows (its backends' summed), then one
// line per backend, "-> ADDR", with its weight, state, last check result
// and open flows, and its fallback last ("fallback" for a weight). The
// SNAT column only when a VIP has a use for it: a VIP's own (auto: the
// egress interface's) and, on its backends' lines, the one in use.
// The POOL column only when a VIP has backup pools: on a VIP's line the
// pools taking its new flows, on its backends' lines each one's pool;
// backends are listed by pool.
func writeVIPTree(w io.Writer, vips []api.VIPStatus) error {
	snat := slices.ContainsFunc(vips, func(v api.VIPStatus) bool { return v.Mode == model.ModeFullNAT })
	pools := slices.ContainsFunc(vips, func(v api.VIPStatus) bool { return pooled(v.Backends) })
	limits := slices.ContainsFunc(vips, func(v api.VIPStatus) bool {
		return v.MaxNewFlows != 0 || slices.ContainsFunc(v.Backends, func(b api.BackendStatus) bool { return b.MaxConns != 0 })
	})
	header := []string{"VIP", "MODE", "SCHEDULER", "CHECK", "ANNOUNCE", "FLOWS", "HALF-OPEN"}
	if snat {
		header = append(header, "SNAT")
	}
	if pools {
		header = append(header, "POOL")
	}
	if limits {
		header = append(header, "LIMIT")
	}
	t := newTable(w, header...)
	for _, v := range vips {
		row := []string{v.ID().String(), orDash(string(v.Mode)), schedulerString(v.VIP),
			checkString(v.HealthCheck), announceString(v.Announce), strconv.Itoa(v.Flows), strconv.Itoa(v.HalfOpen)}
		if snat {
			row = append(row, snatString(v.VIP))
		}
		if pools {
			row = append(row, activePoolsString(v))
		}
		if limits {
			row = append(row, limitString(v.VIP))
		}
		t.row(row...)
		bs := slices.Clone(v.Backends)
		sort.SliceStable(bs, func(i, j int) bool {
			if bs[i].Priority != bs[j].Priority {
				return bs[i].Priority < bs[j].Priority
			}
			return lessBackend(bs[i].Address, bs[i].Port, bs[j].Address, bs[j].Port)
		})
		if v.Fallback != nil {
			bs = append(bs, *v.Fallback)
		}
		for _, b := range bs {
			weight := weightString(b)
			if !b.Fallback {
				weight = "weight " + weight
			}
			row := []string{"  -> " + backendString(b.Address, b.Port), weight, orDash(b.State), orDash(b.Check), "",
				strconv.Itoa(b.Flows), strconv.Itoa(b.HalfOpen)}
			if snat {
				// The address the backend sees: the one found for an
				// "auto" VIP.
				a := "-"
				if b.SNATAddr.IsValid() {
					a = b.SNATAddr.String()
				}
				row = append(row, a)
			}
			if pools {
				row = append(row, poolString(b))
			}
			if limits {
				c := capString(b.Backend)
				if b.MaxConns != 0 {
					c = "max conns " + c
				}
				row = append(row, c)
			}
			t.row(row...)
		}
	}
	return t.flush()
}

// activePoolsString is a VIP's POOL as `vip list` shows it: the pools
// taking its new flows ("0", "0+1" while two share them), "fallback" when
// its fallback takes them, "none" when they are dropped, "-" before the
// daemon reconciled it.
func activePoolsString(v api.VIPStatus) string {
	switch {
	case v.ActivePriority == nil:
		return "-"
	case len(v.ActivePools) == 0 && v.Fallback != nil && v.Fallback.State == model.FallbackActive:
		return "fallback"
	default:
		return model.PoolsString(v.ActivePools)
	}
}

// snatString is a VIP's SNAT address as `vip list` shows it: "auto" for a
// fullnat VIP that takes the egress interface's.
func snatString(v model.VIP) string {
	switch {
	case v.Mode != model.ModeFullNAT:
		return "-"
	case v.SNATAddr.IsValid():
		return v.SNATAddr.String()
	default:
		return "auto"
	}
}

func checkString(hc *model.HealthCheck) string {
	if hc == nil || hc.Type == "" || hc.Type == model.CheckNone {
		return "-"
	}
	s := hc.Type
	if hc.Type == "http" && hc.Path != "" {
		s += " " + hc.Path
	}
	if hc.Expect != "" {
		s += " expect " + hc.Expect
	}
	if hc.Interval != 0 {
		s += fmt.Sprintf(" every %s", hc.Interval)
	}
	return s
}

func announceString(a *bool) string {
	switch {
	case a == nil:
		return "auto"
	case *a:
		return "yes"
	default:
		return "no"
	}
}
