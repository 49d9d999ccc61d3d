package state

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/xdplb/xdplb/control/config"
	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/internal/testutil"
)

func mustVIPID(t *testing.T, s string) model.VIPID {
	t.Helper()
	id, err := model.ParseVIPID(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func testVIP(addr string, port uint16) model.VIP {
	return model.VIP{Address: netip.MustParseAddr(addr), Port: port, Protocol: model.TCP}
}

func backend(addr string, weight uint32) model.Backend {
	return model.Backend{Address: netip.MustParseAddr(addr), Weight: weight}
}

func openTestStore(t *testing.T, dir string, extra func(model.State) error) *Store {
	t.Helper()
	s, err := Open(dir, extra)
	if err != nil {
		t.Fatalf("OpenStore: %v", err)
	}
	return s
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return string(b)
}

func TestStoreOpenCreatesDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "state")
	s := openTestStore(t, dir, nil)
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %v, want 0700", fi.Mode().Perm())
	}
	if got := s.State(); got.VIPs == nil || len(got.VIPs) != 0 {
		t.Errorf("fresh store state %+v", got)
	}
	if _, err := os.Stat(filepath.Join(dir, File)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state file written before any change: %v", err)
	}
}

func TestStorePersistAndReopen(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir, nil)
	v4 := mustVIPID(t, "10.200.0.100:80/tcp")
	v6 := mustVIPID(t, "[2001:db8::1]:443/tcp")
	steps := []error{
		s.AddVIP(testVIP("10.200.0.100", 80)),
		s.AddVIP(model.VIP{Address: netip.MustParseAddr("2001:db8::1"), Port: 443, Protocol: model.TCP, Scheduler: model.SchedSH,
			HealthCheck: &model.HealthCheck{Type: model.CheckHTTP, Path: "/healthz"}}),
		s.AddBackend(v4, backend("10.200.0.12", 100)),
		s.AddBackend(v4, backend("10.200.0.11", 0)),
		s.AddBackend(v6, backend("2001:db8::11", 100)),
		s.AddBackend(v6, model.Backend{Address: netip.MustParseAddr("2001:db8::12"), Port: 443, Weight: 5}),
		s.SetBackend(v4, netip.MustParseAddr("10.200.0.12"), 0, model.BackendPatch{Drain: testutil.BoolPtr(true)}),
		s.SetBackend(v6, netip.MustParseAddr("2001:db8::12"), 0, model.BackendPatch{Weight: new(uint32(9))}),
		s.DeleteBackend(v6, netip.MustParseAddr("2001:db8::11"), 443),
	}
	for i, err := range steps {
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	got := s.State()
	want := model.State{VIPs: []model.VIP{
		{Address: netip.MustParseAddr("10.200.0.100"), Port: 80, Protocol: model.TCP, Mode: model.ModeDR, Scheduler: model.SchedMaglev,
			Backends: []model.Backend{backend("10.200.0.11", 0), {Address: netip.MustParseAddr("10.200.0.12"), Weight: 100, Drain: true}}},
		{Address: netip.MustParseAddr("2001:db8::1"), Port: 443, Protocol: model.TCP, Mode: model.ModeDR, Scheduler: model.SchedSH,
			HealthCheck: &model.HealthCheck{Type: model.CheckHTTP, Path: "/healthz", Interval: model.DefaultCheckInterval, Timeout: model.DefaultCheckTimeout, Rise: model.DefaultRise, Fall: model.DefaultFall},
			Backends:    []model.Backend{backend("2001:db8::12", 9)}},
	}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("state\n got %+v\nwant %+v", got, want)
	}
	v, err := s.VIP(v6)
	if err != nil || !reflect.DeepEqual(v, want.VIPs[1]) {
		t.Fatalf("VIP(%s) = %+v, %v", v6, v, err)
	}

	reopened := openTestStore(t, dir, nil)
	if !reflect.DeepEqual(reopened.State(), want) {
		t.Fatalf("reopened state\n got %+v\nwant %+v", reopened.State(), want)
	}
	fi, err := os.Stat(filepath.Join(dir, File))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v, mode %v", err, fi.Mode())
	}
	var names []string
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{File, LastGoodFile}) {
		t.Errorf("state dir holds %v, want only %s and %s", names, File, LastGoodFile)
	}

	if err := s.DeleteVIP(v4); err != nil {
		t.Fatal(err)
	}
	if got := openTestStore(t, dir, nil).State(); len(got.VIPs) != 1 || got.VIPs[0].ID() != v6 {
		t.Fatalf("after delete: %+v", got)
	}
}

