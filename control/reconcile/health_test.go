package reconcile

import (
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/healthcheck"
)

// fakeTargets is a HealthTargets that records what it is given and
// answers Status from a table the test sets.
type fakeTargets struct {
	mu      sync.Mutex
	sets    [][]healthcheck.Target
	status  map[string]healthcheck.Status
	changes chan struct{}
}

func newFakeTargets() *fakeTargets {
	return &fakeTargets{status: map[string]healthcheck.Status{}, changes: make(chan struct{}, 1)}
}

func (f *fakeTargets) Set(ts []healthcheck.Target) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sets = append(f.sets, slices.Clone(ts))
	// As the Manager: known targets keep their state, new ones begin
	// from StartUp, missing ones are forgotten.
	next := map[string]healthcheck.Status{}
	for _, t := range ts {
		st, ok := f.status[t.ID]
		if !ok {
			st = healthcheck.Status{Up: t.StartUp}
		}
		next[t.ID] = st
	}
	f.status = next
}

func (f *fakeTargets) Status(id string) (healthcheck.Status, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, ok := f.status[id]
	return st, ok
}

func (f *fakeTargets) Changes() <-chan struct{} { return f.changes }

// takeSets returns the Set calls since the last call.
func (f *fakeTargets) takeSets() [][]healthcheck.Target {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.sets
	f.sets = nil
	return s
}

func checkedVIP() model.VIP {
	return model.VIP{
		Address: netip.MustParseAddr("10.0.0.100"), Port: 80, Protocol: model.TCP,
		HealthCheck: &model.HealthCheck{Type: model.CheckHTTP, Port: 8080, Path: "/healthz",
			Interval: model.Duration(200 * time.Millisecond), Timeout: model.Duration(100 * time.Millisecond), Rise: 2, Fall: 3},
		Backends: []model.Backend{be("10.0.0.1", 100), be("10.0.0.2", 0)},
	}
}

