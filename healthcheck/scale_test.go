package healthcheck

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// BenchmarkManagerScale is the sizing run of the issue: 1,000 VIPs × 10
// backends, every (VIP, backend) pair its own Spec (the worst case, where
// sharing loops does not help), tcp probes at 1s against listeners on
// 127.0.0.1-127.0.0.10, for 10s of real time. It reports probes/s, probe
// lag (start minus schedule) and the checker process's CPU per second of
// wall time (the listeners run in a child process, whose CPU is reported
// apart). One run takes about 11s whatever b.N is: run it with
// -benchtime=1x.
func BenchmarkManagerScale(b *testing.B) {
	const (
		vips, backends, ports = 1000, 10, 4
		warmup                = 2 * time.Second
		measure               = 8 * time.Second
	)
	// The listeners run in a child process, so that this process's CPU is
	// the checker's alone (the loopback kernel work of a connection is
	// still shared between both ends).
	addrs, serverCPU := startScaleServer(b, backends, ports)
	// VIP i reaches backend j on port i%4 with rise and fall derived from
	// i: 10,000 distinct Specs over 40 listeners.
	targets := make([]Target, 0, vips*backends)
	for i := range vips {
		for j := range backends {
			targets = append(targets, Target{
				ID: fmt.Sprintf("vip%d|b%d", i, j),
				Spec: Spec{
					Kind: TCP, Target: addrs[j][i%ports], Interval: time.Second, Timeout: 500 * time.Millisecond,
					Rise: 1 + (i/ports)%100, Fall: 1 + i/(ports*100),
				},
				StartUp: true,
			})
		}
	}

	var (
		measuring    atomic.Bool
		probes, fail atomic.Int64
		lagMu        sync.Mutex
		lags         = make([]time.Duration, 0, 12*vips*backends)
	)
	reasons := &countingProber{Prober: NewProber(), counts: map[string]int{}, on: &measuring}
	m := NewManager(Options{
		Prober: reasons,
		OnProbe: func(_ Kind, _ time.Duration, ok bool) {
			if measuring.Load() {
				probes.Add(1)
				if !ok {
					fail.Add(1)
				}
			}
		},
		OnLag: func(_ Kind, lag time.Duration) {
			if measuring.Load() {
				lagMu.Lock()
				lags = append(lags, lag)
				lagMu.Unlock()
			}
		},
	})
	m.Set(targets)
	b.ResetTimer()
	ctx, cancel := context.WithCancel(b.Context())
	done := make(chan struct{})
	go func() {
		m.Run(ctx)
		close(done)
	}()

	time.Sleep(warmup) // every loop has passed its initial offset
	ru0, t0 := rusage(b), time.Now()
	measuring.Store(true)
	time.Sleep(measure)
	measuring.Store(false)
	ru1, wall := rusage(b), time.Since(t0)
	cancel()
	<-done
	b.StopTimer()

	cpu := time.Duration(ru1.Utime.Nano()+ru1.Stime.Nano()-ru0.Utime.Nano()-ru0.Stime.Nano()) * time.Nanosecond
	lagMu.Lock()
	slices.Sort(lags)
	q := func(f float64) time.Duration {
		if len(lags) == 0 {
			return 0
		}
		return lags[int(f*float64(len(lags)-1))]
	}
	p50, p99, pmax := q(0.5), q(0.99), q(1)
	lagMu.Unlock()
	rate := float64(probes.Load()) / wall.Seconds()
	b.ReportMetric(rate, "probes/s")
	b.ReportMetric(float64(p50.Microseconds())/1000, "lag-p50-ms")
	b.ReportMetric(float64(p99.Microseconds())/1000, "lag-p99-ms")
	b.ReportMetric(float64(pmax.Microseconds())/1000, "lag-max-ms")
	b.ReportMetric(cpu.Seconds()/wall.Seconds(), "cpu-s/s")
	b.ReportMetric(float64(fail.Load()), "failed")
	srvCPU := serverCPU()
	b.ReportMetric(srvCPU.Seconds()/(warmup+measure).Seconds(), "server-cpu-s/s")
	b.Logf("failure reasons: %v", reasons.counts)
	b.Logf("%d specs, %s measured: %.0f probes/s, lag p50 %s p99 %s max %s, checker cpu %.2f s/s, %d failed; listener process cpu %s in all",
		len(targets), wall.Round(time.Millisecond), rate, p50, p99, pmax, cpu.Seconds()/wall.Seconds(), fail.Load(), srvCPU.Round(time.Millisecond))
	// 10,000 Specs at a 1s interval: anything well short of 10,000/s is
	// falling behind.
	if rate < 0.95*vips*backends {
		b.Errorf("%.0f probes/s: the checker falls behind 10,000/s", rate)
	}
	if fail.Load() > 0 {
		b.Errorf("%d probes failed against local listeners", fail.Load())
	}
}

