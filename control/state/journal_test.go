package state

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/xdplb/xdplb/control/model"
)

// journalStore is a store that journals single-VIP changes of any state.
func journalStore(t *testing.T, dir string) *Store {
	t.Helper()
	s := openTestStore(t, dir, nil)
	s.journal.min = 0
	return s
}

func weightOf(w uint32) model.BackendPatch { return model.BackendPatch{Weight: &w} }

// Single-VIP changes go to the journal and leave the state file as it
// was; a reopened store has them all; apply rewrites the state file and
// drops the journal.
func TestJournalReplay(t *testing.T) {
	dir := t.TempDir()
	s := journalStore(t, dir)
	a, b := testVIP("10.0.0.1", 80), testVIP("10.0.0.2", 80)
	a.Backends = []model.Backend{backend("10.0.1.1", 100), backend("10.0.1.2", 100)}
	if err := s.Replace(model.State{VIPs: []model.VIP{a}}); err != nil {
		t.Fatal(err)
	}
	file := readFile(t, s.Path())
	changes := []func() error{
		func() error { return s.SetBackend(a.ID(), netip.MustParseAddr("10.0.1.2"), 0, weightOf(7)) },
		func() error { return s.AddVIP(b) },
		func() error { return s.AddBackend(b.ID(), backend("10.0.2.1", 5)) },
		func() error { return s.DeleteBackend(a.ID(), netip.MustParseAddr("10.0.1.1"), 0) },
		func() error { return s.DeleteVIP(b.ID()) },
		func() error { return s.AddVIP(b) },
	}
	for i, change := range changes {
		if err := change(); err != nil {
			t.Fatalf("change %d: %v", i, err)
		}
		if got := readFile(t, s.Path()); got != file {
			t.Fatalf("change %d rewrote the state file", i)
		}
		if got := openTestStore(t, dir, nil).State(); !reflect.DeepEqual(got, s.State()) {
			t.Fatalf("after change %d, reopened state\n got %+v\nwant %+v", i, got, s.State())
		}
	}
	if _, err := os.Stat(filepath.Join(dir, JournalFile)); err != nil {
		t.Fatalf("journal: %v", err)
	}

	want := s.State()
	want.VIPs[0].Backends[0].Weight = 9
	if err := s.Replace(want); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, JournalFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("journal after apply: %v", err)
	}
	checkFile(t, s)
	if got := openTestStore(t, dir, nil).State(); !reflect.DeepEqual(got, want) {
		t.Fatalf("reopened after apply\n got %+v\nwant %+v", got, want)
	}
}

// The journal is bounded: once it would pass half the state file, the
// change rewrites the state file (from every VIP, journaled ones too).
func TestJournalCompacts(t *testing.T) {
	dir := t.TempDir()
	s := journalStore(t, dir)
	a, b := testVIP("10.0.0.1", 80), testVIP("10.0.0.2", 80)
	a.Backends = []model.Backend{backend("10.0.1.1", 100)}
	b.Backends = []model.Backend{backend("10.0.2.1", 100)}
	if err := s.Replace(model.State{VIPs: []model.VIP{a, b}}); err != nil {
		t.Fatal(err)
	}
	rewrites := 0
	file := readFile(t, s.Path())
	for i := range 200 {
		id, addr := a.ID(), "10.0.1.1"
		if i%3 == 0 {
			id, addr = b.ID(), "10.0.2.1"
		}
		if err := s.SetBackend(id, netip.MustParseAddr(addr), 0, weightOf(uint32(1+i))); err != nil {
			t.Fatal(err)
		}
		if f := readFile(t, s.Path()); f != file {
			rewrites++
			file = f
			checkFile(t, s)
		}
		fi, err := os.Stat(filepath.Join(dir, JournalFile))
		if err == nil && fi.Size() > s.journal.baseSize/2+journalSlack {
			t.Fatalf("journal of %d bytes beside a state file of %d", fi.Size(), s.journal.baseSize)
		}
	}
	if rewrites == 0 || rewrites > 100 {
		t.Errorf("%d state-file rewrites for 200 changes", rewrites)
	}
	if got := openTestStore(t, dir, nil).State(); !reflect.DeepEqual(got, s.State()) {
		t.Fatalf("reopened state\n got %+v\nwant %+v", got, s.State())
	}
}

// A torn last record was never acknowledged and is dropped; a bad record
// before others is corruption; a journal of another state file is ignored.
func TestJournalDamage(t *testing.T) {
	setup := func(t *testing.T) (string, model.State, model.State) {
		dir := t.TempDir()
		s := journalStore(t, dir)
		a := testVIP("10.0.0.1", 80)
		a.Backends = []model.Backend{backend("10.0.1.1", 100)}
		if err := s.Replace(model.State{VIPs: []model.VIP{a}}); err != nil {
			t.Fatal(err)
		}
		before := s.State()
		if err := s.SetBackend(a.ID(), netip.MustParseAddr("10.0.1.1"), 0, weightOf(3)); err != nil {
			t.Fatal(err)
		}
		return dir, before, s.State()
	}
	jpath := func(dir string) string { return filepath.Join(dir, JournalFile) }

	t.Run("torn", func(t *testing.T) {
		dir, _, after := setup(t)
		f, err := os.OpenFile(jpath(dir), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(`{"set":{"address":"10.0.0.1","po`)
		f.Close()
		if got := openTestStore(t, dir, nil).State(); !reflect.DeepEqual(got, after) {
			t.Fatalf("state %+v, want %+v", got, after)
		}
	})
	t.Run("corrupt", func(t *testing.T) {
		dir, _, _ := setup(t)
		j := readFile(t, jpath(dir))
		lines := strings.SplitAfter(j, "\n")
		bad := lines[0] + "garbage\n" + strings.Join(lines[1:], "")
		if err := os.WriteFile(jpath(dir), []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(dir, nil); err == nil || !strings.Contains(err.Error(), JournalFile) {
			t.Fatalf("open with a corrupt journal: %v", err)
		}
	})
	t.Run("other base", func(t *testing.T) {
		dir, before, _ := setup(t)
		// The state file rewritten after the journal was written, as a
		// crash between the rename and the journal's removal leaves it.
		data, err := encodeFile(before)
		if err != nil {
			t.Fatal(err)
		}
		data = append(data[:len(data)-2], " }\n"...) // same state, other bytes
		if err := os.WriteFile(filepath.Join(dir, File), data, 0o600); err != nil {
			t.Fatal(err)
		}
		if got := openTestStore(t, dir, nil).State(); !reflect.DeepEqual(got, before) {
			t.Fatalf("state %+v, want the state file's %+v", got, before)
		}
	})
}

// A state file too small to journal is rewritten on every change, and no
// journal appears.
func TestJournalOffForSmallState(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir, nil)
	a := testVIP("10.0.0.1", 80)
	a.Backends = []model.Backend{backend("10.0.1.1", 100)}
	if err := s.AddVIP(a); err != nil {
		t.Fatal(err)
	}
	if err := s.SetBackend(a.ID(), netip.MustParseAddr("10.0.1.1"), 0, weightOf(3)); err != nil {
		t.Fatal(err)
	}
	checkFile(t, s)
	if _, err := os.Stat(filepath.Join(dir, JournalFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("journal for a small state: %v", err)
	}
}
