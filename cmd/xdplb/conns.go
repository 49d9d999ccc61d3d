package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/xdplb/xdplb/control/api"
	"github.com/xdplb/xdplb/control/model"
)

func (e *env) connsCommand() *cli.Command {
	return &cli.Command{
		Name:      "conns",
		Usage:     "list the connection table, filtered by VIP and backend (as ipvsadm -Lnc)",
		ArgsUsage: "[VIP]",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "backend", Usage: "only the flows of this backend: ADDR or ADDR:PORT"},
			&cli.IntFlag{Name: "limit", Value: api.DefaultConnsLimit, Usage: "show at most N flows, and how many more there are (0: all)"},
			outputFlag(),
		},
		Action: e.conns,
	}
}

func (e *env) conns(c *cli.Context) error {
	if c.NArg() > 1 {
		return usagef(c, "want [VIP]")
	}
	var f api.ConnsFilter
	if c.NArg() == 1 {
		id, err := model.ParseVIPID(c.Args().First())
		if err != nil {
			return usageError{withPath(c, err)}
		}
		f.VIP = &id
	}
	if s := c.String("backend"); s != "" {
		addr, port, err := model.ParseBackendAddr(s)
		if err != nil {
			return usageError{withPath(c, err)}
		}
		f.Backend, f.BackendPort = addr, port
	}
	if f.Limit = c.Int("limit"); f.Limit < 0 {
		return usagef(c, "--limit %d: want a count, 0 for all", f.Limit)
	}
	format, err := outputFormat(c)
	if err != nil {
		return err
	}
	var out connsWriter = &connsTable{w: e.stdout}
	if format == "json" {
		out = &connsJSON{w: e.stdout}
	}
	end, err := client(c).Conns(c.Context, f, out.conn)
	if err != nil {
		return apiError(c, err)
	}
	return out.end(end, f.Limit)
}

// connsWriter prints a stream of connections as they arrive, then its end.
type connsWriter interface {
	conn(api.Conn) error
	end(e api.ConnsEnd, limit int) error
}

// connsTable prints fixed-width columns, which need no look ahead: a
// cell wider than its column (an IPv6 address) pushes the rest of its
// row along.
type connsTable struct {
	w      io.Writer
	header bool
}

var connsColumns = []struct {
	name  string
	width int
}{{"PRO", 3}, {"FROM", 21}, {"TO(VIP)", 21}, {"BACKEND", 21}, {"STATE", 11}, {"IDLE", 8}, {"SNAT", 0}}

func (t *connsTable) row(cols ...string) error {
	var b strings.Builder
	for i, c := range cols {
		if i == len(cols)-1 {
			b.WriteString(c)
			break
		}
		fmt.Fprintf(&b, "%-*s  ", connsColumns[i].width, c)
	}
	b.WriteByte('\n')
	_, err := io.WriteString(t.w, b.String())
	return err
}

func (t *connsTable) writeHeader() error {
	if t.header {
		return nil
	}
	t.header = true
	names := make([]string, len(connsColumns))
	for i, c := range connsColumns {
		names[i] = c.name
	}
	return t.row(names...)
}

func (t *connsTable) conn(c api.Conn) error {
	if err := t.writeHeader(); err != nil {
		return err
	}
	to := strings.TrimSuffix(c.VIP, "/"+string(c.Protocol))
	backend, snat := "-", "-"
	if c.Backend.IsValid() {
		backend = c.Backend.String()
	}
	if c.SNATPort != 0 {
		snat = fmt.Sprintf(":%d", c.SNATPort)
		if c.SNATAddr.IsValid() {
			snat = backendString(c.SNATAddr, c.SNATPort)
		}
	}
	idle := (time.Duration(c.IdleSeconds) * time.Second).String()
	return t.row(strings.ToUpper(string(c.Protocol)), c.Client.String(), to, backend, c.State, idle, snat)
}

func (t *connsTable) end(e api.ConnsEnd, limit int) error {
	if err := t.writeHeader(); err != nil {
		return err
	}
	if e.Omitted > 0 {
		_, err := fmt.Fprintf(t.w, "... %d more not shown (%d matched; --limit %d, 0 for all)\n", e.Omitted, e.Matched, limit)
		return err
	}
	return nil
}

// connsJSON prints one JSON document, {"conns": [...], "matched": N,
// "omitted": M}, one connection a line as they arrive.
type connsJSON struct {
	w io.Writer
	n int
}

func (j *connsJSON) conn(c api.Conn) error {
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	sep := ",\n  "
	if j.n == 0 {
		sep = "{\"conns\": [\n  "
	}
	j.n++
	_, err = fmt.Fprintf(j.w, "%s%s", sep, b)
	return err
}

func (j *connsJSON) end(e api.ConnsEnd, _ int) error {
	open := "\n]"
	if j.n == 0 {
		open = "{\"conns\": []"
	}
	_, err := fmt.Fprintf(j.w, "%s, \"matched\": %d, \"omitted\": %d}\n", open, e.Matched, e.Omitted)
	return err
}
