package lab

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// lockDir holds one lock file per live lab. A lab holds an flock on its file
// for its lifetime; the kernel drops it when the process dies, however it
// dies, so a lab whose lock is free is a leftover and may be swept.
const lockDir = "/run/xdplb-lab"

var labNetNS = regexp.MustCompile(`^(xlb[0-9a-f]{6})-[a-z0-9]+$`)

// lockPrefix takes the lock of a lab prefix and keeps it until the returned
// file is closed.
func lockPrefix(prefix string) (*os.File, error) {
	if err := os.MkdirAll(lockDir, 0o755); err != nil {
		return nil, fmt.Errorf("lock dir: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(lockDir, prefix+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock file: %w", err)
	}
	// Blocking: a sweeper may hold it for a moment while checking it.
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	return f, nil
}

// sweep deletes the namespaces of labs whose process is gone (killed before
// it could clean up). Labs that are alive hold their lock and are left alone.
func sweep(log *slog.Logger) error {
	entries, err := os.ReadDir("/run/netns")
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list namespaces: %w", err)
	}
	byPrefix := map[string][]string{}
	for _, e := range entries {
		if m := labNetNS.FindStringSubmatch(e.Name()); m != nil {
			byPrefix[m[1]] = append(byPrefix[m[1]], e.Name())
		}
	}
	var errs []error
	for prefix, names := range byPrefix {
		if !stale(prefix) {
			continue
		}
		for _, name := range names {
			if err := netns.DeleteNamed(name); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("delete leftover netns %s: %w", name, err))
				continue
			}
			log.Info("deleted leftover namespace", "netns", name)
		}
	}
	return errors.Join(errs...)
}

// stale reports whether no live process holds the lab's lock. A lab takes
// its lock before it creates a namespace, so namespaces without a lock file
// are leftovers too.
func stale(prefix string) bool {
	f, err := os.Open(filepath.Join(lockDir, prefix+".lock"))
	if errors.Is(err, os.ErrNotExist) {
		return true
	}
	if err != nil {
		return false
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return false // held: the lab is alive
	}
	_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
	return true
}
