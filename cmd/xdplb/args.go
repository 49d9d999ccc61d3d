package main

import (
	"slices"
	"strings"

	"github.com/urfave/cli/v2"
)

// reorderArgs returns args (program name first) with the flags of the
// command being run moved in front of its positional arguments, which
// follow a "--" in their original order. urfave/cli v2 stops parsing flags
// at the first positional argument, so without this `vip add
// 10.0.0.1:80/tcp --mode dr` would read "--mode" and "dr" as arguments.
//
// The command is found by walking app's command tree; flags in front of a
// command name (--socket) belong to the level above and stay where they
// are. Anything longer than "-" that starts with '-' is a flag, "-1"
// included; a flag that takes a value (as app defines it) keeps the next
// argument, whatever it looks like, unless written --flag=value.
// Everything after a "--" stays positional. Unknown flags and commands are
// passed on for urfave/cli to report.
func reorderArgs(app *cli.App, args []string) []string {
	isFlag := func(s string) bool { return len(s) > 1 && s[0] == '-' && s != "--" }
	flags, cmds := app.Flags, app.Commands
	span := func(i int) int { // how many arguments the flag at args[i] uses
		name, _, inline := strings.Cut(strings.TrimLeft(args[i], "-"), "=")
		if inline || i+1 >= len(args) {
			return 1
		}
		for _, f := range flags {
			if tv, ok := f.(interface{ TakesValue() bool }); ok && tv.TakesValue() && slices.Contains(f.Names(), name) {
				return 2
			}
		}
		return 1
	}
	i := 1
	for len(cmds) > 0 { // find the command being run, and its flags
		for i < len(args) && isFlag(args[i]) {
			i += span(i)
		}
		j := slices.IndexFunc(cmds, func(c *cli.Command) bool { return i < len(args) && c.HasName(args[i]) })
		if j < 0 { // no command, "--" or an unknown one: nothing to move
			return args
		}
		flags, cmds, i = cmds[j].Flags, cmds[j].Subcommands, i+1
	}
	out := slices.Clone(args[:i])
	var pos []string
	for i < len(args) {
		n := 1
		switch {
		case args[i] == "--":
			pos, n = append(pos, args[i+1:]...), len(args)-i
		case isFlag(args[i]):
			n = span(i)
			out = append(out, args[i:i+n]...)
		default:
			pos = append(pos, args[i])
		}
		i += n
	}
	if len(pos) == 0 {
		return out
	}
	return append(append(out, "--"), pos...)
}
