package nsthread_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netns"

	"github.com/xdplb/xdplb/internal/nsthread"
	"github.com/xdplb/xdplb/internal/testutil"
)

// threadNetNS names the network namespace of every thread of the process.
func threadNetNS(t *testing.T) map[string]string {
	t.Helper()
	tasks, err := filepath.Glob("/proc/self/task/*")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, task := range tasks {
		ns, err := os.Readlink(filepath.Join(task, "ns", "net"))
		if errors.Is(err, os.ErrNotExist) {
			continue // the thread ended meanwhile
		}
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(task)] = ns
	}
	return out
}

// startNS is the network namespace every thread was in when the tests
// started.
var startNS string

func TestMain(m *testing.M) {
	var err error
	if startNS, err = os.Readlink("/proc/thread-self/ns/net"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// checkNoThreadIn fails if a thread of the process is in another namespace
// than the one the tests started in: a thread that was switched, then
// unlocked without being switched back.
func checkNoThreadIn(t *testing.T) {
	t.Helper()
	for tid, ns := range threadNetNS(t) {
		if ns != startNS {
			t.Errorf("thread %s is in %s, not %s", tid, ns, startNS)
		}
	}
}

func TestDoRunsInNamespace(t *testing.T) {
	ns := testutil.NewNetNS(t, "")
	var inside bool
	for range 50 {
		err := nsthread.Do(ns, "test", func() error {
			cur, err := netns.Get()
			if err != nil {
				return err
			}
			defer cur.Close()
			inside = cur.Equal(ns)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if !inside {
			t.Fatal("fn did not run in the namespace")
		}
	}
	checkNoThreadIn(t)
}

func TestDoReturnsFnError(t *testing.T) {
	ns := testutil.NewNetNS(t, "")
	want := errors.New("from fn")
	if err := nsthread.Do(ns, "test", func() error { return want }); err != want {
		t.Fatalf("Do: %v, want fn's error unchanged", err)
	}
	checkNoThreadIn(t)
}

func TestDoEnterFails(t *testing.T) {
	testutil.RequireRoot(t)
	ran := false
	err := nsthread.Do(netns.None(), "nowhere", func() error { ran = true; return nil })
	if err == nil || ran {
		t.Fatalf("Do on a closed handle: %v (fn ran: %v), want an error and fn not run", err, ran)
	}
	if want := "enter netns nowhere: "; !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("error %q, want it to start with %q", err, want)
	}
}

func TestNewLeavesCallerThread(t *testing.T) {
	testutil.RequireRoot(t)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	before, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer before.Close()
	ns, err := nsthread.New()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	name := fmt.Sprintf("xlbnsthread%d", os.Getpid()%100000)
	named, err := nsthread.NewNamed(name)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		named.Close()
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	}()
	after, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer after.Close()
	if !after.Equal(before) {
		t.Fatal("New or NewNamed moved the calling thread")
	}
	if ns.Equal(before) || named.Equal(before) || ns.Equal(named) {
		t.Fatal("New and NewNamed did not make two new namespaces")
	}
	if _, err := os.Stat(filepath.Join("/run/netns", name)); err != nil {
		t.Fatalf("named namespace not bound: %v", err)
	}
	checkNoThreadIn(t)
}
