package main

import (
	"slices"
	"strings"
	"testing"
)

// TestReorderArgsTable runs reorderArgs over the real command tree. in and
// want are split on spaces; "" is no arguments at all.
func TestReorderArgsTable(t *testing.T) {
	app := (&env{}).newApp()
	for _, tc := range []struct{ name, in, want string }{
		{"no arguments", "", ""},
		{"program only", "xdplb", "xdplb"},
		{"group only", "xdplb vip", "xdplb vip"},
		{"nothing after the command", "xdplb export", "xdplb export"},
		{"flags already first", "xdplb vip add --mode dr A", "xdplb vip add --mode dr -- A"},

		{"flag after positional", "xdplb vip add 10.0.0.1:80/tcp --mode dr", "xdplb vip add --mode dr -- 10.0.0.1:80/tcp"},
		{"flag between positionals", "xdplb backend set V --weight 5 B", "xdplb backend set --weight 5 -- V B"},
		{"positionals keep their order", "xdplb backend add V --weight 5 B C", "xdplb backend add --weight 5 -- V B C"},

		{"--flag=value", "xdplb vip add A --scheduler=sh --mode=nat", "xdplb vip add --scheduler=sh --mode=nat -- A"},
		{"--flag=value takes no next argument", "xdplb vip add --mode=nat A", "xdplb vip add --mode=nat -- A"},
		{"int value flag", "xdplb vip add A --rise 3 --check-port 8080", "xdplb vip add --rise 3 --check-port 8080 -- A"},
		{"value flag at the end, no value", "xdplb vip add A --mode", "xdplb vip add --mode -- A"},

		{"bool flag takes no value", "xdplb backend del V --force B", "xdplb backend del --force -- V B"},
		{"bool flags in a row", "xdplb backend set V B --drain --enable", "xdplb backend set --drain --enable -- V B"},
		{"bool flag=value", "xdplb vip del A --force=false", "xdplb vip del --force=false -- A"},

		{"-- keeps what follows positional", "xdplb vip add A --mode dr -- --mode -x B", "xdplb vip add --mode dr -- A --mode -x B"},
		{"-- first", "xdplb vip del -- -x", "xdplb vip del -- -x"},
		{"-- last is dropped", "xdplb vip list --", "xdplb vip list"},
		{"-- before the command", "xdplb -- vip list", "xdplb -- vip list"},

		{"negative number to a value flag", "xdplb backend set V B --weight -1", "xdplb backend set --weight -1 -- V B"},
		{"flag-like value to a value flag", "xdplb vip add A --check-path --mode", "xdplb vip add --check-path --mode -- A"},
		{"-- as the value of a value flag", "xdplb vip add A --mode -- B", "xdplb vip add --mode -- -- A B"},
		{"negative number alone is a flag", "xdplb backend add V -5", "xdplb backend add -5 -- V"},
		{"lone - is positional", "xdplb backend add V - --weight 1", "xdplb backend add --weight 1 -- V -"},

		{"unknown flag, nothing to move", "xdplb vip list --bogus", "xdplb vip list --bogus"},
		{"unknown flag takes no value", "xdplb vip add A --bogus B", "xdplb vip add --bogus -- A B"},
		{"unknown flag before the command", "xdplb --bogus vip list", "xdplb --bogus vip list"},
		{"unknown command", "xdplb bogus A --x", "xdplb bogus A --x"},
		{"unknown subcommand", "xdplb vip bogus A --mode dr", "xdplb vip bogus A --mode dr"},

		{"global flag before the command", "xdplb --socket /s vip add A --mode dr", "xdplb --socket /s vip add --mode dr -- A"},
		{"global flag=value", "xdplb --socket=/s backend list V -o json", "xdplb --socket=/s backend list -o json -- V"},
		{"global value named like a command", "xdplb --socket vip vip list -o json", "xdplb --socket vip vip list -o json"},
		{"--socket after the command is the command's, with its value", "xdplb vip list --socket /s", "xdplb vip list --socket /s"},

		{"repeated flags keep their order", "xdplb daemon --iface a --xdp-mode native --iface=b", "xdplb daemon --iface a --xdp-mode native --iface=b"},
		{"repeated flags after positionals", "xdplb backend add V B --weight 1 --weight 2", "xdplb backend add --weight 1 --weight 2 -- V B"},

		{"short value alias", "xdplb backend list V -o json", "xdplb backend list -o json -- V"},
		{"short value alias with =", "xdplb status -o=json", "xdplb status -o=json"},
		{"short value alias, - as value", "xdplb apply X -f -", "xdplb apply -f - -- X"},
		{"short bool alias", "xdplb stats X -w --interval 2s", "xdplb stats -w --interval 2s -- X"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := strings.Fields(tc.in)
			orig := slices.Clone(in)
			got := reorderArgs(app, in)
			if want := strings.Fields(tc.want); !slices.Equal(got, want) {
				t.Errorf("reorderArgs(%q) = %q, want %q", tc.in, got, want)
			}
			if !slices.Equal(in, orig) {
				t.Errorf("reorderArgs changed its input to %q", in)
			}
		})
	}
}