// scaleServerEnv makes the test binary a listener process for
// BenchmarkManagerScale (see TestScaleServer).
const scaleServerEnv = "XDPLB_HEALTHCHECK_SCALE_SERVER"

// startScaleServer runs this test binary as TestScaleServer, listening on
// backends addresses (127.0.0.1 up) and ports ports each. It returns the
// addresses, and a function that stops the process and returns its CPU time.
func startScaleServer(b *testing.B, backends, ports int) ([10][4]netip.AddrPort, func() time.Duration) {
	var addrs [10][4]netip.AddrPort
	if backends > 10 || ports > 4 {
		b.Fatal("at most 10 backends and 4 ports")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestScaleServer$", "-test.count=1")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d,%d", scaleServerEnv, backends, ports))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	var once sync.Once
	var cpu time.Duration
	stop := func() time.Duration {
		once.Do(func() {
			stdin.Close() // the server exits on EOF
			if err := cmd.Wait(); err != nil {
				b.Errorf("listener process: %v", err)
			}
			if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
				cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
			}
		})
		return cpu
	}
	b.Cleanup(func() { stop() })
	sc := bufio.NewScanner(stdout)
	for j := range backends {
		for p := range ports {
			if !sc.Scan() {
				b.Fatalf("listener process: %v", sc.Err())
			}
			ap, err := netip.ParseAddrPort(strings.TrimSpace(sc.Text()))
			if err != nil {
				b.Fatalf("listener process said %q", sc.Text())
			}
			addrs[j][p] = ap
		}
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	return addrs, stop
}

// TestScaleServer is the listener process of BenchmarkManagerScale: it
// accepts and closes connections (the probe resets first, so neither end
// keeps a TIME_WAIT socket) until its stdin closes. Without its
// environment variable it does nothing.
func TestScaleServer(t *testing.T) {
	cfg := os.Getenv(scaleServerEnv)
	if cfg == "" {
		t.Skip("the listener process of BenchmarkManagerScale")
	}
	var backends, ports int
	if _, err := fmt.Sscanf(cfg, "%d,%d", &backends, &ports); err != nil {
		t.Fatal(err)
	}
	for j := range backends {
		for range ports {
			ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.%d:0", j+1))
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			fmt.Println(ln.Addr())
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					c.Close()
				}
			}()
		}
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// BenchmarkProbeTCP is the cost of one tcp probe, one after another against
// a local listener in this process: the CPU per probe covers both ends.
func BenchmarkProbeTCP(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	p := NewProber()
	s := Spec{Kind: TCP, Target: netip.MustParseAddrPort(ln.Addr().String())}
	ru0 := rusage(b)
	for b.Loop() {
		ctx, cancel := context.WithTimeout(b.Context(), time.Second)
		r := p.Probe(ctx, s)
		cancel()
		if !r.OK {
			b.Fatal(r.Reason)
		}
	}
	ru1 := rusage(b)
	user, sys := ru1.Utime.Nano()-ru0.Utime.Nano(), ru1.Stime.Nano()-ru0.Stime.Nano()
	b.ReportMetric(float64(user)/float64(b.N)/1000, "user-us/op")
	b.ReportMetric(float64(sys)/float64(b.N)/1000, "sys-us/op")
}