func TestHealthCheckerTargets(t *testing.T) {
	ft := newFakeTargets()
	h := NewHealthChecker(ft)
	unchecked := model.VIP{Address: netip.MustParseAddr("10.0.0.101"), Port: 53, Protocol: model.UDP,
		HealthCheck: &model.HealthCheck{Type: model.CheckNone}, Backends: []model.Backend{be("10.0.0.3", 100)}}
	nocheck := model.VIP{Address: netip.MustParseAddr("10.0.0.102"), Port: 443, Protocol: model.TCP,
		Backends: []model.Backend{be("10.0.0.4", 100)}}
	tcp := model.VIP{Address: netip.MustParseAddr("10.0.0.103"), Port: 22, Protocol: model.TCP,
		HealthCheck: &model.HealthCheck{Type: model.CheckTCP}, Backends: []model.Backend{be("10.0.0.5", 100)}} // defaults apply

	h.Sync(model.State{VIPs: []model.VIP{checkedVIP(), unchecked, nocheck, tcp}})
	sets := ft.takeSets()
	if len(sets) != 1 {
		t.Fatalf("%d Set calls, want 1", len(sets))
	}
	spec := func(addr string, port uint16) healthcheck.Spec {
		return healthcheck.Spec{Kind: healthcheck.HTTP, Target: netip.AddrPortFrom(netip.MustParseAddr(addr), port),
			Path: "/healthz", Host: "10.0.0.100:80", Interval: 200 * time.Millisecond, Timeout: 100 * time.Millisecond, Rise: 2, Fall: 3}
	}
	want := []healthcheck.Target{
		// Every backend present at the first Sync (the daemon's start)
		// begins up, drained ones included.
		{ID: "10.0.0.100:80/tcp|10.0.0.1", Spec: spec("10.0.0.1", 8080), StartUp: true},
		{ID: "10.0.0.100:80/tcp|10.0.0.2", Spec: spec("10.0.0.2", 8080), StartUp: true},
		{ID: "10.0.0.103:22/tcp|10.0.0.5", Spec: healthcheck.Spec{Kind: healthcheck.TCP,
			Target: netip.MustParseAddrPort("10.0.0.5:22"), Interval: time.Second, Timeout: 500 * time.Millisecond, Rise: 2, Fall: 3}, StartUp: true},
	}
	if !slices.EqualFunc(sets[0], want, sameTarget) {
		t.Fatalf("targets\n%+v\nwant\n%+v", sets[0], want)
	}
	for _, tc := range []struct {
		v    model.VIP
		addr string
	}{{unchecked, "10.0.0.3"}, {nocheck, "10.0.0.4"}} {
		if !h.Up(tc.v.ID(), be(tc.addr, 100)) {
			t.Errorf("backend %s without a check is down", tc.addr)
		}
		if _, ok := h.Status(tc.v.ID(), be(tc.addr, 100)); ok {
			t.Errorf("backend %s without a check has a check status", tc.addr)
		}
	}

	// The same state again: nothing to tell the Manager.
	h.Sync(model.State{VIPs: []model.VIP{checkedVIP(), unchecked, nocheck, tcp}})
	if sets := ft.takeSets(); len(sets) != 0 {
		t.Fatalf("unchanged state: %d Set calls", len(sets))
	}

	// A backend added later begins down (pending); one removed and added
	// again too; the others keep StartUp. A check added to a VIP whose
	// backends were there before starts them up.
	v := checkedVIP()
	v.Backends = []model.Backend{be("10.0.0.1", 100), be("10.0.0.9", 100)}
	unchecked.HealthCheck = &model.HealthCheck{Type: model.CheckUDP, Port: 53}
	h.Sync(model.State{VIPs: []model.VIP{v, unchecked}})
	v.Backends = append(v.Backends, be("10.0.0.2", 100))
	h.Sync(model.State{VIPs: []model.VIP{v, unchecked}})
	sets = ft.takeSets()
	if len(sets) != 2 {
		t.Fatalf("%d Set calls, want 2", len(sets))
	}
	startUp := map[string]bool{}
	for _, tg := range sets[1] {
		startUp[tg.ID] = tg.StartUp
	}
	wantUp := map[string]bool{
		"10.0.0.100:80/tcp|10.0.0.1": true, "10.0.0.100:80/tcp|10.0.0.9": false,
		"10.0.0.100:80/tcp|10.0.0.2": false, "10.0.0.101:53/udp|10.0.0.3": true,
	}
	if len(startUp) != len(wantUp) {
		t.Fatalf("targets %v, want %v", startUp, wantUp)
	}
	for id, up := range wantUp {
		if got, ok := startUp[id]; !ok || got != up {
			t.Errorf("target %s StartUp %v (present %v), want %v", id, got, ok, up)
		}
	}
	if h.Up(v.ID(), be("10.0.0.9", 100)) {
		t.Error("backend added later is up before any check")
	}
	if !h.Up(v.ID(), be("10.0.0.1", 100)) {
		t.Error("backend present at start is down before any check")
	}

	// Status and Up follow the Manager.
	ft.mu.Lock()
	since := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	ft.status["10.0.0.100:80/tcp|10.0.0.1"] = healthcheck.Status{Up: false, Known: true, Reason: "http 503", Since: since}
	ft.mu.Unlock()
	if h.Up(v.ID(), be("10.0.0.1", 100)) {
		t.Error("backend up while its check says down")
	}
	if st, ok := h.Status(v.ID(), be("10.0.0.1", 100)); !ok || st.Reason != "http 503" || !st.Since.Equal(since) {
		t.Errorf("status %+v, %v", st, ok)
	}

	// A changed Spec is handed over with the same StartUp (the Manager
	// keeps the state of a known ID anyway).
	v.HealthCheck.Interval = model.Duration(time.Second)
	v.HealthCheck.Timeout = model.Duration(200 * time.Millisecond)
	h.Sync(model.State{VIPs: []model.VIP{v, unchecked}})
	sets = ft.takeSets()
	if len(sets) != 1 {
		t.Fatalf("%d Set calls after a spec change, want 1", len(sets))
	}
	for _, tg := range sets[0] {
		if tg.Spec.Interval != time.Second && tg.ID != "10.0.0.101:53/udp|10.0.0.3" {
			t.Errorf("target %s interval %s", tg.ID, tg.Spec.Interval)
		}
		if tg.StartUp != wantUp[tg.ID] {
			t.Errorf("target %s StartUp changed to %v", tg.ID, tg.StartUp)
		}
	}

	// Nothing left: one empty Set, then nothing.
	h.Sync(model.State{})
	h.Sync(model.State{})
	if sets := ft.takeSets(); len(sets) != 1 || len(sets[0]) != 0 {
		t.Fatalf("empty state: Set calls %v, want one empty", sets)
	}
}

func TestHealthSpecPorts(t *testing.T) {
	v := model.VIP{Address: netip.MustParseAddr("2001:db8::1"), Port: 443, Protocol: model.TCP,
		HealthCheck: &model.HealthCheck{Type: model.CheckUDP}}
	b := model.Backend{Address: netip.MustParseAddr("2001:db8::11")}
	s, ok := model.HealthSpec(&v, b)
	if !ok || s.Target != netip.MustParseAddrPort("[2001:db8::11]:443") || s.Host != "" {
		t.Errorf("vip port: %+v %v", s, ok)
	}
	b.Port = 8443
	if s, _ := model.HealthSpec(&v, b); s.Target.Port() != 8443 {
		t.Errorf("backend port: %v", s.Target)
	}
	v.HealthCheck.Port = 9000
	if s, _ := model.HealthSpec(&v, b); s.Target.Port() != 9000 {
		t.Errorf("check port: %v", s.Target)
	}
	if got := model.HealthTargetID(v.ID(), b.Address, b.Port); got != "[2001:db8::1]:443/tcp|[2001:db8::11]:8443" {
		t.Errorf("id %q", got)
	}
	v.HealthCheck = &model.HealthCheck{Type: model.CheckNone}
	if _, ok := model.HealthSpec(&v, b); ok {
		t.Error("check none has a spec")
	}
}
