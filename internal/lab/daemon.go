package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/xdplb/xdplb/loader"

	"github.com/xdplb/xdplb/control/api"
	"github.com/xdplb/xdplb/control/model"
)

// DaemonOptions configure StartDaemon.
type DaemonOptions struct {
	Binary string // the xdplb binary
	Node   *Node  // the daemon runs in this node's namespace, on its Ifaces
	// Dir holds the socket, the state directory and the log; reuse it to
	// restart a daemon with the same state.
	Dir string
	// BPFFS is the bpffs directory (outside /sys, which `ip netns exec`
	// remounts). Mount it beforehand to keep pins across restarts.
	BPFFS       string
	XDPMode     string        // default native
	MetricsAddr string        // default DefaultMetricsAddr (inside the namespace)
	Ready       time.Duration // how long to wait for the socket; default 20s, scaled by Slowness
	ExtraArgs   []string      // more daemon flags
}

// DefaultMetricsAddr is where StartDaemon has the daemon serve /metrics
// unless told otherwise: the daemon's own default. Every lab's LB
// namespace has its own loopback, so the address is always free there.
const DefaultMetricsAddr = api.DefaultMetricsAddr

// Daemon is a running `xdplb daemon`.
type Daemon struct {
	Socket      string
	LogPath     string
	MetricsAddr string // inside Node's namespace
	Node        *Node
	binary      string
	cmd         *exec.Cmd
	logf        *os.File
	done        chan struct{}
	waitErr     error
}

// StartDaemon starts the daemon inside the node's namespace with
// `ip netns exec` and waits until its API answers.
func StartDaemon(ctx context.Context, o DaemonOptions) (*Daemon, error) {
	if o.XDPMode == "" {
		o.XDPMode = string(loader.XDPModeNative)
	}
	if o.MetricsAddr == "" {
		o.MetricsAddr = DefaultMetricsAddr
	}
	if o.Ready <= 0 {
		o.Ready = 20 * time.Second
	}
	stateDir := filepath.Join(o.Dir, "state")
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	d := &Daemon{
		Socket:      filepath.Join(o.Dir, "xdplb.sock"),
		LogPath:     filepath.Join(o.Dir, "daemon.log"),
		MetricsAddr: o.MetricsAddr,
		Node:        o.Node,
		binary:      o.Binary,
		done:        make(chan struct{}),
	}
	logf, err := os.OpenFile(d.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("daemon log: %w", err)
	}
	d.logf = logf
	fmt.Fprintf(logf, "---- start %s\n", time.Now().Format(time.RFC3339Nano))
	args := []string{"netns", "exec", o.Node.NetNS, o.Binary, "--socket", d.Socket, "daemon"}
	for _, ifc := range o.Node.Ifaces() {
		args = append(args, "--iface", ifc)
	}
	args = append(args,
		"--xdp-mode", o.XDPMode,
		"--bpffs", o.BPFFS,
		"--state-dir", stateDir,
		"--metrics-addr", o.MetricsAddr,
	)
	args = append(args, o.ExtraArgs...)
	// Not CommandContext: the daemon must get SIGTERM and time to clean up,
	// never a SIGKILL because some context ended.
	d.cmd = exec.Command("ip", args...)
	d.cmd.Stdout = logf
	d.cmd.Stderr = logf
	// If we die without stopping it (killed, test timeout), the daemon still
	// gets SIGTERM and removes what it can (see startChild).
	if err := startChild(d.cmd, &d.waitErr, d.done); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start daemon: %w", err)
	}
	if err := d.waitReady(ctx, Scale(o.Ready)); err != nil {
		return nil, errors.Join(err, d.Stop())
	}
	return d, nil
}

// waitReady polls GET /v1/status until it answers or limit passes. Each
// poll may take a second, more on a slow machine: a status walks the
// tables where the kernel cannot count them.
func (d *Daemon) waitReady(ctx context.Context, limit time.Duration) error {
	c := &http.Client{
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", d.Socket)
		}},
		Timeout: Scale(time.Second),
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://xdplb/v1/status", nil)
		if resp, err := c.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-d.done:
			return fmt.Errorf("daemon exited before its socket answered (%v); end of %s:\n%s", d.waitErr, d.LogPath, d.LogTail(20))
		case <-ctx.Done():
			if err := parent.Err(); err != nil {
				return fmt.Errorf("wait for daemon: %w", err)
			}
			return fmt.Errorf("daemon socket %s did not answer within %s; end of %s:\n%s", d.Socket, limit, d.LogPath, d.LogTail(20))
		case <-tick.C:
		}
	}
}

// Stop sends SIGTERM and waits for the daemon to exit (SIGKILL after 15s,
// scaled by Slowness). It returns an error if the daemon did not exit
// cleanly.
func (d *Daemon) Stop() error {
	defer d.logf.Close()
	select {
	case <-d.done:
		return d.exitErr()
	default:
	}
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal daemon: %w", err)
	}
	select {
	case <-d.done:
		return d.exitErr()
	case <-time.After(Scale(15 * time.Second)):
		_ = d.cmd.Process.Kill()
		<-d.done
		return fmt.Errorf("daemon did not exit within %s of SIGTERM; killed", Scale(15*time.Second))
	}
}

// Signal sends sig to the daemon (`ip netns exec` execs it: the
// process is the daemon's own).
func (d *Daemon) Signal(sig os.Signal) error {
	if err := d.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal daemon: %w", err)
	}
	return nil
}

// Kill ends the daemon with SIGKILL, as a crash would: it cleans up
// nothing. The pins, the link and the state dir stay as they were.
func (d *Daemon) Kill() {
	defer d.logf.Close()
	_ = d.cmd.Process.Kill() // `ip netns exec` execs the daemon: this is its pid
	<-d.done
}

