package state

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// LockFile in the state directory is held (flock) by the daemon that owns
// that state, and by `detach`: two writers of one state file, or of the
// maps it describes, would undo each other's changes.
const LockFile = "lock"

// ErrLocked: another process holds the state directory.
var ErrLocked = errors.New("state dir in use")

// DirLock is a held lock on a state directory.
type DirLock struct {
	f *os.File
}

// LockDir takes the state directory's lock without waiting, creating
// the directory if needed. The kernel drops a flock when its holder dies,
// kill -9 included, so a crashed daemon never leaves the directory locked;
// the pid written into the file only names the holder in the error.
func LockDir(dir string) (*DirLock, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	path := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s is locked by another xdplb process%s", ErrLocked, dir, holder(path))
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	// Only the holder writes the file, so the pid is always the holder's.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &DirLock{f: f}, nil
}

// holder names the pid recorded in the lock file, if any.
func holder(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return ""
	}
	return fmt.Sprintf(" (pid %d)", pid)
}

// Unlock releases the lock. The file stays: removing it would let a
// process that opened the old file and one that creates a new one both
// hold "the" lock.
func (l *DirLock) Unlock() error {
	return l.f.Close() // closing the last descriptor drops the flock
}
