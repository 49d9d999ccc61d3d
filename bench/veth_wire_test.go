package bench

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/xdplb/xdplb/internal/testutil"
)

// The wire's sysctls land in its namespaces, never in ours, and Close
// removes both namespaces.
func TestVethWire(t *testing.T) {
	testutil.RequireRoot(t)
	const forward = "/proc/sys/net/ipv4/ip_forward"
	hostBefore, err := os.ReadFile(forward)
	if err != nil {
		t.Fatal(err)
	}
	w, err := newVethWire(slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			w.Close()
		}
	})
	var lbForward []byte
	if err := w.LB.do(func() error {
		var err error
		lbForward, err = os.ReadFile(forward)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(lbForward)) != "1" {
		t.Errorf("ip_forward in %s: %q, want 1", w.LB.NetNS, lbForward)
	}
	if hostAfter, err := os.ReadFile(forward); err != nil || string(hostAfter) != string(hostBefore) {
		t.Errorf("host ip_forward %q (%v), was %q", hostAfter, err, hostBefore)
	}
	for _, n := range []*vethNode{w.Gen, w.LB} {
		h, err := netlink.NewHandleAt(n.ns)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.LinkByName(n.Iface); err != nil {
			t.Errorf("%s in %s: %v", n.Iface, n.NetNS, err)
		}
		h.Close()
	}

	closed = true
	if err := w.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	for _, n := range []*vethNode{w.Gen, w.LB} {
		if _, err := os.Stat(filepath.Join("/run/netns", n.NetNS)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("netns %s after Close: %v", n.NetNS, err)
		}
	}
}
