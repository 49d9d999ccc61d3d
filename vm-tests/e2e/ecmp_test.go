package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/internal/lab"
	"github.com/xdplb/xdplb/internal/testutil"
)

// The multi-node lab of issue 17: a real FRR router between the client and
// three xdplb nodes, eBGP from each node to the router, ECMP over the three
// routes of each VIP.
const (
	ecmpRouterASN = 65000
	ecmpLBASN     = 65001
	ecmpHold      = 3 * time.Second
)

// ecmpEnv is the multi-node lab with FRR on the router and a daemon per
// load balancer.
type ecmpEnv struct {
	t       *testing.T
	ctx     context.Context
	lab     *lab.Lab
	frr     *lab.FRR
	servers map[string]*lab.Server
	nodes   []*ecmpNode
}

type ecmpNode struct {
	lb    *lab.Node
	dir   string
	bpffs string
	d     *lab.Daemon
}

func setupECMP(t *testing.T) *ecmpEnv {
	t.Helper()
	testutil.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	l, err := lab.New(ctx, lab.Options{ECMP: &lab.ECMPOptions{LBs: 3}})
	if err != nil {
		t.Fatalf("build lab: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("remove lab %s: %v", l.Prefix, err)
		}
	})
	e := &ecmpEnv{t: t, ctx: ctx, lab: l, servers: map[string]*lab.Server{}}
	servers, err := l.ServeBackends()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range servers {
		e.servers[s.Name] = s
	}
	var peers []netip.Addr
	for _, lb := range l.LBs {
		peers = append(peers, lb.IPv4)
	}
	if e.frr, err = l.StartFRR(ctx, l.Router, lab.ECMPRouterConfig(ecmpRouterASN, ecmpLBASN, l.Router.IPv4, peers, ecmpHold)); err != nil {
		t.Fatal(err)
	}
	for _, lb := range l.LBs {
		n := &ecmpNode{lb: lb, dir: t.TempDir(), bpffs: testutil.MountBPFFS(t)}
		e.nodes = append(e.nodes, n)
		e.start(n)
		t.Cleanup(func() {
			if n.d == nil {
				return
			}
			if t.Failed() {
				t.Logf("%s daemon log:\n%s", lb.Name, n.d.LogTail(40))
			}
			_ = n.d.Stop()
		})
	}
	return e
}

func (e *ecmpEnv) start(n *ecmpNode) {
	e.t.Helper()
	args := []string{"--bgp-asn", fmt.Sprint(ecmpLBASN), "--bgp-router-id", n.lb.IPv4.String(),
		"--bgp-peer", fmt.Sprintf("%s,asn=%d", e.lab.Router.IPv4, ecmpRouterASN), "--bgp-hold-time", ecmpHold.String()}
	d, err := lab.StartDaemon(e.ctx, lab.DaemonOptions{Binary: binary, Node: n.lb, Dir: n.dir, BPFFS: n.bpffs, ExtraArgs: args})
	if err != nil {
		e.t.Fatalf("start daemon on %s: %v", n.lb.Name, err)
	}
	n.d = d
}

// nextHops is the router's kernel next hops of prefix (via `ip route`, what
// packets follow), sorted.
func (e *ecmpEnv) nextHops(prefix string) []string {
	out, err := e.lab.Router.Exec(e.ctx, "ip", "-j", "route", "show", prefix)
	if err != nil {
		e.t.Fatal(err)
	}
	var routes []struct {
		Gateway  string `json:"gateway"`
		Nexthops []struct {
			Gateway string `json:"gateway"`
		} `json:"nexthops"`
	}
	if err := json.Unmarshal([]byte(out), &routes); err != nil {
		e.t.Fatalf("ip -j route: %v: %s", err, out)
	}
	var hops []string
	for _, r := range routes {
		if r.Gateway != "" {
			hops = append(hops, r.Gateway)
		}
		for _, h := range r.Nexthops {
			hops = append(hops, h.Gateway)
		}
	}
	slices.Sort(hops)
	return hops
}

