package healthcheck

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"
)

// Target is one thing to keep checked, usually a (VIP, backend) pair.
type Target struct {
	ID      string // chosen by the caller, e.g. "vip|backend"
	Spec    Spec
	StartUp bool // begin up (needs Fall failures) rather than down (needs Rise successes)
}

// Status is what a Manager knows of a target now.
type Status struct {
	Up     bool
	Known  bool          // a probe result was seen
	Reason string        // of the last result; empty before the first
	Since  time.Time     // when Up last changed (or the target was added)
	RTT    time.Duration // of the last probe
}

// Transition is a target changing between up and down.
type Transition struct {
	ID     string
	Up     bool
	Reason string
	At     time.Time
}

// Options configure a Manager. Every field is optional. The hooks are
// called from probe loops, concurrently, and must not block.
type Options struct {
	Clock  Clock  // default RealClock()
	Prober Prober // default NewProber()
	Logger *slog.Logger

	OnProbe      func(k Kind, d time.Duration, ok bool) // every probe: duration histogram
	OnTransition func(Transition)                       // once per target and transition
	// OnLag is how late each probe started against its schedule: the
	// measure of a checker falling behind (timer slack, starved CPU).
	OnLag func(k Kind, lag time.Duration)
}

// Manager probes targets and keeps their up/down state. Targets with equal
// Specs (after defaults) share one probe loop; each keeps its own state
// machine, so that StartUp and rise/fall progress stay per target.
type Manager struct {
	clock   Clock
	prober  Prober
	log     *slog.Logger
	opts    Options
	changes chan struct{}

	mu      sync.Mutex
	entries map[string]*entry
	loops   map[specKey]*loop
	ctx     context.Context // of Run; nil before it
	stopped bool            // Run is over: no loop starts any more
	wg      sync.WaitGroup  // running loops
}

type entry struct {
	id      string
	spec    Spec  // normalized
	loop    *loop // nil for an invalid Spec
	machine machine
}

// loop is one probe schedule, shared by the entries whose Spec equals its.
type loop struct {
	key    specKey
	spec   Spec
	ids    map[string]*entry
	cancel context.CancelFunc // nil until started
	timer  Timer              // of the next round; nil until armed
	rtt    time.Duration      // of the last probe
}

