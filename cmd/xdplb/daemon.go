package main

import (
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/netip"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/xdplb/xdplb/control/api"
	"github.com/xdplb/xdplb/control/bgp"
	"github.com/xdplb/xdplb/control/daemon"
	"github.com/xdplb/xdplb/loader"
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
			&cli.StringFlag{Name: "xdp-mode", Value: string(loader.DefaultXDPMode), Usage: "native, generic or auto (native, else generic)"},
			&cli.StringFlag{Name: "state-dir", Value: daemon.DefaultStateDir, Usage: "directory of the persisted desired state"},
			&cli.StringFlag{Name: "bpffs", Value: loader.DefaultBPFFS, Usage: "bpffs mount; pins go under DIR/xdplb (mounted if it is not a bpffs)"},
			&cli.StringFlag{Name: "config", Usage: "YAML state file to apply at start, and again on SIGHUP"},
			&cli.BoolFlag{Name: "watch-config", Usage: "apply --config again whenever the file changes (validated, all or nothing; a bad file is logged and the running state kept)"},
			&cli.StringFlag{Name: "metrics-addr", Value: api.DefaultMetricsAddr, Usage: "listen address of /metrics (Prometheus), /healthz and /readyz"},
			&cli.Uint64Flag{Name: "maglev-size", Value: loader.DefaultLookupSize, Usage: "per-VIP lookup table size, a prime"},
			&cli.Uint64Flag{Name: "conntrack-size", Value: loader.DefaultConntrackSize, Usage: "connection table entries"},
			&cli.StringFlag{Name: "snat-ports", Value: loader.DefaultSNATPorts.String(), Usage: "LO-HI: source ports of fullnat VIPs' translated packets"},
			&cli.DurationFlag{Name: "half-open-timeout", Value: loader.DefaultHalfOpenTimeout, Usage: "how long a flow that saw only its opening (a SYN) lives without a packet: its entries are reclaimed after it, in every table, and it counts as open for drain and backend del that long"},
			&cli.BoolFlag{Name: "recover-state", Usage: "if the state file is damaged, start from its last good version (kept beside it) instead of refusing to start; the damaged files are kept"},
			&cli.BoolFlag{Name: "detach-on-exit", Usage: "on exit, detach XDP and remove pins and announced addresses (default: leave them, forwarding continues)"},
			&cli.Uint64Flag{Name: "bgp-asn", DefaultText: "none, no BGP", Usage: "announce the VIPs over BGP from this AS number (with --bgp-router-id and --bgp-peer)"},
			&cli.StringFlag{Name: "bgp-router-id", Usage: "BGP identifier, an IPv4 address"},
			// Generic, not a string slice: its value has commas of its own.
			&cli.GenericFlag{Name: "bgp-peer", Value: &repeatable{}, Usage: "BGP peer ADDR[,asn=N][,port=N] (repeatable): the VIP routes go to it; without asn it is in our AS (iBGP), without port on 179"},
			&cli.DurationFlag{Name: "bgp-hold-time", Value: bgp.DefaultHoldTime, Usage: "BGP hold time offered to the peers (whole seconds, 3s or more); keepalives every third of it"},
			&cli.UintFlag{Name: "bgp-listen-port", DefaultText: "none, the daemon connects to its peers", Usage: "accept BGP sessions from the peers on this TCP port"},
		}, logFlags()...),
		Action: e.daemon,
	}
}

func (e *env) daemon(c *cli.Context) error {
	if err := wantArgs(c, 0, "no arguments (interfaces go in --iface)"); err != nil {
		return err
	}
	if c.Bool("watch-config") && c.String("config") == "" {
		return usagef(c, "--watch-config needs --config FILE")
	}
	var ifaces []string
	for _, i := range c.StringSlice("iface") {
		if i = strings.TrimSpace(i); i != "" {
			ifaces = append(ifaces, i)
		}
	}
	snatPorts, err := loader.ParsePortRange(c.String("snat-ports"))
	if err != nil {
		return usagef(c, "%s", err)
	}
	opts := loader.Options{
		BPFFS:           c.String("bpffs"),
		Interfaces:      ifaces,
		XDPMode:         loader.XDPMode(c.String("xdp-mode")),
		LookupSize:      uint32Flag(c, "maglev-size"),
		ConntrackSize:   uint32Flag(c, "conntrack-size"),
		MaxVIPs:         loader.DefaultMaxVIPs,
		MaxBackends:     loader.DefaultMaxBackends,
		SNATPorts:       snatPorts,
		HalfOpenTimeout: c.Duration("half-open-timeout"),
	}
	// The data plane's rules are loader's: checked here too, before
	// anything starts, so a bad flag is a usage error (exit 2).
	if err := opts.Validate(); err != nil {
		return usagef(c, "%s", err)
	}
	bgpCfg, err := bgpConfig(c)
	if err != nil {
		return err
	}
	logger, err := newLogger(c, e.stderr)
	if err != nil {
		return err
	}
	opts.Logger = logger
	err = e.runDaemon(c.Context, daemon.Config{
		Options:      opts,
		StateDir:     c.String("state-dir"),
		ConfigFile:   c.String("config"),
		WatchConfig:  c.Bool("watch-config"),
		MetricsAddr:  c.String("metrics-addr"),
		SocketPath:   socketPath(c),
		DetachOnExit: c.Bool("detach-on-exit"),
		RecoverState: c.Bool("recover-state"),
		BGP:          bgpCfg,
		Version:      version,
	})
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	return nil
}

