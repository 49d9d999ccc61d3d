package lab

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"time"
)

// FloodOptions bound a SYN flood: both its rate and its length.
type FloodOptions struct {
	Rate     int           // SYNs per second asked of hping3 (it may send fewer); default 100,000
	Duration time.Duration // default 5s, at most 30s
}

// SYNFlood sends TCP SYNs from random source addresses to target from n,
// with Debian's hping3, as an attacker would, and returns when it is done:
// Rate*Duration packets at most, and never longer than Duration plus a
// second (timeout(1) ends it). The random sources and the answers to them
// stay inside the lab's namespaces, which have no way out.
func (n *Node) SYNFlood(ctx context.Context, target netip.AddrPort, o FloodOptions) error {
	if o.Rate <= 0 {
		o.Rate = 100000
	}
	if o.Duration <= 0 {
		o.Duration = 5 * time.Second
	}
	o.Duration = min(o.Duration, 30*time.Second)
	interval := max(1, 1000000/o.Rate) // µs between packets
	count := int(int64(o.Rate) * int64(o.Duration) / int64(time.Second))
	ctx, cancel := context.WithTimeout(ctx, o.Duration+Scale(5*time.Second))
	defer cancel()
	// hping3 exits 1 when no reply came back, which is the usual end of a
	// flood from spoofed sources; timeout(1) exits 124 when it ends it.
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", n.NetNS,
		"timeout", "--signal=INT", strconv.FormatFloat((o.Duration+time.Second).Seconds(), 'f', 1, 64),
		"hping3", "-q", "-S", "--rand-source", "-p", strconv.Itoa(int(target.Port())),
		"-i", "u"+strconv.Itoa(interval), "-c", strconv.Itoa(count), target.Addr().String())
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok && (ee.ExitCode() == 1 || ee.ExitCode() == 124) {
		err = nil
	}
	if err != nil {
		return fmt.Errorf("hping3 flood of %s from %s: %w: %s", target, n.NetNS, err, out)
	}
	return nil
}
