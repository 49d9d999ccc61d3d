package reconcile

import (
	"net"

	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/control/reconcile/reconciletest"
)

// fakeNetwork and fakeHealth are the shared fakes under the names these
// tests use.
type fakeNetwork struct{ *reconciletest.Network }

func newFakeNetwork() *fakeNetwork { return &fakeNetwork{reconciletest.NewNetwork()} }

func (n *fakeNetwork) setMAC(a string, m net.HardwareAddr) { n.SetMAC(a, m) }

type fakeHealth struct{ *reconciletest.Health }

func newFakeHealth() *fakeHealth { return &fakeHealth{reconciletest.NewHealth()} }

func (h *fakeHealth) set(vip model.VIPID, addr string, up bool, reason string) {
	h.Set(vip, addr, up, reason)
}

var mac = reconciletest.MAC