// bgpConfig reads the --bgp-* flags; the speaker's rules are control/bgp's,
// checked here too so that a bad flag is a usage error.
func bgpConfig(c *cli.Context) (bgp.Config, error) {
	cfg := bgp.Config{HoldTime: c.Duration("bgp-hold-time")}
	asn := c.Uint64("bgp-asn")
	if asn > math.MaxUint32 {
		return cfg, usagef(c, "--bgp-asn %d: want 1 to 4294967295", asn)
	}
	cfg.ASN = uint32(asn)
	if s := c.String("bgp-router-id"); s != "" {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return cfg, usagef(c, "--bgp-router-id %q: want an IPv4 address", s)
		}
		cfg.RouterID = a
	}
	for _, s := range c.Generic("bgp-peer").(*repeatable).values {
		p, err := bgp.ParsePeer(s)
		if err != nil {
			return cfg, usagef(c, "--bgp-peer: %s", err)
		}
		cfg.Peers = append(cfg.Peers, p)
	}
	port := c.Uint("bgp-listen-port")
	if port > math.MaxUint16 {
		return cfg, usagef(c, "--bgp-listen-port %d: want 1 to 65535", port)
	}
	cfg.ListenPort = uint16(port)
	check := cfg
	check.Peers = append([]bgp.Peer(nil), cfg.Peers...)
	if err := check.Validate(); err != nil {
		return cfg, usagef(c, "%s", err)
	}
	return cfg, nil
}

// repeatable is a flag value that keeps every value it is given, whole
// (a StringSliceFlag would split them on commas).
type repeatable struct{ values []string }

func (r *repeatable) Set(v string) error { r.values = append(r.values, v); return nil }
func (r *repeatable) String() string     { return strings.Join(r.values, " ") }

func (e *env) detachCommand() *cli.Command {
	return &cli.Command{
		Name:  "detach",
		Usage: "with the daemon stopped: detach XDP, remove the pinned maps and withdraw announced VIP addresses",
		Description: "A clean uninstall of the data plane. The desired state stays in the state directory;\n" +
			"refused while a daemon runs on that state directory.",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "state-dir", Value: daemon.DefaultStateDir, Usage: "the stopped daemon's --state-dir"},
			&cli.StringFlag{Name: "bpffs", Value: loader.DefaultBPFFS, Usage: "the stopped daemon's --bpffs"},
		}, logFlags()...),
		Action: func(c *cli.Context) error {
			if err := wantArgs(c, 0, "no arguments"); err != nil {
				return err
			}
			logger, err := newLogger(c, e.stderr)
			if err != nil {
				return err
			}
			err = e.runDetach(c.Context, daemon.DetachConfig{
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
		Flags: []cli.Flag{outputFlag()},
		Action: func(c *cli.Context) error {
			if err := wantArgs(c, 0, "no arguments"); err != nil {
				return err
			}
			format, err := outputFormat(c)
			if err != nil {
				return err
			}
			v := buildVersion()
			if format == "json" {
				return writeJSON(e.stdout, v)
			}
			_, err = fmt.Fprintf(e.stdout, "xdplb %s (%s %s/%s)\n", v.Version, v.Go, v.OS, v.Arch)
			return err
		},
	}
}

// versionInfo is what `version -o json` prints.
type versionInfo struct {
	Version string `json:"version"`
	Go      string `json:"go"`
	OS      string `json:"os"`
	Arch    string `json:"arch"`
	// Commit and Modified are the VCS state Go stamped into the binary,
	// when it was built from a checkout.
	Commit   string `json:"commit,omitempty"`
	Modified bool   `json:"modified,omitempty"`
}

func buildVersion() versionInfo {
	v := versionInfo{Version: version, Go: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				v.Commit = s.Value
			case "vcs.modified":
				v.Modified = s.Value == "true"
			}
		}
	}
	return v
}

// uint32Flag reads a Uint64Flag that the data plane takes as uint32
// (urfave/cli v2 has no Uint32Flag); a value beyond 2^32-1 reads as 0,
// which Options.Validate refuses rather than taking the default.
func uint32Flag(c *cli.Context, name string) uint32 {
	v := c.Uint64(name)
	if v > math.MaxUint32 {
		return 0
	}
	return uint32(v)
}
