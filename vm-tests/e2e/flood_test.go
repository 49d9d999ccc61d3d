package e2e

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xdplb/xdplb/internal/lab"
)

// The flood of these tests: spoofed SYNs at up to 100,000/s for 5 s
// (hping3 sends what this machine lets it), against a connection table of
// 65,536 entries, so the tables overflow many times over, and a half-open
// timeout short enough for a test.
const (
	floodRate     = 100000
	floodFor      = 5 * time.Second
	floodHalfOpen = 5 * time.Second
	floodPort2    = 8080 // the quiet VIP's port
)

// floodConntrack is the flood's connection table: 65,536 entries, and a
// lab.Slowness-th of that on a slow machine (a VM under software
// emulation), whose flood is about as many times smaller (1,000-2,000 SYNs
// a second reach the VIP there), so that the half-open table (a quarter of
// it) overflows several times over on either machine.
func floodConntrack() int {
	return int(65536 / lab.Slowness())
}

func floodDaemonArgs() []string {
	return []string{"--conntrack-size", strconv.Itoa(floodConntrack()), "--half-open-timeout", floodHalfOpen.String()}
}

// floodCase is a flooded VIP and a quiet one on the same LB.
type floodCase struct {
	e             *env
	flooded, calm netip.AddrPort
}

// TestSYNFloodDR: a spoofed SYN flood against one DR VIP breaks none of
// its established connections, denies no new connection to another VIP,
// and the flooded VIP takes new connections again within the half-open
// timeout after the flood (issue 24).
func TestSYNFloodDR(t *testing.T) {
	e := setupLab(t, lab.Options{}, floodDaemonArgs()...)
	flooded := netip.AddrPortFrom(lab.VIP4, lab.HTTPPort)
	e.addVIP(flooded.String()+"/tcp", func(n *lab.Node) netip.Addr { return n.IPv4 })
	calm := netip.AddrPortFrom(lab.VIP4, floodPort2)
	for _, be := range e.lab.Backends {
		if _, err := e.lab.ServeName(be, be.Name, floodPort2); err != nil {
			t.Fatal(err)
		}
	}
	e.addVIP(calm.String()+"/tcp", func(n *lab.Node) netip.Addr { return n.IPv4 })
	floodCase{e: e, flooded: flooded, calm: calm}.run(t)
}

// TestSYNFloodNAT is TestSYNFloodDR with nat VIPs, whose reply
// translations the spoofed SYNs would otherwise hold for the TCP idle
// timeout, locking every NAT VIP of the node out.
func TestSYNFloodNAT(t *testing.T) {
	e := setupNATWith(t, "nat", floodDaemonArgs()...)
	v4 := families[0]
	flooded, _ := e.addNATVIP(v4, "tcp", checkFlags()...)
	calm := netip.AddrPortFrom(v4.vip, floodPort2)
	vip := calm.String() + "/tcp"
	e.cli(append([]string{"vip", "add", vip, "--mode", "nat"}, checkFlags()...)...)
	for _, be := range e.lab.NATBackends {
		e.cli("backend", "add", vip, netip.AddrPortFrom(be.IPv4, lab.NATPort).String())
	}
	if _, err := e.d.WaitBackendsUp(e.ctx, vip, len(e.lab.NATBackends), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	floodCase{e: e.env, flooded: flooded, calm: calm}.run(t)
}

func (c floodCase) run(t *testing.T) {
	e := c.e
	e.load(c.flooded, 20)
	e.load(c.calm, 20)
	ka, err := e.lab.Client.OpenKeepAlive(e.ctx, c.flooded, lab.KeepAliveOptions{
		Conns: 20, Every: 200 * time.Millisecond, Timeout: 2 * time.Second, FirstPort: keepAlivePort,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ka.Close()
	before := e.stats()

	// During the flood: a new connection to each VIP every 100 ms.
	opts := lab.StreamOptions{Interval: 100 * time.Millisecond, Duration: floodFor + time.Second, Timeout: 2 * time.Second}
	opts.FirstPort = streamPort
	toCalm := e.lab.Client.StartStream(e.ctx, c.calm, opts)
	opts.FirstPort = streamPort2
	toFlooded := e.lab.Client.StartStream(e.ctx, c.flooded, opts)
	t0 := time.Now()
	if err := e.lab.Client.SYNFlood(e.ctx, c.flooded, lab.FloodOptions{Rate: floodRate, Duration: floodFor}); err != nil {
		t.Fatal(err)
	}
	tEnd := time.Now()
	calmAs, floodedAs := stopStream(t, toCalm), stopStream(t, toFlooded)
	during := e.stats()
	sent := diffVIP(t, before, during, c.flooded.String()+"/tcp").Packets
	t.Logf("MEASURED flood: %d packets reached the flooded VIP in %s (%.0f/s); drops %v; events %v",
		sent, ms(tEnd.Sub(t0)), float64(sent)/tEnd.Sub(t0).Seconds(), during.Drops, e.events())
	// Three times the half-open table (a quarter of the connection table).
	if want := 3 * floodConntrack() / 4; sent < uint64(want) {
		t.Errorf("the flood brought only %d packets to the VIP, want %d: the tables did not overflow, nothing was tested", sent, want)
	}

	failed := func(as []lab.Attempt) (n int, first string) {
		for _, a := range as {
			if a.Err != nil {
				if n == 0 {
					first = describe(a, t0)
				}
				n++
			}
		}
		return n, first
	}
	if n, first := failed(calmAs); n > 0 || len(calmAs) < 30 {
		t.Errorf("the quiet VIP %s: %d of %d new connections failed during the flood (first: %s)", c.calm, n, len(calmAs), first)
	}
	n, first := failed(floodedAs)
	t.Logf("MEASURED flooded VIP during the flood: %d of %d new connections succeeded (first failure: %s)", len(floodedAs)-n, len(floodedAs), first)

	// After it: new connections to the flooded VIP succeed again within
	// the half-open timeout.
	opts.FirstPort, opts.Duration = streamPort2+2000, floodHalfOpen+2*time.Second
	after := stopStreamWhenDone(t, e.lab.Client.StartStream(e.ctx, c.flooded, opts))
	back := len(after)
	for i := len(after) - 1; i >= 0 && after[i].Err == nil; i-- {
		back = i
	}
	if back == len(after) {
		t.Fatalf("the flooded VIP took no new connection in the %s after the flood", opts.Duration)
	}
	recovered := after[back].Start.Sub(tEnd)
	t.Logf("MEASURED recovery: every new connection to the flooded VIP from end+%s on succeeded (%d of %d after the flood)", ms(recovered), len(after)-back, len(after))
	if recovered > floodHalfOpen {
		t.Errorf("the flooded VIP recovered %s after the flood, want within the half-open timeout %s", ms(recovered), floodHalfOpen)
	}

	var broken []string
	for _, r := range ka.Close() {
		if r.Failures != 0 {
			broken = append(broken, fmt.Sprintf("port %d: %v", r.Port, r.Err))
		}
	}
	if len(broken) > 0 {
		t.Errorf("%d established connections broke during the flood:\n  %s", len(broken), strings.Join(broken, "\n  "))
	}
}

// stopStreamWhenDone waits for a stream to run its course, then stops it.
func stopStreamWhenDone(t *testing.T, s *lab.Stream) []lab.Attempt {
	t.Helper()
	<-s.Done()
	return stopStream(t, s)
}
