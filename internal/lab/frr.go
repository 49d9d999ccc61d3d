package lab

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// FRRDir is where Debian's FRR keeps its daemons.
const FRRDir = "/usr/lib/frr"

// FRR is Debian's FRR routing suite running in a node's namespace, zebra
// (which installs the routes in the namespace's kernel) and bgpd, on a
// private directory of their own: nothing of the host's FRR is used.
type FRR struct {
	Node  *Node
	Dir   string
	procs []*Process
}

// StartFRR starts zebra and bgpd in n with bgpdConf as bgpd's whole
// configuration and waits until vtysh answers. FRR drops its privileges to
// the frr user, which must own the directory.
func (l *Lab) StartFRR(ctx context.Context, n *Node, bgpdConf string) (_ *FRR, err error) {
	if _, err := os.Stat(filepath.Join(FRRDir, "bgpd")); err != nil {
		return nil, fmt.Errorf("FRR not installed (Debian's frr package, `make deps`): %w", err)
	}
	dir, err := os.MkdirTemp("", "xdplb-frr-")
	if err != nil {
		return nil, err
	}
	f := &FRR{Node: n, Dir: dir}
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w%s", err, f.logTail())
			_ = f.Stop()
		}
	}()
	for name, conf := range map[string]string{"zebra.conf": "hostname " + n.Name + "\n", "bgpd.conf": bgpdConf} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(conf), 0o644); err != nil {
			return nil, err
		}
	}
	if err := chownFRR(dir); err != nil {
		return nil, err
	}
	for _, d := range []string{"zebra", "bgpd"} {
		p, err := n.StartProcess(ProcessOptions{LogPath: filepath.Join(dir, d+".log")}, filepath.Join(FRRDir, d),
			"--vty_socket", dir, "-z", filepath.Join(dir, "zserv.api"), "-i", filepath.Join(dir, d+".pid"),
			"-f", filepath.Join(dir, d+".conf"), "--log", "file:"+filepath.Join(dir, d+".log"))
		if err != nil {
			return nil, err
		}
		f.procs = append(f.procs, p)
		// bgpd connects to zebra's socket: wait for it.
		for deadline := time.Now().Add(Scale(10 * time.Second)); ; time.Sleep(50 * time.Millisecond) {
			if _, err := os.Stat(filepath.Join(dir, d+".vty")); err == nil {
				break
			}
			if p.Exited() || time.Now().After(deadline) {
				return nil, fmt.Errorf("%s did not start in %s", d, n.NetNS)
			}
		}
	}
	l.AddCloser(f.Stop)
	return f, nil
}

// chownFRR gives dir to the frr user, as whom FRR's daemons run.
func chownFRR(dir string) error {
	u, err := user.Lookup("frr")
	if err != nil {
		return fmt.Errorf("frr user: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return os.Chown(dir, uid, gid)
}

// Vtysh runs one vtysh command against this FRR.
func (f *FRR) Vtysh(ctx context.Context, cmd string) (string, error) {
	return f.Node.Exec(ctx, "vtysh", "--vty_socket", f.Dir, "-c", cmd)
}

// Stop stops bgpd, then zebra (zebra removes the routes it installed), and
// removes the directory. Stopping twice is harmless.
func (f *FRR) Stop() error {
	var errs []string
	for i := len(f.procs) - 1; i >= 0; i-- {
		if err := f.procs[i].Stop(); err != nil {
			errs = append(errs, err.Error())
		}
	}
	f.procs = nil
	if f.Dir != "" {
		_ = os.RemoveAll(f.Dir)
		f.Dir = ""
	}
	if len(errs) > 0 {
		return fmt.Errorf("stop frr in %s: %s", f.Node.NetNS, strings.Join(errs, "; "))
	}
	return nil
}

func (f *FRR) logTail() string {
	var b strings.Builder
	for _, d := range []string{"zebra", "bgpd"} {
		if out, err := exec.Command("tail", "-n", "10", filepath.Join(f.Dir, d+".log")).Output(); err == nil && len(out) > 0 {
			fmt.Fprintf(&b, "\n%s log:\n%s", d, out)
		}
	}
	return b.String()
}

// ECMPRouterConfig is bgpd's configuration for the router of an ECMP lab:
// AS asn, eBGP peers (each in AS peerASN) whose routes for the same prefix
// are all installed as equal-cost paths (maximum-paths, multipath across
// ASes), IPv4 and IPv6 unicast, and the hold time given.
func ECMPRouterConfig(asn, peerASN uint32, routerID netip.Addr, peers []netip.Addr, hold time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "router bgp %d\n bgp router-id %s\n no bgp ebgp-requires-policy\n no bgp default ipv4-unicast\n", asn, routerID)
	b.WriteString(" bgp bestpath as-path multipath-relax\n")
	hs := int(hold.Seconds())
	for _, p := range peers {
		fmt.Fprintf(&b, " neighbor %s remote-as %d\n neighbor %s timers %d %d\n", p, peerASN, p, max(1, hs/3), hs)
	}
	for _, af := range []string{"ipv4", "ipv6"} {
		fmt.Fprintf(&b, " address-family %s unicast\n  maximum-paths 16\n", af)
		for _, p := range peers {
			fmt.Fprintf(&b, "  neighbor %s activate\n", p)
		}
		b.WriteString(" exit-address-family\n")
	}
	return b.String()
}
