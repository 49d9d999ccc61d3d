package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openPTY returns a pseudo-terminal of the given size: the side a program
// writes to (a terminal) and the side that reads what it wrote.
func openPTY(t *testing.T, rows, cols uint16) (tty, master *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		t.Fatalf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		m.Close()
		t.Fatalf("pty number: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		t.Fatalf("open pty: %v", err)
	}
	if err := unix.IoctlSetWinsize(int(s.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols}); err != nil {
		t.Fatalf("pty size: %v", err)
	}
	t.Cleanup(func() { s.Close(); m.Close() })
	return s, m
}

func TestTerminalRows(t *testing.T) {
	tty, _ := openPTY(t, 30, 100)
	if rows, ok := terminalRows(&stdoutWriter{w: tty}); !ok || rows != 30 {
		t.Errorf("terminal: rows %d, terminal %v; want 30, true", rows, ok)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if _, ok := terminalRows(w); ok {
		t.Error("a pipe is a terminal")
	}
	if _, ok := terminalRows(&bytes.Buffer{}); ok {
		t.Error("a buffer is a terminal")
	}
}

func TestScreenDraw(t *testing.T) {
	var b bytes.Buffer
	rows := 0
	s := &screen{w: &b, rows: func() int { return rows }}
	if err := s.draw([]byte("a\nbb\n")); err != nil {
		t.Fatal(err)
	}
	if got, want := b.String(), ansiHideCursor+ansiHome+ansiClear+"a"+ansiClearLine+"\nbb"+ansiClearLine+"\n"+ansiClearBelow; got != want {
		t.Errorf("first frame %q, want %q", got, want)
	}
	b.Reset()
	rows = 4 // three lines fit, the last row stays free
	if err := s.draw([]byte("1\n2\n3\n4\n5\n")); err != nil {
		t.Fatal(err)
	}
	want := ansiHome + "1" + ansiClearLine + "\n2" + ansiClearLine + "\n... 3 more lines: enlarge the terminal, or use -o json" + ansiClearLine + "\n" + ansiClearBelow
	if got := b.String(); got != want {
		t.Errorf("cut frame %q, want %q", got, want)
	}
	b.Reset()
	s.close()
	if b.String() != ansiShowCursor {
		t.Errorf("close wrote %q", b.String())
	}
}

// stats --watch on a terminal redraws in place: one clear, then every
// frame from the top left, never taller than the terminal; the cursor is
// back when it ends (Ctrl-C cancels the context, as here), exit 0.
func TestStatsWatchTerminal(t *testing.T) {
	l := startLab(t)
	l.ok("vip", "add", "10.0.0.100:80/tcp")
	for i := range 8 {
		l.ok("backend", "add", "10.0.0.100:80/tcp", fmt.Sprintf("10.0.0.%d", i+1))
	}
	tty, master := openPTY(t, 8, 120)
	got := make(chan string, 1)
	go func() {
		var b bytes.Buffer
		_, err := io.Copy(&b, master) // until the terminal side is closed (EIO)
		if err != nil && !errors.Is(err, unix.EIO) && !errors.Is(err, os.ErrClosed) {
			b.WriteString("\nread error: " + err.Error())
		}
		got <- b.String()
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 400*time.Millisecond)
	defer cancel()
	var stderr bytes.Buffer
	code := run(ctx, []string{"xdplb", "--socket", l.socket, "stats", "--watch", "--interval", "50ms"}, strings.NewReader(""), tty, &stderr)
	if code != 0 || stderr.Len() > 0 {
		t.Fatalf("stats --watch on a terminal: exit %d, stderr %q", code, stderr.String())
	}
	tty.Close()
	out := <-got
	if n := strings.Count(out, ansiClear); n != 1 {
		t.Errorf("screen cleared %d times, want once:\n%q", n, out)
	}
	frames := strings.Split(out, ansiHome)[1:]
	if len(frames) < 3 {
		t.Fatalf("%d frames in 400ms at 50ms, want several:\n%q", len(frames), out)
	}
	for i, f := range frames {
		if n := strings.Count(f, "\n"); n > 7 {
			t.Errorf("frame %d has %d lines on a terminal of 8 rows:\n%q", i, n, f)
		}
		if !regexp.MustCompile(`^(\x1b\[2J)?Every 50ms: xdplb stats \(Ctrl-C to quit\)`).MatchString(f) {
			t.Errorf("frame %d starts %q", i, f[:min(len(f), 60)])
		}
	}
	if !strings.Contains(out, "more lines") {
		t.Errorf("a table taller than the terminal is not cut:\n%q", out)
	}
	if !strings.HasSuffix(out, ansiShowCursor) {
		t.Errorf("cursor not shown again at the end: %q", out[max(0, len(out)-40):])
	}
}

// Not on a terminal: plain blocks, no escape sequence.
func TestStatsWatchPlain(t *testing.T) {
	l := startLab(t)
	l.ok("vip", "add", "10.0.0.100:80/tcp")
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	r := runCLI(t, ctx, "", "--socket", l.socket, "stats", "--watch", "--interval", "50ms")
	if r.code != 0 || strings.Contains(r.stdout, "\x1b") || strings.Count(r.stdout, "VIP ") < 2 {
		t.Errorf("stats --watch to a pipe: exit %d, stdout %q", r.code, r.stdout)
	}
}