// Exited reports whether the daemon process has ended.
func (d *Daemon) Exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

func (d *Daemon) exitErr() error {
	if d.waitErr != nil {
		return fmt.Errorf("daemon exit: %w", d.waitErr)
	}
	return nil
}

// Log returns the daemon's log so far.
func (d *Daemon) Log() string {
	b, err := os.ReadFile(d.LogPath)
	if err != nil {
		return fmt.Sprintf("(read %s: %v)", d.LogPath, err)
	}
	return string(b)
}

// LogTail returns the last n lines of the daemon's log.
func (d *Daemon) LogTail(n int) string {
	lines := strings.Split(strings.TrimRight(d.Log(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// CLI runs `xdplb --socket <socket> args...` and returns its stdout. The
// error carries the exit status and stderr.
func (d *Daemon) CLI(ctx context.Context, args ...string) (string, error) {
	return RunCLI(ctx, d.binary, d.Socket, args...)
}

// RunCLI runs the xdplb binary against a daemon socket (30s at most,
// scaled by Slowness).
func RunCLI(ctx context.Context, binary, socket string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, Scale(30*time.Second))
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, append([]string{"--socket", socket}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = ctx.Err() // killed because time ran out or we were interrupted
		}
		return stdout.String(), fmt.Errorf("xdplb %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// CLIJSON runs the CLI with "-o json" appended and decodes its output into v.
func (d *Daemon) CLIJSON(ctx context.Context, v any, args ...string) error {
	out, err := d.CLI(ctx, append(args, "-o", "json")...)
	if err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		return fmt.Errorf("xdplb %s -o json: decode: %w; output:\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// Stats returns `xdplb stats -o json`.
func (d *Daemon) Stats(ctx context.Context) (api.Stats, error) {
	var st api.Stats
	err := d.CLIJSON(ctx, &st, "stats")
	return st, err
}

// WaitBackendsUp polls `xdplb backend list VIP` until all want backends are
// up (their MACs resolved and in the data plane; a backup pool's may stand
// by) or limit, scaled by Slowness, runs out. A fallback server is no
// backend: it is not counted.
func (d *Daemon) WaitBackendsUp(ctx context.Context, vip string, want int, limit time.Duration) ([]api.BackendStatus, error) {
	limit = Scale(limit)
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		var bs []api.BackendStatus
		err := d.CLIJSON(ctx, &bs, "backend", "list", vip)
		up, n := 0, 0
		for _, b := range bs {
			if b.Fallback {
				continue // the VIP's sorry server: no backend
			}
			n++
			if b.State == model.BackendUp || b.State == model.BackendStandby {
				up++
			}
		}
		if err == nil && up == want && n == want {
			return bs, nil
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = fmt.Errorf("%d of %d backends up", up, want)
			}
			return bs, fmt.Errorf("backends of %s not up within %s: %w (last: %+v)", vip, limit, err, bs)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// VIPStats finds one VIP's counters by its "ADDR:PORT/PROTO" name.
func VIPStats(st api.Stats, vip string) (api.VIPStats, bool) {
	for _, v := range st.VIPs {
		if v.VIP == vip {
			return v, true
		}
	}
	return api.VIPStats{}, false
}

// Backends returns `xdplb backend list VIP -o json`.
func (d *Daemon) Backends(ctx context.Context, vip string) ([]api.BackendStatus, error) {
	var bs []api.BackendStatus
	err := d.CLIJSON(ctx, &bs, "backend", "list", vip)
	return bs, err
}

// FindBackend returns the status of the backend at addr in bs.
func FindBackend(bs []api.BackendStatus, addr netip.Addr) (api.BackendStatus, bool) {
	for _, b := range bs {
		if b.Address.Unmap() == addr.Unmap() {
			return b, true
		}
	}
	return api.BackendStatus{}, false
}

// backendPoll is how often WaitBackend asks; one CLI run takes a few ms.
const backendPoll = 25 * time.Millisecond

// WaitBackend polls `xdplb backend list VIP` until the backend at addr
// satisfies ok, for at most limit scaled by Slowness. It returns the matching status and the
// time of the poll that first saw it (so the caller can time transitions).
func (d *Daemon) WaitBackend(ctx context.Context, vip string, addr netip.Addr, limit time.Duration,
	ok func(api.BackendStatus) bool) (api.BackendStatus, time.Time, error) {
	limit = Scale(limit)
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var (
		last    api.BackendStatus
		lastErr error
	)
	for {
		bs, err := d.Backends(ctx, vip)
		now := time.Now()
		if err == nil {
			b, found := FindBackend(bs, addr)
			if found && ok(b) {
				return b, now, nil
			}
			last, lastErr = b, nil
			if !found {
				lastErr = fmt.Errorf("backend %s not listed", addr)
			}
		} else if ctx.Err() == nil {
			lastErr = err
		}
		select {
		case <-ctx.Done():
			return last, time.Time{}, fmt.Errorf("backend %s of %s: condition not met within %s (last: %+v, err: %v)", addr, vip, limit, last, lastErr)
		case <-time.After(backendPoll):
		}
	}
}

// WaitBackendState waits until the backend at addr is in state (BackendUp,
// BackendDown, BackendDraining).
func (d *Daemon) WaitBackendState(ctx context.Context, vip string, addr netip.Addr, state string, limit time.Duration) (api.BackendStatus, time.Time, error) {
	return d.WaitBackend(ctx, vip, addr, limit, func(b api.BackendStatus) bool { return b.State == state })
}
