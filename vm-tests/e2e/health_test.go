package e2e

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/xdplb/xdplb/control/api"
	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/internal/lab"
)

// Health checking as the tests configure it: the numbers.
const (
	checkInterval = 200 * time.Millisecond
	checkRise     = 2
	checkFall     = 3
	// maxDetection is the bound on how long a dead backend may
	// still get new connections.
	maxDetection = 1500 * time.Millisecond
	// resumeSlack is what a recovery may take beyond rise*interval: the
	// random first probe offset and ±10% jitter, the reconcile, the map
	// writes.
	resumeSlack = 800 * time.Millisecond
)

// Client ports of the different clients, so that every connection of a
// test is a distinct 5-tuple the SYN trackers can name.
const (
	streamPort    = 30000
	streamPort2   = 36000
	keepAlivePort = 45000
)

// addCheckedVIP adds an IPv4 DR VIP on port 80 with an HTTP check every
// 200ms (timeout 100ms, rise 2, fall 3) and all three backends, and waits
// until every backend has passed its checks.
func (e *env) addCheckedVIP() (netip.AddrPort, string) {
	e.t.Helper()
	target := netip.AddrPortFrom(lab.VIP4, lab.HTTPPort)
	vip := target.String() + "/tcp"
	e.cli("vip", "add", vip, "--mode", "dr", "--check", "http",
		"--check-interval", checkInterval.String(), "--check-timeout", "100ms",
		"--rise", fmt.Sprint(checkRise), "--fall", fmt.Sprint(checkFall))
	for _, be := range e.lab.Backends {
		e.cli("backend", "add", vip, be.IPv4.String())
	}
	// Backends added to a running daemon start down and need rise passes.
	bs, err := e.d.WaitBackendsUp(e.ctx, vip, len(e.lab.Backends), 10*time.Second)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, b := range bs {
		if b.Check == "" {
			e.t.Errorf("backend list shows no check result for %s although the VIP has an http check: %+v", b.Address, b)
		}
	}
	return target, vip
}

// trackSYNs makes every backend remember the client port of each SYN it
// receives for target: the ground truth of where each connection went, also
// for connections that failed.
func (e *env) trackSYNs(target netip.AddrPort) {
	e.t.Helper()
	match := fmt.Sprintf("ip daddr %s tcp dport %d", target.Addr(), target.Port())
	for _, be := range e.lab.Backends {
		if err := be.TrackSYNs(e.ctx, match); err != nil {
			e.t.Fatal(err)
		}
	}
}

// synOwners maps each client port to the backends that received a SYN
// from it.
func (e *env) synOwners() map[uint16][]string {
	e.t.Helper()
	out := map[uint16][]string{}
	for _, be := range e.lab.Backends {
		ports, err := be.SYNPorts(e.ctx)
		if err != nil {
			e.t.Fatal(err)
		}
		for p := range ports {
			out[p] = append(out[p], be.Name)
		}
	}
	return out
}

// owner returns the one backend a connection's SYN reached, or a
// description of what went wrong ("none", "be1+be2").
func owner(owners map[uint16][]string, a lab.Attempt) (string, bool) {
	names := owners[a.Port]
	switch len(names) {
	case 1:
		return names[0], true
	case 0:
		return "none", false
	default:
		sort.Strings(names)
		return strings.Join(names, "+"), false
	}
}

func ms(d time.Duration) string { return d.Round(time.Millisecond).String() }

// describe is one attempt in a failure message.
func describe(a lab.Attempt, t0 time.Time) string {
	s := fmt.Sprintf("#%d port %d at T0%+dms", a.Seq, a.Port, a.Start.Sub(t0).Milliseconds())
	if a.Err != nil {
		return s + fmt.Sprintf(": %s (%v)", a.Kind, a.Err)
	}
	return s + ": answered by " + a.Backend
}

// stopStream ends a stream (bounded: it only waits for connections in
// flight, each bounded by its timeout).
func stopStream(t *testing.T, s *lab.Stream) []lab.Attempt {
	t.Helper()
	as := s.Stop()
	if n := s.Skipped(); n > 0 {
		t.Logf("stream skipped %d ticks with too many connections in flight", n)
	}
	return as
}

