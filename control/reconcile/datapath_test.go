package reconcile_test

import (
	"github.com/xdplb/xdplb/control/reconcile"
	"github.com/xdplb/xdplb/control/reconcile/reconciletest"
	"github.com/xdplb/xdplb/loader"
)

// The fake the tests use stands in for the daemon's data plane (the method
// set of daemon.DatapathCloser, which this package may not import).
var _ interface {
	reconcile.Datapath
	Close() error
	Remove() error
	ExpireNAT() (loader.NATStats, error)
} = (*reconciletest.Datapath)(nil)
