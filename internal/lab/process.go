package lab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// ProcessOptions configure StartProcess.
type ProcessOptions struct {
	// LogPath receives the process's stdout and stderr (appended); default
	// discard.
	LogPath string
	// Grace is how long Stop waits after SIGTERM before SIGKILL; default 5s,
	// scaled by Slowness.
	Grace time.Duration
}

// Process is a long-running command (a web server, a proxy) started in a
// node's namespace with StartProcess.
type Process struct {
	Name    string // the command, for messages
	Node    *Node
	LogPath string

	grace   time.Duration
	cmd     *exec.Cmd
	logf    *os.File
	done    chan struct{}
	waitErr error
	termed  bool // we sent SIGTERM: dying of it is a clean exit
}

// StartProcess starts name with args inside n's namespace (`ip netns exec`,
// which execs the command in place, so the process we signal is the command
// itself) and returns at once. The caller stops it with Stop; if we die
// without doing so, the process gets SIGTERM from the kernel (Pdeathsig).
// Unlike Exec it is not bound by a context: a server must be stopped in
// order, never killed because some context ended.
func (n *Node) StartProcess(o ProcessOptions, name string, args ...string) (*Process, error) {
	if o.Grace <= 0 {
		o.Grace = Scale(5 * time.Second)
	}
	p := &Process{Name: filepath.Base(name), Node: n, LogPath: o.LogPath, grace: o.Grace, done: make(chan struct{})}
	p.cmd = exec.Command("ip", append([]string{"netns", "exec", n.NetNS, name}, args...)...)
	if o.LogPath != "" {
		f, err := os.OpenFile(o.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("%s log: %w", p.Name, err)
		}
		p.logf = f
		p.cmd.Stdout, p.cmd.Stderr = f, f
	}
	if err := startChild(p.cmd, &p.waitErr, p.done); err != nil {
		p.closeLog()
		return nil, fmt.Errorf("start %s in %s: %w", p.Name, n.NetNS, err)
	}
	return p, nil
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM and waits for the process to exit, with SIGKILL after
// the grace period. Ending on our SIGTERM counts as a clean exit. Stopping a
// process that has already exited returns how it exited.
func (p *Process) Stop() error {
	defer p.closeLog()
	select {
	case <-p.done:
		return p.exitErr()
	default:
	}
	p.termed = true
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal %s: %w", p.Name, err)
	}
	select {
	case <-p.done:
		return p.exitErr()
	case <-time.After(p.grace):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not exit within %s of SIGTERM; killed", p.Name, p.grace)
	}
}

func (p *Process) exitErr() error {
	if p.waitErr == nil {
		return nil
	}
	var ee *exec.ExitError
	if p.termed && errors.As(p.waitErr, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGTERM {
			return nil
		}
	}
	return fmt.Errorf("%s in %s: %w", p.Name, p.Node.NetNS, p.waitErr)
}

func (p *Process) closeLog() {
	if p.logf != nil {
		_ = p.logf.Close()
	}
}

// LogTail returns the last n lines of the process's log ("" without one).
func (p *Process) LogTail(n int) string {
	if p.LogPath == "" {
		return ""
	}
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return fmt.Sprintf("(read %s: %v)", p.LogPath, err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// SetSysctl writes a sysctl (path below /proc/sys, e.g.
// "net/ipv4/ip_forward") inside n's namespace.
func (n *Node) SetSysctl(name, value string) error {
	return n.Do(func() error { return writeSysctls(map[string]string{name: value}) })
}

// startChild starts cmd in a process group of its own (a Ctrl-C at the
// terminal reaches only us, and we stop the child in order) with Pdeathsig
// SIGTERM (if we die without stopping it, the kernel does). Pdeathsig fires
// when the forking thread exits, not the process, so that thread is kept
// until the child is gone; then *waitErr holds how it ended and done is
// closed.
func startChild(cmd *exec.Cmd, waitErr *error, done chan struct{}) error {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		*waitErr = cmd.Wait()
		close(done)
	}()
	return <-started
}
