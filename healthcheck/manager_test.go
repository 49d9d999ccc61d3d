package healthcheck

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

type probeCall struct {
	target netip.AddrPort
	at     time.Time
}

// fakeProber answers from a table of results per target (default ok) and
// records every call at its simulated time.
type fakeProber struct {
	clock *FakeClock

	mu       sync.Mutex
	results  map[netip.AddrPort]Result
	calls    []probeCall
	inFlight map[netip.AddrPort]int
	overlap  bool
	during   func(s Spec) // runs inside Probe, e.g. to make it take time
}

func (p *fakeProber) Probe(ctx context.Context, s Spec) Result {
	p.mu.Lock()
	p.calls = append(p.calls, probeCall{s.Target, p.clock.Now()})
	p.inFlight[s.Target]++
	if p.inFlight[s.Target] > 1 {
		p.overlap = true
	}
	r, ok := p.results[s.Target]
	during := p.during
	p.mu.Unlock()
	if _, has := ctx.Deadline(); !has {
		r = Result{Reason: "no deadline"}
	}
	if during != nil {
		during(s)
	}
	p.mu.Lock()
	p.inFlight[s.Target]--
	p.mu.Unlock()
	if !ok {
		return Result{OK: true, Reason: "ok"}
	}
	return r
}

func (p *fakeProber) set(target netip.AddrPort, r Result) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.results[target] = r
}

// callsTo returns the times of the probes of target.
func (p *fakeProber) callsTo(target netip.AddrPort) []time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []time.Time
	for _, c := range p.calls {
		if c.target == target {
			out = append(out, c.at)
		}
	}
	return out
}

type harness struct {
	t      *testing.T
	clock  *FakeClock
	prober *fakeProber
	m      *Manager
	log    *bytes.Buffer

	mu          sync.Mutex
	transitions []Transition
	lags        []time.Duration
	probes      int

	cancel context.CancelFunc
	done   chan struct{}
}

// newHarness returns a running Manager on a fake clock and prober; the test
// ends by stopping it and checking that Run returns.
func newHarness(t *testing.T) *harness {
	h := &harness{t: t, clock: NewFakeClock(t0), log: &bytes.Buffer{}, done: make(chan struct{})}
	h.prober = &fakeProber{clock: h.clock, results: map[netip.AddrPort]Result{}, inFlight: map[netip.AddrPort]int{}}
	var logMu sync.Mutex
	h.m = NewManager(Options{
		Clock:  h.clock,
		Prober: h.prober,
		Logger: slog.New(slog.NewTextHandler(&lockedWriter{mu: &logMu, w: h.log}, &slog.HandlerOptions{Level: slog.LevelDebug})),
		OnProbe: func(Kind, time.Duration, bool) {
			h.mu.Lock()
			h.probes++
			h.mu.Unlock()
		},
		OnTransition: func(tr Transition) {
			h.mu.Lock()
			h.transitions = append(h.transitions, tr)
			h.mu.Unlock()
		},
		OnLag: func(_ Kind, lag time.Duration) {
			h.mu.Lock()
			h.lags = append(h.lags, lag)
			h.mu.Unlock()
		},
	})
	ctx, cancel := context.WithCancel(t.Context())
	h.cancel = cancel
	go func() {
		h.m.Run(ctx)
		close(h.done)
	}()
	t.Cleanup(h.stop)
	return h
}

func (h *harness) stop() {
	h.cancel()
	select {
	case <-h.done:
	case <-time.After(5 * time.Second):
		h.t.Fatal("Run did not return after its context ended")
	}
	if h.prober.overlap {
		h.t.Error("a probe loop overlapped itself")
	}
}

// settle waits until the loops have armed their timers: n loops run.
func (h *harness) settle(n int) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(h.t.Context(), 5*time.Second)
	defer cancel()
	if err := h.clock.WaitTimers(ctx, n); err != nil {
		h.t.Fatal(err)
	}
}

// step fires the next probe round of one of n loops and waits until its
// result is in; it returns the simulated time of the probe.
func (h *harness) step(n int) time.Time {
	h.t.Helper()
	h.settle(n)
	at, ok := h.clock.AdvanceToNext()
	if !ok {
		h.t.Fatal("no timer pending")
	}
	h.settle(n)
	return at
}

