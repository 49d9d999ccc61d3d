package main

import (
	"bytes"
	"fmt"
	"io"

	"golang.org/x/sys/unix"
)

// terminalRows reports whether w (the program's stdout) is a terminal and
// how many rows it has now (0: unknown). A pipe or a file is not one.
func terminalRows(w io.Writer) (rows int, ok bool) {
	if s, isOut := w.(*stdoutWriter); isOut {
		w = s.w
	}
	f, isFile := w.(interface{ Fd() uintptr })
	if !isFile {
		return 0, false
	}
	ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	if err != nil {
		return 0, false
	}
	return int(ws.Row), true
}

// ANSI (VT100) sequences the screen uses; every terminal emulator in use
// knows them.
const (
	ansiHome       = "\x1b[H"
	ansiClear      = "\x1b[2J"
	ansiClearLine  = "\x1b[K" // to the end of the line
	ansiClearBelow = "\x1b[J"
	ansiHideCursor = "\x1b[?25l"
	ansiShowCursor = "\x1b[?25h"
)

// screen redraws a frame in place on a terminal, as watch(1) does: the
// first frame clears it, the next ones overwrite from the top left, each
// line clearing what the last frame left to its right and the frame what
// it left below. A frame taller than the terminal is cut, with a line that
// says how much is not shown, so that it never scrolls.
type screen struct {
	w     io.Writer
	rows  func() int // the terminal's rows now, 0 if unknown
	drawn bool
}

func (s *screen) draw(frame []byte) error {
	lines := bytes.Split(bytes.TrimRight(frame, "\n"), []byte("\n"))
	var b bytes.Buffer
	if !s.drawn {
		b.WriteString(ansiHideCursor + ansiHome + ansiClear)
	} else {
		b.WriteString(ansiHome)
	}
	// One row stays free for the cursor, so the last line never scrolls.
	if rows := s.rows(); rows > 1 && len(lines) > rows-1 {
		hidden := len(lines) - (rows - 2)
		lines = append(lines[:rows-2:rows-2], fmt.Appendf(nil, "... %d more lines: enlarge the terminal, or use -o json", hidden))
	}
	for _, l := range lines {
		b.Write(l)
		b.WriteString(ansiClearLine + "\n")
	}
	b.WriteString(ansiClearBelow)
	s.drawn = true
	_, err := s.w.Write(b.Bytes())
	return err
}

// close gives the cursor back; the last frame stays on the screen.
func (s *screen) close() {
	if s.drawn {
		io.WriteString(s.w, ansiShowCursor)
	}
}
