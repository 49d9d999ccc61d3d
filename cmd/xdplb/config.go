package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/xdplb/xdplb/control/config"
	"github.com/xdplb/xdplb/control/model"
)

func (e *env) applyCommand() *cli.Command {
	return &cli.Command{
		Name:  "apply",
		Usage: "replace the whole desired state atomically with a YAML file",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "file", Aliases: []string{"f"}, Usage: "YAML state file (- for stdin)"},
			&cli.BoolFlag{Name: "force", Usage: "let new VIPs take addresses of this host"},
			&cli.BoolFlag{Name: "dry-run", Usage: "check the file as apply does and print what it would change; change nothing"},
		},
		Action: e.apply,
	}
}

func (e *env) apply(c *cli.Context) error {
	if err := wantArgs(c, 0, "-f FILE"); err != nil {
		return err
	}
	path := c.String("file")
	if path == "" {
		return usagef(c, "want -f FILE")
	}
	// Parse here first, so a typo is reported with the file's name and
	// nothing is sent to the daemon.
	var (
		st  model.State
		err error
	)
	if path == "-" {
		var data []byte
		if data, err = io.ReadAll(e.stdin); err != nil {
			return fmt.Errorf("apply: read stdin: %w", err)
		}
		if st, err = config.Parse(data); err != nil {
			return fmt.Errorf("apply: stdin: %w", err)
		}
	} else if st, err = config.Load(path); err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	if c.Bool("dry-run") {
		d, err := client(c).DryRun(c.Context, st, c.Bool("force"))
		if err != nil {
			return apiError(c, err)
		}
		return writeDiff(e.stdout, d)
	}
	if err := client(c).Apply(c.Context, st, c.Bool("force")); err != nil {
		return apiError(c, err)
	}
	return nil
}

// writeDiff prints what an apply would change: each VIP and backend added
// (+), removed (-) or changed (~) with its settings, then a summary line.
func writeDiff(w io.Writer, d model.StateDiff) error {
	var b strings.Builder
	count := map[string]int{}
	for _, v := range d.VIPs {
		count[v.Change]++
		switch v.Change {
		case model.Added:
			fmt.Fprintf(&b, "+ vip %s%s\n", v.VIP, settings(v.Fields))
		case model.Removed:
			fmt.Fprintf(&b, "- vip %s\n", v.VIP)
		default:
			fmt.Fprintf(&b, "~ vip %s\n", v.VIP)
			for _, f := range v.Fields {
				fmt.Fprintf(&b, "    %s: %s -> %s\n", f.Field, orDash(f.Old), orDash(f.New))
			}
		}
		for _, be := range v.Backends {
			switch be.Change {
			case model.Added:
				fmt.Fprintf(&b, "  + backend %s%s\n", be.Backend, settings(be.Fields))
			case model.Removed:
				fmt.Fprintf(&b, "  - backend %s\n", be.Backend)
			default:
				changes := make([]string, len(be.Fields))
				for i, f := range be.Fields {
					changes[i] = fmt.Sprintf("%s %s -> %s", f.Field, orDash(f.Old), orDash(f.New))
				}
				fmt.Fprintf(&b, "  ~ backend %s: %s\n", be.Backend, strings.Join(changes, ", "))
			}
		}
	}
	if len(d.VIPs) == 0 {
		b.WriteString("dry run: no changes\n")
	} else {
		fmt.Fprintf(&b, "dry run: %d vips added, %d removed, %d changed; nothing applied\n",
			count[model.Added], count[model.Removed], count[model.Changed])
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// settings writes an added VIP's or backend's settings: ": k=v k=v".
func settings(fs []model.FieldChange) string {
	if len(fs) == 0 {
		return ""
	}
	kv := make([]string, len(fs))
	for i, f := range fs {
		kv[i] = f.Field + "=" + f.New
	}
	return ": " + strings.Join(kv, " ")
}

func (e *env) exportCommand() *cli.Command {
	return &cli.Command{
		Name:   "export",
		Usage:  "print the desired state as YAML (input to apply)",
		Action: e.export,
	}
}

func (e *env) export(c *cli.Context) error {
	if err := wantArgs(c, 0, "no arguments"); err != nil {
		return err
	}
	st, err := client(c).State(c.Context)
	if err != nil {
		return apiError(c, err)
	}
	data, err := config.Marshal(st)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	_, err = e.stdout.Write(data)
	return err
}