func TestStoreStateIsACopy(t *testing.T) {
	s := openTestStore(t, t.TempDir(), nil)
	v := testVIP("10.0.0.1", 80)
	v.Backends = []model.Backend{backend("10.0.0.2", 1)}
	v.HealthCheck = &model.HealthCheck{Type: model.CheckTCP}
	if err := s.AddVIP(v); err != nil {
		t.Fatal(err)
	}
	v.Backends[0].Weight = 50 // the caller's value must not alias the store's
	st := s.State()
	st.VIPs[0].Backends[0].Weight = 77
	st.VIPs[0].HealthCheck.Rise = 9
	st.VIPs = append(st.VIPs, testVIP("10.0.0.9", 80))
	again := s.State()
	if len(again.VIPs) != 1 || again.VIPs[0].Backends[0].Weight != 1 || again.VIPs[0].HealthCheck.Rise != model.DefaultRise {
		t.Fatalf("store changed through a copy: %+v", again)
	}
}

func TestStoreErrors(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir, nil)
	id := mustVIPID(t, "10.0.0.1:80/tcp")
	if err := s.AddVIP(testVIP("10.0.0.1", 80)); err != nil {
		t.Fatal(err)
	}
	if err := s.AddBackend(id, backend("10.0.0.2", 100)); err != nil {
		t.Fatal(err)
	}
	other := mustVIPID(t, "10.0.0.1:81/tcp")
	mapped := model.VIPID{Addr: netip.MustParseAddr("::ffff:10.0.0.1"), Port: 80, Protocol: model.TCP}
	cases := []struct {
		name string
		err  error
		is   error
		msg  string
	}{
		{"duplicate vip", s.AddVIP(testVIP("10.0.0.1", 80)), model.ErrExists, "vip 10.0.0.1:80/tcp: already exists"},
		{"duplicate vip mapped", s.AddVIP(testVIP("::ffff:10.0.0.1", 80)), model.ErrExists, "vip 10.0.0.1:80/tcp"},
		{"delete unknown vip", s.DeleteVIP(other), model.ErrNotFound, "vip 10.0.0.1:81/tcp: not found"},
		{"backend of unknown vip", s.AddBackend(other, backend("10.0.0.3", 1)), model.ErrNotFound, "vip 10.0.0.1:81/tcp"},
		{"duplicate backend", s.AddBackend(mapped, backend("10.0.0.2", 5)), model.ErrExists, "vip 10.0.0.1:80/tcp: backend 10.0.0.2: already exists"},
		{"duplicate backend vip port", s.AddBackend(id, model.Backend{Address: netip.MustParseAddr("10.0.0.2"), Port: 80}), model.ErrExists, "backend 10.0.0.2:80"},
		{"set unknown backend", s.SetBackend(id, netip.MustParseAddr("10.0.0.3"), 0, model.BackendPatch{}), model.ErrNotFound, "vip 10.0.0.1:80/tcp: backend 10.0.0.3: not found"},
		{"set backend of unknown vip", s.SetBackend(other, netip.MustParseAddr("10.0.0.2"), 0, model.BackendPatch{}), model.ErrNotFound, "vip 10.0.0.1:81/tcp"},
		{"delete unknown backend", s.DeleteBackend(id, netip.MustParseAddr("10.0.0.2"), 8080), model.ErrNotFound, "backend 10.0.0.2:8080: not found"},
		{"invalid vip", s.AddVIP(testVIP("10.0.0.5", 0)), model.ErrInvalid, "port must be 1-65535"},
		{"invalid backend", s.AddBackend(id, backend("2001:db8::1", 1)), model.ErrInvalid, "address family differs"},
		{"invalid weight", s.SetBackend(id, netip.MustParseAddr("10.0.0.2"), 80, model.BackendPatch{Weight: new(uint32(70000))}), model.ErrInvalid, "weight 70000"},
		{"invalid replace", s.Replace(model.State{VIPs: []model.VIP{testVIP("10.0.0.1", 80), testVIP("10.0.0.1", 80)}}), model.ErrInvalid, "duplicate vip"},
	}
	for _, tc := range cases {
		if !errors.Is(tc.err, tc.is) {
			t.Errorf("%s: error %v, want %v", tc.name, tc.err, tc.is)
			continue
		}
		if !strings.Contains(tc.err.Error(), tc.msg) {
			t.Errorf("%s: error %q, want it to contain %q", tc.name, tc.err, tc.msg)
		}
	}
	want := model.State{VIPs: []model.VIP{{Address: netip.MustParseAddr("10.0.0.1"), Port: 80, Protocol: model.TCP, Mode: model.ModeDR,
		Scheduler: model.SchedMaglev, Backends: []model.Backend{backend("10.0.0.2", 100)}}}}
	if !reflect.DeepEqual(s.State(), want) {
		t.Fatalf("failed mutations changed the state: %+v", s.State())
	}
}

