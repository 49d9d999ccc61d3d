// Package daemon wires the control plane together: the state, the network
// stack, the data plane, health checks, the reconciler and the API, and
// undoes it all on request (detach).
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/xdplb/xdplb/control/api"
	"github.com/xdplb/xdplb/control/bgp"
	"github.com/xdplb/xdplb/control/config"
	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/control/netstack"
	"github.com/xdplb/xdplb/control/reconcile"
	"github.com/xdplb/xdplb/control/state"

	"github.com/xdplb/xdplb/healthcheck"
	"github.com/xdplb/xdplb/loader"
)

// DefaultStateDir holds the desired state (ARCHITECTURE.md); the data
// plane's defaults are loader's.
const DefaultStateDir = "/var/lib/xdplb"

// Config is the daemon's command line: the data plane's options (loader
// owns their defaults and rules) and the control plane's own.
type Config struct {
	loader.Options
	StateDir    string
	ConfigFile  string // replaces the stored state at start when set
	MetricsAddr string
	SocketPath  string
	// NotifySocket is the service manager's socket (sd_notify(3)), told
	// READY=1 once the daemon serves and STOPPING=1 when it stops; empty
	// for none. Run takes it from $NOTIFY_SOCKET.
	NotifySocket string
	// DetachOnExit removes the XDP program, its pins and the announced
	// VIP addresses when the daemon stops (a clean uninstall); by default
	// they stay and forwarding continues without the daemon.
	DetachOnExit bool
	// WatchConfig reloads ConfigFile whenever it changes, as SIGHUP does.
	WatchConfig bool
	// RecoverState starts from the last good state (state.Recover) when
	// the state file or its journal is damaged; without it the daemon
	// refuses to start and changes nothing.
	RecoverState bool
	// BGP is the BGP speaker's configuration (--bgp-*); its zero value
	// runs none.
	BGP     bgp.Config
	Version string
}

// DatapathCloser is a data plane the daemon owns: Close releases its
// handles but keeps programs, maps and links pinned; Remove also detaches
// and unpins everything; ExpireNAT reclaims the NAT translations of
// finished flows (see sweepNAT).
type DatapathCloser interface {
	reconcile.Datapath
	Close() error
	Remove() error
	ExpireNAT() (loader.NATStats, error)
}

// NATSweepInterval is how often the daemon sweeps the NAT table: often
// enough that it never fills with finished flows (the program reclaims
// expired SNAT ports itself), rarely enough that a walk of a big table
// costs nothing.
const NATSweepInterval = 5 * time.Second

// OpenDatapath loads the data plane; RunDaemon uses loader.Load.
type OpenDatapath func(loader.Options) (DatapathCloser, error)

// Run runs the daemon until ctx is cancelled, then cleans up. The XDP
// program, its maps and the announced VIP addresses stay in place when it
// returns, so forwarding continues across a restart or upgrade.
func Run(ctx context.Context, cfg Config) error {
	if cfg.NotifySocket == "" {
		cfg.NotifySocket = os.Getenv(NotifySocketEnv)
	}
	return RunWith(ctx, cfg, func(o loader.Options) (DatapathCloser, error) {
		dp, err := loader.Load(o)
		if err != nil {
			return nil, err
		}
		return dp, nil
	})
}

func (cfg *Config) defaults() error {
	cfg.Options.Defaults()
	if cfg.StateDir == "" {
		cfg.StateDir = DefaultStateDir
	}
	if cfg.SocketPath == "" {
		cfg.SocketPath = api.DefaultSocketPath
	}
	if cfg.MetricsAddr == "" {
		cfg.MetricsAddr = api.DefaultMetricsAddr
	}
	if err := cfg.Options.Validate(); err != nil {
		return err
	}
	if err := cfg.BGP.Validate(); err != nil {
		return err
	}
	return cfg.Options.CheckInterfaces()
}

// RunWith is Run with the data plane opened by open (tests use a fake).
func RunWith(ctx context.Context, cfg Config, open OpenDatapath) error {
	return runWith(ctx, cfg, open, func(o netstack.Options) (Network, error) { return netstack.New(o) })
}

// Network is the host's network stack as the daemon uses it;
// *netstack.Netlink implements it.
type Network interface {
	reconcile.Network
	api.VIPAddressChecker
	CheckState(model.State) error
	Watch(ctx context.Context)
	ResolveNATNextHops(ctx context.Context)
	Close()
}