// A backend whose server dies leaves the rotation within 1.5s while a
// client opens connections continuously; connections to the other two never
// fail; restarted, it gets new connections again after rise passes.
func TestFailover(t *testing.T) {
	e := setup(t)
	target, vip := e.addCheckedVIP()
	e.trackSYNs(target)
	be2 := e.lab.Backend("be2")

	stream := e.lab.Client.StartStream(e.ctx, target, lab.StreamOptions{
		Interval: 10 * time.Millisecond, Duration: 12 * time.Second, Timeout: time.Second, FirstPort: streamPort,
	})
	defer stream.Stop()
	time.Sleep(time.Second) // every backend takes connections

	t0 := time.Now()
	if err := e.servers["be2"].Stop(); err != nil {
		t.Fatal(err)
	}
	down, seenDown, err := e.d.WaitBackendState(e.ctx, vip, be2.IPv4, model.BackendDown, 3*time.Second)
	if err != nil {
		stopStream(t, stream)
		t.Fatalf("be2's server stopped at T0; the daemon did not report it down: %v", err)
	}
	t.Logf("daemon: be2 down, seen by backend list at T0+%s, check_since T0+%s, check %q",
		ms(seenDown.Sub(t0)), ms(down.CheckSince.Sub(t0)), down.Check)
	if !strings.Contains(down.Check, "refused") {
		t.Errorf("be2's check result is %q; a stopped server refuses connections (want \"connect refused\")", down.Check)
	}
	// Traffic for a while after detection shows be2 stays out of rotation.
	time.Sleep(time.Until(t0.Add(2500 * time.Millisecond)))

	t1 := time.Now()
	if err := e.servers["be2"].Start(); err != nil {
		t.Fatal(err)
	}
	up, seenUp, err := e.d.WaitBackendState(e.ctx, vip, be2.IPv4, model.BackendUp, 3*time.Second)
	if err != nil {
		stopStream(t, stream)
		t.Fatalf("be2's server restarted at T1; the daemon did not report it up: %v", err)
	}
	t.Logf("daemon: be2 up again, seen by backend list at T1+%s, check_since T1+%s",
		ms(seenUp.Sub(t1)), ms(up.CheckSince.Sub(t1)))
	time.Sleep(700 * time.Millisecond) // be2 takes new connections again
	as := stopStream(t, stream)
	owners := e.synOwners()

	type phase struct{ ok, failed map[string]int }
	phases := map[string]*phase{}
	count := func(name, be string, ok bool) {
		p := phases[name]
		if p == nil {
			p = &phase{map[string]int{}, map[string]int{}}
			phases[name] = p
		}
		if ok {
			p.ok[be]++
		} else {
			p.failed[be]++
		}
	}
	var (
		lastToBe2   = -1 // index of the last connection after T0 and before T1 that reached be2
		firstBackOK = -1 // first connection after T1 answered by be2
		bad         []string
	)
	for i, a := range as {
		be, known := owner(owners, a)
		ph := "before T0"
		switch {
		case !a.Start.Before(t1):
			ph = "after T1"
		case !a.Start.Before(t0):
			ph = "T0-T1"
		}
		count(ph, be, a.Err == nil)
		switch {
		case !known:
			bad = append(bad, fmt.Sprintf("%s: SYN reached %s", describe(a, t0), be))
			continue
		case a.Err == nil && a.Backend != be:
			bad = append(bad, fmt.Sprintf("%s, but its SYN reached %s", describe(a, t0), be))
		case a.Err != nil && be != "be2":
			bad = append(bad, fmt.Sprintf("%s: failed on %s, which was healthy all along", describe(a, t0), be))
		case a.Err != nil && ph == "before T0" && a.End.Before(t0):
			bad = append(bad, fmt.Sprintf("%s: failed on be2 before its server stopped", describe(a, t0)))
		case a.Err != nil && ph == "after T1":
			bad = append(bad, fmt.Sprintf("%s: failed on be2 after its server restarted", describe(a, t0)))
		}
		if be == "be2" && ph == "T0-T1" {
			lastToBe2 = i
			if a.Start.After(seenDown) {
				bad = append(bad, fmt.Sprintf("%s: reached be2 after the daemon reported it down (T0+%s)", describe(a, t0), ms(seenDown.Sub(t0))))
			}
		}
		if be == "be2" && ph == "after T1" && a.Err == nil && firstBackOK < 0 {
			firstBackOK = i
		}
	}
	for _, name := range []string{"before T0", "T0-T1", "after T1"} {
		if p := phases[name]; p != nil {
			t.Logf("%-9s ok by backend %v, failed by backend %v", name, p.ok, p.failed)
		}
	}
	if len(bad) > 0 {
		t.Errorf("%d of %d connections misbehaved:\n  %s", len(bad), len(as), strings.Join(bad[:min(len(bad), 20)], "\n  "))
	}
	if p := phases["before T0"]; p == nil || len(p.ok) != 3 {
		t.Errorf("before T0 not every backend took connections: %+v", p)
	}

	// Detection: the first moment after which no new connection reached be2,
	// bounded by the last connection that did and the next one after it.
	var lower, upper time.Duration
	if lastToBe2 >= 0 {
		lower = as[lastToBe2].Start.Sub(t0)
		upper = lower + 10*time.Millisecond
		if lastToBe2+1 < len(as) {
			upper = as[lastToBe2+1].Start.Sub(t0)
		}
	}
	refused := 0
	if p := phases["T0-T1"]; p != nil {
		refused = p.failed["be2"]
	}
	t.Logf("MEASURED detection: last new connection to be2 at T0+%s, none from T0+%s on (daemon reported down at T0+%s); %d connections to be2 failed meanwhile",
		ms(lower), ms(upper), ms(seenDown.Sub(t0)), refused)
	t.Logf("MEASURED data plane lag: be2's last new connection came %s after the daemon's down transition (check_since)", ms(lower-down.CheckSince.Sub(t0)))
	if upper >= maxDetection {
		t.Errorf("detection took %s, want < %s", ms(upper), maxDetection)
	}
	// Each transition is logged once, with its reason.
	var be2Lines []string
	downs := 0
	for _, line := range strings.Split(e.d.Log(), "\n") {
		if !strings.Contains(line, "backend="+be2.IPv4.String()+" ") && !strings.Contains(line, "target="+netip.AddrPortFrom(be2.IPv4, lab.HTTPPort).String()+" ") {
			continue
		}
		be2Lines = append(be2Lines, line)
		if strings.Contains(line, `msg="backend down"`) {
			downs++
			if !strings.Contains(line, "refused") {
				t.Errorf("the daemon logged be2 down without the reason (connect refused): %s", line)
			}
		}
	}
	t.Logf("daemon log about be2:\n  %s", strings.Join(be2Lines, "\n  "))
	if downs != 1 {
		t.Errorf("the daemon logged %d \"backend down\" lines for be2, want exactly 1", downs)
	}
	if firstBackOK < 0 {
		t.Errorf("be2 got no new connection in the %s after its server restarted", ms(time.Since(t1)))
	} else {
		back := as[firstBackOK].Start.Sub(t1)
		t.Logf("MEASURED recovery: be2's server restarted at T1, first new connection to it at T1+%s (up transition at T1+%s, seen by backend list at T1+%s; rise %d x %s)",
			ms(back), ms(up.CheckSince.Sub(t1)), ms(seenUp.Sub(t1)), checkRise, checkInterval)
		if lim := checkRise*checkInterval + resumeSlack; back > lim {
			t.Errorf("be2 came back after %s, want within rise*interval + slack = %s", ms(back), lim)
		}
	}
}

