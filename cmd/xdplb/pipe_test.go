package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/xdplb/xdplb/control/daemon"
)

// closedPipe is a stdout whose reader went away after keep bytes, as
// `head -1` does: writes beyond fail with EPIPE, as os.Stdout's do when
// SIGPIPE is ignored.
type closedPipe struct {
	keep int
	got  bytes.Buffer
}

func (p *closedPipe) Write(b []byte) (int, error) {
	if room := p.keep - p.got.Len(); room < len(b) {
		p.got.Write(b[:max(room, 0)])
		return max(room, 0), &fs.PathError{Op: "write", Path: "/dev/stdout", Err: syscall.EPIPE}
	}
	return p.got.Write(b)
}

// Output cut short by its reader ends the program quietly with exit 0:
// no "broken pipe" on stderr.
func TestBrokenPipeIsQuiet(t *testing.T) {
	l := startLab(t)
	for i := range 20 {
		l.ok("vip", "add", fmt.Sprintf("10.0.0.%d:80/tcp", i+1))
	}
	for _, args := range [][]string{
		{"--socket", l.socket, "vip", "list"},
		{"--socket", l.socket, "vip", "list", "-o", "json"},
		{"--socket", l.socket, "export"},
		{"version"},
		{"version", "-o", "json"},
		{"--help"},
		{"vip", "add", "--help"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			for _, keep := range []int{0, 10} {
				out := &closedPipe{keep: keep}
				var errOut bytes.Buffer
				code := run(t.Context(), append([]string{"xdplb"}, args...), strings.NewReader(""), out, &errOut)
				if code != exitOK || errOut.Len() != 0 {
					t.Errorf("keep %d: exit %d, stderr %q: want 0 and nothing", keep, code, errOut.String())
				}
				if out.got.Len() != keep {
					t.Errorf("keep %d: %d bytes written", keep, out.got.Len())
				}
			}
		})
	}
}

// An EPIPE that is not stdout's (the daemon's socket, here the daemon's
// own error) is still an error.
func TestBrokenPipeElsewhereIsAnError(t *testing.T) {
	var stderr bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: &stderr,
		runDaemon: func(context.Context, daemon.Config) error {
			return &net.OpError{Op: "write", Net: "unix", Err: os.NewSyscallError("write", syscall.EPIPE)}
		}}
	code := e.run(t.Context(), []string{"xdplb", "daemon", "--iface", "lo"})
	if code != exitError || !strings.Contains(stderr.String(), "broken pipe") {
		t.Errorf("exit %d, stderr %q: want the error", code, stderr.String())
	}
}
