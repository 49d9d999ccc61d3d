package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"sync/atomic"
	"syscall"
	"text/tabwriter"

	"github.com/xdplb/xdplb/control/model"
)

// stdoutWriter is the program's stdout; it remembers a write that failed
// with EPIPE, the reader gone, so that run can tell that end from the
// same error on the daemon's socket.
type stdoutWriter struct {
	w      io.Writer
	broken atomic.Bool
}

func (s *stdoutWriter) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	if errors.Is(err, syscall.EPIPE) {
		s.broken.Store(true)
	}
	return n, err
}

// table writes aligned columns; rows are written in the order given, so
// callers sort first.
type table struct{ w *tabwriter.Writer }

func newTable(w io.Writer, header ...string) *table {
	t := &table{w: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
	t.row(header...)
	return t
}

func (t *table) row(cols ...string) { fmt.Fprintln(t.w, strings.Join(cols, "\t")) }

func (t *table) flush() error { return t.w.Flush() }

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// backendString prints a backend as it is written on the command line:
// "10.0.0.1", "10.0.0.1:8080", "[2001:db8::1]:8080".
func backendString(a netip.Addr, port uint16) string {
	if port == 0 {
		return a.String()
	}
	return netip.AddrPortFrom(a, port).String()
}

func compareVIPID(a, b model.VIPID) int {
	if c := a.Addr.Compare(b.Addr); c != 0 {
		return c
	}
	if a.Port != b.Port {
		return int(a.Port) - int(b.Port)
	}
	return strings.Compare(string(a.Protocol), string(b.Protocol))
}

func lessBackend(a netip.Addr, ap uint16, b netip.Addr, bp uint16) bool {
	if c := a.Compare(b); c != 0 {
		return c < 0
	}
	return ap < bp
}

// si prints v with an SI prefix: 1234567 -> "1.23M".
func si(v float64) string {
	const units = "kMGTPE"
	if v < 1000 {
		return fmt.Sprintf("%.0f", v)
	}
	i := -1
	for v >= 1000 && i < len(units)-1 {
		v /= 1000
		i++
	}
	return fmt.Sprintf("%.3g%c", v, units[i])
}
