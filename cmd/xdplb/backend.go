package main

import (
	"fmt"
	"io"
	"net/netip"
	"slices"
	"sort"
	"strconv"

	"github.com/urfave/cli/v2"

	"github.com/xdplb/xdplb/control/api"
	"github.com/xdplb/xdplb/control/model"
)

func (e *env) backendCommand() *cli.Command {
	return &cli.Command{
		Name:  "backend",
		Usage: "add, change, delete and list the backends of a VIP",
		Subcommands: []*cli.Command{
			{
				Name:      "add",
				Usage:     "add a backend to a VIP",
				ArgsUsage: "VIP ADDR[:PORT]",
				Flags: []cli.Flag{
					&cli.IntFlag{Name: "weight", Value: model.DefaultWeight, Usage: "share of new flows, 0-65535 (0: no new flows)"},
					priorityFlagDef(),
					maxConnsFlag("none"),
					&cli.StringFlag{Name: "group", Usage: "group label (a release: v1, v2, blue, green) that backend set --group changes as one", DefaultText: "none"},
				},
				Action: e.backendAdd,
			},
			{
				Name:      "set",
				Usage:     "change one backend, or every backend of a group at once: its weight, pool or connection cap, or drain it, or enable it again",
				ArgsUsage: "VIP (ADDR[:PORT] | --group NAME)",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "group", Usage: "change every backend of this group, in one change of the lookup table"},
					&cli.IntFlag{Name: "weight", Usage: "new weight, 0-65535"},
					&cli.BoolFlag{Name: "drain", Usage: "stop sending new flows; open flows continue"},
					&cli.BoolFlag{Name: "enable", Usage: "undo --drain"},
					priorityFlagDef(),
					maxConnsFlag("unchanged"),
				},
				Action: e.backendSet,
			},
			{
				Name:      "del",
				Usage:     "delete a backend from a VIP (refused while it has open flows: drain it first)",
				ArgsUsage: "VIP ADDR[:PORT]",
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "force", Usage: "delete even with open flows (they are placed again on other backends, and break)"},
				},
				Action: e.backendDel,
			},
			{
				Name:      "list",
				Usage:     "list the backends of a VIP",
				ArgsUsage: "VIP",
				Flags:     []cli.Flag{outputFlag()},
				Action:    e.backendList,
			},
		},
	}
}

// backendArgs parses "VIP ADDR[:PORT]".
func backendArgs(c *cli.Context) (model.VIPID, netip.Addr, uint16, error) {
	id, err := vipArg(c, 2, "VIP ADDR[:PORT]")
	if err != nil {
		return model.VIPID{}, netip.Addr{}, 0, err
	}
	addr, port, err := model.ParseBackendAddr(c.Args().Get(1))
	if err != nil {
		return model.VIPID{}, netip.Addr{}, 0, usageError{withPath(c, err)}
	}
	return id, addr, port, nil
}

// maxConnsFlag is --max-conns of backend add and set.
func maxConnsFlag(def string) cli.Flag {
	return &cli.StringFlag{Name: "max-conns", Usage: "connection cap, " + maxConnsUsage + ": with N open connections the backend takes no new " +
		"flows (its open ones continue) until it is back at M (default 3/4 of N); 0 or none: no cap", DefaultText: def}
}

func weightFlag(c *cli.Context) (uint32, error) {
	w := c.Int("weight")
	if w < 0 || w > model.MaxWeight {
		return 0, usagef(c, "--weight %d: want 0-%d", w, model.MaxWeight)
	}
	return uint32(w), nil
}

// priorityFlagDef is --priority of backend add and set.
func priorityFlagDef() cli.Flag {
	return &cli.IntFlag{Name: "priority", DefaultText: "0, the primary pool",
		Usage: fmt.Sprintf("pool of the backend: 0 the primary, 1-%d backups (another zone), which take new flows "+
			"only when the better pools fail (see vip add --failover-below)", model.MaxPriority)}
}

func priorityFlag(c *cli.Context) (uint32, error) {
	p := c.Int("priority")
	if p < 0 || p > model.MaxPriority {
		return 0, usagef(c, "--priority %d: want 0-%d", p, model.MaxPriority)
	}
	return uint32(p), nil
}

