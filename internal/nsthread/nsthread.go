// Package nsthread runs code inside a network namespace on a locked OS
// thread: the one place the tree switches a thread's namespace.
//
// A thread that has been switched is switched back and unlocked afterwards;
// one that cannot be switched back is thrown away instead (left locked, the
// runtime ends it with its goroutine), so no other goroutine ever runs in a
// namespace it did not ask for.
//
// It is a leaf package of its own, not part of internal/lab, because both
// the lab (which imports loader and control) and internal/testutil (which
// the in-package tests of loader and control import) need it.
package nsthread

import (
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// Do runs fn on a locked OS thread inside ns and returns fn's error. name
// names ns in errors. Sockets fn creates stay in ns for their lifetime.
func Do(ns netns.NsHandle, name string, fn func() error) error {
	return onThread(func() error {
		if err := netns.Set(ns); err != nil {
			return fmt.Errorf("enter netns %s: %w", name, err)
		}
		return fn()
	})
}

// New creates an anonymous network namespace, which lives as long as a
// handle to it (or a process or bound file in it) does. The caller's thread
// is not moved.
func New() (netns.NsHandle, error) {
	return create(netns.New)
}

// NewNamed creates the network namespace name, bound under /run/netns so
// that it outlives the handle until netns.DeleteNamed. The caller's thread
// is not moved.
func NewNamed(name string) (netns.NsHandle, error) {
	return create(func() (netns.NsHandle, error) { return netns.NewNamed(name) })
}

// create runs newNS, which moves its thread into the namespace it creates,
// on a thread of its own.
func create(newNS func() (netns.NsHandle, error)) (netns.NsHandle, error) {
	ns := netns.None()
	err := onThread(func() error {
		var err error
		ns, err = newNS()
		return err
	})
	return ns, err
}

// onThread runs fn on a new goroutine locked to its OS thread. Afterwards
// the thread is switched back to the network namespace it started in and
// unlocked; if that fails it stays locked, so the runtime ends the thread
// with the goroutine rather than reusing it.
func onThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread() // not switched yet
			errc <- fmt.Errorf("get current netns: %w", err)
			return
		}
		defer orig.Close()
		err = fn()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}
