package main

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/xdplb/xdplb/control/model"
)

func (e *env) vipCommand() *cli.Command {
	return &cli.Command{
		Name:  "vip",
		Usage: "add, delete and list virtual services",
		Subcommands: []*cli.Command{
			{
				Name:      "add",
				Usage:     "add a VIP",
				ArgsUsage: "ADDR:PORT/PROTO",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "mode", Usage: "forwarding mode: " + model.OneOf(model.Modes()), DefaultText: string(model.DefaultMode)},
					&cli.StringFlag{Name: "scheduler", Usage: "scheduler of new flows: " + model.OneOf(model.Schedulers()), DefaultText: string(model.DefaultScheduler)},
					&cli.StringFlag{Name: "check", Usage: "health check: tcp, http, udp or none"},
					&cli.IntFlag{Name: "check-port", Usage: "port probed", DefaultText: "the backend's port"},
					&cli.StringFlag{Name: "check-path", Usage: "HTTP path probed", DefaultText: "/"},
					&cli.StringFlag{Name: "check-interval", Usage: "time between probes", DefaultText: model.DefaultCheckInterval.String()},
					&cli.StringFlag{Name: "check-timeout", Usage: "probe timeout", DefaultText: model.DefaultCheckTimeout.String()},
					&cli.IntFlag{Name: "rise", Usage: "successes before a backend is up", DefaultText: strconv.Itoa(model.DefaultRise)},
					&cli.IntFlag{Name: "fall", Usage: "failures before a backend is down", DefaultText: strconv.Itoa(model.DefaultFall)},
					&cli.BoolFlag{Name: "announce", Usage: "answer ARP/NDP for the VIP", DefaultText: "on inside an attached interface's subnet"},
					&cli.BoolFlag{Name: "no-announce", Usage: "do not answer ARP/NDP for the VIP", DefaultText: "off"},
					&cli.StringFlag{Name: "snat-addr", Usage: "fullnat: source address of the packets to the backends, an address of this host",
						DefaultText: "the primary address of the interface toward the first backend"},
					&cli.BoolFlag{Name: "force", Usage: "take the VIP even on an address of this host (its own connections to the port go to the VIP)"},
				},
				Action: e.vipAdd,
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
				Usage:  "list VIPs",
				Flags:  []cli.Flag{outputFlag()},
				Action: e.vipList,
			},
		},
	}
}

// vipFromFlags builds the VIP of `vip add` from its argument and flags,
// checking everything that can be checked without the daemon.
func vipFromFlags(c *cli.Context) (model.VIP, error) {
	if err := wantArgs(c, 1, "ADDR:PORT/PROTO"); err != nil {
		return model.VIP{}, err
	}
	id, err := model.ParseVIPID(c.Args().First())
	if err != nil {
		return model.VIP{}, usageError{withPath(c, err)}
	}
	v := model.VIP{Address: id.Addr, Port: id.Port, Protocol: id.Protocol, Backends: []model.Backend{}}

	v.Mode = model.Mode(c.String("mode"))
	v.Scheduler = model.Scheduler(c.String("scheduler"))
	if c.IsSet("snat-addr") {
		a, err := netip.ParseAddr(c.String("snat-addr"))
		if err != nil {
			return model.VIP{}, usagef(c, "--snat-addr %q: want an IPv4 or IPv6 address", c.String("snat-addr"))
		}
		v.SNATAddr = a
	}

	if c.IsSet("announce") && c.IsSet("no-announce") {
		return model.VIP{}, usagef(c, "--announce and --no-announce exclude each other")
	}
	if c.IsSet("announce") || c.IsSet("no-announce") {
		on := c.IsSet("announce") && c.Bool("announce") || c.IsSet("no-announce") && !c.Bool("no-announce")
		v.Announce = &on
	}

	hc, err := checkFromFlags(c)
	if err != nil {
		return model.VIP{}, err
	}
	v.HealthCheck = hc
	// The rules are the model's: what the daemon would refuse is a usage
	// error here, before the daemon is asked.
	check := v.Clone()
	model.NormalizeVIP(&check)
	if err := model.ValidateVIP(&check, 0); err != nil {
		return model.VIP{}, usageError{withPath(c, err)}
	}
	return v, nil
}

// checkFromFlags returns the health check given by the --check* flags, or
// nil when none is given (the daemon's defaults apply).
func checkFromFlags(c *cli.Context) (*model.HealthCheck, error) {
	given := false
	for _, f := range []string{"check", "check-port", "check-path", "check-interval", "check-timeout", "rise", "fall"} {
		given = given || c.IsSet(f)
	}
	if !given {
		return nil, nil
	}
	hc := &model.HealthCheck{Type: c.String("check"), Path: c.String("check-path")}
	switch hc.Type {
	case model.CheckTCP, model.CheckHTTP, model.CheckUDP:
	case model.CheckNone:
		if c.IsSet("check-port") || c.IsSet("check-path") || c.IsSet("check-interval") ||
			c.IsSet("check-timeout") || c.IsSet("rise") || c.IsSet("fall") {
			return nil, usagef(c, "--check none takes no other check flags")
		}
	case "":
		// Without a type the daemon would store "no check" and drop the
		// other settings silently.
		return nil, usagef(c, "check flags need --check tcp|http|udp")
	default:
		return nil, usagef(c, "unknown check %q: want tcp, http, udp or none", hc.Type)
	}
	if c.IsSet("check-path") && hc.Type != model.CheckHTTP {
		return nil, usagef(c, "--check-path needs --check http")
	}
	if c.IsSet("check-port") {
		p := c.Int("check-port")
		if p < 1 || p > 65535 {
			return nil, usagef(c, "--check-port %d: want 1-65535", p)
		}
		hc.Port = uint16(p)
	}
	for _, d := range []struct {
		flag string
		dst  *model.Duration
	}{{"check-interval", &hc.Interval}, {"check-timeout", &hc.Timeout}} {
		if !c.IsSet(d.flag) {
			continue
		}
		v, err := parseDuration(c, d.flag)
		if err != nil {
			return nil, err
		}
		*d.dst = model.Duration(v)
	}
	for _, n := range []struct {
		flag string
		dst  *int
	}{{"rise", &hc.Rise}, {"fall", &hc.Fall}} {
		if !c.IsSet(n.flag) {
			continue
		}
		v := c.Int(n.flag)
		if v < 1 || v > model.MaxRiseFall {
			return nil, usagef(c, "--%s %d: want 1-%d", n.flag, v, model.MaxRiseFall)
		}
		*n.dst = v
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
	sortVIPs(vips)
	if format == "json" {
		if vips == nil {
			vips = []model.VIP{}
		}
		return writeJSON(e.stdout, vips)
	}
	// The SNAT column only when a VIP has a use for it: a DR or NAT
	// listing stays as it always was.
	snat := slices.ContainsFunc(vips, func(v model.VIP) bool { return v.Mode == model.ModeFullNAT })
	header := []string{"VIP", "MODE", "SCHEDULER", "CHECK", "ANNOUNCE", "BACKENDS"}
	if snat {
		header = append(header, "SNAT")
	}
	t := newTable(e.stdout, header...)
	for _, v := range vips {
		row := []string{v.ID().String(), orDash(string(v.Mode)), orDash(string(v.Scheduler)),
			checkString(v.HealthCheck), announceString(v.Announce), strconv.Itoa(len(v.Backends))}
		if snat {
			row = append(row, snatString(v))
		}
		t.row(row...)
	}
	return t.flush()
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
