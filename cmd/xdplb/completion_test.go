package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/xdplb/xdplb/control/daemon"
	"github.com/xdplb/xdplb/control/model"
)

// TestMain lets the test binary stand in for xdplb, for the scripts that
// run it: with XDPLB_TEST_AS_MAIN=1 it is the program.
func TestMain(m *testing.M) {
	if os.Getenv("XDPLB_TEST_AS_MAIN") == "1" {
		main()
	}
	os.Exit(m.Run())
}

func TestCompletionCommand(t *testing.T) {
	for sh, want := range map[string]string{
		"bash": "complete -o bashdefault -o default -F _xdplb xdplb\n",
		"zsh":  "#compdef xdplb\n",
	} {
		r := runCLI(t, t.Context(), "", "completion", sh)
		if r.code != 0 || r.stderr != "" || !strings.Contains(r.stdout, want) || !strings.Contains(r.stdout, completionFlag) {
			t.Errorf("completion %s: exit %d, stderr %q, stdout:\n%s", sh, r.code, r.stderr, r.stdout)
		}
	}
	wantOneLineError(t, runCLI(t, t.Context(), "", "completion", "fish"), exitUsage, `completion: unknown shell "fish": want bash or zsh`)
	wantOneLineError(t, runCLI(t, t.Context(), "", "completion"), exitUsage, `completion: want bash or zsh`)
}

// complete runs a completion request for the words typed before the one
// being completed and returns the candidates, without their descriptions.
func complete(t *testing.T, words ...string) []string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "none.sock")
	r := runCLI(t, t.Context(), "", append(append([]string{"--socket", sock}, words...), completionFlag)...)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("complete %q: exit %d, stderr %q", words, r.code, r.stderr)
	}
	var out []string
	for _, l := range strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n") {
		if l != "" {
			w, _, _ := strings.Cut(l, "\t")
			out = append(out, w)
		}
	}
	return out
}

func TestCompletionCandidates(t *testing.T) {
	strsOf := func(vs ...string) []string { return vs }
	for _, tc := range []struct {
		words      []string
		want, not  []string // candidates among them, or not
		exactly    []string // all the candidates, in order
		exactlySet bool
	}{
		{words: nil, want: strsOf("daemon", "vip", "backend", "stats", "completion", "version"), not: strsOf("man")},
		{words: strsOf("vip"), want: strsOf("add", "del", "list")},
		{words: strsOf("vip", "add", "--sch"), exactly: strsOf("--scheduler"), exactlySet: true},
		{words: strsOf("vip", "add", "--"), want: strsOf("--mode", "--scheduler", "--check", "--snat-addr")},
		{words: strsOf("vip", "add", "10.0.0.1:80/tcp", "--mode"), exactly: strs(model.Modes()), exactlySet: true},
		{words: strsOf("vip", "add", "--scheduler"), exactly: strs(model.Schedulers()), exactlySet: true},
		{words: strsOf("vip", "add", "--check"), exactly: strsOf("tcp", "http", "udp", "none"), exactlySet: true},
		{words: strsOf("vip", "list", "-o"), exactly: strsOf("table", "json"), exactlySet: true},
		{words: strsOf("daemon", "--xdp-mode"), exactly: strsOf("native", "generic", "auto"), exactlySet: true},
		{words: strsOf("daemon", "--iface"), want: strsOf("lo")},
		{words: strsOf("--so"), exactly: strsOf("--socket"), exactlySet: true},
		// A value flag without choices, or a positional argument: none
		// (the shell offers file names).
		{words: strsOf("apply", "-f"), exactlySet: true},
		{words: strsOf("vip", "del"), exactlySet: true},
		// After a "--" everything is positional: nothing to offer.
		{words: strsOf("vip", "add", "--", "x"), exactlySet: true},
	} {
		t.Run(strings.Join(tc.words, " "), func(t *testing.T) {
			got := complete(t, tc.words...)
			for _, w := range tc.want {
				if !slices.Contains(got, w) {
					t.Errorf("no %q in %q", w, got)
				}
			}
			for _, w := range tc.not {
				if slices.Contains(got, w) {
					t.Errorf("%q offered: %q", w, got)
				}
			}
			if tc.exactlySet && !slices.Equal(got, tc.exactly) {
				t.Errorf("candidates %q, want %q", got, tc.exactly)
			}
		})
	}
}

