package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/xdplb/xdplb/internal/lab"
)

func (e *env) demoCommand() *cli.Command {
	return &cli.Command{
		Name:   "demo",
		Usage:  "self-contained lab in network namespaces (needs root)",
		Flags:  logFlags(),
		Action: e.demo,
	}
}

func (e *env) demo(c *cli.Context) error {
	if err := wantArgs(c, 0, "no arguments"); err != nil {
		return err
	}
	logger, err := newLogger(c, e.stderr)
	if err != nil {
		return err
	}
	// The lab runs this very binary as the daemon inside a namespace.
	bin, err := os.Executable()
	if err != nil {
		return fmt.Errorf("demo: find own binary: %w", err)
	}
	if err := lab.RunDemo(c.Context, lab.DemoOptions{Binary: bin, Out: e.stdout, Logger: logger}); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	return nil
}
