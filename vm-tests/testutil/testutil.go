// Package testutil holds helpers shared by the root-only tests: privilege
// checks and a private bpffs so tests never touch /sys/fs/bpf.
package testutil

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// RequireRoot skips the test when not running as root. Under CI=true it fails
// instead: a test that silently never runs in CI is not a test.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("test needs root (euid %d) and CI=true forbids skipping it", os.Geteuid())
	}
	t.Skipf("skipping: test needs root (euid %d); run as root or with sudo", os.Geteuid())
}

// MountBPFFS mounts a fresh bpffs on a temporary directory and returns its
// path. The mount is removed in Cleanup, which also drops every pin below it.
func MountBPFFS(t testing.TB) string {
	t.Helper()
	RequireRoot(t)
	dir := t.TempDir()
	if err := unix.Mount("bpffs", dir, "bpf", 0, "mode=0700"); err != nil {
		t.Fatalf("mount bpffs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		// MNT_DETACH: a test that leaked an fd must not make cleanup fail.
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount bpffs %s: %v", dir, err)
		}
	})
	return dir
}
