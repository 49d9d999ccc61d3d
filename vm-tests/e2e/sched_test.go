package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xdplb/xdplb/control/api"
	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/internal/lab"
)

// schedVIP adds the DR VIP of target with scheduler sched and the lab's
// backends, be1 and be2 in group v1 with weight w1 and be3 in group v2 with
// w2, and waits for them to be up.
func (e *env) schedVIP(target netip.AddrPort, sched string, w1, w2 int) string {
	e.t.Helper()
	vip := target.String() + "/tcp"
	e.cli("vip", "add", vip, "--mode", "dr", "--scheduler", sched)
	for i, be := range e.lab.Backends {
		g, w := "v1", w1
		if i == len(e.lab.Backends)-1 {
			g, w = "v2", w2
		}
		e.cli("backend", "add", vip, be.IPv4.String(), "--group", g, "--weight", fmt.Sprint(w))
	}
	if _, err := e.d.WaitBackendsUp(e.ctx, vip, len(e.lab.Backends), 15*time.Second); err != nil {
		e.t.Fatal(err)
	}
	return vip
}

// share is the percentage of n in total.
func share(n, total int) float64 { return 100 * float64(n) / float64(max(total, 1)) }

// Weights are a split, measured with real connections: be1 and be2 (95
// each) and be3 (10) take 95% and 5% of 20,000 new connections within a
// point, by wrr, then by maglev on the same VIP (vip set --scheduler). On
// a slow machine 4,000 connections, and two points for maglev (its split
// is then the hash's over fewer 5-tuples).
func TestSchedulerSplit(t *testing.T) {
	e := setup(t)
	n, maglevTol := 20000, 1.0
	if lab.Slowness() > 1 {
		n, maglevTol = 4000, 2
	}
	target := netip.AddrPortFrom(lab.VIP4, lab.HTTPPort)
	vip := e.schedVIP(target, "wrr", 95, 10)
	for _, tc := range []struct {
		sched string
		tol   float64
	}{{"wrr", 1}, {"maglev", maglevTol}} {
		e.cli("vip", "set", vip, "--scheduler", tc.sched)
		res := e.load(target, n)
		v2 := share(res.ByBackend[e.lab.Backends[2].Name], res.OK)
		t.Logf("MEASURED %s split over %d connections: %v: v2 %.2f%% (want 5%%)", tc.sched, res.OK, res.ByBackend, v2)
		if v2 < 5-tc.tol || v2 > 5+tc.tol {
			t.Errorf("%s: v2 took %.2f%% of %d connections, want 5%% ± %.0f", tc.sched, v2, res.OK, tc.tol)
		}
	}
}

// A canary shifted 5% -> 25% -> 100% by group, one command per step,
// while a client opens connections continuously: no connection fails, each
// step's share is about right, and after the last one every new connection
// reaches v2 while v1 drains.
func TestCanaryShiftUnderTraffic(t *testing.T) {
	e := setup(t)
	target := netip.AddrPortFrom(lab.VIP4, lab.HTTPPort)
	vip := e.schedVIP(target, "wrr", 95, 10)
	step := lab.Scale(2 * time.Second)
	stream := e.lab.Client.StartStream(e.ctx, target, lab.StreamOptions{
		Interval: 5 * time.Millisecond, Duration: 4 * step, Timeout: time.Second, FirstPort: streamPort,
	})
	defer stream.Stop()
	marks := []time.Time{time.Now()}
	time.Sleep(step)
	e.cli("backend", "set", vip, "--group", "v2", "--weight", "63") // 63 / (190 + 63): 25%
	marks = append(marks, time.Now())
	time.Sleep(step)
	e.cli("backend", "set", vip, "--group", "v2", "--weight", "100")
	e.cli("backend", "set", vip, "--group", "v1", "--weight", "0")
	marks = append(marks, time.Now())
	<-stream.Done()
	as := stopStream(t, stream)

	v2 := e.lab.Backends[2].Name
	type phase struct{ v2, all int }
	phases := make([]phase, len(marks))
	var failed []string
	for _, a := range as {
		if a.Err != nil {
			failed = append(failed, fmt.Sprintf("port %d at +%s: %v", a.Port, ms(a.Start.Sub(marks[0])), a.Err))
			continue
		}
		p := 0
		for i, m := range marks {
			// A connection begun within 50 ms of a step may be on
			// either side of it.
			if a.Start.After(m.Add(50 * time.Millisecond)) {
				p = i
			} else if a.Start.After(m.Add(-50*time.Millisecond)) && i > 0 {
				p = -1
			}
		}
		if p < 0 {
			continue
		}
		phases[p].all++
		if a.Backend == v2 {
			phases[p].v2++
		}
	}
	if len(failed) > 0 {
		t.Errorf("%d of %d connections failed during the shift:\n  %s", len(failed), len(as), strings.Join(failed[:min(len(failed), 20)], "\n  "))
	}
	for i, want := range []float64{5, 25, 100} {
		got := share(phases[i].v2, phases[i].all)
		t.Logf("MEASURED step %d: v2 took %.1f%% of %d new connections (want %.0f%%)", i, got, phases[i].all, want)
		tol := 3.0
		if want == 100 {
			tol = 0
		}
		if phases[i].all < 50 || got < want-tol || got > want+tol {
			t.Errorf("step %d: v2 took %.1f%% of %d new connections, want %.0f%% ± %.0f", i, got, phases[i].all, want, tol)
		}
	}
}