func (h *harness) status(id string) Status {
	h.t.Helper()
	st, ok := h.m.Status(id)
	if !ok {
		h.t.Fatalf("no status for %q", id)
	}
	return st
}

func (h *harness) takeTransitions() []Transition {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := h.transitions
	h.transitions = nil
	return out
}

func (h *harness) changed() bool {
	select {
	case <-h.m.Changes():
		return true
	default:
		return false
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

func spec(target string) Spec {
	return Spec{
		Kind: TCP, Target: netip.MustParseAddrPort(target),
		Interval: time.Second, Timeout: 500 * time.Millisecond, Rise: 2, Fall: 3,
	}
}

func TestManagerFallAndRise(t *testing.T) {
	h := newHarness(t)
	s := spec("10.0.0.1:80")
	h.m.Set([]Target{{ID: "vip|a", Spec: s, StartUp: true}})
	if st := h.status("vip|a"); !st.Up || st.Known || st.Reason != "" || !st.Since.Equal(t0) {
		t.Fatalf("before any probe: %+v, want up, unknown, since the start", st)
	}

	first := h.step(1)
	if first.Before(t0) || !first.Before(t0.Add(time.Second)) {
		t.Errorf("first probe at +%s, want within the first interval", first.Sub(t0))
	}
	if st := h.status("vip|a"); !st.Up || !st.Known || st.Reason != "ok" {
		t.Fatalf("after one ok: %+v", st)
	}

	h.prober.set(s.Target, Result{Reason: "connect refused"})
	var fails []time.Time
	for i := range 3 {
		fails = append(fails, h.step(1))
		st := h.status("vip|a")
		if wantUp := i < 2; st.Up != wantUp || st.Reason != "connect refused" {
			t.Fatalf("after %d failures: %+v, want up=%v", i+1, st, wantUp)
		}
	}
	trs := h.takeTransitions()
	want := Transition{ID: "vip|a", Up: false, Reason: "connect refused", At: fails[2]}
	if len(trs) != 1 || trs[0] != want {
		t.Fatalf("transitions %+v, want only %+v", trs, want)
	}
	if st := h.status("vip|a"); !st.Since.Equal(fails[2]) {
		t.Errorf("since %v, want the third failure %v", st.Since, fails[2])
	}
	if !h.changed() || h.changed() {
		t.Error("Changes: want exactly one signal after the transition")
	}

	h.prober.set(s.Target, Result{OK: true, Reason: "ok"})
	r1 := h.step(1)
	if st := h.status("vip|a"); st.Up || len(h.takeTransitions()) != 0 || h.changed() {
		t.Fatalf("up after one success with rise 2: %+v", st)
	}
	r2 := h.step(1)
	trs = h.takeTransitions()
	if len(trs) != 1 || trs[0] != (Transition{ID: "vip|a", Up: true, Reason: "ok", At: r2}) {
		t.Fatalf("transitions %+v, want up at the second success %v", trs, r2)
	}
	if !h.changed() {
		t.Error("no Changes signal after coming up")
	}

	// Probe times: every gap within the ±10% jitter, never late.
	times := h.prober.callsTo(s.Target)
	if len(times) != 6 || !times[5].Equal(r2) || !times[4].Equal(r1) {
		t.Fatalf("probe times %v", times)
	}
	for i := 1; i < len(times); i++ {
		if gap := times[i].Sub(times[i-1]); gap < 900*time.Millisecond || gap > 1100*time.Millisecond {
			t.Errorf("gap %d: %s, want 0.9s-1.1s", i, gap)
		}
	}
	h.mu.Lock()
	for _, lag := range h.lags {
		if lag != 0 {
			t.Errorf("lag %s on a fake clock", lag)
		}
	}
	if h.probes != 6 {
		t.Errorf("OnProbe called %d times, want 6", h.probes)
	}
	h.mu.Unlock()

	// One log line per transition, with the stable keys.
	logs := h.log.String()
	if n := strings.Count(logs, "health check transition"); n != 2 {
		t.Errorf("%d transition log lines, want 2:\n%s", n, logs)
	}
	for _, want := range []string{"target=10.0.0.1:80 kind=tcp up=false", `reason="connect refused"`, "up=true reason=ok"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
}

func TestManagerStartDown(t *testing.T) {
	h := newHarness(t)
	s := spec("10.0.0.1:80")
	h.m.Set([]Target{{ID: "new", Spec: s}})
	if st := h.status("new"); st.Up || st.Known {
		t.Fatalf("a target added later: %+v, want down and unknown (pending)", st)
	}
	h.step(1)
	if st := h.status("new"); st.Up || !st.Known || st.Reason != "ok" {
		t.Fatalf("after one success: %+v, want still down with rise 2", st)
	}
	at := h.step(1)
	if st := h.status("new"); !st.Up || !st.Since.Equal(at) {
		t.Fatalf("after two successes: %+v", st)
	}
	if trs := h.takeTransitions(); len(trs) != 1 || !trs[0].Up {
		t.Errorf("transitions %+v, want one up", trs)
	}
}

func TestManagerDedup(t *testing.T) {
	h := newHarness(t)
	a := spec("10.0.0.1:80")
	sameA := a
	sameA.Path = "/ignored" // tcp does not use it: still the same check
	b := spec("10.0.0.2:80")
	h.m.Set([]Target{
		{ID: "vip1|a", Spec: a, StartUp: true},
		{ID: "vip2|a", Spec: sameA, StartUp: true},
		{ID: "vip3|a", Spec: a}, // same server, added later: its own state
		{ID: "vip1|b", Spec: b, StartUp: true},
	})
	h.settle(2)
	for range 20 {
		h.step(2)
	}
	// Two loops, one probe each per interval: 20 rounds in ~10 intervals.
	ta, tb := h.prober.callsTo(a.Target), h.prober.callsTo(b.Target)
	if len(ta)+len(tb) != 20 || len(ta) < 8 || len(tb) < 8 {
		t.Fatalf("probes: %d to a, %d to b, want ~10 each and 20 in all", len(ta), len(tb))
	}
	if st := h.status("vip3|a"); !st.Up {
		t.Errorf("vip3|a did not rise on the shared loop: %+v", st)
	}

	h.prober.set(a.Target, Result{Reason: "timeout"})
	h.takeTransitions()
	h.log.Reset()
	var downAt time.Time
	for range 12 { // enough for 3 probes of a
		at := h.step(2)
		if len(h.takeTransitionsPeek()) > 0 && downAt.IsZero() {
			downAt = at
		}
	}
	trs := h.takeTransitions()
	if len(trs) != 3 {
		t.Fatalf("transitions %+v, want the three targets of a", trs)
	}
	for i, id := range []string{"vip1|a", "vip2|a", "vip3|a"} {
		if trs[i].ID != id || trs[i].Up || trs[i].Reason != "timeout" || !trs[i].At.Equal(downAt) {
			t.Errorf("transition %d: %+v, want %s down at %v", i, trs[i], id, downAt)
		}
	}
	if n := strings.Count(h.log.String(), "health check transition"); n != 1 {
		t.Errorf("%d log lines for one server going down behind three targets, want 1:\n%s", n, h.log.String())
	}
	if !strings.Contains(h.log.String(), "ids=3") {
		t.Errorf("log line does not count the targets:\n%s", h.log.String())
	}
	if st := h.status("vip1|b"); !st.Up {
		t.Errorf("b went down with a: %+v", st)
	}
}

func (h *harness) takeTransitionsPeek() []Transition {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.transitions
}

func TestManagerSet(t *testing.T) {
	h := newHarness(t)
	a, b, c := spec("10.0.0.1:80"), spec("10.0.0.2:80"), spec("10.0.0.3:80")
	h.m.Set([]Target{{ID: "a", Spec: a, StartUp: true}, {ID: "b", Spec: b, StartUp: true}})
	h.settle(2)

	// Remove b: its loop stops (its timer goes) and its status is gone.
	h.m.Set([]Target{{ID: "a", Spec: a, StartUp: true}})
	h.settle(1)
	if _, ok := h.m.Status("b"); ok {
		t.Error("b still has a status after its removal")
	}
	before := len(h.prober.callsTo(b.Target))
	for range 3 {
		h.step(1)
	}
	if n := len(h.prober.callsTo(b.Target)); n != before {
		t.Errorf("b probed %d times after its removal", n-before)
	}

	// a goes down.
	h.prober.set(a.Target, Result{Reason: "connect refused"})
	for range 3 {
		h.step(1)
	}
	if st := h.status("a"); st.Up {
		t.Fatalf("a is up after 3 failures: %+v", st)
	}

	// a's Spec changes to a healthy target: it keeps its down state and
	// needs rise successes on the new loop; the old loop stops.
	h.m.Set([]Target{{ID: "a", Spec: c, StartUp: true}})
	h.settle(1)
	if st := h.status("a"); st.Up || !st.Known {
		t.Fatalf("after a Spec change: %+v, want the old down state kept", st)
	}
	oldCalls := len(h.prober.callsTo(a.Target))
	h.step(1)
	if st := h.status("a"); st.Up {
		t.Fatalf("up after one success on the new Spec: %+v", st)
	}
	h.step(1)
	if st := h.status("a"); !st.Up {
		t.Fatalf("not up after two successes on the new Spec: %+v", st)
	}
	if n := len(h.prober.callsTo(a.Target)); n != oldCalls {
		t.Errorf("the old Spec was probed %d more times", n-oldCalls)
	}
	if n := len(h.prober.callsTo(c.Target)); n != 2 {
		t.Errorf("the new Spec was probed %d times, want 2", n)
	}

	// Same set again: nothing changes (level-triggered).
	h.m.Set([]Target{{ID: "a", Spec: c, StartUp: false}})
	h.settle(1)
	if st := h.status("a"); !st.Up {
		t.Errorf("a repeated Set reset the state: %+v", st)
	}

	// Add b back while running: a new target starts down (StartUp false).
	h.m.Set([]Target{{ID: "a", Spec: c}, {ID: "b", Spec: b}})
	h.settle(2)
	if st := h.status("b"); st.Up || st.Known {
		t.Errorf("b re-added: %+v, want pending", st)
	}

	// Empty set: every loop stops.
	h.m.Set(nil)
	h.settle(0)
}

func TestManagerInvalidSpec(t *testing.T) {
	h := newHarness(t)
	bad := spec("10.0.0.1:80")
	bad.Timeout = 2 * time.Second
	h.m.Set([]Target{{ID: "up", Spec: bad, StartUp: true}, {ID: "down", Spec: bad}})
	h.settle(0)
	if st := h.status("up"); !st.Up || st.Known {
		t.Errorf("invalid spec, start up: %+v, want up and unknown", st)
	}
	if st := h.status("down"); st.Up {
		t.Errorf("invalid spec, start down: %+v", st)
	}
	if n := strings.Count(h.log.String(), "health check not started"); n != 2 {
		t.Errorf("%d errors logged, want 2:\n%s", n, h.log.String())
	}
	// Fixing the Spec starts the loop.
	h.m.Set([]Target{{ID: "up", Spec: spec("10.0.0.1:80")}})
	h.settle(1)
}

func TestManagerJitter(t *testing.T) {
	h := newHarness(t)
	const loops = 50
	var targets []Target
	for i := range loops {
		s := spec("10.0.0.1:80")
		s.Target = netip.AddrPortFrom(s.Target.Addr(), uint16(1000+i))
		targets = append(targets, Target{ID: s.Target.String(), Spec: s, StartUp: true})
	}
	h.m.Set(targets)
	h.settle(loops)
	for range loops * 10 {
		h.step(loops)
	}
	var firsts []time.Duration
	for _, tg := range targets {
		times := h.prober.callsTo(tg.Spec.Target)
		if len(times) < 8 {
			t.Fatalf("%s: %d probes in 10 intervals", tg.ID, len(times))
		}
		first := times[0].Sub(t0)
		if first < 0 || first >= time.Second {
			t.Errorf("%s: first probe at +%s, want in [0, 1s)", tg.ID, first)
		}
		firsts = append(firsts, first)
		for i := 1; i < len(times); i++ {
			if gap := times[i].Sub(times[i-1]); gap < 900*time.Millisecond || gap > 1100*time.Millisecond {
				t.Errorf("%s: gap %s, want 0.9s-1.1s", tg.ID, gap)
			}
		}
	}
	// The offsets spread over the interval: each tenth of it holds some.
	var tenths [10]int
	for _, f := range firsts {
		tenths[f/(100*time.Millisecond)]++
	}
	empty := 0
	for _, n := range tenths {
		if n == 0 {
			empty++
		}
	}
	// 50 uniform offsets leave a given tenth empty with p = 0.9^50 = 0.5%.
	if empty > 2 {
		t.Errorf("initial offsets bunch up: per tenth of the interval %v", tenths)
	}
}

func TestManagerSlowProbe(t *testing.T) {
	h := newHarness(t)
	s := spec("10.0.0.1:80")
	var n int
	h.prober.during = func(Spec) {
		n++ // only this loop's goroutine runs it
		switch n {
		case 2:
			h.clock.Advance(2500 * time.Millisecond) // overruns the interval
		default:
			h.clock.Advance(30 * time.Millisecond)
		}
	}
	h.m.Set([]Target{{ID: "a", Spec: s, StartUp: true}})
	h.step(1)
	if st := h.status("a"); st.RTT != 30*time.Millisecond {
		t.Errorf("RTT %s, want 30ms", st.RTT)
	}
	// The second probe takes 2.5s: the third starts as it ends (a timer of
	// 0 fires at once), not overlapping it, and the fourth is due an
	// interval later, not as a burst of missed rounds.
	h.step(1)
	times := h.prober.callsTo(s.Target)
	if len(times) != 3 {
		t.Fatalf("%d probes, want 3: %v", len(times), times)
	}
	if got, want := times[2], times[1].Add(2500*time.Millisecond); !got.Equal(want) {
		t.Errorf("third probe at %v, want right after the slow one ends, %v", got, want)
	}
	h.step(1)
	times = h.prober.callsTo(s.Target)
	if gap := times[3].Sub(times[2]); gap < 900*time.Millisecond || gap > 1100*time.Millisecond {
		t.Errorf("fourth probe %s after the third, want an interval (0.9s-1.1s)", gap)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	// Due 0.9s-1.1s after the second started, the third starts 2.5s after.
	if len(h.lags) != 4 || h.lags[3] != 0 || h.lags[2] < 1400*time.Millisecond || h.lags[2] > 1600*time.Millisecond {
		t.Errorf("lags %v: want the third late by the overrun, 1.4s-1.6s", h.lags)
	}
}

func TestManagerRunLifecycle(t *testing.T) {
	clock := NewFakeClock(t0)
	p := &fakeProber{clock: clock, results: map[netip.AddrPort]Result{}, inFlight: map[netip.AddrPort]int{}}
	m := NewManager(Options{Clock: clock, Prober: p})
	var targets []Target
	for i := range 5 {
		s := spec("10.0.0.1:80")
		s.Target = netip.AddrPortFrom(s.Target.Addr(), uint16(1000+i))
		targets = append(targets, Target{ID: s.Target.String(), Spec: s})
	}
	// Set before Run: nothing probes until Run.
	m.Set(targets)
	if clock.Pending() != 0 {
		t.Fatalf("%d timers before Run", clock.Pending())
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		m.Run(ctx)
		close(done)
	}()
	wait := func(n int) {
		t.Helper()
		wctx, wcancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer wcancel()
		if err := clock.WaitTimers(wctx, n); err != nil {
			t.Fatal(err)
		}
	}
	wait(5)
	waitGoroutines(t, 1+5) // Run and five loops
	m.Set(targets[:2])
	wait(2)
	waitGoroutines(t, 1+2) // removed loops exit
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
	waitGoroutines(t, 0)
	// After Run: Set keeps state but starts nothing.
	m.Set(targets)
	if clock.Pending() != 0 {
		t.Errorf("Set after Run started loops")
	}
	waitGoroutines(t, 0)
	if _, ok := m.Status(targets[4].ID); !ok {
		t.Error("no status after Set")
	}
}

// waitGoroutines waits until want goroutines run Manager code: they leave
// on their own schedule, which no fake clock drives. Counting by stack,
// not runtime.NumGoroutine, ignores what other tests left winding down.
func waitGoroutines(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		n := 0
		for g := range strings.SplitSeq(string(buf), "\n\n") {
			if strings.Contains(g, "healthcheck.(*Manager).") {
				n++
			}
		}
		if n == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines in the Manager, want %d", n, want)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestManagerChangesCoalesce(t *testing.T) {
	h := newHarness(t)
	a, b := spec("10.0.0.1:80"), spec("10.0.0.2:80")
	a.Rise, b.Rise = 1, 1
	h.m.Set([]Target{{ID: "a", Spec: a}, {ID: "b", Spec: b}})
	h.step(2)
	h.step(2)
	if !h.status("a").Up || !h.status("b").Up {
		t.Fatal("not both up")
	}
	if !h.changed() {
		t.Fatal("no signal")
	}
	if h.changed() {
		t.Error("two transitions left two signals: want them coalesced")
	}
}

func TestSpecValidate(t *testing.T) {
	ok := Spec{Kind: HTTP, Target: netip.MustParseAddrPort("[2001:db8::1]:8080"), Path: "/healthz",
		Interval: time.Second, Timeout: 500 * time.Millisecond, Rise: 2, Fall: 3}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid spec: %v", err)
	}
	tests := []struct {
		name   string
		change func(*Spec)
		want   string
	}{
		{"kind", func(s *Spec) { s.Kind = "icmp" }, `unknown kind "icmp"`},
		{"no kind", func(s *Spec) { s.Kind = "" }, `unknown kind ""`},
		{"no target", func(s *Spec) { s.Target = netip.AddrPort{} }, "want an address and a port"},
		{"port 0", func(s *Spec) { s.Target = netip.MustParseAddrPort("10.0.0.1:0") }, "want an address and a port"},
		{"unspecified", func(s *Spec) { s.Target = netip.MustParseAddrPort("0.0.0.0:80") }, "not a unicast address"},
		{"interval", func(s *Spec) { s.Interval = 99 * time.Millisecond }, "interval 99ms: want at least 100ms"},
		{"timeout 0", func(s *Spec) { s.Timeout = 0 }, "timeout 0s"},
		{"timeout = interval", func(s *Spec) { s.Timeout = s.Interval }, "timeout 1s: want more than 0 and less than the interval 1s"},
		{"rise 0", func(s *Spec) { s.Rise = 0 }, "rise 0: want 1-100"},
		{"rise 101", func(s *Spec) { s.Rise = 101 }, "rise 101"},
		{"fall 0", func(s *Spec) { s.Fall = 0 }, "fall 0: want 1-100"},
		{"fall 101", func(s *Spec) { s.Fall = 101 }, "fall 101"},
		{"path", func(s *Spec) { s.Path = "healthz" }, `path "healthz": must start with /`},
		{"expect", func(s *Spec) { s.Expect = StatusRange{42, 42} }, "expect 42"},
		{"expect reversed", func(s *Spec) { s.Expect = StatusRange{399, 200} }, "expect 399-200"},
		{"expect 600", func(s *Spec) { s.Expect = StatusRange{200, 600} }, "expect 200-600"},
		{"host", func(s *Spec) { s.Host = "a\r\nX-Evil: 1" }, "host"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := ok
			tt.change(&s)
			err := s.Validate()
			if err == nil || !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate() = %v, want ErrInvalidSpec with %q", err, tt.want)
			}
		})
	}
}

func TestParseStatusRange(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want StatusRange
		err  string
	}{
		{"200-399", StatusRange{200, 399}, ""},
		{"200", StatusRange{200, 200}, ""},
		{" 100 - 599 ", StatusRange{100, 599}, ""},
		{"503-503", StatusRange{503, 503}, ""},
		{"399-200", StatusRange{}, "must not be above"},
		{"99-200", StatusRange{}, "100-599"},
		{"200-600", StatusRange{}, "100-599"},
		{"", StatusRange{}, "want an http status"},
		{"2xx", StatusRange{}, "want an http status"},
		{"200-", StatusRange{}, "want an http status"},
		{"200-300-400", StatusRange{}, "want an http status"},
	} {
		got, err := ParseStatusRange(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseStatusRange(%q) = %v, %v: want an error with %q", tt.in, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseStatusRange(%q) = %v, %v: want %v", tt.in, got, err, tt.want)
		}
		if again, err := ParseStatusRange(got.String()); err != nil || again != got {
			t.Errorf("ParseStatusRange(%q.String()) = %v, %v", tt.in, again, err)
		}
	}
	if !DefaultExpect.Contains(200) || !DefaultExpect.Contains(399) || DefaultExpect.Contains(400) || DefaultExpect.Contains(199) {
		t.Errorf("DefaultExpect %v: want 200-399", DefaultExpect)
	}
}
