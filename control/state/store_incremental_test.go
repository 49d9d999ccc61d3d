package state

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/xdplb/xdplb/control/model"
)

// incrementalState is three VIPs with backends, one IPv6 and one with a
// check and an announce flag: the shapes a single-VIP change must leave as
// they are.
func incrementalState() model.State {
	off := false
	v6 := model.VIP{Address: netip.MustParseAddr("2001:db8::1"), Port: 443, Protocol: model.TCP,
		Backends: []model.Backend{{Address: netip.MustParseAddr("2001:db8::10"), Weight: 5}}}
	checked := testVIP("10.0.0.2", 80)
	checked.Announce = &off
	checked.HealthCheck = &model.HealthCheck{Type: model.CheckHTTP, Path: "/health"}
	checked.Backends = []model.Backend{backend("10.1.0.1", 1), backend("10.1.0.2", 2)}
	big := testVIP("10.0.0.1", 80)
	for i := range 50 {
		big.Backends = append(big.Backends, backend(netip.AddrFrom4([4]byte{10, 2, 0, byte(i + 1)}).String(), 100))
	}
	return model.State{VIPs: []model.VIP{big, checked, v6}}
}

// TestStoreSingleVIPChangeLeavesOthers: a change of one VIP leaves the
// other VIPs' stored values equal to what callers got before, and neither
// what callers got before nor what they get after shares memory with the
// store.
func TestStoreSingleVIPChangeLeavesOthers(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir, nil)
	if err := s.Replace(incrementalState()); err != nil {
		t.Fatal(err)
	}
	before, keep := s.State(), s.State()
	big := before.VIPs[0].ID()
	w := uint32(7)
	if err := s.SetBackend(big, netip.MustParseAddr("10.2.0.9"), 0, model.BackendPatch{Weight: &w}); err != nil {
		t.Fatal(err)
	}
	after := s.State()
	if got := after.VIPs[0].Backends[8]; got.Address != netip.MustParseAddr("10.2.0.9") || got.Weight != 7 {
		t.Fatalf("changed backend %+v", got)
	}
	for i := 1; i < len(after.VIPs); i++ {
		if !reflect.DeepEqual(after.VIPs[i], before.VIPs[i]) {
			t.Errorf("vip %d changed: %+v, want %+v", i, after.VIPs[i], before.VIPs[i])
		}
	}

	// Scribble over everything a caller got: the store must not see it.
	for _, st := range []model.State{before, after} {
		for i := range st.VIPs {
			v := &st.VIPs[i]
			for j := range v.Backends {
				v.Backends[j].Weight = 999
			}
			if v.Announce != nil {
				*v.Announce = !*v.Announce
			}
			if v.HealthCheck != nil {
				v.HealthCheck.Path = "/scribbled"
			}
		}
	}
	got := s.State()
	want := keep
	want.VIPs[0].Backends[8].Weight = 7
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("store changed through a caller's copy:\n%+v\nwant\n%+v", got, want)
	}
	for i := range got.VIPs {
		if &got.VIPs[i].Backends[0] == &snapshot(s).VIPs[i].Backends[0] {
			t.Errorf("vip %d: State shares backends with the store", i)
		}
	}

	// The file is what MarshalState writes, and reads back the same.
	checkFile(t, s)
	if st := openTestStore(t, dir, nil).State(); !reflect.DeepEqual(st, want) {
		t.Fatalf("reopened state %+v, want %+v", st, want)
	}
}

// TestStoreIncrementalFile: after each kind of change, the state file
// written from cached parts is exactly MarshalState of the state.
func TestStoreIncrementalFile(t *testing.T) {
	s := openTestStore(t, t.TempDir(), nil)
	if err := s.Replace(incrementalState()); err != nil {
		t.Fatal(err)
	}
	st := incrementalState()
	big, checked, v6 := st.VIPs[0].ID(), st.VIPs[1].ID(), st.VIPs[2].ID()
	w0, w3, drain := uint32(0), uint32(3), true
	steps := []struct {
		name   string
		change func() error
	}{
		{"set weight", func() error {
			return s.SetBackend(big, netip.MustParseAddr("10.2.0.1"), 0, model.BackendPatch{Weight: &w0})
		}},
		{"drain", func() error {
			return s.SetBackend(checked, netip.MustParseAddr("10.1.0.2"), 0, model.BackendPatch{Drain: &drain})
		}},
		{"add first", func() error { return s.AddBackend(big, backend("10.2.0.0", 1)) }},
		{"add last", func() error { return s.AddBackend(big, backend("10.2.1.0", 1)) }},
		{"add with port", func() error {
			return s.AddBackend(v6, model.Backend{Address: netip.MustParseAddr("2001:db8::11"), Port: 443, Weight: 4})
		}},
		{"delete middle", func() error { return s.DeleteBackend(big, netip.MustParseAddr("10.2.0.20"), 0) }},
		{"delete last of a vip", func() error { return s.DeleteBackend(v6, netip.MustParseAddr("2001:db8::10"), 443) }},
		{"delete last backend", func() error { return s.DeleteBackend(v6, netip.MustParseAddr("2001:db8::11"), 0) }},
		{"add to empty", func() error {
			return s.AddBackend(v6, model.Backend{Address: netip.MustParseAddr("2001:db8::12"), Weight: w3})
		}},
		{"add vip", func() error { return s.AddVIP(testVIP("10.0.0.3", 53)) }},
		{"add vip first", func() error { return s.AddVIP(testVIP("10.0.0.0", 53)) }},
		{"delete vip", func() error { return s.DeleteVIP(checked) }},
	}
	for _, step := range steps {
		if err := step.change(); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		checkFile(t, s)
	}
}

func checkFile(t *testing.T, s *Store) {
	t.Helper()
	want, err := encodeFile(s.State())
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	// With the journal on, the file is older than the state: the file
	// and the journal together are the state.
	if _, err := os.Stat(filepath.Join(filepath.Dir(s.Path()), JournalFile)); err == nil {
		reopened, err := Open(filepath.Dir(s.Path()), nil)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(reopened.State(), s.State()) {
			t.Fatalf("state file and journal hold\n%+v\nwant %+v", reopened.State(), s.State())
		}
		return
	}
	if string(got) != string(want) {
		t.Fatalf("state file:\n%s\nwant:\n%s", got, want)
	}
}