func (e *env) backendAdd(c *cli.Context) error {
	id, addr, port, err := backendArgs(c)
	if err != nil {
		return err
	}
	w, err := weightFlag(c)
	if err != nil {
		return err
	}
	b := model.Backend{Address: addr, Port: port, Weight: w, Group: c.String("group")}
	if err := model.ValidateGroup(b.Group); err != nil {
		return usagef(c, "--group: %s", err)
	}
	if b.Priority, err = priorityFlag(c); err != nil {
		return err
	}
	if c.IsSet("max-conns") {
		cc, err := connCapFlag(c)
		if err != nil {
			return err
		}
		b.MaxConns, b.MaxConnsMin = cc.Max, cc.Min
	}
	if err := client(c).AddBackend(c.Context, id, b); err != nil {
		return apiError(c, err)
	}
	return nil
}

func (e *env) backendSet(c *cli.Context) error {
	var id model.VIPID
	var addr netip.Addr
	var port uint16
	var err error
	group := c.String("group")
	if c.IsSet("group") {
		if id, err = vipArg(c, 1, "VIP --group NAME"); err != nil {
			return err
		}
		if group == "" {
			return usagef(c, "--group: want a group name")
		}
	} else if id, addr, port, err = backendArgs(c); err != nil {
		return err
	}
	n := 0
	for _, f := range []string{"weight", "drain", "enable", "priority", "max-conns"} {
		if c.IsSet(f) {
			n++
		}
	}
	if n != 1 {
		return usagef(c, "want exactly one of --weight N, --drain, --enable, --priority N, --max-conns %s", maxConnsUsage)
	}
	var p model.BackendPatch
	switch {
	case c.IsSet("weight"):
		w, err := weightFlag(c)
		if err != nil {
			return err
		}
		p.Weight = &w
	case c.IsSet("drain"):
		d := c.Bool("drain")
		p.Drain = &d
	case c.IsSet("enable"):
		d := !c.Bool("enable")
		p.Drain = &d
	case c.IsSet("priority"):
		prio, err := priorityFlag(c)
		if err != nil {
			return err
		}
		p.Priority = &prio
	case c.IsSet("max-conns"):
		cc, err := connCapFlag(c)
		if err != nil {
			return err
		}
		p.MaxConns = &cc
	}
	if group != "" {
		if err := client(c).SetGroup(c.Context, id, group, p); err != nil {
			return apiError(c, err)
		}
		return nil
	}
	if err := client(c).SetBackend(c.Context, id, addr, port, p); err != nil {
		return apiError(c, err)
	}
	return nil
}

func (e *env) backendDel(c *cli.Context) error {
	id, addr, port, err := backendArgs(c)
	if err != nil {
		return err
	}
	if err := client(c).DeleteBackend(c.Context, id, addr, port, c.Bool("force")); err != nil {
		return apiError(c, err)
	}
	return nil
}

func (e *env) backendList(c *cli.Context) error {
	id, err := vipArg(c, 1, "VIP")
	if err != nil {
		return err
	}
	format, err := outputFormat(c)
	if err != nil {
		return err
	}
	bs, err := client(c).Backends(c.Context, id)
	if err != nil {
		return apiError(c, err)
	}
	sort.SliceStable(bs, func(i, j int) bool { // by pool, the fallback then the removed ones last
		if bs[i].Removed != bs[j].Removed {
			return bs[j].Removed
		}
		if bs[i].Fallback != bs[j].Fallback {
			return bs[j].Fallback
		}
		if bs[i].Priority != bs[j].Priority {
			return bs[i].Priority < bs[j].Priority
		}
		return lessBackend(bs[i].Address, bs[i].Port, bs[j].Address, bs[j].Port)
	})
	if format == "json" {
		if bs == nil {
			bs = []api.BackendStatus{}
		}
		return writeJSON(e.stdout, bs)
	}
	if len(bs) > 0 && bs[0].Mode.IsNAT() {
		return writeNATBackends(e.stdout, bs)
	}
	pools, caps, groups := pooled(bs), hasCaps(bs), grouped(bs)
	t := newTable(e.stdout, withCap(caps, nil, withPool(pools, "POOL", withGroup(groups, "GROUP", "BACKEND", "WEIGHT", "STATE", "FLOWS", "HALF-OPEN", "CHECK", "MAC")...)...)...)
	for _, b := range bs {
		t.row(withCap(caps, &b, withPool(pools, poolString(b), withGroup(groups, orDash(b.Group), backendString(b.Address, b.Port), weightString(b),
			orDash(b.State), strconv.Itoa(b.Flows), strconv.Itoa(b.HalfOpen), orDash(b.Check), orDash(b.MAC))...)...)...)
	}
	return t.flush()
}

