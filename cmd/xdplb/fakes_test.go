package main

import (
	"context"
	"net"
	"net/netip"
	"sync"

	"github.com/xdplb/xdplb/control"
	"github.com/xdplb/xdplb/loader"
)

// fakeDatapath is an in-memory control.Datapath: maps as Go maps, and
// counters that grow by a fixed step on every read so that two stats
// samples always differ.
type fakeDatapath struct {
	mu       sync.Mutex
	vips     map[loader.VIPKey]loader.VIPMeta
	backends map[uint32]loader.Backend
	tables   map[uint32][]uint32
	reads    uint64
}

func newFakeDatapath() *fakeDatapath {
	return &fakeDatapath{
		vips:     map[loader.VIPKey]loader.VIPMeta{},
		backends: map[uint32]loader.Backend{},
		tables:   map[uint32][]uint32{},
	}
}

var _ control.Datapath = (*fakeDatapath)(nil)

func (f *fakeDatapath) LookupTableSize() uint32 { return 251 }
func (f *fakeDatapath) MaxVIPs() uint32         { return 64 }
func (f *fakeDatapath) MaxBackends() uint32     { return 256 }

func (f *fakeDatapath) VIPs() (map[loader.VIPKey]loader.VIPMeta, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[loader.VIPKey]loader.VIPMeta, len(f.vips))
	for k, v := range f.vips {
		out[k] = v
	}
	return out, nil
}

func (f *fakeDatapath) PutVIP(k loader.VIPKey, m loader.VIPMeta) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.vips[k] = m
	return nil
}

func (f *fakeDatapath) DeleteVIP(k loader.VIPKey) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.vips, k)
	return nil
}

func (f *fakeDatapath) Backends() (map[uint32]loader.Backend, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[uint32]loader.Backend, len(f.backends))
	for k, v := range f.backends {
		out[k] = v
	}
	return out, nil
}

func (f *fakeDatapath) PutBackend(b loader.Backend) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.backends[b.ID] = b
	return nil
}

func (f *fakeDatapath) DeleteBackend(id uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.backends, id)
	return nil
}

func (f *fakeDatapath) PutLookupTable(vipID uint32, table []uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tables[vipID] = append([]uint32(nil), table...)
	return nil
}

func (f *fakeDatapath) LookupTable(vipID uint32) ([]uint32, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.tables[vipID]
	if !ok {
		return nil, nil
	}
	return append([]uint32(nil), t...), nil
}

func (f *fakeDatapath) DeleteLookupTable(vipID uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.tables, vipID)
	return nil
}

// counters returns, for every id, n*id packets, 100*n*id bytes and id flows
// where n counts the reads so far.
func (f *fakeDatapath) counters(ids []uint32) map[uint32]loader.Counters {
	f.reads++
	out := map[uint32]loader.Counters{}
	for _, id := range ids {
		n := uint64(id) * f.reads
		out[id] = loader.Counters{Packets: n, Bytes: 100 * n, Flows: uint64(id)}
	}
	return out
}

func (f *fakeDatapath) VIPCounters() (map[uint32]loader.Counters, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ids []uint32
	for _, m := range f.vips {
		ids = append(ids, m.ID)
	}
	return f.counters(ids), nil
}

func (f *fakeDatapath) BackendCounters() (map[uint32]loader.Counters, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ids []uint32
	for id := range f.backends {
		ids = append(ids, id)
	}
	return f.counters(ids), nil
}

func (f *fakeDatapath) ActionCounters() ([]loader.ActionCount, error) {
	return []loader.ActionCount{{Ifindex: 1, Action: "tx", Count: 42}, {Ifindex: 1, Action: "pass", Count: 7}}, nil
}

func (f *fakeDatapath) DropCounters() (map[string]uint64, error) {
	return map[string]uint64{"no_backend": 3, "fragment": 0}, nil
}

func (f *fakeDatapath) FlowsByBackend() (map[uint32]int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[uint32]int{}
	for id := range f.backends {
		out[id] = int(id) * 2
	}
	return out, nil
}

func (f *fakeDatapath) ConntrackEntries() (int, error) { return 5, nil }

func (f *fakeDatapath) Status() (loader.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return loader.Status{
		Interfaces: []loader.IfaceStatus{{Name: "lo", Ifindex: 1, Mode: loader.XDPModeGeneric, ProgramID: 17, LinkID: 4}},
		Maps: []loader.MapFill{
			{Name: "vips", Entries: len(f.vips), MaxEntries: f.MaxVIPs()},
			{Name: "backends", Entries: len(f.backends), MaxEntries: f.MaxBackends()},
		},
		PinPath: "/sys/fs/bpf/xdplb",
	}, nil
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
