package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/xdplb/xdplb/control/api"
	"github.com/xdplb/xdplb/control/daemon"
)

// Exit codes of the binary.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2 // the command line itself is wrong
)

// usageError marks an error in the command line (arguments, flags), as
// opposed to one from the daemon or the system; it exits with exitUsage.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// usagef builds a usageError prefixed with the command path ("vip add: ...").
func usagef(c *cli.Context, format string, args ...any) error {
	return usageError{withPath(c, fmt.Errorf(format, args...))}
}

// cmdPath is the command's path without the program name: "vip add"; empty
// for the program itself.
func cmdPath(c *cli.Context) string {
	var names []string
	for _, cc := range c.Lineage() {
		if cc.Command != nil && cc.Command.Name != "" && cc.Command.Name != cc.App.Name {
			names = append([]string{cc.Command.Name}, names...)
		}
	}
	return strings.Join(names, " ")
}

// withPath prefixes err with the command path, if any.
func withPath(c *cli.Context, err error) error {
	if p := cmdPath(c); p != "" {
		return fmt.Errorf("%s: %w", p, err)
	}
	return err
}

// env is what the commands get from outside: the streams (nothing touches
// the process's own files directly) and the daemon's entry point.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	runDaemon      func(context.Context, daemon.Config) error
	runDetach      func(context.Context, daemon.DetachConfig) error
}

// run is the whole program: it parses args, runs the command and maps the
// result to an exit code. Errors are printed as one line on stderr.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr, runDaemon: daemon.Run, runDetach: daemon.Detach}
	return e.run(ctx, args)
}

func (e *env) run(ctx context.Context, args []string) int {
	out := &stdoutWriter{w: e.stdout}
	e.stdout = out
	app := e.newApp()
	if isCompletion(args) {
		// Candidates, never a command run: the arguments stay in their
		// order (the flag last); after a "--" there are none (urfave/cli
		// would run the command), and a "--" being typed is the start of
		// a flag.
		n := len(args) - 2
		if slices.Contains(args[:n], "--") {
			return exitOK
		}
		app.EnableBashCompletion = true
		setComplete(app, e.complete(args))
		if args[n] == "--" {
			args = slices.Concat(args[:n], []string{"-", completionFlag})
		}
	} else {
		args = reorderArgs(app, args)
	}
	err := app.RunContext(ctx, args)
	if err == nil || out.broken.Load() && errors.Is(err, syscall.EPIPE) {
		// A reader that went away (`xdplb vip list | head -1`) took what
		// it wanted: no "broken pipe" noise, as from a tool that SIGPIPE
		// ended quietly.
		return exitOK
	}
	msg := strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; ")
	fmt.Fprintf(e.stderr, "xdplb: %s\n", msg)
	var ue usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	return exitError
}

func (e *env) newApp() *cli.App {
	app := &cli.App{
		Name:           "xdplb",
		Usage:          "XDP layer-4 load balancer",
		Version:        version,
		HideVersion:    true, // `xdplb version` instead
		Reader:         e.stdin,
		Writer:         e.stdout,
		ErrWriter:      e.stderr,
		ExitErrHandler: func(*cli.Context, error) {}, // run maps errors to exit codes
		Flags:          []cli.Flag{socketFlag()},
		Commands: []*cli.Command{
			e.daemonCommand(),
			e.vipCommand(),
			e.backendCommand(),
			e.statsCommand(),
			e.connsCommand(),
			e.statusCommand(),
			e.applyCommand(),
			e.exportCommand(),
			e.detachCommand(),
			e.demoCommand(),
			e.versionCommand(),
			e.completionCommand(),
			e.manCommand(),
		},
		Action: groupAction,
	}
	app.OnUsageError = onUsageError
	for _, c := range app.Commands {
		setUsageHandlers(c)
	}
	return app
}

// socketFlag is --socket, declared on the program and on every command so
// that it is accepted anywhere on the line and listed in every help;
// socketPath reads the one given.
func socketFlag() cli.Flag {
	return &cli.StringFlag{
		Name:    "socket",
		Usage:   "unix socket of the daemon's API",
		Value:   api.DefaultSocketPath,
		EnvVars: []string{"XDPLB_SOCKET"},
	}
}

// socketPath is the --socket nearest the command that was set (on the
// command line or through XDPLB_SOCKET), else the default: urfave/cli
// reads a flag declared at two levels from the nearest one even when only
// the other was given.
func socketPath(c *cli.Context) string {
	for _, cc := range c.Lineage() {
		if cc.Command != nil && cc.IsSet("socket") {
			return cc.String("socket")
		}
	}
	return c.String("socket")
}

// setComplete makes f the completion of the program and of every command.
func setComplete(app *cli.App, f cli.BashCompleteFunc) {
	app.BashComplete = f
	var walk func([]*cli.Command)
	walk = func(cs []*cli.Command) {
		for _, c := range cs {
			c.BashComplete = f
			walk(c.Subcommands)
		}
	}
	walk(app.Commands)
}

// onUsageError turns a flag parsing error into a one-line usageError
// instead of urfave/cli's "Incorrect Usage" plus help on stdout.
func onUsageError(c *cli.Context, err error, _ bool) error {
	return usageError{withPath(c, err)}
}

func setUsageHandlers(c *cli.Command) {
	c.OnUsageError = onUsageError
	if !slices.ContainsFunc(c.Flags, func(f cli.Flag) bool { return slices.Contains(f.Names(), "socket") }) {
		c.Flags = append(c.Flags, socketFlag())
	}
	if len(c.Subcommands) > 0 && c.Action == nil {
		c.Action = groupAction
	}
	for _, s := range c.Subcommands {
		setUsageHandlers(s)
	}
}

// groupAction runs for the program itself and for command groups (vip,
// backend) when no known subcommand follows: help without arguments, a
// usage error for an unknown command.
func groupAction(c *cli.Context) error {
	if c.Args().Present() {
		return usagef(c, "unknown command %q (see --help)", c.Args().First())
	}
	if c.Command == nil || c.Command.Name == "" || c.Command.Name == c.App.Name {
		return cli.ShowAppHelp(c)
	}
	return cli.ShowSubcommandHelp(c)
}

// client returns an API client for the --socket given to the program.
func client(c *cli.Context) *api.Client {
	return api.NewClient(socketPath(c))
}

// apiError rewords the errors of a client call; above all "the daemon is
// not running", which otherwise reads as a bare dial error.
func apiError(c *cli.Context, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) {
		return withPath(c, errors.New("interrupted"))
	}
	// Before isUnreachable: a refused connect is a dial error too.
	if errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM) {
		return fmt.Errorf("permission denied on the daemon's socket %s: it is for root only (mode 0600); run as root", socketPath(c))
	}
	if isUnreachable(err) {
		return fmt.Errorf("cannot reach the daemon at %s: is `xdplb daemon` running?", socketPath(c))
	}
	return withPath(c, err)
}

func isUnreachable(err error) bool {
	if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOTSOCK) {
		return true
	}
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// wantArgs checks the number of positional arguments.
func wantArgs(c *cli.Context, n int, usage string) error {
	if c.NArg() != n {
		return usagef(c, "want %s", usage)
	}
	return nil
}

// outputFlag is the -o flag of the listing commands.
func outputFlag() cli.Flag {
	return &cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "table", Usage: "output format: table or json"}
}

// outputFormat validates -o; it is called before any network call.
func outputFormat(c *cli.Context) (string, error) {
	switch f := c.String("output"); f {
	case "table", "json":
		return f, nil
	default:
		return "", usagef(c, "unknown output format %q: want table or json", f)
	}
}
