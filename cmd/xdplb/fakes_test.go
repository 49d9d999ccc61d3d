package main

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/control/reconcile/reconciletest"
	"github.com/xdplb/xdplb/healthcheck"
	"github.com/xdplb/xdplb/loader"
)

// newFakeDatapath is an in-memory data plane whose VIP and backend
// counters grow by a fixed step on every read, so that two stats samples
// always differ, and which reports fixed verdicts, drops, and frames the
// driver refused to send.
func newFakeDatapath() *reconciletest.Datapath {
	dp := reconciletest.NewDatapath(251, 64, 256)
	// For every id: n*id packets, 100*n*id bytes and id flows, where n
	// counts the reads so far. The fake calls this locked.
	var reads uint64
	dp.SetCountersFunc(func(ids []uint32) map[uint32]loader.Counters {
		reads++
		out := map[uint32]loader.Counters{}
		for _, id := range ids {
			n := uint64(id) * reads
			out[id] = loader.Counters{Packets: n, Bytes: 100 * n, Flows: uint64(id)}
		}
		return out
	})
	dp.SetActions(loader.ActionCount{Ifindex: 1, Action: "tx", Count: 42}, loader.ActionCount{Ifindex: 1, Action: "pass", Count: 7})
	dp.SetTxErrors(loader.TxErrorCount{Ifindex: 1, Count: 5})
	dp.SetDrops("no_backend", 3)
	dp.SetDrops("fragment", 0)
	dp.SetInterfaces(loader.IfaceStatus{Name: "lo", Ifindex: 1, Mode: loader.XDPModeGeneric, ProgramID: 17, LinkID: 4})
	dp.SetFeatures(loader.Features{Kernel: "6.1.0-57-amd64", BTF: true, BatchLookup: true, BatchUpdateTables: true, Mmapable: true})
	return dp
}

// fakeNetwork puts every backend behind "lo" with a MAC made of its
// address's last byte.
type fakeNetwork struct{}

func (fakeNetwork) ResolveAll(_ context.Context, addrs []netip.Addr) map[netip.Addr]model.Resolution {
	out := make(map[netip.Addr]model.Resolution, len(addrs))
	for _, addr := range addrs {
		b := addr.As16()
		out[addr] = model.Resolution{Neighbour: model.Neighbour{
			Ifindex: 1,
			Iface:   "lo",
			SrcMAC:  net.HardwareAddr{2, 0, 0, 0, 0, 1},
			MAC:     net.HardwareAddr{2, 0, 0, 0, 0, b[15]},
		}}
	}
	return out
}

// RouteAll routes every NAT backend through "lo", whose primary
// addresses are 192.0.2.1 and 2001:db8:ffff::1.
func (fakeNetwork) RouteAll(_ context.Context, addrs []netip.Addr) map[netip.Addr]model.Route {
	out := make(map[netip.Addr]model.Route, len(addrs))
	for _, addr := range addrs {
		p := netip.MustParseAddr("2001:db8:ffff::1")
		if addr.Is4() {
			p = netip.MustParseAddr("192.0.2.1")
		}
		out[addr] = model.Route{Ifindex: 1, Iface: "lo", Primary: p}
	}
	return out
}

func (fakeNetwork) Forget(map[netip.Addr]bool)                          {}
func (fakeNetwork) Announce(context.Context, map[netip.Addr]bool) error { return nil }
func (fakeNetwork) Changes() <-chan struct{}                            { return nil }

// fakeHealth is a reconcile.Health the test sets: a backend without a
// status is unchecked (always up).
type fakeHealth struct {
	mu     sync.Mutex
	status map[string]healthcheck.Status // by model.HealthTargetID
}

func newFakeHealth() *fakeHealth { return &fakeHealth{status: map[string]healthcheck.Status{}} }

// set gives backend addr of vip a check result.
func (h *fakeHealth) set(vip, addr string, up bool, reason string, since time.Time) {
	id, err := model.ParseVIPID(vip)
	if err != nil {
		panic(err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.status[model.HealthTargetID(id, netip.MustParseAddr(addr), 0)] = healthcheck.Status{Up: up, Known: true, Reason: reason, Since: since}
}

func (h *fakeHealth) Sync(model.State) {}

func (h *fakeHealth) Up(vip model.VIPID, b model.Backend) bool {
	st, ok := h.Status(vip, b)
	return !ok || st.Up
}

func (h *fakeHealth) Status(vip model.VIPID, b model.Backend) (healthcheck.Status, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	st, ok := h.status[model.HealthTargetID(vip, b.Address, b.Port)]
	return st, ok
}

func (h *fakeHealth) Changes() <-chan struct{} { return nil }
