package main

import (
	_ "embed"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/loader"
)

// completionFlag ends a completion request: the scripts of `xdplb
// completion` run the command line typed so far with it last (urfave/cli's
// convention), and the program prints the candidates for the next word
// instead of running the command.
const completionFlag = "--generate-bash-completion"

var (
	//go:embed completion/xdplb.bash
	bashCompletion string
	//go:embed completion/xdplb.zsh
	zshCompletion string
)

func (e *env) completionCommand() *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print the shell completion script of bash or zsh",
		ArgsUsage: "bash|zsh",
		Description: "bash: source <(xdplb completion bash), or install the script as /usr/share/bash-completion/completions/xdplb.\n" +
			"zsh: install it as _xdplb in a directory of $fpath (xdplb completion zsh > \"${fpath[1]}/_xdplb\"), " +
			"or source <(xdplb completion zsh) after compinit.\n" +
			"make install installs both.",
		Action: func(c *cli.Context) error {
			if err := wantArgs(c, 1, "bash or zsh"); err != nil {
				return err
			}
			var script string
			switch sh := c.Args().First(); sh {
			case "bash":
				script = bashCompletion
			case "zsh":
				script = zshCompletion
			default:
				return usagef(c, "unknown shell %q: want bash or zsh", sh)
			}
			_, err := fmt.Fprint(e.stdout, script)
			return err
		},
	}
}

// isCompletion says whether args (the program's name first) ask for
// completion candidates rather than a command.
func isCompletion(args []string) bool {
	return len(args) > 1 && args[len(args)-1] == completionFlag
}

// complete is the BashComplete of the program and of every command: it
// prints the candidates for the word after args (those of a completion
// request), given what the words before it are: the flags of the command
// if the word being typed starts with '-', the values of the flag before
// it if that flag takes one (when they are few and known), else the
// subcommands. Commands and flags have their usage after a tab.
func (e *env) complete(args []string) cli.BashCompleteFunc {
	return func(c *cli.Context) {
		words := args[1 : len(args)-1]
		var last string
		if len(words) > 0 {
			last = words[len(words)-1]
		}
		flags, subs := c.App.Flags, c.App.Commands
		if c.Command != nil && c.Command.Name != "" && c.Command.Name != c.App.Name {
			flags, subs = c.Command.Flags, c.Command.Subcommands
		}
		switch {
		case strings.HasPrefix(last, "-") && !takesValue(flags, last):
			for _, f := range flags {
				name := "--" + f.Names()[0]
				if !strings.HasPrefix(name, last) || isHidden(f) {
					continue
				}
				usage := ""
				if u, ok := f.(cli.DocGenerationFlag); ok {
					usage = u.GetUsage()
				}
				e.candidate(name, usage)
			}
		case takesValue(flags, last):
			for _, v := range flagValues(strings.TrimLeft(last, "-")) {
				e.candidate(v, "")
			}
		default:
			// urfave/cli gives a leaf command a help subcommand too:
			// alone, it is no command to offer.
			if len(subs) == 1 && subs[0].Name == "help" {
				return
			}
			for _, s := range subs {
				if !s.Hidden {
					e.candidate(s.Name, s.Usage)
				}
			}
		}
	}
}

func (e *env) candidate(word, usage string) {
	if usage == "" {
		fmt.Fprintln(e.stdout, word)
		return
	}
	fmt.Fprintf(e.stdout, "%s\t%s\n", word, strings.ReplaceAll(usage, "\n", " "))
}

// takesValue says whether arg is a flag of flags written without its
// value (--mode, not --mode=nat) that takes one.
func takesValue(flags []cli.Flag, arg string) bool {
	name, _, inline := strings.Cut(strings.TrimLeft(arg, "-"), "=")
	if !strings.HasPrefix(arg, "-") || inline {
		return false
	}
	for _, f := range flags {
		if tv, ok := f.(interface{ TakesValue() bool }); ok && tv.TakesValue() && slices.Contains(f.Names(), name) {
			return true
		}
	}
	return false
}

func isHidden(f cli.Flag) bool {
	v, ok := f.(interface{ IsVisible() bool })
	return ok && !v.IsVisible()
}

// flagValues are the values offered for a flag: those its owner accepts,
// for the flags that take one of a few; nil for the others (the shell
// then offers file names).
func flagValues(flag string) []string {
	switch flag {
	case "mode":
		return strs(model.Modes())
	case "scheduler":
		return strs(model.Schedulers())
	case "check":
		return []string{model.CheckTCP, model.CheckHTTP, model.CheckUDP, model.CheckNone}
	case "output", "o":
		return []string{"table", "json"}
	case "xdp-mode":
		return strs([]loader.XDPMode{loader.XDPModeNative, loader.XDPModeGeneric, loader.XDPModeAuto})
	case "log-level":
		return []string{"debug", "info", "warn", "error"}
	case "log-format":
		return []string{"text", "json"}
	case "iface":
		ifs, _ := net.Interfaces()
		var names []string
		for _, i := range ifs {
			names = append(names, i.Name)
		}
		return names
	}
	return nil
}

func strs[T ~string](vs []T) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = string(v)
	}
	return out
}