// A completion request runs no command, whatever the words before it.
func TestCompletionRunsNothing(t *testing.T) {
	for _, words := range [][]string{
		{"daemon", "--iface", "lo"},
		{"daemon", "--iface", "lo", "--"},
		{"daemon", "--", "--iface", "lo"},
		{"detach"},
	} {
		var out, errOut strings.Builder
		e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut,
			runDaemon: func(context.Context, daemon.Config) error {
				t.Errorf("%q: the daemon ran", words)
				return nil
			},
			runDetach: func(context.Context, daemon.DetachConfig) error {
				t.Errorf("%q: detach ran", words)
				return nil
			}}
		if code := e.run(t.Context(), slices.Concat([]string{"xdplb"}, words, []string{completionFlag})); code != 0 || errOut.Len() != 0 {
			t.Errorf("%q: exit %d, stderr %q", words, code, errOut.String())
		}
	}
}

// The bash script, run by bash as completion would, offers what the
// program prints; the test binary stands in for xdplb.
func TestBashCompletionScript(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(t.TempDir(), "xdplb.bash")
	if err := os.WriteFile(script, []byte(bashCompletion), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		line string // the words, the last one being completed
		want []string
	}{
		{"vip a", []string{"add"}},
		{"vip add --sch", []string{"--scheduler"}},
		{"vip add --mode ", strs(model.Modes())},
		{"vip add --mode f", []string{"fullnat"}},
		{"ba", []string{"backend"}},
	} {
		t.Run(tc.line, func(t *testing.T) {
			words := strings.Fields(tc.line)
			if strings.HasSuffix(tc.line, " ") {
				words = append(words, "")
			}
			quoted := make([]string, len(words))
			for i, w := range words {
				quoted[i] = "'" + w + "'"
			}
			prog := `source "$1"; COMP_WORDS=("$2" ` + strings.Join(quoted, " ") + `); COMP_CWORD=` +
				strconv.Itoa(len(words)) + `; _xdplb; printf '%s\n' "${COMPREPLY[@]}"`
			cmd := exec.CommandContext(t.Context(), bash, "--norc", "-c", prog, "bash", script, self)
			cmd.Env = append(os.Environ(), "XDPLB_TEST_AS_MAIN=1")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("bash: %v\n%s", err, out)
			}
			got := strings.Fields(string(out))
			if !slices.Equal(got, tc.want) {
				t.Errorf("COMPREPLY %q, want %q", got, tc.want)
			}
		})
	}
	if err := exec.Command(bash, "-n", script).Run(); err != nil {
		t.Errorf("bash -n: %v", err)
	}
}

// The zsh script, run by zsh with the completion system's functions
// stubbed (they need an interactive shell), hands them what the program
// prints: described commands and flags, plain values, file names when
// there is nothing.
func TestZshCompletionScript(t *testing.T) {
	zsh, err := exec.LookPath("zsh")
	if err != nil {
		t.Skip("no zsh")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(t.TempDir(), "_xdplb")
	if err := os.WriteFile(script, []byte(zshCompletion), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(zsh, "-n", script).CombinedOutput(); err != nil {
		t.Fatalf("zsh -n: %v\n%s", err, out)
	}
	var vipCommands []string
	for _, c := range (&env{}).newApp().Command("vip").Subcommands {
		vipCommands = append(vipCommands, c.Name+":"+c.Usage)
	}
	vipCommands = append(vipCommands, "help:Shows a list of commands or help for one command")
	stubs := `_describe() { print -rl -- "${(@P)4}" }; compadd() { print -rl -- "${(@P)2}" }; _files() { print FILES }; compdef() { :; }; `
	for _, tc := range []struct {
		words string // the last one is being completed
		want  []string
	}{
		{"vip ''", vipCommands},
		{"vip add --mode ''", strs(model.Modes())},
		{"vip add --sch", []string{"--scheduler:scheduler of new flows: " + model.OneOf(model.Schedulers())}},
		{"apply -f ''", []string{"FILES"}},
	} {
		t.Run(tc.words, func(t *testing.T) {
			n := len(strings.Fields(tc.words)) + 1
			prog := stubs + `source "$1"; words=("$2" ` + tc.words + `); CURRENT=` + strconv.Itoa(n) + `; _xdplb`
			cmd := exec.CommandContext(t.Context(), zsh, "-f", "-c", prog, "zsh", script, self)
			cmd.Env = append(os.Environ(), "XDPLB_TEST_AS_MAIN=1")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("zsh: %v\n%s", err, out)
			}
			if got := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n"); !slices.Equal(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}