// Each failure mode must leave memory, disk and subscribers untouched.
func TestStoreFailureLeavesStateUnchanged(t *testing.T) {
	errExtra := errors.New("backend 10.0.0.9 is not on a connected subnet")
	rejectBackend := func(st model.State) error {
		for _, v := range st.VIPs {
			for _, b := range v.Backends {
				if b.Address == netip.MustParseAddr("10.0.0.9") {
					return errExtra
				}
			}
		}
		return nil
	}
	id := model.VIPID{Addr: netip.MustParseAddr("10.0.0.1"), Port: 80, Protocol: model.TCP}
	cases := []struct {
		name  string
		setup func(t *testing.T, s *Store)
		do    func(s *Store) error
		is    []error
	}{
		{"validation", nil, func(s *Store) error {
			return s.AddBackend(id, model.Backend{Address: netip.MustParseAddr("10.0.0.3"), Port: 8080})
		}, []error{model.ErrInvalid}},
		{"extra check", nil, func(s *Store) error { return s.AddBackend(id, backend("10.0.0.9", 1)) }, []error{model.ErrInvalid, errExtra}},
		{"extra check on replace", nil, func(s *Store) error {
			st := s.State()
			st.VIPs[0].Backends = append(st.VIPs[0].Backends, backend("10.0.0.9", 1))
			return s.Replace(st)
		}, []error{model.ErrInvalid, errExtra}},
		{"injected persist", func(t *testing.T, s *Store) {
			s.persist = func(string, []byte) error { return errors.New("disk full") }
		}, func(s *Store) error { return s.DeleteVIP(id) }, nil},
		{"rename fails", func(t *testing.T, s *Store) {
			// A directory in the file's place makes the rename fail, even for root.
			if err := os.Remove(s.Path()); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(s.Path(), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(s.Path(), "keep"), nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}, func(s *Store) error { return s.AddVIP(testVIP("10.0.0.7", 80)) }, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openTestStore(t, dir, rejectBackend)
			if err := s.AddVIP(model.VIP{Address: id.Addr, Port: 80, Protocol: model.TCP, Backends: []model.Backend{backend("10.0.0.2", 100)}}); err != nil {
				t.Fatal(err)
			}
			sub := s.Subscribe()
			before, fileBefore := s.State(), readFile(t, s.Path())
			if tc.setup != nil {
				tc.setup(t, s)
			}
			err := tc.do(s)
			if err == nil {
				t.Fatal("no error")
			}
			for _, want := range tc.is {
				if !errors.Is(err, want) {
					t.Errorf("error %v is not %v", err, want)
				}
			}
			if !reflect.DeepEqual(s.State(), before) {
				t.Errorf("state changed:\n%+v\n%+v", s.State(), before)
			}
			if fi, statErr := os.Stat(s.Path()); statErr == nil && !fi.IsDir() && readFile(t, s.Path()) != fileBefore {
				t.Errorf("state file changed")
			}
			select {
			case <-sub:
				t.Error("subscriber notified of a failed change")
			default:
			}
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				if strings.HasPrefix(e.Name(), "."+File) {
					t.Errorf("temp file %s left behind", e.Name())
				}
			}
		})
	}
}

