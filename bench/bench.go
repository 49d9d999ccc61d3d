// Package bench is the benchmark suite behind `make bench`: it measures
// xdplb against a floor program and against real peers, one section at a
// time, prints a table per section and writes a Markdown report
// (bench/RESULTS.md). It is a benchmark, not a test: it reports targets, it
// never fails on one. The command bench/cmd/xdplb-bench runs it.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
)

// Config is what every section gets.
type Config struct {
	Binary string // bin/xdplb, for sections that run the daemon
	Quick  bool   // fewer rounds and shorter runs, for a smoke run
	Log    *slog.Logger
}

// sectionFunc measures one section.
type sectionFunc func(ctx context.Context, c Config) (Section, error)

// sections in report order; each file of this package adds its own.
var sections = []struct {
	name string
	run  sectionFunc
}{
	{"packet", runPacketCost},
	{"ct", runConnTable},
	{"veth", runVethPPS},
	{"tcp", runRealTCP},
	{"flood", runFlood},
	{"control", runControlPlane},
}

// Sections returns the names of the sections, in report order.
func Sections() []string {
	names := make([]string, len(sections))
	for i, s := range sections {
		names[i] = s.name
	}
	return names
}

// Run measures the sections named in only (every section when only is
// empty) in report order, prints each to stdout once measured, and writes
// the Markdown report to the file out. A section that fails is logged and
// reported as not measured, and the others still run; Run then returns an
// error naming it. Once ctx is done, Run stops after the current section.
func Run(ctx context.Context, c Config, only []string, stdout io.Writer, out string) error {
	for _, name := range only {
		if !slices.Contains(Sections(), name) {
			return fmt.Errorf("unknown section %q (sections: %s)", name, strings.Join(Sections(), ","))
		}
	}
	if os.Geteuid() != 0 {
		return errors.New("needs root (BPF, network namespaces)")
	}
	var done []Section
	errs := map[string]error{}
	var failed []string
	for _, s := range sections {
		if len(only) > 0 && !slices.Contains(only, s.name) {
			continue
		}
		c.Log.Info("running", "section", s.name)
		sec, err := s.run(ctx, c)
		if err != nil {
			c.Log.Error("section failed", "section", s.name, "err", err)
			errs[s.name] = err
			failed = append(failed, s.name)
			continue
		}
		printText(stdout, sec)
		done = append(done, sec)
		if ctx.Err() != nil {
			break
		}
	}
	f, err := os.Create(out)
	if err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	writeMarkdown(f, done, errs)
	if err := f.Close(); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	fmt.Fprintf(stdout, "\nreport written to %s\n", out)
	if len(failed) > 0 {
		return fmt.Errorf("not measured: %s", strings.Join(failed, ", "))
	}
	return nil
}
