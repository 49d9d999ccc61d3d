package bench

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

// Section is one part of the benchmark report: a table of figures, how they
// were measured, and the targets they are held against.
type Section struct {
	Title   string
	Method  string // how it was measured, one paragraph of Markdown
	Header  []string
	Rows    [][]string
	Targets []Target
	Notes   []string
}

// Target is a figure held against a limit. Figures are ratios measured side
// by side in one run, so that the shared machine's drift cancels out.
type Target struct {
	Name   string
	Got    float64
	Limit  float64
	AtMost bool   // true: Got <= Limit is met; false: Got >= Limit
	Unit   string // "x", "s", "ms", "MiB"
}

// Met says whether the target was reached.
func (t Target) Met() bool {
	if t.AtMost {
		return t.Got <= t.Limit
	}
	return t.Got >= t.Limit
}

func (t Target) String() string {
	op := ">="
	if t.AtMost {
		op = "<="
	}
	verdict := "met"
	if !t.Met() {
		verdict = "MISSED"
	}
	return fmt.Sprintf("%s: %.3g%s (target %s %.3g%s) %s", t.Name, t.Got, t.Unit, op, t.Limit, t.Unit, verdict)
}

// machine describes where the figures come from.
func machine() string {
	kernel, _ := exec.Command("uname", "-r").Output()
	commit, _ := exec.Command("git", "describe", "--always", "--dirty").Output()
	model := "unknown"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				_, model, _ = strings.Cut(l, ": ")
				break
			}
		}
	}
	return fmt.Sprintf("%s, %d CPUs (%s), kernel %s, commit %s, %s",
		runtime.GOARCH, runtime.NumCPU(), model, strings.TrimSpace(string(kernel)),
		strings.TrimSpace(string(commit)), time.Now().UTC().Format("2006-01-02 15:04 UTC"))
}

// writeMarkdown writes the whole report.
func writeMarkdown(w io.Writer, sections []Section, errs map[string]error) {
	fmt.Fprintf(w, "# xdplb benchmark results\n\nMachine: %s.\n\n", machine())
	fmt.Fprintf(w, "Produced by `make bench`. Every figure is measured side by side with its reference in the same run; "+
		"absolute times on a shared machine drift, ratios much less. A missed target is reported, never hidden.\n\n")
	fmt.Fprintf(w, "## Targets\n\n| target | got | limit | |\n|---|---|---|---|\n")
	for _, s := range sections {
		for _, t := range s.Targets {
			op := ">="
			if t.AtMost {
				op = "<="
			}
			v := "met"
			if !t.Met() {
				v = "**missed**"
			}
			fmt.Fprintf(w, "| %s | %.3g%s | %s %.3g%s | %s |\n", t.Name, t.Got, t.Unit, op, t.Limit, t.Unit, v)
		}
	}
	fmt.Fprintln(w)
	for _, s := range sections {
		fmt.Fprintf(w, "## %s\n\n%s\n\n", s.Title, s.Method)
		if len(s.Header) > 0 {
			fmt.Fprintf(w, "| %s |\n|%s\n", strings.Join(s.Header, " | "), strings.Repeat("---|", len(s.Header)))
			for _, r := range s.Rows {
				fmt.Fprintf(w, "| %s |\n", strings.Join(r, " | "))
			}
			fmt.Fprintln(w)
		}
		for _, n := range s.Notes {
			fmt.Fprintf(w, "- %s\n", n)
		}
		fmt.Fprintln(w)
	}
	for name, err := range errs {
		fmt.Fprintf(w, "## %s: not measured\n\n%v\n\n", name, err)
	}
}

// printText prints a section for a person at a terminal.
func printText(w io.Writer, s Section) {
	fmt.Fprintf(w, "\n== %s\n", s.Title)
	if len(s.Header) > 0 {
		widths := make([]int, len(s.Header))
		for i, h := range s.Header {
			widths[i] = len(h)
		}
		for _, r := range s.Rows {
			for i, c := range r {
				if i < len(widths) && len(c) > widths[i] {
					widths[i] = len(c)
				}
			}
		}
		line := func(cells []string) {
			for i, c := range cells {
				if i < len(widths) {
					fmt.Fprintf(w, "%-*s  ", widths[i], c)
				}
			}
			fmt.Fprintln(w)
		}
		line(s.Header)
		for _, r := range s.Rows {
			line(r)
		}
	}
	for _, t := range s.Targets {
		fmt.Fprintf(w, "  %s\n", t)
	}
	for _, n := range s.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
}
