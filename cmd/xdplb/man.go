package main

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"
)

// manDescription is the DESCRIPTION of the man page; the rest of the page
// is the commands and flags as the program defines them.
const manDescription = `xdplb is an XDP layer-4 load balancer: one binary for the daemon, which loads the XDP program on the
interfaces and keeps its maps in line with the desired state, and for the commands that change and show
that state through the daemon's API (a unix socket, --socket).

The daemon keeps the desired state in its state directory (default /var/lib/xdplb). On SIGTERM it stops and
leaves the XDP program, its maps (pinned under BPFFS/xdplb) and the announced VIP addresses in place, so
forwarding goes on until the next start picks them up; SIGHUP reloads --config. Its metrics listener
(--metrics-addr, default 127.0.0.1:9642) serves /metrics, /healthz (200 while it runs) and /readyz (200 once
the data plane is loaded and the state applied). Run by systemd (xdplb.service, Type=notify) it reports
READY=1 then; its flags are read from /etc/default/xdplb (XDPLB_OPTS).

Commands exit with 0 on success, 1 with a one-line error on stderr when the daemon or the system refused,
and 2 when the command line itself is wrong. Shell completion: xdplb completion bash|zsh.`

func (e *env) manCommand() *cli.Command {
	return &cli.Command{
		Name:   "man",
		Usage:  "print the man page xdplb(1), in roff, generated from the commands and flags",
		Hidden: true,
		Action: func(c *cli.Context) error {
			if err := wantArgs(c, 0, "no arguments"); err != nil {
				return err
			}
			page, err := e.manPage()
			if err != nil {
				return err
			}
			_, err = fmt.Fprint(e.stdout, page)
			return err
		},
	}
}

// manPage renders xdplb(1) from a fresh definition of the program, with
// each command's synopsis written out in full ("xdplb vip add [options]
// ADDR:PORT/PROTO"), which the help shows and the generator does not.
func (e *env) manPage() (string, error) {
	app := e.newApp()
	app.Description = manDescription
	app.UsageText = "xdplb [--socket PATH] command [subcommand] [options] [arguments]"
	var synopsis func(path string, cs []*cli.Command)
	synopsis = func(path string, cs []*cli.Command) {
		for _, c := range cs {
			p := path + " " + c.Name
			if c.UsageText == "" {
				c.UsageText = strings.TrimSpace(p + " " + optionsOf(c) + c.ArgsUsage)
			}
			if c.Description != "" && !strings.Contains(c.Usage, c.Description) {
				c.Usage = strings.TrimSuffix(c.Usage, ".") + ". " + strings.ReplaceAll(c.Description, "\n", " ")
			}
			synopsis(p, c.Subcommands)
		}
	}
	synopsis(app.Name, app.Commands)
	page, err := app.ToManWithSection(1)
	if err != nil {
		return "", fmt.Errorf("man page: %w", err)
	}
	return page, nil
}

// optionsOf is "[options] " for a command that has flags besides --help.
func optionsOf(c *cli.Command) string {
	if len(c.Subcommands) > 0 {
		return "command "
	}
	for _, f := range c.Flags {
		if f.Names()[0] != "help" {
			return "[options] "
		}
	}
	return ""
}
