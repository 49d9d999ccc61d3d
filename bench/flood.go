package bench

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xdplb/xdplb/internal/lab"
)

// The flood section's settings: a spoofed SYN flood asked at 100,000/s
// (hping3 sends what the machine lets it; the rows say what reached the
// LB), against a connection table of 65,536 entries, and a half-open
// timeout short enough for a benchmark.
const (
	floodRate     = 100000
	floodHalfOpen = 5 * time.Second
	floodCTSize   = 65536
	floodPort     = 80
)

// runFlood measures legitimate connections to a DR and a nat VIP without a
// flood, during one, and after it: the share that succeed, their latency,
// and how long after the flood every new connection succeeds again.
func runFlood(ctx context.Context, c Config) (Section, error) {
	if _, err := os.Stat(c.Binary); err != nil {
		return Section{}, fmt.Errorf("xdplb binary (build it with `make build`): %w", err)
	}
	floodFor, calmFor := 10*time.Second, 5*time.Second
	if c.Quick {
		floodFor, calmFor = 3*time.Second, 2*time.Second
	}
	sec := Section{
		Title: "Legitimate connections under a SYN flood",
		Method: fmt.Sprintf("A lab per mode (DR; nat with the LB as the backends' gateway), the real daemon with "+
			"`--conntrack-size %d --half-open-timeout %s`. A client opens a new HTTP connection every 10 ms to the VIP "+
			"(1 s timeout) for %s without a flood, then during a flood of spoofed SYNs from random sources "+
			"(`hping3 -S --rand-source`, asked at %d/s for %s, from the client's namespace), then after it until every "+
			"connection succeeds. Success is the share of connections answered; latency is connect plus one request, "+
			"of those answered. Recovery is the time from the end of the flood to the first connection after which all succeed.",
			floodCTSize, floodHalfOpen, calmFor, floodRate, floodFor),
		Header: []string{"mode", "phase", "flood pps at LB", "connections", "success", "p50 ms", "p99 ms"},
	}
	for _, mode := range []string{"dr", "nat"} {
		r, err := floodMode(ctx, c, mode, floodFor, calmFor)
		if err != nil {
			return Section{}, fmt.Errorf("%s: %w", mode, err)
		}
		for _, p := range r.phases {
			pps := "-"
			if p.pps > 0 {
				pps = fmt.Sprintf("%.0f", p.pps)
			}
			sec.Rows = append(sec.Rows, []string{mode, p.name, pps, fmt.Sprint(p.n),
				fmt.Sprintf("%.1f%%", p.success), fmt.Sprintf("%.2f", p.p50), fmt.Sprintf("%.2f", p.p99)})
		}
		sec.Targets = append(sec.Targets,
			Target{Name: mode + ": success during the flood", Got: r.phases[1].success, Limit: 99, Unit: "%"},
			Target{Name: mode + ": recovery after the flood (half-open timeout)", Got: r.recovery.Seconds(), Limit: floodHalfOpen.Seconds(), AtMost: true, Unit: "s"})
	}
	sec.Notes = append(sec.Notes, "hping3 and the LB share the machine's two CPUs: the flood that reaches the LB is "+
		"what hping3 could send, shown per row.")
	return sec, nil
}

type floodPhase struct {
	name          string
	n             int
	success       float64 // percent
	p50, p99, pps float64
}

type floodResult struct {
	phases   []floodPhase // calm, flood
	recovery time.Duration
}

