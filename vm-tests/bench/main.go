// Command bench is `make bench`: it measures xdplb against a floor program
// and against real peers, prints a table, and writes vm-tests/bench/RESULTS.md.
// It is a benchmark, not a test: it reports targets, it never fails on one.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
)

// config is what every section gets.
type config struct {
	Binary string // bin/xdplb, for sections that run the daemon
	Quick  bool   // fewer rounds and shorter runs, for a smoke run
	Log    *slog.Logger
}

// sectionFunc measures one section.
type sectionFunc func(ctx context.Context, c config) (Section, error)

// sections in report order; each file of this package adds its own.
var sections = []struct {
	name string
	run  sectionFunc
}{
	{"packet", runPacketCost},
	{"veth", runVethPPS},
	{"tcp", runRealTCP},
	{"control", runControlPlane},
}

func main() {
	os.Exit(run())
}

func run() int {
	out := flag.String("out", "vm-tests/bench/RESULTS.md", "Markdown report to write")
	only := flag.String("only", "", "comma-separated sections to run (packet,veth,tcp,control); default all")
	binary := flag.String("binary", "bin/xdplb", "xdplb binary")
	quick := flag.Bool("quick", false, "short runs, for a smoke test of the benchmark itself")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench: needs root (BPF, network namespaces)")
		return 1
	}
	c := config{Binary: *binary, Quick: *quick, Log: log}

	var want []string
	if *only != "" {
		want = strings.Split(*only, ",")
	}
	var done []Section
	errs := map[string]error{}
	for _, s := range sections {
		if want != nil && !slices.Contains(want, s.name) {
			continue
		}
		log.Info("running", "section", s.name)
		sec, err := s.run(ctx, c)
		if err != nil {
			log.Error("section failed", "section", s.name, "err", err)
			errs[s.name] = err
			continue
		}
		printText(os.Stdout, sec)
		done = append(done, sec)
		if ctx.Err() != nil {
			break
		}
	}
	f, err := os.Create(*out)
	if err != nil {
		log.Error("write report", "err", err)
		return 1
	}
	writeMarkdown(f, done, errs)
	if err := f.Close(); err != nil {
		log.Error("write report", "err", err)
		return 1
	}
	fmt.Printf("\nreport written to %s\n", *out)
	if len(errs) > 0 {
		return 1
	}
	return 0
}
