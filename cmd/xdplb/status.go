package main

import (
	"fmt"
	"io"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/xdplb/xdplb/control/api"
	"github.com/xdplb/xdplb/control/model"
)

func (e *env) statusCommand() *cli.Command {
	return &cli.Command{
		Name:   "status",
		Usage:  "kernel and its features, interfaces, XDP mode, program ids, map fill, uptime",
		Flags:  []cli.Flag{outputFlag()},
		Action: e.status,
	}
}

func (e *env) status(c *cli.Context) error {
	if err := wantArgs(c, 0, "no arguments"); err != nil {
		return err
	}
	format, err := outputFormat(c)
	if err != nil {
		return err
	}
	st, err := client(c).Status(c.Context)
	if err != nil {
		return apiError(c, err)
	}
	if format == "json" {
		return writeJSON(e.stdout, st)
	}
	return writeStatus(e, st)
}

func writeStatus(e *env, st api.DaemonStatus) error {
	w := e.stdout
	t := newTable(w, "version:", st.Version)
	if !st.StartTime.IsZero() {
		t.row("started:", st.StartTime.Format("2006-01-02 15:04:05 MST"))
	}
	t.row("uptime:", orDash(st.Uptime))
	t.row("pin path:", orDash(st.PinPath))
	kernelRows(t, st.Kernel)
	t.row("vips:", strconv.Itoa(st.VIPs)+schedulerCounts(st.Schedulers))
	t.row("backends:", strconv.Itoa(st.Backends))
	if err := t.flush(); err != nil {
		return err
	}

	fmt.Fprintln(w)
	ifs := append([]api.IfaceInfo(nil), st.Interfaces...)
	sort.SliceStable(ifs, func(i, j int) bool { return ifs[i].Name < ifs[j].Name })
	t = newTable(w, "IFACE", "IFINDEX", "XDP MODE", "PROGRAM ID", "LINK ID")
	for _, i := range ifs {
		t.row(i.Name, strconv.Itoa(i.Ifindex), orDash(i.XDPMode),
			strconv.FormatUint(uint64(i.ProgramID), 10), strconv.FormatUint(uint64(i.LinkID), 10))
	}
	if err := t.flush(); err != nil {
		return err
	}

	fmt.Fprintln(w)
	maps := append([]api.MapInfo(nil), st.Maps...)
	sort.SliceStable(maps, func(i, j int) bool { return maps[i].Name < maps[j].Name })
	t = newTable(w, "MAP", "ENTRIES", "MAX", "FILL")
	for _, m := range maps {
		fill := "-"
		if m.MaxEntries > 0 {
			fill = fmt.Sprintf("%.1f%%", 100*float64(m.Entries)/float64(m.MaxEntries))
		}
		t.row(m.Name, strconv.Itoa(m.Entries), strconv.FormatUint(uint64(m.MaxEntries), 10), fill)
	}
	if err := t.flush(); err != nil {
		return err
	}
	if st.BGP != nil {
		return writeBGPStatus(w, st.BGP)
	}
	return nil
}

// writeBGPStatus writes the BGP speaker's part of status: the routes it
// announces, then a line per session.
func writeBGPStatus(w io.Writer, b *api.BGPStatus) error {
	fmt.Fprintln(w)
	t := newTable(w, "bgp:", fmt.Sprintf("asn %d, router id %s, hold time %s", b.ASN, b.RouterID, b.HoldTime))
	routes := "none"
	if len(b.Routes) > 0 {
		routes = strings.Join(b.Routes, ", ")
	}
	t.row("routes:", routes)
	if err := t.flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	t = newTable(w, "PEER", "ASN", "STATE", "UPTIME", "ROUTES", "LOCAL ADDR", "LAST ERROR")
	for _, s := range b.Sessions {
		local := "-"
		if s.LocalAddr.IsValid() {
			local = s.LocalAddr.String()
		}
		t.row(netip.AddrPortFrom(s.Peer, s.Port).String(), strconv.FormatUint(uint64(s.PeerASN), 10), s.State,
			orDash(s.Uptime), strconv.Itoa(s.Routes), local, orDash(s.LastError))
	}
	return t.flush()
}

// kernelRows shows the kernel and what the data plane found in it; a
// daemon that does not say (an older one) shows only a dash.
func kernelRows(t *table, k api.KernelInfo) {
	t.row("kernel:", orDash(k.Release))
	if k.Release == "" {
		return
	}
	count := "no: table entries counted by walking"
	if k.ElemCount {
		count = "yes: table entries counted by the kernel"
	}
	t.row("btf:", yesNo(k.BTF))
	t.row("element count:", count)
	t.row("batch map ops:", "lookup "+yesNo(k.BatchLookup)+", update of lookup tables "+yesNo(k.BatchUpdateTables))
	t.row("mmapable maps:", yesNo(k.Mmapable))
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// schedulerCounts words the VIPs per scheduler, " (maglev 10, wrr 2)", in
// the order of model.Schedulers; empty when there are none.
func schedulerCounts(n map[string]int) string {
	var parts []string
	for _, s := range model.Schedulers() {
		if c := n[string(s)]; c > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", s, c))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}
