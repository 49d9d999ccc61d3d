package control_test

import (
	"github.com/xdplb/xdplb/control"
	"github.com/xdplb/xdplb/control/controltest"
)

// The fake the tests use stands in for the daemon's data plane.
var _ control.DatapathCloser = (*controltest.Datapath)(nil)
