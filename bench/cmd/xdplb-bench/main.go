// Command xdplb-bench is `make bench`: it parses the flags and runs the
// benchmark suite (package bench), which prints a table per section and
// writes bench/RESULTS.md. It exits non-zero when a section could not be
// measured, never because a target was missed.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/xdplb/xdplb/bench"
)

func main() {
	out := flag.String("out", "bench/RESULTS.md", "Markdown report to write")
	only := flag.String("only", "", "comma-separated sections to run ("+strings.Join(bench.Sections(), ",")+"); default all")
	binary := flag.String("binary", "bin/xdplb", "xdplb binary")
	quick := flag.Bool("quick", false, "short runs, for a smoke test of the benchmark itself")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	var sections []string
	if *only != "" {
		sections = strings.Split(*only, ",")
	}
	err := bench.Run(ctx, bench.Config{Binary: *binary, Quick: *quick, Log: log}, sections, os.Stdout, *out)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}