// runWith is RunWith with the network stack opened by openNet (tests of
// what needs backends use a fake: real ones need root).
func runWith(ctx context.Context, cfg Config, open OpenDatapath, openNet func(netstack.Options) (Network, error)) (err error) {
	if err := cfg.defaults(); err != nil {
		return err
	}
	log := cfg.Logger
	start := time.Now()

	// The state dir's lock, then the socket: a second daemon must touch
	// neither the running one's state nor its data plane.
	lock, err := state.LockDir(cfg.StateDir)
	if err != nil {
		return err
	}
	defer lock.Unlock()
	apiLn, err := api.ListenUnix(ctx, cfg.SocketPath)
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

	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	errc := make(chan error, 2)
	goRun := func(fn func()) {
		wg.Add(1)
		go func() { defer wg.Done(); fn() }()
	}
	// The metrics listener serves from here on: /healthz while the data
	// plane loads, /readyz once it is loaded and reconciled.
	metrics := api.NewMetricsServer(log)
	goRun(func() {
		if err := metrics.Serve(ctx, metricsLn); err != nil {
			errc <- err
		}
	})

	nw, err := openNet(netstack.Options{Interfaces: cfg.Interfaces, StateDir: cfg.StateDir, Logger: log})
	if err != nil {
		return err
	}
	defer nw.Close()

	if err := migrateYAMLState(cfg.StateDir, log); err != nil {
		return err
	}
	store, err := openState(cfg, nw.CheckState, log)
	if err != nil {
		return err
	}
	// A state larger than the maps is a configuration error, refused when
	// it is given, not a failed map write later.
	store.SetLimits(cfg.MaxVIPs, cfg.MaxBackends)
	if err := model.ValidateLimits(store.State(), cfg.MaxVIPs, cfg.MaxBackends); err != nil {
		return fmt.Errorf("state in %s: %w", cfg.StateDir, err)
	}
	if cfg.ConfigFile != "" {
		st, err := config.Load(cfg.ConfigFile)
		if err != nil {
			return fmt.Errorf("config %s: %w", cfg.ConfigFile, err)
		}
		if err := store.Replace(st); err != nil {
			return fmt.Errorf("config %s: %w", cfg.ConfigFile, err)
		}
		log.Info("state replaced from config file", "file", cfg.ConfigFile, "vips", len(st.VIPs))
	}

	dp, err := open(cfg.Options)
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
	// The BGP speaker stops first (the defers run last in, first out):
	// routers move the VIPs' traffic to the other nodes before this one
	// detaches. Until the first pass it announces nothing.
	var speaker *bgp.Speaker
	if cfg.BGP.Enabled() {
		if speaker, err = bgp.Start(ctx, cfg.BGP, log); err != nil {
			return err
		}
		defer stopBGP(speaker, cfg.DetachOnExit, log)
	}

	// Health first: the initial reconcile hands it the restored state, whose
	// backends begin up (a restart must not stop forwarding).
	hm := api.NewHealthMetrics(store)
	if err := metrics.Register(hm); err != nil {
		return err
	}
	checks := healthcheck.NewManager(healthcheck.Options{
		Clock:        healthcheck.RealClock(),
		Prober:       healthcheck.NewProber(),
		Logger:       log,
		OnProbe:      hm.ObserveProbe,
		OnTransition: hm.ObserveTransition,
	})
	warnForwarding(store.State(), cfg.Interfaces, os.ReadFile, log)
	warnEphemeralOverlap(cfg.SNATPorts, os.ReadFile, log)
	rec := reconcile.NewReconciler(store, dp, nw, reconcile.NewHealthChecker(checks), log)
	var bgpSrc api.BGPSource
	if speaker != nil {
		rec.SetRouteAnnouncer(speaker)
		bgpSrc = bgpStatus{speaker}
		if err := metrics.Register(api.NewBGPCollector(bgpSrc, log)); err != nil {
			return err
		}
	}
	collector := api.NewCollector(dp, store, rec, cfg.Version, log)
	rec.SetPassObserver(collector.ObservePass) // the initial pass included
	if err := rec.Reconcile(ctx); err != nil {
		return fmt.Errorf("initial reconcile: %w", err)
	}

	if err := metrics.Register(collector); err != nil {
		return err
	}
	srv := &api.Server{Store: store, Datapath: dp, Reconciler: rec, Version: cfg.Version, StartTime: start, Log: log, VIPAddrs: nw, BGP: bgpSrc}
	goRun(func() {
		if err := srv.Serve(ctx, apiLn); err != nil {
			errc <- err
		}
	})
	goRun(func() { nw.Watch(ctx) })
	goRun(func() { checks.Run(ctx) })
	goRun(func() { rec.Run(ctx) })
	goRun(func() { sweepNAT(ctx, dp, NATSweepInterval, log) })
	// SIGHUP reloads --config; without this its default action would end
	// the daemon, health checks and all, while XDP stays.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reloads := make(chan string)
	goRun(func() { reloadConfig(ctx, reloads, cfg.ConfigFile, store, log) })
	goRun(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
			}
			select {
			case reloads <- causeSIGHUP:
			case <-ctx.Done():
				return
			}
		}
	})
	if cfg.WatchConfig && cfg.ConfigFile != "" {
		goRun(func() {
			if err := watchConfig(ctx, cfg.ConfigFile, reloads, ConfigDebounce, log); err != nil {
				log.Error("config file not watched: reload it with SIGHUP", "file", cfg.ConfigFile, "err", err)
			}
		})
	}
	goRun(func() { watchNoNeigh(ctx, dp, nw.ResolveNATNextHops, NoNeighPollInterval, log) })
	metrics.SetReady(true)
	log.Info("daemon running", "iface", cfg.Interfaces, "socket", cfg.SocketPath,
		"metrics", metricsLn.Addr().String(), "state_dir", cfg.StateDir, "vips", len(store.State().VIPs))
	if err := notify(cfg.NotifySocket, "READY=1\nSTATUS=running on "+strings.Join(cfg.Interfaces, ", ")); err != nil {
		log.Warn("tell systemd the daemon is ready", "err", err)
	}

	select {
	case <-ctx.Done():
	case err = <-errc:
		log.Error("daemon server failed", "err", err)
	}
	metrics.SetReady(false)
	if err := notify(cfg.NotifySocket, "STOPPING=1"); err != nil {
		log.Warn("tell systemd the daemon stops", "err", err)
	}
	cancel()
	wg.Wait()
	return err
}