func floodMode(ctx context.Context, c Config, mode string, floodFor, calmFor time.Duration) (res floodResult, err error) {
	opts := lab.Options{Logger: c.Log}
	if mode == "nat" {
		opts.NAT = &lab.NATOptions{Gateway: true}
	}
	l, err := lab.New(ctx, opts)
	if err != nil {
		return res, fmt.Errorf("lab: %w", err)
	}
	defer func() { err = errors.Join(err, l.Close()) }()
	dir, err := os.MkdirTemp("", "xdplb-bench-flood-")
	if err != nil {
		return res, err
	}
	defer func() { err = errors.Join(err, os.RemoveAll(dir)) }()
	bpffs := filepath.Join(dir, "bpffs")
	if err := os.MkdirAll(bpffs, 0o700); err != nil {
		return res, err
	}
	if err := unix.Mount("bpffs", bpffs, "bpf", 0, "mode=0700"); err != nil {
		return res, fmt.Errorf("mount bpffs: %w", err)
	}
	// Unmounted after the daemon stops (deferred before it): the pins go.
	defer func() { err = errors.Join(err, unix.Unmount(bpffs, unix.MNT_DETACH)) }()

	var backends []netip.AddrPort
	if mode == "nat" {
		if _, err := l.ServeNATBackends(); err != nil {
			return res, err
		}
		for _, be := range l.NATBackends {
			backends = append(backends, netip.AddrPortFrom(be.IPv4, lab.NATPort))
		}
	} else {
		if _, err := l.ServeBackends(); err != nil {
			return res, err
		}
		for _, be := range l.Backends {
			backends = append(backends, netip.AddrPortFrom(be.IPv4, 0))
		}
	}
	d, err := lab.StartDaemon(ctx, lab.DaemonOptions{Binary: c.Binary, Node: l.LB, Dir: dir, BPFFS: bpffs,
		ExtraArgs: []string{"--conntrack-size", fmt.Sprint(floodCTSize), "--half-open-timeout", floodHalfOpen.String()}})
	if err != nil {
		return res, fmt.Errorf("daemon: %w", err)
	}
	defer func() { err = errors.Join(err, d.Stop()) }()
	target := netip.AddrPortFrom(lab.VIP4, floodPort)
	vip := target.String() + "/tcp"
	if _, err := d.CLI(ctx, "vip", "add", vip, "--mode", mode, "--check", "tcp", "--check-interval", "500ms"); err != nil {
		return res, err
	}
	for _, b := range backends {
		a := b.Addr().String()
		if b.Port() != 0 {
			a = b.String()
		}
		if _, err := d.CLI(ctx, "backend", "add", vip, a); err != nil {
			return res, err
		}
	}
	if _, err := d.WaitBackendsUp(ctx, vip, len(backends), 15*time.Second); err != nil {
		return res, err
	}

	stream := func(first uint16, dur time.Duration) *lab.Stream {
		return l.Client.StartStream(ctx, target, lab.StreamOptions{Interval: 10 * time.Millisecond, Duration: dur,
			Timeout: time.Second, MaxInFlight: 256, FirstPort: first})
	}
	calm := stream(20000, calmFor)
	<-calm.Done()
	res.phases = append(res.phases, floodSummary("no flood", calm.Stop(), 0))

	before, err := d.Stats(ctx)
	if err != nil {
		return res, err
	}
	during := stream(30000, floodFor)
	t0 := time.Now()
	ferr := l.Client.SYNFlood(ctx, target, lab.FloodOptions{Rate: floodRate, Duration: floodFor})
	tEnd := time.Now()
	as := during.Stop()
	if ferr != nil {
		return res, ferr
	}
	after, err := d.Stats(ctx)
	if err != nil {
		return res, err
	}
	b, _ := lab.VIPStats(before, vip)
	a, _ := lab.VIPStats(after, vip)
	res.phases = append(res.phases, floodSummary("flood", as, float64(a.Packets-b.Packets)/tEnd.Sub(t0).Seconds()))

	rec := stream(45000, floodHalfOpen+5*time.Second)
	<-rec.Done()
	ras := rec.Stop()
	first := len(ras)
	for i := len(ras) - 1; i >= 0 && ras[i].Err == nil; i-- {
		first = i
	}
	res.recovery = floodHalfOpen + 5*time.Second // never within the run
	if first < len(ras) {
		res.recovery = max(0, ras[first].Start.Sub(tEnd))
	}
	return res, nil
}

func floodSummary(name string, as []lab.Attempt, pps float64) floodPhase {
	p := floodPhase{name: name, n: len(as), pps: pps}
	var lat []float64
	for _, a := range as {
		if a.Err == nil {
			lat = append(lat, float64(a.End.Sub(a.Start).Microseconds())/1000)
		}
	}
	if len(as) > 0 {
		p.success = 100 * float64(len(lat)) / float64(len(as))
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		p.p50 = lat[len(lat)/2]
		p.p99 = lat[min(len(lat)-1, len(lat)*99/100)]
	}
	return p
}
