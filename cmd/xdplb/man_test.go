package main

import (
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// The man page is generated from the program's definition: it has every
// visible command, with its synopsis in full, and every flag of it; the
// man command itself is hidden.
func TestManPage(t *testing.T) {
	r := runCLI(t, t.Context(), "", "man")
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("man: exit %d, stderr %q", r.code, r.stderr)
	}
	page := r.stdout
	if !strings.Contains(page, ".TH xdplb 1") || !strings.Contains(page, ".SH NAME") {
		t.Fatalf("not a man page of section 1:\n%.300s", page)
	}
	var walk func(path string, cs []*cli.Command)
	n := 0
	walk = func(path string, cs []*cli.Command) {
		for _, c := range cs {
			if c.Hidden {
				if strings.Contains(page, path+" "+c.Name) {
					t.Errorf("hidden command %q in the man page", path+" "+c.Name)
				}
				continue
			}
			p := path + " " + c.Name
			n++
			if !strings.Contains(page, p) {
				t.Errorf("man page lacks %q", p)
			}
			for _, f := range c.Flags {
				if fl := `\fB--` + f.Names()[0]; !strings.Contains(page, fl) {
					t.Errorf("man page lacks %s of %q", fl, p)
				}
			}
			walk(p, c.Subcommands)
		}
	}
	walk("xdplb", (&env{}).newApp().Commands)
	if n < 15 {
		t.Errorf("%d commands walked", n)
	}
	for _, want := range []string{`\fB--socket\fP`, "/healthz", "/readyz", "/etc/default/xdplb", "xdplb completion bash|zsh"} {
		if !strings.Contains(page, want) {
			t.Errorf("man page lacks %q", want)
		}
	}
	if regexp.MustCompile(`(?m)^\s+man\b`).MatchString(runCLI(t, t.Context(), "", "--help").stdout) {
		t.Error("man offered in --help")
	}
	wantOneLineError(t, runCLI(t, t.Context(), "", "man", "x"), exitUsage, `man: want no arguments`)

	// groff, where there is one, reads it without a warning.
	groff, err := exec.LookPath("groff")
	if err != nil {
		return
	}
	cmd := exec.CommandContext(t.Context(), groff, "-man", "-Tutf8", "-ww", "-z")
	cmd.Stdin = strings.NewReader(page)
	if out, err := cmd.CombinedOutput(); err != nil || len(out) != 0 {
		t.Errorf("groff: %v\n%s", err, out)
	}
}
