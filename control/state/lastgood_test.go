package state

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xdplb/xdplb/control/model"
)

// Every whole write of the state file keeps the one it replaces as the
// last good state, in an inode of its own: damage done in place to the
// state file does not reach it.
func TestLastGoodKept(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir, nil)
	var states []model.State
	for i, addr := range []string{"10.0.0.1", "10.0.0.2", "10.0.0.3"} {
		if err := s.AddVIP(testVIP(addr, 80)); err != nil {
			t.Fatal(err)
		}
		states = append(states, s.State())
		if i == 0 {
			if _, err := os.Stat(filepath.Join(dir, LastGoodFile)); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("a last good state after the first write: %v", err)
			}
			continue
		}
		got, err := decodeFile([]byte(readFile(t, filepath.Join(dir, LastGoodFile))))
		if err != nil || !reflect.DeepEqual(got, states[i-1]) {
			t.Fatalf("after write %d the last good state is %+v (%v), want %+v", i, got, err, states[i-1])
		}
	}
	// Truncated in place, as `: > state.json` does.
	if err := os.Truncate(filepath.Join(dir, File), 0); err != nil {
		t.Fatal(err)
	}
	if got, err := decodeFile([]byte(readFile(t, filepath.Join(dir, LastGoodFile)))); err != nil || !reflect.DeepEqual(got, states[1]) {
		t.Fatalf("truncating the state file reached the last good state: %+v, %v", got, err)
	}
}

// A damaged state file or journal is refused with ErrDamaged, naming the
// file, what is wrong and where the last good state is; nothing is
// changed. Recover puts the last good state in its place and keeps the
// damaged files.
func TestDamagedStateRecover(t *testing.T) {
	full := func(t *testing.T, dir string) []byte {
		s := openTestStore(t, dir, nil)
		for _, addr := range []string{"10.0.0.1", "10.0.0.2"} {
			v := testVIP(addr, 80)
			v.Backends = []model.Backend{backend("10.1.0.1", 100), backend("10.1.0.2", 50)}
			if err := s.AddVIP(v); err != nil {
				t.Fatal(err)
			}
		}
		return []byte(readFile(t, filepath.Join(dir, File)))
	}
	for _, tc := range []struct {
		name   string
		damage func(good []byte) []byte
		want   string
	}{
		{"empty", func([]byte) []byte { return nil }, "is damaged (it is empty)"},
		{"truncated", func(b []byte) []byte { return b[:200] }, "is damaged (decode: unexpected end of JSON input)"},
		{"one byte changed", func(b []byte) []byte {
			return []byte(strings.Replace(string(b), `"weight":50`, `"weight":51`, 1))
		}, "is damaged (checksum mismatch: the file was damaged or edited)"},
		{"yaml", func([]byte) []byte { return []byte("vips: []\n") }, "is damaged (decode: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			good := full(t, dir)
			p := filepath.Join(dir, File)
			bad := tc.damage(good)
			if err := os.WriteFile(p, bad, 0o600); err != nil {
				t.Fatal(err)
			}
			lastGood := readFile(t, filepath.Join(dir, LastGoodFile))
			_, err := Open(dir, nil)
			if !errors.Is(err, ErrDamaged) || !strings.HasPrefix(err.Error(), "state file "+p+" "+tc.want) {
				t.Fatalf("open: %v, want ErrDamaged %q", err, tc.want)
			}
			hint := "it was left as it is and nothing was changed; its last good version (1 VIPs, saved "
			if !strings.Contains(err.Error(), hint) || !strings.HasSuffix(err.Error(), filepath.Join(dir, LastGoodFile)+": start the daemon with --recover-state to restore it (the damaged files are kept), or fix the file") {
				t.Fatalf("open: %q does not say where the last good state is", err)
			}
			if readFile(t, p) != string(bad) || readFile(t, filepath.Join(dir, LastGoodFile)) != lastGood {
				t.Fatal("a refused open changed the files")
			}

			now := time.Date(2026, 12, 7, 13, 40, 1, 0, time.UTC)
			r, err := Recover(dir, now)
			if err != nil {
				t.Fatal(err)
			}
			kept := p + ".damaged-20261207T134001Z"
			if !slices.Equal(r.Kept, []string{kept}) || r.VIPs != 1 || readFile(t, kept) != string(bad) {
				t.Fatalf("recover: %+v, want %s kept as it was and 1 VIP", r, kept)
			}
			s := openTestStore(t, dir, nil)
			first := testVIP("10.0.0.1", 80)
			if got := s.State(); len(got.VIPs) != 1 || got.VIPs[0].ID() != first.ID() || len(got.VIPs[0].Backends) != 2 {
				t.Fatalf("recovered state %+v, want the last good one", got)
			}
		})
	}

	t.Run("damaged journal", func(t *testing.T) {
		dir := t.TempDir()
		full(t, dir)
		if err := os.WriteFile(filepath.Join(dir, JournalFile), []byte(`{"base":"`+fileHash([]byte(readFile(t, filepath.Join(dir, File))))+"\"}\n{bad\n{}\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Open(dir, nil)
		if !errors.Is(err, ErrDamaged) || !strings.HasPrefix(err.Error(), "the journal of state file ") {
			t.Fatalf("open: %v, want the journal named as damaged", err)
		}
		r, err := Recover(dir, time.Unix(0, 0))
		if err != nil || len(r.Kept) != 2 {
			t.Fatalf("recover: %+v, %v; want the state file and journal kept", r, err)
		}
		openTestStore(t, dir, nil)
	})

	t.Run("no last good state", func(t *testing.T) {
		dir := t.TempDir()
		p := filepath.Join(dir, File)
		if err := os.WriteFile(p, []byte(`{"version":1,"sha256":`), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Open(dir, nil)
		if !errors.Is(err, ErrDamaged) || !strings.HasSuffix(err.Error(), "there is no earlier version beside it: fix or remove the file") {
			t.Fatalf("open: %v", err)
		}
		if _, err := Recover(dir, time.Now()); err == nil || readFile(t, p) != `{"version":1,"sha256":` {
			t.Fatalf("recover without a last good state: %v, or the file changed", err)
		}
	})

	t.Run("last good damaged too", func(t *testing.T) {
		dir := t.TempDir()
		full(t, dir)
		for _, name := range []string{File, LastGoodFile} {
			if err := os.WriteFile(filepath.Join(dir, name), []byte("{"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		_, err := Open(dir, nil)
		if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "is damaged too") {
			t.Fatalf("open: %v", err)
		}
		if _, err := Recover(dir, time.Now()); err == nil || !strings.Contains(err.Error(), "is damaged too") || readFile(t, filepath.Join(dir, File)) != "{" {
			t.Fatalf("recover from a damaged last good state: %v, or the file changed", err)
		}
	})
}
