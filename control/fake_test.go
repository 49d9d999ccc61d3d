package control

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"

	"github.com/xdplb/xdplb/loader"
)

// fakeDatapath is an in-memory Datapath that records every write in order.
type fakeDatapath struct {
	mu       sync.Mutex
	size     uint32
	vips     map[loader.VIPKey]loader.VIPMeta
	backends map[uint32]loader.Backend
	tables   map[uint32][]uint32
	writes   []string // "put-backend 3", "put-table 1", "put-vip 1", "del-vip 1", ...

	vipCounters     map[uint32]loader.Counters
	backendCounters map[uint32]loader.Counters
	actions         []loader.ActionCount
	drops           map[string]uint64
	flows           map[uint32]int
	failPut         error // returned by PutBackend when set
}

func newFakeDatapath(size uint32) *fakeDatapath {
	return &fakeDatapath{
		size:            size,
		vips:            map[loader.VIPKey]loader.VIPMeta{},
		backends:        map[uint32]loader.Backend{},
		tables:          map[uint32][]uint32{},
		vipCounters:     map[uint32]loader.Counters{},
		backendCounters: map[uint32]loader.Counters{},
		drops:           map[string]uint64{},
		flows:           map[uint32]int{},
	}
}

func (f *fakeDatapath) record(format string, args ...any) {
	f.writes = append(f.writes, fmt.Sprintf(format, args...))
}

// takeWrites returns and clears the recorded writes.
func (f *fakeDatapath) takeWrites() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	w := f.writes
	f.writes = nil
	return w
}

func (f *fakeDatapath) LookupTableSize() uint32 { return f.size }
func (f *fakeDatapath) MaxVIPs() uint32         { return 16 }
func (f *fakeDatapath) MaxBackends() uint32     { return 64 }

func (f *fakeDatapath) VIPs() (map[loader.VIPKey]loader.VIPMeta, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[loader.VIPKey]loader.VIPMeta{}
	for k, v := range f.vips {
		out[k] = v
	}
	return out, nil
}

func (f *fakeDatapath) PutVIP(k loader.VIPKey, m loader.VIPMeta) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.vips[k] = m
	f.record("put-vip %d", m.ID)
	return nil
}

func (f *fakeDatapath) DeleteVIP(k loader.VIPKey) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.vips[k]
	if !ok {
		return fmt.Errorf("vip %v: not found", k)
	}
	delete(f.vips, k)
	f.record("del-vip %d", m.ID)
	return nil
}

func (f *fakeDatapath) Backends() (map[uint32]loader.Backend, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[uint32]loader.Backend{}
	for k, b := range f.backends {
		b.MAC, b.SrcMAC = slices.Clone(b.MAC), slices.Clone(b.SrcMAC)
		out[k] = b
	}
	return out, nil
}

func (f *fakeDatapath) PutBackend(b loader.Backend) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failPut != nil {
		return f.failPut
	}
	if b.ID == 0 || b.ID >= 64 {
		return fmt.Errorf("backend id %d out of range", b.ID)
	}
	f.backends[b.ID] = b
	f.record("put-backend %d", b.ID)
	return nil
}

func (f *fakeDatapath) DeleteBackend(id uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.backends, id)
	f.record("del-backend %d", id)
	return nil
}

func (f *fakeDatapath) PutLookupTable(id uint32, t []uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if uint32(len(t)) != f.size {
		return fmt.Errorf("table of %d entries, want %d", len(t), f.size)
	}
	// The data plane must never point at a backend that is not there.
	for _, b := range t {
		if _, ok := f.backends[b]; b != 0 && !ok {
			return fmt.Errorf("table points at missing backend %d", b)
		}
	}
	f.tables[id] = slices.Clone(t)
	f.record("put-table %d", id)
	return nil
}

func (f *fakeDatapath) LookupTable(id uint32) ([]uint32, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.tables[id]), nil
}

func (f *fakeDatapath) DeleteLookupTable(id uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.tables, id)
	f.record("del-table %d", id)
	return nil
}

func (f *fakeDatapath) VIPCounters() (map[uint32]loader.Counters, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return clonedMap(f.vipCounters), nil
}

func (f *fakeDatapath) BackendCounters() (map[uint32]loader.Counters, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return clonedMap(f.backendCounters), nil
}

func (f *fakeDatapath) ActionCounters() ([]loader.ActionCount, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.actions), nil
}

func (f *fakeDatapath) DropCounters() (map[string]uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return clonedMap(f.drops), nil
}

func (f *fakeDatapath) FlowsByBackend() (map[uint32]int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return clonedMap(f.flows), nil
}

func (f *fakeDatapath) ConntrackEntries() (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.flows {
		n += c
	}
	return n, nil
}

func (f *fakeDatapath) Status() (loader.Status, error) {
	return loader.Status{
		PinPath:    "/sys/fs/bpf/xdplb",
		Interfaces: []loader.IfaceStatus{{Name: "eth0", Ifindex: 2, Mode: loader.XDPModeNative, ProgramID: 7, LinkID: 8}},
		Maps:       []loader.MapFill{{Name: "vips", Entries: len(f.vips), MaxEntries: 16}},
	}, nil
}

func (f *fakeDatapath) Close() error { return nil }

func clonedMap[K comparable, V any](m map[K]V) map[K]V {
	out := make(map[K]V, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// fakeNetwork resolves backends from a table the test controls.
type fakeNetwork struct {
	mu        sync.Mutex
	macs      map[netip.Addr]net.HardwareAddr // missing: unresolved
	offLink   map[netip.Addr]bool
	resolves  int
	announced map[netip.Addr]bool
	changes   chan struct{}
}

func newFakeNetwork() *fakeNetwork {
	return &fakeNetwork{macs: map[netip.Addr]net.HardwareAddr{}, offLink: map[netip.Addr]bool{}, changes: make(chan struct{}, 1)}
}

var fakeSrcMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0xfe}

func (n *fakeNetwork) setMAC(a string, mac net.HardwareAddr) {
	n.mu.Lock()
	if mac == nil {
		delete(n.macs, netip.MustParseAddr(a))
	} else {
		n.macs[netip.MustParseAddr(a)] = mac
	}
	n.mu.Unlock()
	select {
	case n.changes <- struct{}{}:
	default:
	}
}

func (n *fakeNetwork) Resolve(_ context.Context, a netip.Addr) (Neighbour, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.resolves++
	if n.offLink[a] {
		return Neighbour{}, fmt.Errorf("%w: backend %s is not on a directly connected subnet of eth0", ErrInvalid, a)
	}
	return Neighbour{Ifindex: 2, Iface: "eth0", SrcMAC: fakeSrcMAC, MAC: slices.Clone(n.macs[a])}, nil
}

func (n *fakeNetwork) Announce(_ context.Context, want map[netip.Addr]bool) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.announced = clonedMap(want)
	return nil
}

func (n *fakeNetwork) Changes() <-chan struct{} { return n.changes }

func mac(last byte) net.HardwareAddr { return net.HardwareAddr{0x02, 0, 0, 0, 0, last} }
