package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/xdplb/xdplb/healthcheck"
	"github.com/xdplb/xdplb/loader"
)

// Daemon defaults (ARCHITECTURE.md).
const (
	DefaultStateDir      = "/var/lib/xdplb"
	DefaultBPFFS         = "/sys/fs/bpf"
	DefaultMaglevSize    = 65537
	DefaultConntrackSize = 1 << 20
)

// DaemonConfig is the daemon's command line.
type DaemonConfig struct {
	Interfaces    []string
	XDPMode       string // native|generic|auto
	StateDir      string
	BPFFS         string
	ConfigFile    string // replaces the stored state at start when set
	MetricsAddr   string
	SocketPath    string
	MaglevSize    uint32
	ConntrackSize uint32
	// DetachOnExit removes the XDP program, its pins and the announced
	// VIP addresses when the daemon stops (a clean uninstall); by default
	// they stay and forwarding continues without the daemon.
	DetachOnExit bool
	Version      string
	Logger       *slog.Logger
}

// DatapathCloser is a data plane the daemon owns: Close releases its
// handles but keeps programs, maps and links pinned; Remove also detaches
// and unpins everything.
type DatapathCloser interface {
	Datapath
	Close() error
	Remove() error
}

// OpenDatapath loads the data plane; RunDaemon uses loader.Load.
type OpenDatapath func(loader.Options) (DatapathCloser, error)

// RunDaemon runs the daemon until ctx is cancelled, then cleans up. The XDP
// program, its maps and the announced VIP addresses stay in place when it
// returns, so forwarding continues across a restart or upgrade.
func RunDaemon(ctx context.Context, cfg DaemonConfig) error {
	return RunDaemonWith(ctx, cfg, func(o loader.Options) (DatapathCloser, error) {
		dp, err := loader.Load(o)
		if err != nil {
			return nil, err
		}
		return dp, nil
	})
}

func (cfg *DaemonConfig) defaults() error {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.StateDir == "" {
		cfg.StateDir = DefaultStateDir
	}
	if cfg.BPFFS == "" {
		cfg.BPFFS = DefaultBPFFS
	}
	if cfg.SocketPath == "" {
		cfg.SocketPath = DefaultSocketPath
	}
	if cfg.MetricsAddr == "" {
		cfg.MetricsAddr = DefaultMetricsAddr
	}
	if cfg.XDPMode == "" {
		cfg.XDPMode = string(loader.XDPModeAuto)
	}
	if cfg.MaglevSize == 0 {
		cfg.MaglevSize = DefaultMaglevSize
	}
	if cfg.ConntrackSize == 0 {
		cfg.ConntrackSize = DefaultConntrackSize
	}
	switch loader.XDPMode(cfg.XDPMode) {
	case loader.XDPModeNative, loader.XDPModeGeneric, loader.XDPModeAuto:
	default:
		return fmt.Errorf("--xdp-mode %q: want native, generic or auto", cfg.XDPMode)
	}
	if !IsPrime(cfg.MaglevSize) {
		return fmt.Errorf("--maglev-size %d: must be a prime number (e.g. 65537)", cfg.MaglevSize)
	}
	if len(cfg.Interfaces) == 0 {
		return errors.New("at least one --iface is required")
	}
	seen := map[string]bool{}
	for _, name := range cfg.Interfaces {
		if seen[name] {
			return fmt.Errorf("--iface %s given twice", name)
		}
		seen[name] = true
		if _, err := net.InterfaceByName(name); err != nil {
			return fmt.Errorf("interface %s not found", name)
		}
	}
	return nil
}