// waitNextHops waits until the router routes prefix over exactly want.
func (e *ecmpEnv) waitNextHops(prefix string, want []string, limit time.Duration) time.Duration {
	e.t.Helper()
	slices.Sort(want)
	t0 := time.Now()
	for {
		got := e.nextHops(prefix)
		if slices.Equal(got, want) {
			return time.Since(t0)
		}
		if time.Since(t0) > limit {
			bgp, _ := e.frr.Vtysh(e.ctx, "show bgp summary")
			e.t.Fatalf("router's next hops of %s: %v after %s, want %v\n%s", prefix, got, limit, want, bgp)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// table reads a node's lookup table of its one VIP from its pins and
// names each slot by the backend address it holds: the ids are the node's
// own, the addresses what must agree between nodes.
func (n *ecmpNode) table(t *testing.T) []string {
	t.Helper()
	pins := filepath.Join(n.bpffs, "xdplb")
	outer := bpftoolDump(t, "pinned", filepath.Join(pins, "lookup"))
	if len(outer) != 1 {
		t.Fatalf("%s: %d lookup tables, want 1", n.lb.Name, len(outer))
	}
	inner := bpftoolDump(t, "id", fmt.Sprint(outer[0].u32Value()))
	byID := map[uint32]string{}
	for _, be := range bpftoolDump(t, "pinned", filepath.Join(pins, "backends")) {
		if addr := be.addr(); addr.IsValid() && !addr.Unmap().IsUnspecified() {
			byID[be.u32Key()] = addr.Unmap().String()
		}
	}
	slots := make([]string, len(inner))
	for _, el := range inner {
		id := el.u32Value()
		name, ok := byID[id]
		if !ok {
			name = fmt.Sprintf("id %d?", id)
		}
		slots[el.u32Key()] = name
	}
	return slots
}

// bpftoolElem is one element of `bpftool -j map dump`: raw bytes as hex
// strings.
type bpftoolElem struct {
	Key   []string `json:"key"`
	Value []string `json:"value"`
}

func bpftoolDump(t *testing.T, how, what string) []bpftoolElem {
	t.Helper()
	out, err := exec.Command("bpftool", "-j", "map", "dump", how, what).Output()
	if err != nil {
		t.Fatalf("bpftool map dump %s %s: %v", how, what, err)
	}
	var els []bpftoolElem
	if err := json.Unmarshal(out, &els); err != nil {
		t.Fatalf("bpftool map dump %s %s: %v", how, what, err)
	}
	return els
}

func hexBytes(hs []string) []byte {
	b := make([]byte, len(hs))
	for i, h := range hs {
		var v byte
		fmt.Sscanf(h, "0x%02x", &v)
		b[i] = v
	}
	return b
}

func le32(b []byte) uint32 {
	if len(b) < 4 {
		return 0
	}
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

func (el bpftoolElem) u32Key() uint32   { return le32(hexBytes(el.Key)) }
func (el bpftoolElem) u32Value() uint32 { return le32(hexBytes(el.Value)) }

// addr is a backends element's address: the first 16 bytes of struct
// backend (bpf/types.h).
func (el bpftoolElem) addr() netip.Addr {
	v := hexBytes(el.Value)
	if len(v) < 16 {
		return netip.Addr{}
	}
	return netip.AddrFrom16([16]byte(v[:16]))
}

// TestECMPThreeNodes: three xdplb nodes announce a VIP to a real FRR
// router over BGP; the router spreads flows over all three; every node
// builds the same lookup table; long-lived connections survive the clean
// stop of one node and the kill -9 of another with no reset, their packets
// moving to nodes that pick the same backends; a backend failure seen by
// every node moves only that backend's flows (issue 17).
func TestECMPThreeNodes(t *testing.T) {
	e := setupECMP(t)
	target := netip.AddrPortFrom(lab.VIP4, lab.HTTPPort)
	vip := target.String() + "/tcp"
	prefix := lab.VIP4.String()
	var hops []string
	for i, n := range e.nodes {
		// In a different order on every node, so that each gives its
		// backends other ids: the table must not care.
		bes := append(slices.Clone(e.lab.Backends[i:]), e.lab.Backends[:i]...)
		if _, err := n.d.CLI(e.ctx, "vip", "add", vip, "--mode", "dr", "--no-announce",
			"--check", "tcp", "--check-interval", "200ms", "--check-timeout", "100ms", "--rise", "1"); err != nil {
			t.Fatal(err)
		}
		for _, be := range bes {
			if _, err := n.d.CLI(e.ctx, "backend", "add", vip, be.IPv4.String()); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := n.d.WaitBackendsUp(e.ctx, vip, len(bes), 10*time.Second); err != nil {
			t.Fatal(err)
		}
		hops = append(hops, n.lb.IPv4.String())
	}
	took := e.waitNextHops(prefix, hops, 15*time.Second)
	t.Logf("MEASURED: the router routes %s over the three nodes %s after their backends are up", prefix, ms(took))

	// The same table on every node, slot by slot.
	first := e.nodes[0].table(t)
	t.Logf("the lookup table has %d slots; comparing every node's slot by slot", len(first))
	for _, n := range e.nodes[1:] {
		other := n.table(t)
		diff := 0
		for i := range first {
			if first[i] != other[i] {
				diff++
			}
		}
		if diff != 0 || len(first) != len(other) {
			t.Errorf("%s's lookup table differs from %s's in %d of %d slots", n.lb.Name, e.nodes[0].lb.Name, diff, len(first))
		}
	}

	// 300 connections from distinct client ports spread over the nodes
	// and the backends.
	before := e.vipPackets(vip)
	res := e.lab.Client.Load(e.ctx, target, lab.LoadOptions{Requests: 300, Parallel: 8, Timeout: 3 * time.Second, FirstPort: firstClientPort})
	if res.OK != 300 || len(res.ByBackend) != 3 {
		t.Fatalf("300 connections: %d ok, by backend %v; failures %v", res.OK, res.ByBackend, res.Failures)
	}
	after := e.vipPackets(vip)
	for i, n := range e.nodes {
		got := after[i] - before[i]
		t.Logf("MEASURED: %s forwarded %d packets of the 300 connections", n.lb.Name, got)
		if got < 100 {
			t.Errorf("%s forwarded %d packets of 300 connections: the router does not spread flows over it", n.lb.Name, got)
		}
	}

	// A backend fails: every node sees it and moves only its flows.
	bka, err := e.lab.Client.OpenKeepAlive(e.ctx, target, lab.KeepAliveOptions{
		Conns: 30, Every: 100 * time.Millisecond, Timeout: 2 * time.Second, MaxLife: time.Minute, FirstPort: keepAlivePort + 100,
	})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	failed := e.lab.Backend("be2")
	if err := e.servers["be2"].Stop(); err != nil {
		t.Fatal(err)
	}
	for _, n := range e.nodes {
		if _, _, err := n.d.WaitBackendState(e.ctx, vip, failed.IPv4, model.BackendDown, 3*time.Second); err != nil {
			t.Fatalf("%s: %v", n.lb.Name, err)
		}
	}
	time.Sleep(500 * time.Millisecond)
	onFailed := 0
	for _, r := range bka.Close() {
		switch {
		case r.Backend == "be2":
			onFailed++
		case r.Failures != 0:
			t.Errorf("connection from port %d to %s broke when be2 failed: %v", r.Port, r.Backend, r.Err)
		}
	}
	t.Logf("be2 failed: %d of 30 long-lived connections were on it", onFailed)
	if err := e.servers["be2"].Start(); err != nil {
		t.Fatal(err)
	}
	for _, n := range e.nodes {
		if _, _, err := n.d.WaitBackendState(e.ctx, vip, failed.IPv4, model.BackendUp, 3*time.Second); err != nil {
			t.Fatalf("%s: %v", n.lb.Name, err)
		}
	}

	// Long-lived connections across the loss of nodes.
	ka, err := e.lab.Client.OpenKeepAlive(e.ctx, target, lab.KeepAliveOptions{
		Conns: 60, Every: 100 * time.Millisecond, Timeout: 2 * time.Second, MaxLife: time.Minute, FirstPort: keepAlivePort,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ka.Close()
	time.Sleep(500 * time.Millisecond)

	// A node that stops answering (frozen, as a hung host) loses its
	// routes when the router's hold timer runs out, and gets them back
	// when it answers again.
	all := slices.Clone(hops)
	frozen := e.nodes[2]
	if err := frozen.d.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	took = e.waitNextHops(prefix, []string{e.nodes[0].lb.IPv4.String(), e.nodes[1].lb.IPv4.String()}, ecmpHold+3*time.Second)
	t.Logf("MEASURED: frozen %s left the router's routes after %s (hold time %s)", frozen.lb.Name, ms(took), ecmpHold)
	if took < ecmpHold-time.Second {
		t.Errorf("frozen %s left the routes after %s, before the hold time %s ran out", frozen.lb.Name, ms(took), ecmpHold)
	}
	if err := frozen.d.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	took = e.waitNextHops(prefix, all, 20*time.Second)
	t.Logf("MEASURED: %s was back in the router's routes %s after it thawed", frozen.lb.Name, ms(took))

	// A clean stop withdraws the node's routes first.
	stopped := e.nodes[1]
	if err := stopped.d.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped.d = nil
	took = e.waitNextHops(prefix, []string{e.nodes[0].lb.IPv4.String(), e.nodes[2].lb.IPv4.String()}, 5*time.Second)
	t.Logf("MEASURED: %s's clean stop took it off the router's routes in %s", stopped.lb.Name, ms(took))
	time.Sleep(500 * time.Millisecond)

	// A killed node's routes go with its session, at the hold time.
	killed := e.nodes[2]
	killed.d.Kill()
	killed.d = nil
	took = e.waitNextHops(prefix, []string{e.nodes[0].lb.IPv4.String()}, ecmpHold+3*time.Second)
	t.Logf("MEASURED: %s's kill -9 took it off the router's routes in %s (hold time %s)", killed.lb.Name, ms(took), ecmpHold)
	time.Sleep(500 * time.Millisecond)

	var broken []string
	for _, r := range ka.Close() {
		if r.Failures != 0 || r.Requests < 10 {
			broken = append(broken, fmt.Sprintf("port %d: %d requests, %v", r.Port, r.Requests, r.Err))
		}
	}
	if len(broken) > 0 {
		t.Errorf("%d of 60 long-lived connections broke across the loss of two nodes:\n  %s", len(broken), strings.Join(broken, "\n  "))
	}
}

// vipPackets is every node's packet count of vip, in node order (0 for a
// stopped node).
func (e *ecmpEnv) vipPackets(vip string) []uint64 {
	e.t.Helper()
	out := make([]uint64, len(e.nodes))
	for i, n := range e.nodes {
		if n.d == nil {
			continue
		}
		st, err := n.d.Stats(e.ctx)
		if err != nil {
			e.t.Fatal(err)
		}
		if v, ok := lab.VIPStats(st, vip); ok {
			out[i] = v.Packets
		}
	}
	return out
}
