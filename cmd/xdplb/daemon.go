package main

import (
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/xdplb/xdplb/control"
)

func logFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error"},
		&cli.StringFlag{Name: "log-format", Value: "text", Usage: "text or json"},
	}
}

// newLogger builds the slog logger of --log-level and --log-format,
// writing to w.
func newLogger(c *cli.Context, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.String("log-level"))); err != nil {
		return nil, usagef(c, "unknown --log-level %q: want debug, info, warn or error", c.String("log-level"))
	}
	opts := &slog.HandlerOptions{Level: level}
	switch f := c.String("log-format"); f {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, usagef(c, "unknown --log-format %q: want text or json", f)
	}
}

func (e *env) daemonCommand() *cli.Command {
	return &cli.Command{
		Name:  "daemon",
		Usage: "run the load balancer: load and attach the XDP program, serve the API",
		Flags: append([]cli.Flag{
			&cli.StringSliceFlag{Name: "iface", Usage: "interface to attach to (required, repeatable)"},
			&cli.StringFlag{Name: "xdp-mode", Value: "auto", Usage: "native, generic or auto (native, else generic)"},
			&cli.StringFlag{Name: "state-dir", Value: "/var/lib/xdplb", Usage: "directory of the persisted desired state"},
			&cli.StringFlag{Name: "bpffs", Value: "/sys/fs/bpf", Usage: "bpffs mount; pins go under DIR/xdplb (mounted if it is not a bpffs)"},
			&cli.StringFlag{Name: "config", Usage: "YAML state file to apply at start"},
			&cli.StringFlag{Name: "metrics-addr", Value: "127.0.0.1:9642", Usage: "listen address of the Prometheus /metrics endpoint"},
			&cli.Uint64Flag{Name: "maglev-size", Value: 65537, Usage: "per-VIP lookup table size, a prime"},
			&cli.Uint64Flag{Name: "conntrack-size", Value: 1 << 20, Usage: "connection table entries"},
			&cli.BoolFlag{Name: "detach-on-exit", Usage: "on exit, detach XDP and remove pins and announced addresses (default: leave them, forwarding continues)"},
		}, logFlags()...),
		Action: e.daemon,
	}
}

func (e *env) daemon(c *cli.Context) error {
	if err := wantArgs(c, 0, "no arguments (interfaces go in --iface)"); err != nil {
		return err
	}
	var ifaces []string
	for _, i := range c.StringSlice("iface") {
		if i = strings.TrimSpace(i); i != "" {
			ifaces = append(ifaces, i)
		}
	}
	if len(ifaces) == 0 {
		return usagef(c, "want at least one --iface IFACE")
	}
	switch m := c.String("xdp-mode"); m {
	case "native", "generic", "auto":
	default:
		return usagef(c, "unknown --xdp-mode %q: want native, generic or auto", m)
	}
	maglev := c.Uint64("maglev-size")
	if maglev < 3 || maglev > 1<<31 || !control.IsPrime(uint32(maglev)) {
		return usagef(c, "--maglev-size %d: want a prime between 3 and 2^31", maglev)
	}
	ct := c.Uint64("conntrack-size")
	if ct < 1 || ct > 1<<31 {
		return usagef(c, "--conntrack-size %d: want 1 to 2^31", ct)
	}
	logger, err := newLogger(c, e.stderr)
	if err != nil {
		return err
	}
	err = e.runDaemon(c.Context, control.DaemonConfig{
		Interfaces:    ifaces,
		XDPMode:       c.String("xdp-mode"),
		StateDir:      c.String("state-dir"),
		BPFFS:         c.String("bpffs"),
		ConfigFile:    c.String("config"),
		MetricsAddr:   c.String("metrics-addr"),
		SocketPath:    c.String("socket"),
		MaglevSize:    uint32(maglev),
		ConntrackSize: uint32(ct),
		DetachOnExit:  c.Bool("detach-on-exit"),
		Version:       version,
		Logger:        logger,
	})
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	return nil
}

func (e *env) detachCommand() *cli.Command {
	return &cli.Command{
		Name:  "detach",
		Usage: "with the daemon stopped: detach XDP, remove the pinned maps and withdraw announced VIP addresses",
		Description: "A clean uninstall of the data plane. The desired state stays in the state directory;\n" +
			"refused while a daemon runs on that state directory.",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "state-dir", Value: control.DefaultStateDir, Usage: "the stopped daemon's --state-dir"},
			&cli.StringFlag{Name: "bpffs", Value: control.DefaultBPFFS, Usage: "the stopped daemon's --bpffs"},
		}, logFlags()...),
		Action: func(c *cli.Context) error {
			if err := wantArgs(c, 0, "no arguments"); err != nil {
				return err
			}
			logger, err := newLogger(c, e.stderr)
			if err != nil {
				return err
			}
			err = e.runDetach(c.Context, control.DetachConfig{
				StateDir: c.String("state-dir"), BPFFS: c.String("bpffs"), Logger: logger,
			})
			if err != nil {
				return fmt.Errorf("detach: %w", err)
			}
			return nil
		},
	}
}

func (e *env) versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the version",
		Action: func(c *cli.Context) error {
			if err := wantArgs(c, 0, "no arguments"); err != nil {
				return err
			}
			_, err := fmt.Fprintf(e.stdout, "xdplb %s (%s %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return err
		},
	}
}
