package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Exec runs a command inside n's namespace (with `ip netns exec`, bounded to
// 30s scaled by Slowness) and returns its stdout.
func (n *Node) Exec(ctx context.Context, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, Scale(30*time.Second))
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.NetNS, name}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s in %s: %w: %s", name, strings.Join(args, " "), n.NetNS, err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// nftTable holds the lab's packet counters in every namespace that has them.
const nftTable = "xlbcount"

// CounterRule is a named nftables counter: packets matching Match on Hook
// ("input" or "output") in a node's namespace.
type CounterRule struct {
	Name  string
	Hook  string
	Match string // nft match expression, e.g. "ip daddr 10.200.0.100 tcp dport 80"
}

// AddCounters installs named nftables counters in n's namespace. Counting in
// the kernel (not in the client) sees every segment, retransmissions too.
func (n *Node) AddCounters(ctx context.Context, rules ...CounterRule) error {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", nftTable)
	for _, r := range rules {
		fmt.Fprintf(&b, "  counter %s {}\n", r.Name)
	}
	for _, hook := range []string{"input", "output"} {
		fmt.Fprintf(&b, "  chain %s { type filter hook %s priority 0; policy accept;\n", hook, hook)
		for _, r := range rules {
			if r.Hook == hook {
				fmt.Fprintf(&b, "    %s counter name %s\n", r.Match, r.Name)
			}
		}
		b.WriteString("  }\n")
	}
	b.WriteString("}\n")
	ctx, cancel := context.WithTimeout(ctx, Scale(30*time.Second))
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", n.NetNS, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(b.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft in %s: %w: %s\nruleset:\n%s", n.NetNS, err, strings.TrimSpace(string(out)), b.String())
	}
	return nil
}

// Counter is the value of a named nftables counter. Bytes are L3 bytes (the
// IP packet, no Ethernet header).
type Counter struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// ReadCounter reads a counter installed by AddCounters.
func (n *Node) ReadCounter(ctx context.Context, name string) (Counter, error) {
	out, err := n.Exec(ctx, "nft", "-j", "list", "counter", "inet", nftTable, name)
	if err != nil {
		return Counter{}, err
	}
	var doc struct {
		Nftables []struct {
			Counter *Counter `json:"counter"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		return Counter{}, fmt.Errorf("parse nft counter %s: %w", name, err)
	}
	for _, o := range doc.Nftables {
		if o.Counter != nil {
			return *o.Counter, nil
		}
	}
	return Counter{}, fmt.Errorf("nft counter %s not found in %s", name, n.NetNS)
}

// SetTxChecksum turns transmit checksum offload of n's interface on or off
// (the legacy ETHTOOL_STXCSUM ioctl, so no ethtool binary is needed).
func (n *Node) SetTxChecksum(on bool) error {
	var v uint32
	if on {
		v = 1
	}
	_, err := n.ethtool(unix.ETHTOOL_STXCSUM, v)
	return err
}

// TxChecksum reports whether n's interface offloads transmit checksums.
func (n *Node) TxChecksum() (bool, error) {
	v, err := n.ethtool(unix.ETHTOOL_GTXCSUM, 0)
	return v != 0, err
}

// ethtool issues one ethtool_value command on n's interface.
func (n *Node) ethtool(cmd, data uint32) (uint32, error) {
	val := struct{ cmd, data uint32 }{cmd, data}
	err := n.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("ethtool socket: %w", err)
		}
		defer unix.Close(fd)
		// struct ifreq: the name, then ifr_data pointing at the command.
		var ifr struct {
			name [unix.IFNAMSIZ]byte
			data unsafe.Pointer
			_    [16]byte
		}
		copy(ifr.name[:], n.Iface)
		ifr.data = unsafe.Pointer(&val)
		if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); errno != 0 {
			return fmt.Errorf("ethtool command %#x on %s in %s: %w", cmd, n.Iface, n.NetNS, errno)
		}
		return nil
	})
	return val.data, err
}
