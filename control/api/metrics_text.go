package api

import (
	"bufio"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// A scrape of a large state is mostly series of our own: five per
// backend, two more per checked one; 1,000 VIPs x 32 backends are about
// 225,000. Made into client_golang's metric objects, sorted and encoded,
// they took about 0.5 s of CPU a scrape, and longer on a machine busy
// with health checks (bench/RESULTS.md). So /metrics writes our families
// in the text exposition format directly from the samples, a few hundred
// ns each, and only the small families of the libraries (the Go runtime,
// the process, the probe histogram, BGP) go through the registry. The
// same samples also feed prometheus.Collector's Collect, which the tests
// and any other registry use: one place says what is exported.

// family is one metric family of ours: its Desc for the Collector path
// and what the text writer needs.
type family struct {
	desc   *prometheus.Desc
	name   string
	help   string
	typ    prometheus.ValueType
	labels []string
	order  []int // label indices sorted by name, the order Prometheus writes them in
}

func newFamily(name, help string, typ prometheus.ValueType, labels ...string) *family {
	order := make([]int, len(labels))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return strings.Compare(labels[a], labels[b]) })
	return &family{desc: prometheus.NewDesc(name, help, labels, nil), name: name, help: help, typ: typ, labels: labels, order: order}
}

// emitFunc takes one sample of a family, its label values in the
// family's order.
type emitFunc func(f *family, v float64, lvs ...string)

// chanEmit sends the samples as const metrics on ch.
func chanEmit(ch chan<- prometheus.Metric) emitFunc {
	return func(f *family, v float64, lvs ...string) {
		ch <- prometheus.MustNewConstMetric(f.desc, f.typ, v, lvs...)
	}
}

// textFamilies gathers samples by family, in the order their families
// first appear, and writes them in the text exposition format (version
// 0.0.4): a family's samples together, under its HELP and TYPE. A
// family's lines go in chunks, each twice as large as the one before (at
// least textChunk): one growing slice would copy its lines again at each
// growth, about 15 ms of a scrape of 1,000 VIPs x 32 backends.
type textFamilies struct {
	order []*family
	lines map[*family]*[][]byte
}

// textChunk holds several hundred lines; a chunk with less than 512 bytes
// left is full.
const textChunk = 64 << 10

func newTextFamilies() *textFamilies { return &textFamilies{lines: map[*family]*[][]byte{}} }

func (t *textFamilies) emit(f *family, v float64, lvs ...string) {
	chunks, ok := t.lines[f]
	if !ok {
		chunks = &[][]byte{make([]byte, 0, 4<<10)}
		t.lines[f] = chunks
		t.order = append(t.order, f)
	}
	last := len(*chunks) - 1
	b := (*chunks)[last]
	if len(b) > cap(b)-512 && len(b) > 0 {
		b = make([]byte, 0, max(textChunk, 2*cap(b)))
		*chunks = append(*chunks, b)
		last++
	}
	b = append(b, f.name...)
	if len(f.labels) > 0 {
		b = append(b, '{')
		for n, i := range f.order {
			if n > 0 {
				b = append(b, ',')
			}
			b = append(b, f.labels[i]...)
			b = append(b, '=', '"')
			b = appendLabelValue(b, lvs[i])
			b = append(b, '"')
		}
		b = append(b, '}')
	}
	b = append(b, ' ')
	b = appendValue(b, v)
	(*chunks)[last] = append(b, '\n')
}

// appendValue appends v as client_golang writes it: strconv's shortest
// 'g' form. Most of our values are counts below a million, which that
// form writes as plain integers, so those take strconv.AppendInt, a
// fraction of the cost; a million and above is 1e+06 in 'g', and goes
// through AppendFloat like any other value.
func appendValue(b []byte, v float64) []byte {
	if v >= 0 && v < 1e6 {
		if n := int64(v); float64(n) == v {
			return strconv.AppendInt(b, n, 10)
		}
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}

func (t *textFamilies) writeTo(w *bufio.Writer) error {
	for _, f := range t.order {
		w.WriteString("# HELP ")
		w.WriteString(f.name)
		w.WriteByte(' ')
		w.WriteString(helpEscaper.Replace(f.help))
		w.WriteString("\n# TYPE ")
		w.WriteString(f.name)
		if f.typ == prometheus.CounterValue {
			w.WriteString(" counter\n")
		} else {
			w.WriteString(" gauge\n")
		}
		for _, b := range *t.lines[f] {
			if _, err := w.Write(b); err != nil {
				return err
			}
		}
	}
	return nil
}

var helpEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`)

// appendLabelValue appends s escaped as the text format wants: backslash,
// double quote and newline.
func appendLabelValue(b []byte, s string) []byte {
	// A byte loop: strings.ContainsAny builds its set of three at each
	// call, a tenth of a scrape's CPU.
	plain := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '\\' || c == '"' || c == '\n' {
			plain = false
			break
		}
	}
	if plain {
		return append(b, s...)
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\':
			b = append(b, '\\', '\\')
		case '"':
			b = append(b, '\\', '"')
		case '\n':
			b = append(b, '\\', 'n')
		default:
			b = append(b, c)
		}
	}
	return b
}

// textCollector is a collector /metrics writes as text itself; what it
// has for the registry (nil: nothing) goes there.
type textCollector interface {
	prometheus.Collector
	writeText(w *bufio.Writer) error
	viaRegistry() prometheus.Collector
}

var _ io.Writer = (*bufio.Writer)(nil)