// NewManager returns a Manager with no targets; probes start with Run.
func NewManager(o Options) *Manager {
	m := &Manager{
		clock:   o.Clock,
		prober:  o.Prober,
		log:     o.Logger,
		opts:    o,
		changes: make(chan struct{}, 1),
		entries: make(map[string]*entry),
		loops:   make(map[specKey]*loop),
	}
	if m.clock == nil {
		m.clock = RealClock()
	}
	if m.prober == nil {
		m.prober = NewProber()
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	return m
}

// Run runs the probe loops until ctx is done, then waits for them to end.
// A Manager runs once.
func (m *Manager) Run(ctx context.Context) {
	m.mu.Lock()
	if m.ctx != nil {
		m.mu.Unlock()
		m.log.Error("health check manager already ran")
		return
	}
	m.ctx = ctx
	for _, l := range m.loops {
		m.start(l)
	}
	m.mu.Unlock()

	<-ctx.Done()
	m.mu.Lock()
	m.stopped = true
	m.mu.Unlock()
	m.wg.Wait()
}

// Set makes targets the whole set of checked targets: new IDs start (from
// their StartUp state), missing IDs stop, and an ID whose Spec changed
// moves to the loop of its new Spec keeping its up/down state. A loop stops
// when no ID uses its Spec any more. Of repeated IDs the last counts. A
// target with an invalid Spec is logged and keeps its state without probes.
func (m *Manager) Set(targets []Target) {
	want := make(map[string]Target, len(targets))
	for _, t := range targets {
		want[t.ID] = t
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.clock.Now()
	for id, e := range m.entries {
		if _, ok := want[id]; !ok {
			m.detach(e)
			delete(m.entries, id)
		}
	}
	for id, t := range want {
		spec := t.Spec.normalized()
		e := m.entries[id]
		if e != nil && e.spec.key() == spec.key() {
			continue
		}
		if e == nil {
			e = &entry{id: id, machine: newMachine(spec.Rise, spec.Fall, t.StartUp, now)}
			m.entries[id] = e
		} else {
			m.detach(e)
			e.machine.retune(spec.Rise, spec.Fall)
		}
		e.spec = spec
		if err := spec.Validate(); err != nil {
			m.log.Error("health check not started", "id", id, "target", spec.Target.String(), "err", err)
			continue
		}
		m.attach(e)
	}
}

// Status returns the state of the target id.
func (m *Manager) Status(id string) (Status, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.entries[id]
	if e == nil {
		return Status{}, false
	}
	st := Status{Up: e.machine.up, Known: e.machine.known, Reason: e.machine.reason, Since: e.machine.since}
	if e.loop != nil {
		st.RTT = e.loop.rtt
	}
	return st, true
}

// Changes signals after transitions. Signals coalesce (buffer 1): a reader
// woken by it reads the Status of every target it cares about.
func (m *Manager) Changes() <-chan struct{} { return m.changes }

// attach puts e in the loop of its Spec, starting one if none runs.
// m.mu is held.
func (m *Manager) attach(e *entry) {
	k := e.spec.key()
	l := m.loops[k]
	if l == nil {
		l = &loop{key: k, spec: e.spec, ids: make(map[string]*entry)}
		m.loops[k] = l
		m.start(l)
	}
	l.ids[e.id] = e
	e.loop = l
}

// detach takes e out of its loop and stops the loop if it was the last
// user. m.mu is held.
func (m *Manager) detach(e *entry) {
	l := e.loop
	if l == nil {
		return
	}
	e.loop = nil
	delete(l.ids, e.id)
	if len(l.ids) > 0 {
		return
	}
	delete(m.loops, l.key)
	if l.cancel != nil {
		l.cancel()
	}
	if l.timer != nil {
		l.timer.Stop()
	}
}

// start runs l if Run is running. m.mu is held.
func (m *Manager) start(l *loop) {
	if m.ctx == nil || m.stopped {
		return
	}
	ctx, cancel := context.WithCancel(m.ctx)
	l.cancel = cancel
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer cancel()
		m.probeLoop(ctx, l)
	}()
}

// probeLoop probes l.spec until ctx is done. It starts at a random offset
// in [0, interval) and adds ±10% jitter per round, so that loops set up
// together spread out and stay spread. The probe runs in this goroutine,
// so a loop never overlaps itself; a round that starts late (a probe that
// overran, a starved CPU) re-anchors the schedule there, so the loop goes
// on with one late probe and not a burst of missed rounds.
func (m *Manager) probeLoop(ctx context.Context, l *loop) {
	spec := l.spec // immutable: a changed Spec is another loop
	due := m.clock.Now().Add(randBelow(spec.Interval))
	for {
		t, ok := m.arm(ctx, l, due)
		if !ok {
			return
		}
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
		if ctx.Err() != nil {
			return // stopped while the timer fired
		}
		start := m.clock.Now()
		if m.opts.OnLag != nil {
			m.opts.OnLag(spec.Kind, max(start.Sub(due), 0))
		}
		if start.After(due) {
			due = start
		}
		pctx, cancel := context.WithTimeout(ctx, spec.Timeout)
		res := m.prober.Probe(pctx, spec)
		cancel()
		if ctx.Err() != nil {
			return // stopped mid-probe: the result is of no use
		}
		end := m.clock.Now()
		if m.opts.OnProbe != nil {
			m.opts.OnProbe(spec.Kind, end.Sub(start), res.OK)
		}
		m.record(l, res, end, end.Sub(start))
		due = due.Add(jittered(spec.Interval))
	}
}

// arm sets the timer of l's next round, under m.mu so that detach stops
// it: once Set returns, a removed loop has no timer left and starts no
// probe. It reports false if the loop was stopped.
func (m *Manager) arm(ctx context.Context, l *loop, due time.Time) (Timer, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if ctx.Err() != nil {
		return nil, false
	}
	l.timer = m.clock.NewTimer(due.Sub(m.clock.Now()))
	return l.timer, true
}

// record feeds one result to every target of l and reports transitions:
// to OnTransition per target, to the log once per result.
func (m *Manager) record(l *loop, res Result, at time.Time, rtt time.Duration) {
	if res.Reason == "" {
		res.Reason = ReasonOK
		if !res.OK {
			res.Reason = "failed"
		}
	}
	var moved []Transition
	m.mu.Lock()
	if m.loops[l.key] != l {
		m.mu.Unlock()
		return // removed while probing
	}
	l.rtt = rtt
	for id, e := range l.ids {
		if e.machine.observe(res.OK, res.Reason, at) {
			moved = append(moved, Transition{ID: id, Up: res.OK, Reason: res.Reason, At: at})
		}
	}
	m.mu.Unlock()
	if len(moved) == 0 {
		return
	}
	slices.SortFunc(moved, func(a, b Transition) int { return strings.Compare(a.ID, b.ID) })
	// All of them went the same way for the same reason: one line, with
	// the IDs counted (a server behind 1,000 VIPs is one event). Debug:
	// the reconciler logs each (VIP, backend) change once at Info.
	m.log.Debug("health check transition", "target", l.spec.Target.String(), "kind", string(l.spec.Kind),
		"up", res.OK, "reason", res.Reason, "ids", len(moved), "first_id", moved[0].ID)
	if m.opts.OnTransition != nil {
		for _, tr := range moved {
			m.opts.OnTransition(tr)
		}
	}
	select {
	case m.changes <- struct{}{}:
	default:
	}
}

// randBelow returns a random duration in [0, d).
func randBelow(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d)
}

// jittered returns d ±10%, uniformly.
func jittered(d time.Duration) time.Duration {
	j := d / 10
	if j <= 0 {
		return d
	}
	return d - j + rand.N(2*j+1)
}
