package main

import (
	"context"
	"net"
	"net/netip"

	"github.com/xdplb/xdplb/control"
	"github.com/xdplb/xdplb/control/controltest"
	"github.com/xdplb/xdplb/loader"
)

// newFakeDatapath is an in-memory data plane whose VIP and backend
// counters grow by a fixed step on every read, so that two stats samples
// always differ, and which reports fixed verdicts and drops.
func newFakeDatapath() *controltest.Datapath {
	dp := controltest.NewDatapath(251, 64, 256)
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
	dp.SetDrops("no_backend", 3)
	dp.SetDrops("fragment", 0)
	dp.SetInterfaces(loader.IfaceStatus{Name: "lo", Ifindex: 1, Mode: loader.XDPModeGeneric, ProgramID: 17, LinkID: 4})
	return dp
}

// fakeNetwork puts every backend behind "lo" with a MAC made of its
// address's last byte.
type fakeNetwork struct{}

func (fakeNetwork) Resolve(_ context.Context, addr netip.Addr) (control.Neighbour, error) {
	b := addr.As16()
	return control.Neighbour{
		Ifindex: 1,
		Iface:   "lo",
		SrcMAC:  net.HardwareAddr{2, 0, 0, 0, 0, 1},
		MAC:     net.HardwareAddr{2, 0, 0, 0, 0, b[15]},
	}, nil
}

func (fakeNetwork) Announce(context.Context, map[netip.Addr]bool) error { return nil }
func (fakeNetwork) Changes() <-chan struct{}                            { return nil }