// pooled reports whether a backend of bs is in a backup pool: the lists
// then show each backend's pool.
func pooled(bs []api.BackendStatus) bool {
	return slices.ContainsFunc(bs, func(b api.BackendStatus) bool { return b.Priority > 0 })
}

// grouped reports whether a backend of bs has a group: the lists then
// show each backend's.
func grouped(bs []api.BackendStatus) bool {
	return slices.ContainsFunc(bs, func(b api.BackendStatus) bool { return b.Group != "" })
}

// withGroup is cols with group put after the backend's name when on.
func withGroup(on bool, group string, cols ...string) []string {
	if !on {
		return cols
	}
	return slices.Insert(slices.Clone(cols), 1, group)
}

// withPool is cols with pool put third (after a backend and its weight)
// when on.
func withPool(on bool, pool string, cols ...string) []string {
	if !on {
		return cols
	}
	return slices.Insert(slices.Clone(cols), 2, pool)
}

// poolString is a backend's POOL: its priority; "-" for the fallback,
// which is in no pool.
func poolString(b api.BackendStatus) string {
	if b.Fallback {
		return "-"
	}
	return strconv.FormatUint(uint64(b.Priority), 10)
}

// writeNATBackends is the table of a nat or fullnat VIP's backends: no MAC
// (the next hop is the kernel's FIB's) but the mode, the egress interface
// and, for fullnat, the source address the backend sees.
func writeNATBackends(w io.Writer, bs []api.BackendStatus) error {
	pools, caps, groups := pooled(bs), hasCaps(bs), grouped(bs)
	t := newTable(w, withCap(caps, nil, withPool(pools, "POOL", withGroup(groups, "GROUP", "BACKEND", "WEIGHT", "STATE", "FLOWS", "HALF-OPEN", "CHECK", "MODE", "IFACE", "SNAT")...)...)...)
	for _, b := range bs {
		snat := "-"
		if b.SNATAddr.IsValid() {
			snat = b.SNATAddr.String()
		}
		t.row(withCap(caps, &b, withPool(pools, poolString(b), withGroup(groups, orDash(b.Group), backendString(b.Address, b.Port), weightString(b),
			orDash(b.State), strconv.Itoa(b.Flows), strconv.Itoa(b.HalfOpen), orDash(b.Check), string(b.Mode), orDash(b.Iface), snat)...)...)...)
	}
	return t.flush()
}

// hasCaps reports whether some backend of bs has a connection cap: only
// then does `backend list` show the MAX-CONNS column.
func hasCaps(bs []api.BackendStatus) bool {
	return slices.ContainsFunc(bs, func(b api.BackendStatus) bool { return b.MaxConns != 0 })
}

// withCap is a row of `backend list` with, when caps, the MAX-CONNS column
// last: its title in the header (b nil), else b's cap ("N min M").
func withCap(caps bool, b *api.BackendStatus, cols ...string) []string {
	switch {
	case !caps:
		return cols
	case b == nil:
		return append(cols, "MAX-CONNS")
	default:
		return append(cols, capString(b.Backend))
	}
}

// weightString is a backend's WEIGHT as `backend list` shows it: the
// VIP's fallback has none, and is named instead; nor has a backend
// removed from the config that drains its open flows.
func weightString(b api.BackendStatus) string {
	if b.Fallback {
		return "fallback"
	}
	if b.Removed {
		return "removed"
	}
	return strconv.FormatUint(uint64(b.Weight), 10)
}