func TestStoreOpenRejectsBadFile(t *testing.T) {
	good := `{"vips":[{"address":"10.0.0.1","port":80,"protocol":"tcp","backends":[]}]}`
	cases := map[string]string{
		"corrupt":           `{"version":1,"sha256":`,
		"yaml":              "vips: [\n",
		"unknown field":     envelopeOf(`{"vips":[{"address":"10.0.0.1","port":80,"protocol":"tcp","color":"red"}]}`),
		"invalid":           envelopeOf(`{"vips":[{"address":"10.0.0.1","port":80,"protocol":"tcp","mode":"tunnel"}]}`),
		"checksum mismatch": strings.Replace(envelopeOf(good), `"port":80`, `"port":81`, 1),
		"other version":     strings.Replace(envelopeOf(good), `"version":1`, `"version":2`, 1),
	}
	for name, content := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, File)
			if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Open(dir, nil)
			if err == nil || !strings.Contains(err.Error(), p) {
				t.Fatalf("OpenStore: %v, want an error naming %s", err, p)
			}
			if readFile(t, p) != content {
				t.Fatal("bad state file was rewritten")
			}
		})
	}

	dir := t.TempDir()
	s := openTestStore(t, dir, nil)
	if err := s.AddVIP(testVIP("10.0.0.1", 80)); err != nil {
		t.Fatal(err)
	}
	errExtra := errors.New("no interface for 10.0.0.1")
	if _, err := Open(dir, func(model.State) error { return errExtra }); !errors.Is(err, errExtra) || !errors.Is(err, model.ErrInvalid) {
		t.Fatalf("extra check on open: %v", err)
	}
}

func TestStoreOpenRemovesTempFiles(t *testing.T) {
	dir := t.TempDir()
	leftover := filepath.Join(dir, "."+File+"123")
	if err := os.WriteFile(leftover, []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	openTestStore(t, dir, nil)
	if _, err := os.Stat(leftover); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("leftover temp file: %v", err)
	}
}

func TestStoreSubscribe(t *testing.T) {
	s := openTestStore(t, t.TempDir(), nil)
	a, b := s.Subscribe(), s.Subscribe()
	for i := range 5 { // coalesced: the buffer holds one, the rest must not block
		if err := s.AddVIP(testVIP(fmt.Sprintf("10.0.0.%d", i+1), 80)); err != nil {
			t.Fatal(err)
		}
	}
	for _, ch := range []<-chan struct{}{a, b} {
		select {
		case <-ch:
		default:
			t.Fatal("no notification")
		}
		select {
		case <-ch:
			t.Fatal("notifications not coalesced")
		default:
		}
	}
	// A no-op change (same state again) writes nothing and wakes nobody.
	fileBefore := readFile(t, s.Path())
	if err := s.Replace(s.State()); err != nil {
		t.Fatal(err)
	}
	if err := s.SetBackend(mustVIPID(t, "10.0.0.1:80/tcp"), netip.MustParseAddr("10.0.0.2"), 0, model.BackendPatch{}); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("SetBackend: %v", err)
	}
	select {
	case <-a:
		t.Fatal("notified for a no-op")
	default:
	}
	if readFile(t, s.Path()) != fileBefore {
		t.Fatal("no-op rewrote the file")
	}
	if err := s.DeleteVIP(mustVIPID(t, "10.0.0.1:80/tcp")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a:
	default:
		t.Fatal("no notification after delete")
	}
}

func TestStoreReplaceRoundTrip(t *testing.T) {
	// export then apply gives the same state, through the store.
	dir := t.TempDir()
	s := openTestStore(t, dir, nil)
	if err := s.Replace(testutil.RoundTripState()); err != nil {
		t.Fatal(err)
	}
	out, err := config.Marshal(s.State())
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := config.Parse(out)
	if err != nil {
		t.Fatal(err)
	}
	s2 := openTestStore(t, t.TempDir(), nil)
	if err := s2.Replace(parsed); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(s2.State(), s.State()) {
		t.Fatalf("apply(export) differs:\n%+v\n%+v", s2.State(), s.State())
	}
}