// RunDaemonWith is RunDaemon with the data plane opened by open (tests use
// a fake).
func RunDaemonWith(ctx context.Context, cfg DaemonConfig, open OpenDatapath) (err error) {
	if err := cfg.defaults(); err != nil {
		return err
	}
	log := cfg.Logger
	start := time.Now()

	// The state dir's lock, then the socket: a second daemon must touch
	// neither the running one's state nor its data plane.
	lock, err := LockStateDir(cfg.StateDir)
	if err != nil {
		return err
	}
	defer lock.Unlock()
	apiLn, err := ListenUnix(ctx, cfg.SocketPath)
	if err != nil {
		return err
	}
	defer func() {
		apiLn.Close()
		if rerr := os.Remove(cfg.SocketPath); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			log.Warn("remove socket", "err", rerr)
		}
	}()
	metricsLn, err := net.Listen("tcp", cfg.MetricsAddr)
	if err != nil {
		return fmt.Errorf("metrics listener: %w", err)
	}
	defer metricsLn.Close()

	nw, err := NewNetlink(NetlinkOptions{Interfaces: cfg.Interfaces, StateDir: cfg.StateDir, Logger: log})
	if err != nil {
		return err
	}
	defer nw.Close()

	store, err := OpenStore(cfg.StateDir, nw.CheckState)
	if err != nil {
		return err
	}
	// A state larger than the maps is a configuration error, refused when
	// it is given, not a failed map write later.
	store.SetLimits(loader.DefaultMaxVIPs, loader.DefaultMaxBackends)
	if err := ValidateLimits(store.State(), loader.DefaultMaxVIPs, loader.DefaultMaxBackends); err != nil {
		return fmt.Errorf("state in %s: %w", cfg.StateDir, err)
	}
	if cfg.ConfigFile != "" {
		st, err := LoadConfig(cfg.ConfigFile)
		if err != nil {
			return fmt.Errorf("config %s: %w", cfg.ConfigFile, err)
		}
		if err := store.Replace(st); err != nil {
			return fmt.Errorf("config %s: %w", cfg.ConfigFile, err)
		}
		log.Info("state replaced from config file", "file", cfg.ConfigFile, "vips", len(st.VIPs))
	}

	dp, err := open(loader.Options{
		BPFFS:         cfg.BPFFS,
		Interfaces:    cfg.Interfaces,
		XDPMode:       loader.XDPMode(cfg.XDPMode),
		LookupSize:    cfg.MaglevSize,
		ConntrackSize: cfg.ConntrackSize,
		Logger:        log,
	})
	if err != nil {
		return fmt.Errorf("load data plane: %w", err)
	}
	defer func() {
		if cfg.DetachOnExit {
			detachOnExit(dp, nw, log)
			return
		}
		if cerr := dp.Close(); cerr != nil {
			log.Warn("close data plane", "err", cerr)
		}
		log.Info("daemon stopped; XDP program, maps and announced addresses stay in place, forwarding continues")
	}()

	// Health first: the initial reconcile hands it the restored state, whose
	// backends begin up (a restart must not stop forwarding).
	hm := NewHealthMetrics()
	checks := healthcheck.NewManager(healthcheck.Options{
		Clock:        healthcheck.RealClock(),
		Prober:       healthcheck.NewProber(),
		Logger:       log,
		OnProbe:      hm.ObserveProbe,
		OnTransition: hm.ObserveTransition,
	})
	rec := NewReconciler(store, dp, nw, NewHealthChecker(checks), log)
	if err := rec.Reconcile(ctx); err != nil {
		return fmt.Errorf("initial reconcile: %w", err)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	goRun := func(fn func()) {
		wg.Add(1)
		go func() { defer wg.Done(); fn() }()
	}
	srv := &Server{Store: store, Datapath: dp, Reconciler: rec, Version: cfg.Version, StartTime: start, Log: log}
	goRun(func() {
		if err := srv.Serve(ctx, apiLn); err != nil {
			errc <- err
		}
	})
	coll := NewCollector(dp, store, rec, cfg.Version, log)
	goRun(func() {
		if err := ServeMetrics(ctx, metricsLn, coll, log, hm); err != nil {
			errc <- err
		}
	})
	goRun(func() { nw.Watch(ctx) })
	goRun(func() { checks.Run(ctx) })
	goRun(func() { rec.Run(ctx) })
	log.Info("daemon running", "iface", cfg.Interfaces, "socket", cfg.SocketPath,
		"metrics", metricsLn.Addr().String(), "state_dir", cfg.StateDir, "vips", len(store.State().VIPs))

	select {
	case <-ctx.Done():
	case err = <-errc:
		log.Error("daemon server failed", "err", err)
	}
	cancel()
	wg.Wait()
	return err
}

// detachOnExit withdraws the announced VIP addresses and removes the
// program, its links and maps: after it the host forwards nothing for
// xdplb. The desired state stays in the state directory.
func detachOnExit(dp DatapathCloser, nw Network, log *slog.Logger) {
	// The daemon's context is done; withdrawing takes no waiting.
	if err := nw.Announce(context.Background(), nil); err != nil {
		log.Warn("withdraw announced addresses", "err", err)
	}
	if err := dp.Remove(); err != nil {
		log.Warn("remove data plane", "err", err)
		return
	}
	log.Info("daemon stopped and detached: XDP program, maps and announced addresses removed")
}