// Blue/green: apply -f swaps the backend set from blue (be1, be2) to green
// (be3, never seen before: its MAC is resolved after the apply) while
// long-lived connections stay open on blue and a client opens new ones: no
// connection fails, new ones reach green only once it is up (blue takes
// them until then), the long-lived ones keep their blue backend, and
// backend list shows blue draining (removed) until they close, then not
// at all.
func TestBlueGreenApply(t *testing.T) {
	e := setup(t)
	target := netip.AddrPortFrom(lab.VIP4, lab.HTTPPort)
	vip := target.String() + "/tcp"
	blue, green := e.lab.Backends[:2], e.lab.Backends[2]
	e.cli("vip", "add", vip, "--mode", "dr")
	for _, be := range blue {
		e.cli("backend", "add", vip, be.IPv4.String())
	}
	if _, err := e.d.WaitBackendsUp(e.ctx, vip, len(blue), 15*time.Second); err != nil {
		t.Fatal(err)
	}
	ka, err := e.lab.Client.OpenKeepAlive(e.ctx, target, lab.KeepAliveOptions{
		Conns: 6, Every: 50 * time.Millisecond, Timeout: time.Second, FirstPort: keepAlivePort,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ka.Close()
	stream := e.lab.Client.StartStream(e.ctx, target, lab.StreamOptions{
		Interval: 10 * time.Millisecond, Duration: lab.Scale(4 * time.Second), Timeout: time.Second, FirstPort: streamPort,
	})
	defer stream.Stop()
	time.Sleep(lab.Scale(time.Second))

	green1 := fmt.Sprintf("vips:\n  - address: %s\n    port: %d\n    protocol: tcp\n    mode: dr\n    backends:\n      - {address: %s, weight: 100, group: green}\n",
		lab.VIP4, lab.HTTPPort, green.IPv4)
	path := filepath.Join(t.TempDir(), "green.yaml")
	if err := os.WriteFile(path, []byte(green1), 0o644); err != nil {
		t.Fatal(err)
	}
	e.cli("apply", "-f", path)
	tApply := time.Now()
	// Green serves once its MAC is resolved; until then blue takes the
	// new connections still (make before break).
	_, tGreen, err := e.d.WaitBackend(e.ctx, vip, green.IPv4, lab.Scale(15*time.Second), func(b api.BackendStatus) bool { return b.State == model.BackendUp })
	if err != nil {
		t.Fatalf("green %s not up after the apply: %v", green.Name, err)
	}
	t.Logf("MEASURED green up %s after the apply", ms(tGreen.Sub(tApply)))
	for _, be := range blue {
		st, _, err := e.d.WaitBackend(e.ctx, vip, be.IPv4, 2*time.Second, func(b api.BackendStatus) bool {
			return b.Removed && b.State == model.BackendDraining && b.Flows > 0
		})
		if err != nil {
			t.Errorf("after the apply, backend list does not show blue %s draining with its open flows: %v (%+v)", be.Name, err, st)
		}
	}
	t.Logf("backend list after the apply:\n%s", e.cli("backend", "list", vip))
	<-stream.Done()
	as := stopStream(t, stream)
	time.Sleep(lab.Scale(500 * time.Millisecond))
	rs := ka.Close()
	tClosed := time.Now()

	var bad []string
	for _, a := range as {
		switch {
		case a.Err != nil:
			bad = append(bad, fmt.Sprintf("port %d at apply%+dms: %v", a.Port, a.Start.Sub(tApply).Milliseconds(), a.Err))
		case a.Start.After(tGreen.Add(50*time.Millisecond)) && a.Backend != green.Name:
			bad = append(bad, fmt.Sprintf("port %d at apply+%dms (green up at +%dms) reached %s, not green", a.Port,
				a.Start.Sub(tApply).Milliseconds(), tGreen.Sub(tApply).Milliseconds(), a.Backend))
		}
	}
	for _, r := range rs {
		if r.Failures != 0 || !r.Closed || len(r.Answers) != 1 {
			bad = append(bad, fmt.Sprintf("long-lived port %d on %s: %d failures, answers %v: %v", r.Port, r.Backend, r.Failures, r.Answers, r.Err))
		}
	}
	if len(bad) > 0 {
		t.Errorf("%d connections misbehaved across the switch:\n  %s", len(bad), strings.Join(bad[:min(len(bad), 20)], "\n  "))
	}
	t.Logf("%d new connections across the switch, %d long-lived kept on blue", len(as), len(rs))
	// Closed: the removed backends go within a flow check or two.
	for _, be := range blue {
		ctx := e.ctx
		deadline := time.Now().Add(lab.Scale(4 * time.Second))
		for {
			if _, found := lab.FindBackend(e.backends(vip), be.IPv4); !found {
				t.Logf("MEASURED blue %s gone from backend list %s after its connections closed", be.Name, ms(time.Since(tClosed)))
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				t.Errorf("blue %s still listed %s after its connections closed", be.Name, ms(time.Since(tClosed)))
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// lc with long-lived connections: be1 holds 30 when be2 and be3 join, and
// the new short connections that follow go to be2 and be3 (be1 takes a new
// one only once the others hold as many); the long-lived ones keep going.
func TestLeastConnsLongLived(t *testing.T) {
	e := setup(t)
	target := netip.AddrPortFrom(lab.VIP4, lab.HTTPPort)
	vip := target.String() + "/tcp"
	e.cli("vip", "add", vip, "--mode", "dr", "--scheduler", "lc")
	be1 := e.lab.Backends[0]
	e.cli("backend", "add", vip, be1.IPv4.String())
	if _, err := e.d.WaitBackendsUp(e.ctx, vip, 1, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	ka, err := e.lab.Client.OpenKeepAlive(e.ctx, target, lab.KeepAliveOptions{
		Conns: 30, Every: 200 * time.Millisecond, Timeout: 2 * time.Second, FirstPort: keepAlivePort,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ka.Close()
	for _, be := range e.lab.Backends[1:] {
		e.cli("backend", "add", vip, be.IPv4.String())
	}
	if _, err := e.d.WaitBackendsUp(e.ctx, vip, len(e.lab.Backends), 15*time.Second); err != nil {
		t.Fatal(err)
	}
	res := e.load(target, 300)
	t.Logf("MEASURED lc: be1 holds 30 long-lived connections; 300 new short ones went %v", res.ByBackend)
	if n := res.ByBackend[be1.Name]; n > 15 {
		t.Errorf("be1 (30 open) took %d of 300 new connections, want (nearly) none", n)
	}
	for _, r := range ka.Close() {
		if r.Failures != 0 || r.Backend != be1.Name {
			t.Errorf("long-lived port %d on %s: %d failures: %v", r.Port, r.Backend, r.Failures, r.Err)
		}
	}
}
