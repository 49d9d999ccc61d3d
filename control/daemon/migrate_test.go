package daemon

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/xdplb/xdplb/control/config"
	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/control/state"
	"github.com/xdplb/xdplb/internal/testutil"
)

// A state dir of an older xdplb (state.yaml and the journal that followed
// it) becomes state.json with every acknowledged change, once, and the
// YAML is kept beside it.
func TestMigrateYAMLState(t *testing.T) {
	dir := t.TempDir()
	old := testutil.RoundTripState()
	yamlBytes, err := config.Marshal(old)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, legacyStateFile), yamlBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	// The journal as the YAML store wrote it: its base, then one change.
	changed := old.VIPs[1].Clone()
	changed.Backends[0].Weight = 7
	sum := sha256.Sum256(yamlBytes)
	header, _ := json.Marshal(map[string]string{"base": hex.EncodeToString(sum[:])})
	rec, _ := json.Marshal(map[string]any{"set": changed})
	journal := string(header) + "\n" + string(rec) + "\n"
	if err := os.WriteFile(filepath.Join(dir, state.JournalFile), []byte(journal), 0o600); err != nil {
		t.Fatal(err)
	}

	log := slog.New(slog.DiscardHandler)
	if err := migrateYAMLState(dir, log); err != nil {
		t.Fatal(err)
	}
	want := old.Clone()
	want.VIPs[1] = changed
	model.Normalize(&want)
	s, err := state.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.State(); !reflect.DeepEqual(got, want) {
		t.Fatalf("migrated state\n%+v\nwant\n%+v", got, want)
	}
	if b, err := os.ReadFile(filepath.Join(dir, legacyStateFile+".migrated")); err != nil || string(b) != string(yamlBytes) {
		t.Fatalf("old state file not kept as it was: %v", err)
	}
	for _, gone := range []string{legacyStateFile, state.JournalFile} {
		if _, err := os.Stat(filepath.Join(dir, gone)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there after the migration: %v", gone, err)
		}
	}
	// Once only: a YAML file put back later is left alone.
	if err := os.WriteFile(filepath.Join(dir, legacyStateFile), []byte("vips: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := migrateYAMLState(dir, log); err != nil {
		t.Fatal(err)
	}
	if s, err := state.Open(dir, nil); err != nil || !reflect.DeepEqual(s.State(), want) {
		t.Fatalf("second migration changed the state: %v", err)
	}
}

// A damaged YAML state is refused with the file named, and nothing is
// written or renamed.
func TestMigrateYAMLStateRefusesDamage(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, legacyStateFile)
	if err := os.WriteFile(p, []byte("vips: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := migrateYAMLState(dir, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("migration of a damaged file: %v, want an error naming %s", err, p)
	}
	if _, err := os.Stat(filepath.Join(dir, state.File)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("state file written from a damaged YAML: %v", err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("damaged YAML moved: %v", err)
	}
}