func TestStoreConcurrent(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir, nil)
	sub := s.Subscribe()
	const workers, perWorker = 8, 10
	var wg sync.WaitGroup
	errs := make(chan error, workers*perWorker*3)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := model.VIPID{Addr: netip.AddrFrom4([4]byte{10, 1, byte(w), 1}), Port: 80, Protocol: model.TCP}
			if err := s.AddVIP(model.VIP{Address: id.Addr, Port: 80, Protocol: model.TCP}); err != nil {
				errs <- err
				return
			}
			for i := range perWorker {
				addr := netip.AddrFrom4([4]byte{10, 1, byte(w), byte(10 + i)})
				if err := s.AddBackend(id, model.Backend{Address: addr, Weight: 1}); err != nil {
					errs <- err
				}
				if err := s.SetBackend(id, addr, 0, model.BackendPatch{Weight: new(uint32(uint32(i + 2)))}); err != nil {
					errs <- err
				}
				_ = s.State()
			}
			// Everyone also races for the same VIP: exactly one wins.
			if err := s.AddVIP(testVIP("10.9.9.9", 80)); err != nil && !errors.Is(err, model.ErrExists) {
				errs <- err
			}
		}()
	}
	done := make(chan struct{})
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for {
			select {
			case <-sub:
				_ = s.State()
			case <-done:
				return
			}
		}
	}()
	wg.Wait()
	close(done)
	<-readerDone
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	got := s.State()
	if len(got.VIPs) != workers+1 {
		t.Fatalf("%d vips, want %d", len(got.VIPs), workers+1)
	}
	total := 0
	for _, v := range got.VIPs {
		for i, b := range v.Backends {
			if b.Weight != uint32(i+2) {
				t.Errorf("vip %s backend %s weight %d, want %d", v.ID(), b.Address, b.Weight, i+2)
			}
		}
		total += len(v.Backends)
	}
	if total != workers*perWorker {
		t.Fatalf("%d backends, want %d", total, workers*perWorker)
	}
	if reopened := openTestStore(t, dir, nil).State(); !reflect.DeepEqual(reopened, got) {
		t.Fatal("file differs from memory after concurrent mutations")
	}
}

// envelopeOf is a state file holding body with its right checksum.
func envelopeOf(body string) string {
	sum := sha256.Sum256([]byte(body))
	return `{"version":1,"sha256":"` + hex.EncodeToString(sum[:]) + `","state":` + body + "}\n"
}

func snapshot(s *Store) model.State {
	st, _ := s.Snapshot()
	return st
}

// The state file keeps a NAT VIP's mode, SNAT address and backend ports;
// the extra check sees the whole VIP again when its mode or SNAT address
// changes, since both decide how its backends are checked.
func TestStoreNATFields(t *testing.T) {
	dir := t.TempDir()
	var seen []model.State
	s := openTestStore(t, dir, func(st model.State) error { seen = append(seen, st); return nil })
	v := model.VIP{Address: netip.MustParseAddr("10.0.0.1"), Port: 80, Protocol: model.TCP, Mode: model.ModeFullNAT,
		SNATAddr: netip.MustParseAddr("10.0.9.1"),
		Backends: []model.Backend{{Address: netip.MustParseAddr("10.0.1.1"), Port: 8080, Weight: 1}, backend("10.0.1.2", 1)}}
	if err := s.AddVIP(v); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(readFile(t, filepath.Join(dir, File)), `"mode":"fullnat","snat_addr":"10.0.9.1"`) {
		t.Fatalf("state file %s", readFile(t, filepath.Join(dir, File)))
	}
	again := openTestStore(t, dir, nil).State()
	if got := again.VIPs[0]; got.SNATAddr != v.SNATAddr || got.Mode != model.ModeFullNAT || got.Backends[0].Port != 8080 {
		t.Fatalf("reopened %+v", got)
	}
	for _, change := range []func(*model.VIP){
		func(v *model.VIP) { v.SNATAddr = netip.MustParseAddr("10.0.9.2") },
		func(v *model.VIP) { v.SNATAddr = netip.Addr{} },
		func(v *model.VIP) { v.Mode = model.ModeNAT },
	} {
		next := s.State()
		change(&next.VIPs[0])
		seen = nil
		if err := s.Replace(next); err != nil {
			t.Fatal(err)
		}
		if len(seen) != 1 || len(seen[0].VIPs) != 1 || len(seen[0].VIPs[0].Backends) != 2 {
			t.Fatalf("extra check saw %+v, want the whole vip", seen)
		}
	}
}