// An operator drains a backend that holds long-lived connections while new
// connections keep coming: the long-lived ones keep working on the same
// backend to the end, new ones go elsewhere, and the backend can be deleted
// without --force once its connections are closed.
func TestDrainUnderLoad(t *testing.T) {
	e := setup(t)
	target := netip.AddrPortFrom(lab.VIP4, lab.HTTPPort)
	vip := target.String() + "/tcp"
	e.addVIP(vip, func(n *lab.Node) netip.Addr { return n.IPv4 })
	e.trackSYNs(target)

	const conns = 6
	ka, err := e.lab.Client.OpenKeepAlive(e.ctx, target, lab.KeepAliveOptions{
		Conns: conns, Every: 50 * time.Millisecond, Timeout: time.Second, FirstPort: keepAlivePort,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ka.Close()
	perBackend := map[string]int{}
	for _, r := range ka.Results() {
		perBackend[r.Backend]++
	}
	// Drain the backend holding the most long-lived connections (at least
	// two of six over three backends).
	var drained *lab.Node
	for _, be := range e.lab.Backends {
		if drained == nil || perBackend[be.Name] > perBackend[drained.Name] {
			drained = be
		}
	}
	held := perBackend[drained.Name]
	t.Logf("long-lived connections by backend %v; draining %s (%s), which holds %d", perBackend, drained.Name, drained.IPv4, held)

	stream := e.lab.Client.StartStream(e.ctx, target, lab.StreamOptions{
		Interval: 20 * time.Millisecond, Duration: 12 * time.Second, Timeout: time.Second, FirstPort: streamPort,
	})
	defer stream.Stop()
	time.Sleep(500 * time.Millisecond)

	e.cli("backend", "set", vip, drained.IPv4.String(), "--drain")
	tDrain := time.Now()
	st, _, err := e.d.WaitBackend(e.ctx, vip, drained.IPv4, 2*time.Second, func(b api.BackendStatus) bool {
		return b.State == model.BackendDraining && b.Flows >= held
	})
	if err != nil {
		t.Errorf("after the drain, backend list does not show %s draining with its %d open connections: %v", drained.Name, held, err)
	}
	// Once the stream's last connections to it have closed, the only open
	// flows left are the long-lived ones.
	st, _, err = e.d.WaitBackend(e.ctx, vip, drained.IPv4, time.Second, func(b api.BackendStatus) bool {
		return b.State == model.BackendDraining && b.Flows == held
	})
	if err != nil {
		t.Errorf("backend list shows %d open flows on draining %s, want exactly its %d long-lived connections: %v", st.Flows, drained.Name, held, err)
	}
	t.Logf("backend list after the drain: %s state %s weight %d flows %d", drained.Name, st.State, st.Weight, st.Flows)

	// With open flows a plain delete is refused and asks for --force.
	out, err := e.d.CLI(e.ctx, "backend", "del", vip, drained.IPv4.String())
	if err == nil {
		t.Errorf("backend del of %s with %d open flows succeeded (output %q); want it refused without --force", drained.Name, held, out)
	} else {
		if !strings.Contains(err.Error(), "force") {
			t.Errorf("backend del with open flows failed without mentioning --force: %v", err)
		}
		t.Logf("backend del with open flows refused: %v", err)
	}
	if _, found := lab.FindBackend(e.backends(vip), drained.IPv4); !found {
		t.Fatalf("%s vanished from backend list after a refused delete", drained.Name)
	}

	time.Sleep(1500 * time.Millisecond) // load continues on the draining backend's open connections
	rs := ka.Close()
	tClosed := time.Now()
	st, seen0, err := e.d.WaitBackend(e.ctx, vip, drained.IPv4, 3*time.Second, func(b api.BackendStatus) bool { return b.Flows == 0 })
	if err != nil {
		t.Errorf("open flows of %s did not drop to 0 after its connections closed (FIN): %v", drained.Name, err)
	} else {
		t.Logf("MEASURED drain: open flows of %s at 0 %s after the long-lived connections closed", drained.Name, ms(seen0.Sub(tClosed)))
		e.cli("backend", "del", vip, drained.IPv4.String())
		if _, found := lab.FindBackend(e.backends(vip), drained.IPv4); found {
			t.Errorf("%s still listed after backend del", drained.Name)
		}
	}
	time.Sleep(300 * time.Millisecond) // new connections after the delete
	as := stopStream(t, stream)
	owners := e.synOwners()

	requests := 0
	for _, r := range rs {
		requests += r.Requests
		if r.Failures != 0 || !r.Closed {
			t.Errorf("long-lived connection from port %d (on %s) failed after %d requests: %v", r.Port, r.Backend, r.Requests, r.Err)
		}
		if len(r.Answers) != 1 || r.Answers[r.Backend] != r.Requests {
			t.Errorf("long-lived connection from port %d moved: answers %v", r.Port, r.Answers)
		}
		if r.Requests < 30 {
			t.Errorf("long-lived connection from port %d made only %d requests", r.Port, r.Requests)
		}
	}
	t.Logf("long-lived: %d connections, %d requests, all answered by their first backend", len(rs), requests)

	before, after := map[string]int{}, map[string]int{}
	var bad []string
	for _, a := range as {
		be, known := owner(owners, a)
		switch {
		case !known:
			bad = append(bad, fmt.Sprintf("%s: SYN reached %s", describe(a, tDrain), be))
		case a.Err != nil:
			bad = append(bad, fmt.Sprintf("%s: failed on %s", describe(a, tDrain), be))
		case a.Backend != be:
			bad = append(bad, fmt.Sprintf("%s, but its SYN reached %s", describe(a, tDrain), be))
		}
		if a.Start.Before(tDrain) {
			before[be]++
			continue
		}
		after[be]++
		if be == drained.Name {
			bad = append(bad, fmt.Sprintf("%s: a new connection reached draining %s", describe(a, tDrain), be))
		}
	}
	t.Logf("new connections by backend: before the drain %v, after %v", before, after)
	if len(bad) > 0 {
		t.Errorf("%d of %d new connections misbehaved (times relative to the drain):\n  %s", len(bad), len(as), strings.Join(bad[:min(len(bad), 20)], "\n  "))
	}
	if before[drained.Name] == 0 {
		t.Errorf("%s took no new connections before the drain: the test proves nothing", drained.Name)
	}
}

// backends returns `backend list VIP`.
func (e *env) backends(vip string) []api.BackendStatus {
	e.t.Helper()
	bs, err := e.d.Backends(e.ctx, vip)
	if err != nil {
		e.t.Fatal(err)
	}
	return bs
}

// With every server dead, clients get no answer at all (never a RST from a
// wrong server), the drop counter rises, and service resumes once one server
// is back.
func TestAllBackendsDown(t *testing.T) {
	e := setup(t)
	target, vip := e.addCheckedVIP()
	e.trackSYNs(target)
	if err := e.lab.Client.AddCounters(e.ctx, lab.CounterRule{
		Name: "fromvip", Hook: "input", Match: fmt.Sprintf("ip saddr %s tcp sport %d", target.Addr(), target.Port()),
	}); err != nil {
		t.Fatal(err)
	}
	if res := e.load(target, 30); len(res.ByBackend) != 3 {
		t.Fatalf("before the test only %v answered", res.Names())
	}
	const series = "xdplb_drops_total"
	dropsBefore, err := lab.MetricValue(e.metrics(), series, "reason", "no_healthy_backend")
	if err != nil {
		t.Logf("before: %v (counting from 0)", err)
	}

	t0 := time.Now()
	for _, s := range e.servers {
		if err := s.Stop(); err != nil {
			t.Fatal(err)
		}
	}
	for _, be := range e.lab.Backends {
		if _, _, err := e.d.WaitBackendState(e.ctx, vip, be.IPv4, model.BackendDown, 3*time.Second); err != nil {
			t.Fatalf("every server stopped at T0: %v", err)
		}
	}
	tDown := time.Now()
	t.Logf("MEASURED all down: the daemon reported all three backends down by T0+%s", ms(tDown.Sub(t0)))

	fromVIP, err := e.lab.Client.ReadCounter(e.ctx, "fromvip")
	if err != nil {
		t.Fatal(err)
	}
	silent := e.lab.Client.StartStream(e.ctx, target, lab.StreamOptions{
		Interval: 50 * time.Millisecond, Duration: time.Second, Timeout: 800 * time.Millisecond, FirstPort: streamPort,
	})
	<-silent.Done() // bounded by its duration plus one timeout
	as := stopStream(t, silent)
	fromVIPAfter, err := e.lab.Client.ReadCounter(e.ctx, "fromvip")
	if err != nil {
		t.Fatal(err)
	}
	owners := e.synOwners()
	kinds := map[lab.ErrKind]int{}
	var bad []string
	for _, a := range as {
		kinds[a.Kind]++
		if a.Kind != lab.ErrTimeout {
			bad = append(bad, describe(a, t0)+" (want a connect timeout)")
		}
		if be, _ := owner(owners, a); be != "none" {
			bad = append(bad, fmt.Sprintf("%s: SYN reached %s, a dead backend", describe(a, t0), be))
		}
	}
	t.Logf("all down: %d new connections, outcomes %v, %d packets from the VIP reached the client", len(as), kinds, fromVIPAfter.Packets-fromVIP.Packets)
	if len(as) < 10 {
		t.Errorf("only %d connections tried while all backends were down", len(as))
	}
	if len(bad) > 0 {
		t.Errorf("with every backend down, %d of %d connections got an answer of some kind:\n  %s", len(bad), len(as), strings.Join(bad[:min(len(bad), 20)], "\n  "))
	}
	if n := fromVIPAfter.Packets - fromVIP.Packets; n != 0 {
		t.Errorf("%d packets from the VIP reached the client while every backend was down, want none", n)
	}
	dropsAfter, err := lab.MetricValue(e.metrics(), series, "reason", "no_healthy_backend")
	if err != nil {
		t.Errorf("/metrics: %v", err)
	}
	grew := dropsAfter - dropsBefore
	t.Logf("%s grew by %.0f (%.0f -> %.0f)", lab.Series(series, "reason", "no_healthy_backend"), grew, dropsBefore, dropsAfter)
	if grew < float64(len(as)) {
		t.Errorf("%s grew by %.0f, want at least one drop per connection attempt (%d)", lab.Series(series, "reason", "no_healthy_backend"), grew, len(as))
	}
	if st := e.stats(); st.Drops["no_backend"] != 0 {
		t.Errorf("stats count %d drops as no_backend; with backends configured but dead they are no_healthy_backend", st.Drops["no_backend"])
	}

	// One server returns: service resumes within rise*interval + slack.
	be1 := e.lab.Backend("be1")
	t1 := time.Now()
	if err := e.servers["be1"].Start(); err != nil {
		t.Fatal(err)
	}
	resume := e.lab.Client.StartStream(e.ctx, target, lab.StreamOptions{
		Interval: 20 * time.Millisecond, Duration: 5 * time.Second, Timeout: time.Second, FirstPort: streamPort2,
	})
	defer resume.Stop()
	_, seenUp, err := e.d.WaitBackendState(e.ctx, vip, be1.IPv4, model.BackendUp, 3*time.Second)
	if err != nil {
		stopStream(t, resume)
		t.Fatalf("be1's server restarted at T1: %v", err)
	}
	time.Sleep(time.Until(seenUp.Add(1500 * time.Millisecond)))
	as = stopStream(t, resume)
	// Service is back from the first connection after which all succeed.
	first := len(as)
	for i := len(as) - 1; i >= 0 && as[i].Err == nil; i-- {
		first = i
	}
	if first == len(as) || len(as)-first < 20 {
		t.Fatalf("service did not resume: %d of %d connections at the end succeeded; last: %s", len(as)-first, len(as), describe(as[len(as)-1], t1))
	}
	back := as[first].Start.Sub(t1)
	t.Logf("MEASURED resume: be1 restarted at T1; every connection from T1+%s on succeeded (%d of them); daemon reported be1 up at T1+%s",
		ms(back), len(as)-first, ms(seenUp.Sub(t1)))
	if lim := checkRise*checkInterval + resumeSlack; back > lim {
		t.Errorf("service resumed %s after be1 returned, want within rise*interval + slack = %s", ms(back), lim)
	}
	for _, a := range as {
		if a.Err == nil && a.Backend != "be1" {
			t.Errorf("%s: only be1 is alive", describe(a, t1))
		}
		if a.Err != nil && a.Kind != lab.ErrTimeout {
			t.Errorf("%s: before recovery a connection must go unanswered, not fail otherwise", describe(a, t1))
		}
	}
}

// TestFallbackServer: a VIP's fallback ("sorry") server takes no flow
// while a backend is up, every new flow once all are down, and none again
// once one is back (issue 12).
func TestFallbackServer(t *testing.T) {
	e := setup(t)
	target := netip.AddrPortFrom(lab.VIP4, lab.HTTPPort)
	vip := target.String() + "/tcp"
	sorry := e.lab.Backend("be3")
	e.cli("vip", "add", vip, "--mode", "dr", "--check", "http",
		"--check-interval", checkInterval.String(), "--check-timeout", "100ms",
		"--rise", fmt.Sprint(checkRise), "--fall", fmt.Sprint(checkFall), "--fallback", sorry.IPv4.String())
	for _, name := range []string{"be1", "be2"} {
		e.cli("backend", "add", vip, e.lab.Backend(name).IPv4.String())
	}
	if _, err := e.d.WaitBackendsUp(e.ctx, vip, 2, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	answered := func(want ...string) {
		t.Helper()
		res := e.load(target, 40)
		if got := res.Names(); !slices.Equal(got, want) {
			t.Fatalf("answered by %v, want %v", got, want)
		}
	}
	answered("be1", "be2")

	for _, name := range []string{"be1", "be2"} {
		if err := e.servers[name].Stop(); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"be1", "be2"} {
		if _, _, err := e.d.WaitBackendState(e.ctx, vip, e.lab.Backend(name).IPv4, model.BackendDown, 3*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	answered("be3")

	if err := e.servers["be1"].Start(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.d.WaitBackendState(e.ctx, vip, e.lab.Backend("be1").IPv4, model.BackendUp, 3*time.Second); err != nil {
		t.Fatal(err)
	}
	answered("be1")
}

// TestVIPSetKeepsFlows: vip set of the scheduler and every check option,
// on a real daemon under traffic, breaks no open connection, and new ones
// keep succeeding; a change of mode is refused while flows are open
// (issue 12).
func TestVIPSetKeepsFlows(t *testing.T) {
	e := setup(t)
	target, vip := e.addCheckedVIP()
	ka, err := e.lab.Client.OpenKeepAlive(e.ctx, target, lab.KeepAliveOptions{
		Conns: 12, Every: 50 * time.Millisecond, FirstPort: keepAlivePort,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ka.Close()
	stream := e.lab.Client.StartStream(e.ctx, target, lab.StreamOptions{
		Interval: 20 * time.Millisecond, Duration: 3 * time.Second, Timeout: time.Second, FirstPort: streamPort,
	})
	for _, args := range [][]string{
		{"--check-interval", "300ms", "--rise", "3", "--fall", "4"},
		{"--check", "tcp", "--check-timeout", "150ms"},
		{"--scheduler", "sh"},
		{"--check", "http", "--check-path", "/", "--check-expect", "200-299"},
		{"--scheduler", "maglev", "--no-announce"},
		{"--announce"},
	} {
		e.cli(append([]string{"vip", "set", vip}, args...)...)
		time.Sleep(300 * time.Millisecond)
	}
	out, err := e.d.CLI(e.ctx, "vip", "set", vip, "--mode", "nat")
	if err == nil || !strings.Contains(err.Error(), "open flows") {
		t.Errorf("mode change with open flows: %v %s, want refused naming the open flows", err, out)
	}
	as := stopStreamWhenDone(t, stream)
	for _, a := range as {
		if a.Err != nil {
			t.Errorf("new connection during vip set: %s", describe(a, as[0].Start))
		}
	}
	for _, r := range ka.Close() {
		if r.Failures != 0 || r.Requests < 20 {
			t.Errorf("keep-alive connection from port %d: %d requests, %d failures (%v)", r.Port, r.Requests, r.Failures, r.Err)
		}
	}
	var vips []model.VIP
	if err := e.d.CLIJSON(e.ctx, &vips, "vip", "list"); err != nil {
		t.Fatal(err)
	}
	if len(vips) != 1 || vips[0].HealthCheck == nil || vips[0].HealthCheck.Type != "http" || vips[0].Scheduler != "maglev" {
		t.Errorf("after vip set: %+v", vips)
	}
}

// TestBackupPoolFailover: a VIP's primary pool (be1, be2) fails; new
// connections go to the backup pool (be3) once the daemon sees it, and
// back to the primary when one of its servers returns. No connection fails
// but those a dead primary backend took before it was seen down (issue 24).
func TestBackupPoolFailover(t *testing.T) {
	e := setup(t)
	target := netip.AddrPortFrom(lab.VIP4, lab.HTTPPort)
	vip := target.String() + "/tcp"
	e.cli("vip", "add", vip, "--mode", "dr", "--check", "http",
		"--check-interval", checkInterval.String(), "--check-timeout", "100ms",
		"--rise", fmt.Sprint(checkRise), "--fall", fmt.Sprint(checkFall))
	e.cli("backend", "add", vip, e.lab.Backend("be1").IPv4.String())
	e.cli("backend", "add", vip, e.lab.Backend("be2").IPv4.String())
	e.cli("backend", "add", vip, e.lab.Backend("be3").IPv4.String(), "--priority", "1")
	if _, err := e.d.WaitBackendsUp(e.ctx, vip, 3, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if res := e.load(target, 40); !slices.Equal(res.Names(), []string{"be1", "be2"}) {
		t.Fatalf("with the primary pool up, answered by %v", res.Names())
	}
	e.trackSYNs(target)
	stream := e.lab.Client.StartStream(e.ctx, target, lab.StreamOptions{
		Interval: 20 * time.Millisecond, Duration: 6 * time.Second, Timeout: time.Second, FirstPort: streamPort,
	})
	time.Sleep(500 * time.Millisecond)
	t0 := time.Now()
	for _, name := range []string{"be1", "be2"} {
		if err := e.servers[name].Stop(); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"be1", "be2"} {
		if _, _, err := e.d.WaitBackendState(e.ctx, vip, e.lab.Backend(name).IPv4, model.BackendDown, 3*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	tDown := time.Now()
	time.Sleep(time.Second)
	t1 := time.Now()
	if err := e.servers["be1"].Start(); err != nil {
		t.Fatal(err)
	}
	_, seenUp, err := e.d.WaitBackendState(e.ctx, vip, e.lab.Backend("be1").IPv4, model.BackendUp, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	as := stopStreamWhenDone(t, stream)
	owners := e.synOwners()
	var bad []string
	byPhase := map[string]map[string]int{"primary": {}, "backup": {}, "back": {}}
	for _, a := range as {
		phase := "primary"
		switch {
		case a.Start.After(seenUp.Add(100 * time.Millisecond)):
			phase = "back"
		case a.Start.After(tDown.Add(100*time.Millisecond)) && a.Start.Before(t1):
			phase = "backup"
		case a.Start.After(t0):
			phase = "" // while the primary fails or returns: either pool
		}
		if a.Err != nil {
			// Only a primary backend may have taken it: one dead, or
			// one whose server stopped with the connection in flight.
			if be, _ := owner(owners, a); be != "be1" && be != "be2" {
				bad = append(bad, describe(a, t0)+" (SYN reached "+be+")")
			}
			continue
		}
		if phase != "" {
			byPhase[phase][a.Backend]++
		}
	}
	if len(bad) > 0 {
		t.Errorf("%d connections failed that no dead backend took:\n  %s", len(bad), strings.Join(bad, "\n  "))
	}
	t.Logf("MEASURED pools: answered by phase %v; primary seen down T0+%s, be1 seen up T1+%s", byPhase, ms(tDown.Sub(t0)), ms(seenUp.Sub(t1)))
	for phase, want := range map[string]string{"backup": "be3", "back": "be1"} {
		if got := byPhase[phase]; len(got) != 1 || got[want] == 0 {
			t.Errorf("%s: answered by %v, want only %s", phase, got, want)
		}
	}
}
