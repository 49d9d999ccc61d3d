package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/xdplb/xdplb/internal/lab"
)

// tcpPlan is how much the section measures.
type tcpPlan struct {
	Rounds int
	Load   wrkLoad
}

func tcpPlanFor(quick bool) tcpPlan {
	p := tcpPlan{Rounds: 3, Load: wrkLoad{Threads: 1, Conns: 32, Duration: 10 * time.Second}}
	if quick {
		p.Rounds, p.Load.Duration = 2, 2*time.Second
	}
	return p
}

// tcpRun is one wrk run of one case in one shape and round.
type tcpRun struct {
	Case, Shape, Round int
	wrkResult
}

// runRealTCP measures real HTTP over TCP from a client namespace to nginx
// backends: directly, through xdplb DR, through an nftables DNAT load
// balancer and through HAProxy, in interleaved rounds.
func runRealTCP(ctx context.Context, c Config) (sec Section, err error) {
	for _, tool := range []string{"wrk", "nginx", "haproxy", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			return Section{}, fmt.Errorf("%s not found (install the benchmark's peers with `make bench-deps`): %w", tool, err)
		}
	}
	if _, err := os.Stat(c.Binary); err != nil {
		return Section{}, fmt.Errorf("xdplb binary (build it with `make build`): %w", err)
	}
	plan := tcpPlanFor(c.Quick)
	shapes := tcpShapes

	dir, err := os.MkdirTemp("", "xdplb-bench-tcp-")
	if err != nil {
		return Section{}, fmt.Errorf("temp dir: %w", err)
	}
	defer func() { err = errors.Join(err, os.RemoveAll(dir)) }()
	// nginx's workers run as an unprivileged user and must reach their
	// pages; MkdirTemp makes the directory private to root.
	if err := os.Chmod(dir, 0o755); err != nil {
		return Section{}, fmt.Errorf("temp dir: %w", err)
	}
	l, err := lab.New(ctx, lab.Options{Logger: c.Log})
	if err != nil {
		return Section{}, fmt.Errorf("build lab: %w", err)
	}
	// Runs before the temp dir's removal: the lab's closers stop nginx
	// while its directory still exists.
	defer func() { err = errors.Join(err, l.Close()) }()
	e := &tcpEnv{lab: l, dir: dir, binary: c.Binary, log: c.Log}

	if err := tcpTuneClient(l.Client); err != nil {
		return Section{}, err
	}
	// Full checksums from the backends: their answers to NAT paths leave
	// the lb by XDP_TX (see the section's notes).
	for _, be := range l.Backends {
		if err := be.SetTxChecksum(false); err != nil {
			return Section{}, fmt.Errorf("%s: tx checksum off: %w", be.Name, err)
		}
	}
	for _, be := range l.Backends {
		p, err := tcpStartNginx(ctx, be, dir)
		if err != nil {
			return Section{}, fmt.Errorf("nginx on %s: %w", be.Name, err)
		}
		l.AddCloser(p.Stop)
	}

	loadBefore := tcpLoadAvg()
	var runs []tcpRun
	for round := range plan.Rounds {
		// The order rotates from round to round, so that no case always
		// runs first, or right after the same neighbour.
		for i := range tcpCases {
			ci := (i + round) % len(tcpCases)
			rs, err := tcpRunCase(ctx, e, tcpCases[ci], shapes, plan.Load)
			if err != nil {
				return Section{}, fmt.Errorf("round %d: %w", round+1, err)
			}
			for si, r := range rs {
				runs = append(runs, tcpRun{Case: ci, Shape: si, Round: round, wrkResult: r})
			}
		}
	}
	return tcpSection(plan, shapes, runs, loadBefore+" before, "+tcpLoadAvg()+" after"), nil
}

// tcpLoadAvg is the 1-minute load average, which says how much else
// competed for the CPUs.
func tcpLoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "unknown"
	}
	return f[0]
}

// tcpTuneClient lets the client open connections as fast as wrk can: the
// whole port range, and reuse of its own TIME_WAIT ports (wrk may close a
// "Connection: close" socket before the server's FIN arrives, which leaves
// the TIME_WAIT on the client).
func tcpTuneClient(n *lab.Node) error {
	for k, v := range map[string]string{
		"net/ipv4/ip_local_port_range": "1024 65535",
		"net/ipv4/tcp_tw_reuse":        "1",
	} {
		if err := n.SetSysctl(k, v); err != nil {
			return err
		}
	}
	return nil
}

// tcpRunCase sets the case up, checks its path, runs wrk once per shape
// and tears the case down again, also on failure.
func tcpRunCase(ctx context.Context, e *tcpEnv, c tcpCase, shapes []wrkShape, load wrkLoad) (_ []wrkResult, err error) {
	target, down, err := c.Up(ctx, e)
	if err != nil {
		return nil, fmt.Errorf("set up %s: %w", c.Name, err)
	}
	defer func() {
		if derr := down(); derr != nil {
			err = errors.Join(err, fmt.Errorf("tear down %s: %w", c.Name, derr))
		}
	}()
	if err := tcpCheckPath(ctx, e, c, target); err != nil {
		return nil, err
	}
	url := "http://" + target.String() + "/"
	// A discarded warm-up run: the first second after setting a path up
	// (a daemon just started, caches and tables empty) is not its steady
	// state.
	warm := load
	warm.Duration = time.Second
	if _, err := runWrk(ctx, e.lab.Client, url, warm, shapes[0]); err != nil {
		return nil, fmt.Errorf("%s, warm-up: %w", c.Name, err)
	}
	var out []wrkResult
	for _, s := range shapes {
		r, err := runWrk(ctx, e.lab.Client, url, load, s)
		if err != nil {
			return nil, fmt.Errorf("%s, %s: %w", c.Name, s.Name, err)
		}
		e.log.Info("tcp run", "case", c.Name, "shape", s.Name, "rps", int(r.RPS), "p50", r.P50, "p99", r.P99, "errors", r.Errors)
		out = append(out, r)
	}
	return out, nil
}
