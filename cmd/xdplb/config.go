package main

import (
	"fmt"
	"io"

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
	if err := client(c).Apply(c.Context, st, c.Bool("force")); err != nil {
		return apiError(c, err)
	}
	return nil
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