func rusage(b *testing.B) syscall.Rusage {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru
}

// countingProber counts the reasons of failed probes.
type countingProber struct {
	Prober
	on     *atomic.Bool
	mu     sync.Mutex
	counts map[string]int
}

func (p *countingProber) Probe(ctx context.Context, s Spec) Result {
	r := p.Prober.Probe(ctx, s)
	if !r.OK && p.on.Load() {
		p.mu.Lock()
		p.counts[r.Reason]++
		p.mu.Unlock()
	}
	return r
}

// okProber answers every probe at once: what is left of a probe's cost is
// the Manager's own (timers, wake-ups, state, hooks).
type okProber struct{}

func (okProber) Probe(context.Context, Spec) Result { return Result{OK: true} }

// BenchmarkManagerOverhead is the Manager's own cost per probe, without a
// network: 10,000 Specs at 1s (the 10,000 probes/s of the issue) against
// a prober that answers at once, for 5s of real time. It
// reports the probes run, the process's CPU per probe (user and system)
// and the heap allocated per probe. Run it with -benchtime=1x.
func BenchmarkManagerOverhead(b *testing.B) {
	const (
		specs   = 10000
		warmup  = 1500 * time.Millisecond // past every loop's initial offset
		measure = 5 * time.Second
	)
	targets := make([]Target, specs)
	for i := range targets {
		targets[i] = Target{
			ID: fmt.Sprintf("t%d", i),
			Spec: Spec{Kind: TCP, Target: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), 80),
				Interval: time.Second, Timeout: 500 * time.Millisecond, Rise: 2, Fall: 3},
			StartUp: true,
		}
	}
	var probes atomic.Int64
	m := NewManager(Options{
		Prober:  okProber{},
		OnProbe: func(Kind, time.Duration, bool) { probes.Add(1) },
		OnLag:   func(Kind, time.Duration) {},
	})
	m.Set(targets)
	ctx, cancel := context.WithCancel(b.Context())
	done := make(chan struct{})
	go func() {
		m.Run(ctx)
		close(done)
	}()
	time.Sleep(warmup)
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	ru0, p0, t0 := rusage(b), probes.Load(), time.Now()
	// Meanwhile, read every target's Status once a second, as a metrics
	// scrape or a reconcile pass does: its time is how much the readers
	// wait behind the probe loops.
	var sweeps []time.Duration
	for time.Since(t0) < measure {
		s0 := time.Now()
		for _, t := range targets {
			if _, ok := m.Status(t.ID); !ok {
				b.Fatalf("no status of %s", t.ID)
			}
		}
		sweeps = append(sweeps, time.Since(s0))
		time.Sleep(time.Second)
	}
	ru1, p1, wall := rusage(b), probes.Load(), time.Since(t0)
	runtime.ReadMemStats(&ms1)
	slices.Sort(sweeps)
	b.ReportMetric(float64(sweeps[len(sweeps)/2].Microseconds())/1000, "status-sweep-ms")
	cancel()
	<-done
	n := float64(p1 - p0)
	if n == 0 {
		b.Fatal("no probes ran")
	}
	user, sys := ru1.Utime.Nano()-ru0.Utime.Nano(), ru1.Stime.Nano()-ru0.Stime.Nano()
	b.ReportMetric(n/wall.Seconds(), "probes/s")
	b.ReportMetric(float64(user)/n/1000, "user-us/probe")
	b.ReportMetric(float64(sys)/n/1000, "sys-us/probe")
	b.ReportMetric(float64(ms1.TotalAlloc-ms0.TotalAlloc)/n, "B/probe")
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/n, "allocs/probe")
	b.ReportMetric(float64(user+sys)/1e9/wall.Seconds(), "cpu-s/s")
}
