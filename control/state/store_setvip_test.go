package state

import (
	"errors"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/xdplb/xdplb/control/model"
)

// SetVIP changes the options of one VIP and nothing else: its backends
// stay, the change is one journal record, and a reopened store has it.
func TestStoreSetVIP(t *testing.T) {
	dir := t.TempDir()
	s := journalStore(t, dir)
	a, b := testVIP("10.0.0.1", 80), testVIP("10.0.0.2", 80)
	a.HealthCheck = &model.HealthCheck{Type: model.CheckHTTP, Path: "/healthz"}
	a.Backends = []model.Backend{backend("10.0.1.1", 100), backend("10.0.1.2", 0)}
	if err := s.Replace(model.State{VIPs: []model.VIP{a, b}}); err != nil {
		t.Fatal(err)
	}
	file, before := readFile(t, s.Path()), s.State()
	iv, sh, expect := model.Duration(3*time.Second), model.SchedSH, "200-299"
	p := model.VIPPatch{Scheduler: &sh, HealthCheck: &model.HealthCheckPatch{Interval: &iv, Expect: &expect},
		Fallback: &model.Fallback{Address: netip.MustParseAddr("10.0.1.99")}}
	if err := s.SetVIP(a.ID(), p); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, s.Path()); got != file {
		t.Fatal("vip set rewrote the state file: want a journal record")
	}
	got := s.State()
	want := before.Clone()
	w := &want.VIPs[0]
	w.Scheduler, w.HealthCheck.Interval, w.HealthCheck.Expect = sh, iv, expect
	w.Fallback = &model.Fallback{Address: netip.MustParseAddr("10.0.1.99")}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("after set\n got %+v\nwant %+v", got, want)
	}
	if again := openTestStore(t, dir, nil).State(); !reflect.DeepEqual(again, got) {
		t.Fatalf("reopened\n got %+v\nwant %+v", again, got)
	}

	// Refused changes leave the state as it was.
	gen := s.Generation()
	missing := testVIP("10.0.0.9", 80)
	bad := model.Scheduler("hash")
	long := model.Duration(5 * time.Second)
	for name, tc := range map[string]struct {
		id   model.VIPID
		p    model.VIPPatch
		want error
	}{
		"unknown vip":       {missing.ID(), model.VIPPatch{Scheduler: &sh}, model.ErrNotFound},
		"bad scheduler":     {a.ID(), model.VIPPatch{Scheduler: &bad}, model.ErrInvalid},
		"fallback backend":  {a.ID(), model.VIPPatch{Fallback: &model.Fallback{Address: netip.MustParseAddr("10.0.1.1")}}, model.ErrInvalid},
		"check of no check": {b.ID(), model.VIPPatch{HealthCheck: &model.HealthCheckPatch{Interval: &iv}}, model.ErrInvalid},
		"timeout 5s":        {a.ID(), model.VIPPatch{HealthCheck: &model.HealthCheckPatch{Timeout: &long}}, model.ErrInvalid},
	} {
		if err := s.SetVIP(tc.id, tc.p); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
	if s.Generation() != gen || !reflect.DeepEqual(s.State(), got) {
		t.Fatal("a refused set changed the state")
	}
	// A set that changes nothing writes nothing and wakes nobody.
	if err := s.SetVIP(a.ID(), p); err != nil || s.Generation() != gen {
		t.Fatalf("idempotent set: %v, generation %d -> %d", err, gen, s.Generation())
	}
}

// The extra check sees a VIP's fallback among its backends when it is
// new or changed, and not otherwise: a fallback is reached as a backend is.
func TestStoreFallbackExtraCheck(t *testing.T) {
	var seen []model.State
	errHost := errors.New("an address of this host")
	s := openTestStore(t, t.TempDir(), func(st model.State) error {
		seen = append(seen, st)
		for _, v := range st.VIPs {
			for _, b := range v.Backends {
				if b.Address == netip.MustParseAddr("10.0.1.250") {
					return errHost
				}
			}
		}
		return nil
	})
	v := testVIP("10.0.0.1", 80)
	v.Backends = []model.Backend{backend("10.0.1.1", 1)}
	v.Fallback = &model.Fallback{Address: netip.MustParseAddr("10.0.1.99")}
	if err := s.AddVIP(v); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 1 || len(seen[0].VIPs[0].Backends) != 2 || seen[0].VIPs[0].Backends[1].Address != netip.MustParseAddr("10.0.1.99") {
		t.Fatalf("add: extra check saw %+v", seen)
	}
	seen = nil
	sh := model.SchedSH
	if err := s.SetVIP(v.ID(), model.VIPPatch{Scheduler: &sh}); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 1 || len(seen[0].VIPs) != 0 {
		t.Fatalf("scheduler change: extra check saw %+v, want nothing new", seen)
	}
	seen = nil
	if err := s.SetVIP(v.ID(), model.VIPPatch{Fallback: &model.Fallback{Address: netip.MustParseAddr("10.0.1.98")}}); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 1 || len(seen[0].VIPs) != 1 || len(seen[0].VIPs[0].Backends) != 1 || seen[0].VIPs[0].Backends[0].Address != netip.MustParseAddr("10.0.1.98") {
		t.Fatalf("new fallback: extra check saw %+v, want the fallback alone", seen)
	}
	err := s.SetVIP(v.ID(), model.VIPPatch{Fallback: &model.Fallback{Address: netip.MustParseAddr("10.0.1.250")}})
	if !errors.Is(err, model.ErrInvalid) || !errors.Is(err, errHost) {
		t.Fatalf("fallback the extra check refuses: %v", err)
	}
	if f := s.State().VIPs[0].Fallback; f == nil || f.Address != netip.MustParseAddr("10.0.1.98") {
		t.Fatalf("fallback %+v after a refused set", f)
	}
}
