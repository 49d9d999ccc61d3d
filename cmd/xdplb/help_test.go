package main

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/xdplb/xdplb/control/model"
)

// The help of vip add offers exactly the modes and schedulers that vip
// add accepts: a name is in the flag's usage line if and only if it gets
// past validation (to the daemon, absent here) rather than a usage error.
func TestHelpOffersOnlyAcceptedChoices(t *testing.T) {
	help := runCLI(t, t.Context(), "", "vip", "add", "--help").stdout
	sock := filepath.Join(t.TempDir(), "none.sock")
	for _, tc := range []struct {
		flag  string
		names []string
	}{
		{"mode", []string{"dr", "nat", "fullnat", "tun", "dsr"}},
		{"scheduler", []string{"maglev", "sh", "rr", "wrr", "random", "lc", "wlc", "best"}},
	} {
		line := regexp.MustCompile(`(?m)^\s*--` + tc.flag + ` value\s+(.*)$`).FindStringSubmatch(help)
		if line == nil {
			t.Fatalf("no --%s in the help:\n%s", tc.flag, help)
		}
		offered := map[string]bool{}
		for _, w := range regexp.MustCompile(`[a-z]+`).FindAllString(strings.SplitN(line[1], "(default", 2)[0], -1) {
			offered[w] = true
		}
		for _, name := range tc.names {
			args := []string{"--socket", sock, "vip", "add", "10.0.0.1:80/tcp", "--" + tc.flag, name}
			if tc.flag == "mode" && name == string(model.ModeFullNAT) {
				args = append(args, "--snat-addr", "10.0.2.1")
			}
			r := runCLI(t, t.Context(), "", args...)
			accepted := r.code == exitError && strings.Contains(r.stderr, "cannot reach the daemon")
			if r.code != exitError && r.code != exitUsage {
				t.Errorf("--%s %s: exit %d, stderr %q", tc.flag, name, r.code, r.stderr)
			}
			if accepted != offered[name] {
				t.Errorf("--%s %s: accepted %v, offered in help %v (%q; stderr %q)", tc.flag, name, accepted, offered[name], line[1], r.stderr)
			}
		}
	}
}
