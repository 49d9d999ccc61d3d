// Package testutil holds helpers shared by the root-only tests: privilege
// checks, a private bpffs so tests never touch /sys/fs/bpf, and network
// namespaces that go away with the test.
package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"testing"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/xdplb/xdplb/internal/nsthread"
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

// RequireTool returns the path of the program name, or skips the test when
// it is not installed; under CI=true it fails instead (make deps installs
// every program the tests use).
func RequireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("test needs %s (make deps installs it) and CI=true forbids skipping it: %v", name, err)
	}
	t.Skipf("skipping: test needs %s (make deps installs it): %v", name, err)
	return ""
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

// NewNetNS creates a network namespace that lives until the test ends: the
// named one (bound under /run/netns, deleted in Cleanup) when name is not
// empty, else an anonymous one that ends when its last user does. The
// calling thread is not moved; run code inside with InNetNS.
func NewNetNS(t testing.TB, name string) netns.NsHandle {
	t.Helper()
	RequireRoot(t)
	var ns netns.NsHandle
	var err error
	if name == "" {
		ns, err = nsthread.New()
	} else {
		ns, err = nsthread.NewNamed(name)
	}
	if err != nil {
		t.Fatalf("create netns %s: %v", name, err)
	}
	t.Cleanup(func() {
		ns.Close()
		if name == "" {
			return
		}
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})
	return ns
}

// InNetNS runs fn on a locked OS thread inside ns (see nsthread.Do) and
// fails the test if the thread cannot enter ns or fn returns an error. fn
// runs on a goroutine of its own: it may call t.Error, never t.Fatal.
func InNetNS(t testing.TB, ns netns.NsHandle, fn func() error) {
	t.Helper()
	if err := nsthread.Do(ns, fmt.Sprint(ns), fn); err != nil {
		t.Fatal(err)
	}
}
