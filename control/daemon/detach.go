package daemon

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/xdplb/xdplb/control/netstack"
	"github.com/xdplb/xdplb/control/state"

	"github.com/xdplb/xdplb/loader"
)

// DetachConfig says where a stopped daemon left its state and pins.
type DetachConfig struct {
	StateDir string // default DefaultStateDir
	BPFFS    string // default loader.DefaultBPFFS
	Logger   *slog.Logger
}

// Detach undoes what a daemon leaves in place when it stops: it withdraws
// the VIP addresses the daemon announced and detaches and unpins the XDP
// program and its maps. The desired state stays in the state directory,
// so a new daemon starts where the old one was. It refuses while a daemon
// holds the state directory: that daemon would put everything back.
func Detach(ctx context.Context, cfg DetachConfig) error {
	if cfg.StateDir == "" {
		cfg.StateDir = DefaultStateDir
	}
	if cfg.BPFFS == "" {
		cfg.BPFFS = loader.DefaultBPFFS
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	lock, err := state.LockDir(cfg.StateDir)
	if err != nil {
		return fmt.Errorf("%w: stop the daemon first (or run it with --detach-on-exit)", err)
	}
	defer lock.Unlock()

	nw, err := netstack.New(netstack.Options{StateDir: cfg.StateDir, Logger: log})
	if err != nil {
		return err
	}
	defer nw.Close()
	had := nw.Announced()
	if err := nw.Announce(ctx, nil); err != nil {
		return fmt.Errorf("withdraw announced addresses: %w", err)
	}
	removed, err := loader.RemovePinned(cfg.BPFFS)
	if err != nil {
		return err
	}
	log.Info("detached", "withdrawn_addresses", len(had), "pins_removed", removed, "bpffs", cfg.BPFFS)
	return nil
}
