package state

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/xdplb/xdplb/control/model"
)

// LastGoodFile is, beside the state file, the version it replaced: the
// state file is written to a new file that is renamed over the old one, and
// the old one is first linked here. It is a state file of its own inode, so
// damage done in place to the state file (`: > state.json`, an editor)
// never reaches it. It is one whole write behind: the last change, or the
// changes in the journal, are not in it.
const LastGoodFile = File + ".last-good"

// ErrDamaged is why Open refuses a state file or journal that does not
// decode or whose checksum does not match: Recover can put the last good
// state in its place.
var ErrDamaged = errors.New("state damaged")

// damagedError is an ErrDamaged whose text is the message alone.
type damagedError struct {
	msg   string
	cause error
}

func (e *damagedError) Error() string   { return e.msg }
func (e *damagedError) Unwrap() []error { return []error{ErrDamaged, e.cause} }

// damaged words the refusal of a damaged file: which file, what is wrong,
// that nothing was changed, and how to get the last good state back.
func damaged(dir, file string, cause error) error {
	msg := fmt.Sprintf("%s is damaged (%v); it was left as it is and nothing was changed", file, cause)
	return &damagedError{msg: msg + "; " + lastGoodHint(dir), cause: cause}
}

// lastGoodHint says what the last good state beside a damaged one holds.
func lastGoodHint(dir string) string {
	p := filepath.Join(dir, LastGoodFile)
	fi, err := os.Stat(p)
	if err != nil {
		return "there is no earlier version beside it: fix or remove the file"
	}
	b, err := os.ReadFile(p)
	var st model.State
	if err == nil {
		st, err = decodeFile(b)
	}
	if err != nil {
		return fmt.Sprintf("its earlier version %s is damaged too (%v): fix or remove the file", p, err)
	}
	return fmt.Sprintf("its last good version (%d VIPs, saved %s) is %s: start the daemon with --recover-state to restore it (the damaged files are kept), or fix the file",
		len(st.VIPs), fi.ModTime().UTC().Format(time.RFC3339), p)
}

// keepLastGood links the state file at path, about to be replaced, as the
// last good state beside it (a link made under a temporary name and
// renamed, so a crash leaves the old last good state or the new one).
func keepLastGood(path string) error {
	last := filepath.Join(filepath.Dir(path), LastGoodFile)
	tmp := last + ".tmp"
	_ = os.Remove(tmp)
	if err := os.Link(path, tmp); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil // the first state file: nothing to keep
		}
		return fmt.Errorf("keep the last good state: %w", err)
	}
	if err := os.Rename(tmp, last); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("keep the last good state: %w", err)
	}
	return nil
}

// Recovery is what Recover did.
type Recovery struct {
	Kept []string // the damaged files, under their new names
	VIPs int      // in the restored state
}

// Recover puts the last good state in place of a damaged one, for a daemon
// started with --recover-state: the state file and the journal are kept as
// NAME.damaged-TIME and a copy of LastGoodFile becomes the state file. It
// fails, changing nothing, if the last good state is missing or damaged too.
func Recover(dir string, now time.Time) (Recovery, error) {
	last := filepath.Join(dir, LastGoodFile)
	b, err := os.ReadFile(last)
	if err != nil {
		return Recovery{}, fmt.Errorf("recover the state: %w", err)
	}
	st, err := decodeFile(b)
	if err != nil {
		return Recovery{}, fmt.Errorf("recover the state: %s is damaged too (%v): fix or remove the state file", last, err)
	}
	var r Recovery
	suffix := ".damaged-" + now.UTC().Format("20060102T150405Z")
	for _, name := range []string{File, JournalFile} {
		p := filepath.Join(dir, name)
		if err := os.Rename(p, p+suffix); err == nil {
			r.Kept = append(r.Kept, p+suffix)
		} else if !errors.Is(err, os.ErrNotExist) {
			return r, fmt.Errorf("recover the state: keep %s: %w", p, err)
		}
	}
	if err := writeAtomic(filepath.Join(dir, File), b); err != nil {
		return r, fmt.Errorf("recover the state: %w", err)
	}
	r.VIPs = len(st.VIPs)
	return r, nil
}