// stateReplacer is the part of the store reloadConfig uses.
type stateReplacer interface {
	Replace(model.State) error
}

// NoNeighPollInterval is how often the daemon reads the program's
// fib_no_neigh counter: a new flow whose next hop is unresolved is
// retransmitted after a second, and must find it resolved by then.
const NoNeighPollInterval = 200 * time.Millisecond

// eventReader is the part of the data plane watchNoNeigh uses.
type eventReader interface {
	EventCounters() (map[string]uint64, error)
}

// watchNoNeigh calls resolve whenever the program counted NAT packets
// whose next hop had no neighbour entry: it passes them to the kernel,
// which resolves the neighbour for nat but drops full NAT's (their
// source, the SNAT address, is the host's own), so the daemon has it
// resolved instead.
func watchNoNeigh(ctx context.Context, dp eventReader, resolve func(context.Context), interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	var last uint64
	for first := true; ; first = false {
		ev, err := dp.EventCounters()
		if err != nil {
			log.Debug("read events", "err", err)
		} else if n := ev["fib_no_neigh"]; n != last {
			if !first && n > last {
				log.Debug("nat packets found no neighbour entry: resolving the next hops", "packets", n-last)
				resolve(ctx)
			}
			last = n
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// natSweeper is the part of the data plane sweepNAT uses.
type natSweeper interface {
	ExpireNAT() (loader.NATStats, error)
}

// sweepNAT runs ExpireNAT every interval until ctx is done. A failure is
// logged as a warning once, then at debug while it lasts, and its end at
// info: a data plane that cannot sweep must not fill the log.
func sweepNAT(ctx context.Context, dp natSweeper, interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st, err := dp.ExpireNAT()
		switch {
		case err != nil && !failing:
			log.Warn("expire nat entries (logged again at debug while it fails)", "err", err)
		case err != nil:
			log.Debug("expire nat entries", "err", err)
		case failing:
			log.Info("expire nat entries works again", "entries", st.Entries, "snat_ports_in_use", st.SNATPortsInUse)
		default:
			log.Debug("nat entries expired", "entries", st.Entries, "snat_ports_in_use", st.SNATPortsInUse)
		}
		failing = err != nil
	}
}

// warnForwarding warns when a nat or fullnat VIP of st has its family's
// forwarding off on an attached interface: the program's bpf_fib_lookup
// refuses to route packets that arrive on such an interface, so they are
// passed to the kernel (and counted) instead of forwarded. The kernel
// checks the ingress interface's own setting (net.ipv4.conf.IFACE.forwarding,
// net.ipv6.conf.IFACE.forwarding), which net.ipv4.ip_forward and
// net.ipv6.conf.all.forwarding set for all. read reads a /proc/sys file.
func warnForwarding(st model.State, ifaces []string, read func(string) ([]byte, error), log *slog.Logger) {
	need := map[string]bool{} // "ipv4", "ipv6"
	for _, v := range st.VIPs {
		if v.Mode.IsNAT() {
			need[ipFamily(v.Address)] = true
		}
	}
	for _, fam := range []string{"ipv4", "ipv6"} {
		if !need[fam] {
			continue
		}
		for _, iface := range ifaces {
			path := fmt.Sprintf("/proc/sys/net/%s/conf/%s/forwarding", fam, iface)
			b, err := read(path)
			if err != nil {
				log.Warn("nat vips: cannot read the forwarding setting", "iface", iface, "err", err)
				continue
			}
			if strings.TrimSpace(string(b)) == "0" {
				log.Warn("nat vips need forwarding on: packets arriving on this interface are passed to the kernel instead of forwarded",
					"iface", iface, "sysctl", fmt.Sprintf("net.%s.conf.%s.forwarding=1", fam, iface))
			}
		}
	}
}

// warnEphemeralOverlap warns when --snat-ports overlaps the kernel's
// ephemeral ports (net.ipv4.ip_local_port_range, which IPv6 shares): the
// LB's own connections from the SNAT address, health checks to the same
// backends above all, may then take a port a full-NAT flow holds, and
// their replies would be translated to that flow's client.
func warnEphemeralOverlap(snat loader.PortRange, read func(string) ([]byte, error), log *slog.Logger) {
	b, err := read("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		log.Debug("cannot read the ephemeral port range", "err", err)
		return
	}
	var lo, hi int
	if _, err := fmt.Sscan(string(b), &lo, &hi); err != nil {
		log.Debug("cannot parse the ephemeral port range", "value", string(b), "err", err)
		return
	}
	if int(snat.Lo) <= hi && lo <= int(snat.Hi) {
		log.Warn("--snat-ports overlaps the kernel's ephemeral ports: the LB's own connections from a snat address "+
			"(health checks) may collide with full-NAT flows; reserve the range (net.ipv4.ip_local_reserved_ports) or move it",
			"snat_ports", snat.String(), "ephemeral", fmt.Sprintf("%d-%d", lo, hi))
	}
}

func ipFamily(a netip.Addr) string {
	if a.Unmap().Is4() {
		return "ipv4"
	}
	return "ipv6"
}

// detachOnExit withdraws the announced VIP addresses and removes the
// program, its links and maps: after it the host forwards nothing for
// xdplb. The desired state stays in the state directory.
func detachOnExit(dp DatapathCloser, nw reconcile.Network, log *slog.Logger) {
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

// migrateYAMLState turns the state of an xdplb that kept it as YAML
// (state.yaml and its journal) into the state file of this one, once: the
// YAML stays beside it, renamed, so nothing an operator had is lost.
func migrateYAMLState(dir string, log *slog.Logger) error {
	old := filepath.Join(dir, legacyStateFile)
	b, err := os.ReadFile(old)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read state: %w", err)
	}
	if _, err := os.Stat(filepath.Join(dir, state.File)); err == nil {
		return nil // migrated already; the YAML is a leftover
	}
	st, err := config.Parse(b)
	if err != nil {
		return fmt.Errorf("state file %s is corrupt (fix or remove it): %w", old, err)
	}
	if err := state.Migrate(dir, b, st); err != nil {
		return fmt.Errorf("migrate %s: %w", old, err)
	}
	if err := os.Rename(old, old+".migrated"); err != nil {
		return fmt.Errorf("migrate %s: %w", old, err)
	}
	log.Info("state migrated to JSON", "from", old, "to", filepath.Join(dir, state.File), "vips", len(st.VIPs))
	return nil
}

// legacyStateFile is where xdplb kept the desired state before state.File.
const legacyStateFile = "state.yaml"

// openState opens the persisted state; a damaged one is an error unless
// cfg.RecoverState, which puts the last good state in its place first.
func openState(cfg Config, check func(model.State) error, log *slog.Logger) (*state.Store, error) {
	store, err := state.Open(cfg.StateDir, check)
	if err == nil || !cfg.RecoverState || !errors.Is(err, state.ErrDamaged) {
		return store, err
	}
	log.Warn("state damaged: recovering the last good state", "err", err)
	r, rerr := state.Recover(cfg.StateDir, time.Now())
	if rerr != nil {
		return nil, errors.Join(err, rerr)
	}
	log.Warn("state recovered from its last good version; the damaged files are kept",
		"vips", r.VIPs, "kept", strings.Join(r.Kept, ", "))
	return state.Open(cfg.StateDir, check)
}
