package bench

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/xdplb/xdplb/control/api"
	"github.com/xdplb/xdplb/internal/lab"
)

// ctlEnv is the control-plane section's world: a lab (LB and one backend
// namespace on a bridge), the LB interface holding ctlSubnet, a private
// bpffs mounted from here (so the bench reads the daemon's pinned maps),
// and the daemon.
type ctlEnv struct {
	lab    *lab.Lab
	dir    string
	bpffs  string
	daemon *lab.Daemon
	pid    int
	client *api.Client
	closer []func() error
}

func newCtlEnv(ctx context.Context, c Config) (_ *ctlEnv, err error) {
	e := &ctlEnv{}
	defer func() {
		if err != nil {
			err = errors.Join(err, e.Close())
		}
	}()
	if e.dir, err = os.MkdirTemp("", "xdplb-bench-control-"); err != nil {
		return nil, err
	}
	e.closer = append(e.closer, func() error { return os.RemoveAll(e.dir) })
	if e.lab, err = lab.New(ctx, lab.Options{Backends: 1, Logger: c.Log}); err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	e.closer = append(e.closer, e.lab.Close)

	lb, be := e.lab.LB, e.lab.Backends[0]
	if _, err := lb.Exec(ctx, "ip", "addr", "add", netip.PrefixFrom(ctlLBAddr, ctlSubnet.Bits()).String(), "dev", lb.Iface); err != nil {
		return nil, err
	}
	for _, a := range ctlAddrRange(ctlCheckBase, ctlCheckAddrs) {
		if _, err := be.Exec(ctx, "ip", "addr", "add", netip.PrefixFrom(a, ctlSubnet.Bits()).String(), "dev", be.Iface); err != nil {
			return nil, err
		}
	}

	e.bpffs = filepath.Join(e.dir, "bpffs")
	if err := os.MkdirAll(e.bpffs, 0o700); err != nil {
		return nil, err
	}
	if err := unix.Mount("bpffs", e.bpffs, "bpf", 0, "mode=0700"); err != nil {
		return nil, fmt.Errorf("mount bpffs: %w", err)
	}
	e.closer = append(e.closer, func() error { return unix.Unmount(e.bpffs, unix.MNT_DETACH) })

	e.daemon, err = lab.StartDaemon(ctx, lab.DaemonOptions{
		Binary: c.Binary, Node: lb, Dir: e.dir, BPFFS: e.bpffs,
		ExtraArgs: []string{"--log-level", "debug"},
	})
	if err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	}
	e.closer = append(e.closer, e.daemon.Stop)
	if e.pid, err = ctlFindPID(e.daemon.Socket, "daemon"); err != nil {
		return nil, err
	}
	e.client = api.NewClient(e.daemon.Socket)
	e.closer = append(e.closer, func() error { e.client.Close(); return nil })
	return e, nil
}

// Close undoes everything, last made first.
func (e *ctlEnv) Close() error {
	var errs []error
	for i := len(e.closer) - 1; i >= 0; i-- {
		errs = append(errs, e.closer[i]())
	}
	e.closer = nil
	return errors.Join(errs...)
}

func (e *ctlEnv) pinDir() string { return filepath.Join(e.bpffs, "xdplb") }

// ctlFakeMAC is the made-up MAC of a backend that exists only as a
// permanent neighbour entry.
func ctlFakeMAC(a netip.Addr) string {
	b := a.As4()
	return fmt.Sprintf("02:ee:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3])
}

// addNeighbours gives every address a permanent neighbour entry on the LB
// interface, as an operator would for static backends; the daemon must use
// them and leave them as they are.
func (e *ctlEnv) addNeighbours(ctx context.Context, addrs []netip.Addr) error {
	var b strings.Builder
	for _, a := range addrs {
		fmt.Fprintf(&b, "neigh replace %s lladdr %s nud permanent dev %s\n", a, ctlFakeMAC(a), e.lab.LB.Iface)
	}
	f := filepath.Join(e.dir, "neigh.batch")
	if err := os.WriteFile(f, []byte(b.String()), 0o600); err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, "ip", "-n", e.lab.LB.NetNS, "-batch", f).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip -batch neighbours: %w: %s", err, out)
	}
	return nil
}

// permanentNeighbours counts the addresses that still have a PERMANENT
// entry with the MAC given.
func (e *ctlEnv) permanentNeighbours(ctx context.Context, addrs []netip.Addr) (int, error) {
	out, err := e.lab.LB.Exec(ctx, "ip", "neigh", "show", "dev", e.lab.LB.Iface, "nud", "permanent")
	if err != nil {
		return 0, err
	}
	have := map[string]bool{}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) >= 3 && f[1] == "lladdr" {
			have[f[0]+" "+f[2]] = true
		}
	}
	n := 0
	for _, a := range addrs {
		if have[a.String()+" "+ctlFakeMAC(a)] {
			n++
		}
	}
	return n, nil
}
