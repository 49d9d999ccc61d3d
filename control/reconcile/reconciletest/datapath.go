// Package controltest provides an in-memory data plane for tests of the
// control plane and of the programs built on it.
package reconciletest

import (
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/xdplb/xdplb/loader"
)

// Datapath is an in-memory reconcile.Datapath (and daemon.DatapathCloser).
// It holds its maps as Go maps, refuses the writes the real maps would
// refuse or that would let a packet reach a missing backend (a backend or
// VIP without a forwarding mode, a fullnat VIP without a SNAT address or
// another VIP with one), and logs every write in order. Its counters are what the test
// sets, or what a counters function returns at every read. It is safe for
// concurrent use.
type Datapath struct {
	mu                            sync.Mutex
	lookupSize, maxVIPs, maxBacks uint32
	conntrackSize                 uint32

	vips     map[loader.VIPKey]loader.VIPMeta
	backends map[uint32]loader.Backend
	tables   map[uint32][]uint32
	sets     map[uint32][]loader.SchedMember
	open     map[uint32]int64
	writes   []string // "put-backend 3", "put-table 1", "put-vip 1", "del-vip 1", ...
	failPut  error
	// failTables is returned by PutLookupTables when set.
	failTables error

	vipCounters     map[uint32]loader.Counters
	backendCounters map[uint32]loader.Counters
	countersFunc    func(ids []uint32) map[uint32]loader.Counters
	actions         []loader.ActionCount
	txErrors        []loader.TxErrorCount
	drops           map[string]uint64
	vipDrops        map[uint32]map[string]uint64
	flows           map[uint32]loader.FlowCount
	flowCounts      int // FlowCountsByBackend calls: walks of a real connection table
	conns           []loader.Conn
	ifaces          []loader.IfaceStatus
	features        loader.Features
	removed         bool

	nat       loader.NATStats
	natErr    error
	sweeps    int
	events    map[string]uint64
	eventsErr error
}

// NewDatapath returns an empty data plane with these limits: lookup tables
// of lookupSize entries, VIP ids 1..maxVIPs-1 and backend ids
// 1..maxBackends-1. It reports one interface, eth0 (ifindex 2), in native
// mode, until SetInterfaces says otherwise.
func NewDatapath(lookupSize, maxVIPs, maxBackends uint32) *Datapath {
	return &Datapath{
		lookupSize:      lookupSize,
		maxVIPs:         maxVIPs,
		maxBacks:        maxBackends,
		conntrackSize:   loader.DefaultConntrackSize,
		vips:            map[loader.VIPKey]loader.VIPMeta{},
		backends:        map[uint32]loader.Backend{},
		tables:          map[uint32][]uint32{},
		sets:            map[uint32][]loader.SchedMember{},
		open:            map[uint32]int64{},
		vipCounters:     map[uint32]loader.Counters{},
		backendCounters: map[uint32]loader.Counters{},
		drops:           map[string]uint64{},
		vipDrops:        map[uint32]map[string]uint64{},
		flows:           map[uint32]loader.FlowCount{},
		events:          map[string]uint64{},
		ifaces:          []loader.IfaceStatus{{Name: "eth0", Ifindex: 2, Mode: loader.XDPModeNative, ProgramID: 7, LinkID: 8}},
	}
}

func (f *Datapath) record(format string, args ...any) {
	f.writes = append(f.writes, fmt.Sprintf(format, args...))
}

// TakeWrites returns the writes since the last call, oldest first, and
// forgets them: "put-vip N", "del-vip N", "put-backend N", "del-backend N",
// "put-table N" and "del-table N", with N the VIP or backend id.
func (f *Datapath) TakeWrites() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	w := f.writes
	f.writes = nil
	return w
}

// LookupTables returns a copy of every lookup table, by VIP id.
func (f *Datapath) LookupTables() map[uint32][]uint32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[uint32][]uint32, len(f.tables))
	for id, t := range f.tables {
		out[id] = slices.Clone(t)
	}
	return out
}

// SetFailPut makes PutBackend return err; nil makes it work again.
func (f *Datapath) SetFailPut(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failPut = err
}

// SetVIPCounters sets the counters of VIP id.
func (f *Datapath) SetVIPCounters(id uint32, c loader.Counters) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.vipCounters[id] = c
}

// SetBackendCounters sets the counters of backend id.
func (f *Datapath) SetBackendCounters(id uint32, c loader.Counters) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.backendCounters[id] = c
}

// SetCountersFunc makes VIPCounters and BackendCounters return fn(ids) at
// every read, with ids the sorted ids of the VIPs or backends in the maps,
// instead of the counters set. fn runs with the data plane locked, so it
// may keep state without a lock of its own.
func (f *Datapath) SetCountersFunc(fn func(ids []uint32) map[uint32]loader.Counters) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.countersFunc = fn
}

// SetActions sets the XDP verdict counters.
func (f *Datapath) SetActions(a ...loader.ActionCount) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.actions = slices.Clone(a)
}

// SetTxErrors sets what the drivers refused to send (DriverTxErrors); an
// interface not given has no such counter.
func (f *Datapath) SetTxErrors(e ...loader.TxErrorCount) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.txErrors = slices.Clone(e)
}

// SetDrops sets the drop counter of reason.
func (f *Datapath) SetDrops(reason string, n uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.drops[reason] = n
}

// SetVIPDrops sets the drop counter of reason for VIP id.
func (f *Datapath) SetVIPDrops(id uint32, reason string, n uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.vipDrops[id] == nil {
		f.vipDrops[id] = map[string]uint64{}
	}
	f.vipDrops[id][reason] = n
}

// SetFlows sets the established connection-table entries of backend id;
// the sum of every backend's is ConntrackEntries.
func (f *Datapath) SetFlows(id uint32, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.flows[id]
	c.Established = n
	f.flows[id] = c
}

// SetHalfOpen sets the half-open connection-table entries of backend id.
func (f *Datapath) SetHalfOpen(id uint32, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.flows[id]
	c.HalfOpen = n
	f.flows[id] = c
}

// SetConns sets the connection-table entries Conns walks, in this order.
func (f *Datapath) SetConns(c ...loader.Conn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.conns = slices.Clone(c)
}

// SetFeatures sets the kernel features Status reports.
func (f *Datapath) SetFeatures(feat loader.Features) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.features = feat
}

// SetInterfaces sets the interfaces Status reports.
func (f *Datapath) SetInterfaces(ifaces ...loader.IfaceStatus) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ifaces = slices.Clone(ifaces)
}

// SetNATStats sets what NATStats and ExpireNAT return; a non-nil err makes
// both fail with it, as a data plane without NAT does.
func (f *Datapath) SetNATStats(st loader.NATStats, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nat, f.natErr = st, err
}

// Sweeps counts the ExpireNAT calls.
func (f *Datapath) Sweeps() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sweeps
}

// SetEvent sets the event counter of name.
func (f *Datapath) SetEvent(name string, n uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events[name] = n
}

// SetEventsErr makes EventCounters fail with err; nil makes it work again.
func (f *Datapath) SetEventsErr(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.eventsErr = err
}

func (f *Datapath) LookupTableSize() uint32 { return f.lookupSize }
func (f *Datapath) MaxVIPs() uint32         { return f.maxVIPs }
func (f *Datapath) MaxBackends() uint32     { return f.maxBacks }

// ConntrackSize is loader.DefaultConntrackSize unless SetConntrackSize
// said otherwise.
func (f *Datapath) ConntrackSize() uint32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.conntrackSize
}

// SetConntrackSize sets what ConntrackSize returns.
func (f *Datapath) SetConntrackSize(n uint32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.conntrackSize = n
}

func (f *Datapath) VIPs() (map[loader.VIPKey]loader.VIPMeta, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.vips), nil
}

func (f *Datapath) PutVIP(k loader.VIPKey, m loader.VIPMeta) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if m.ID == 0 || m.ID >= f.maxVIPs {
		return fmt.Errorf("vip id %d out of range", m.ID)
	}
	if err := checkMode(m.Mode); err != nil {
		return fmt.Errorf("vip %d: %w", m.ID, err)
	}
	if m.SNATAddr.IsValid() != (m.Mode == loader.ModeFullNAT) {
		return fmt.Errorf("vip %d: snat address %q on a vip of mode %d: full nat, and only it, needs one", m.ID, m.SNATAddr, m.Mode)
	}
	if m.SNATAddr.IsValid() && m.SNATAddr.Unmap().Is4() != k.Addr.Unmap().Is4() {
		return fmt.Errorf("vip %d: snat address %s of another family", m.ID, m.SNATAddr)
	}
	f.vips[k] = m
	f.record("put-vip %d", m.ID)
	return nil
}

func (f *Datapath) DeleteVIP(k loader.VIPKey) error {
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

func (f *Datapath) Backends() (map[uint32]loader.Backend, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[uint32]loader.Backend, len(f.backends))
	for id, b := range f.backends {
		b.MAC, b.SrcMAC = slices.Clone(b.MAC), slices.Clone(b.SrcMAC)
		out[id] = b
	}
	return out, nil
}

func (f *Datapath) PutBackend(b loader.Backend) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failPut != nil {
		return f.failPut
	}
	if b.ID == 0 || b.ID >= f.maxBacks {
		return fmt.Errorf("backend id %d out of range", b.ID)
	}
	if err := checkMode(b.Mode); err != nil {
		return fmt.Errorf("backend %d: %w", b.ID, err)
	}
	b.MAC, b.SrcMAC = slices.Clone(b.MAC), slices.Clone(b.SrcMAC)
	f.backends[b.ID] = b
	f.record("put-backend %d", b.ID)
	return nil
}

func (f *Datapath) DeleteBackend(id uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.backends, id)
	f.record("del-backend %d", id)
	return nil
}

func (f *Datapath) PutLookupTable(vipID uint32, t []uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.putTable(vipID, t)
}

// PutLookupTables checks every table first and writes all or none, as the
// loader's single batched map update does; a failure set with
// SetFailTables is returned before anything is written.
func (f *Datapath) PutLookupTables(tables map[uint32][]uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failTables != nil {
		return f.failTables
	}
	ids := slices.Sorted(maps.Keys(tables))
	saved := maps.Clone(f.tables)
	for _, id := range ids {
		if err := f.putTable(id, tables[id]); err != nil {
			f.tables = saved
			return err
		}
	}
	return nil
}

// SetFailTables makes PutLookupTables return err; nil makes it work again.
func (f *Datapath) SetFailTables(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failTables = err
}

func (f *Datapath) putTable(vipID uint32, t []uint32) error {
	if uint32(len(t)) != f.lookupSize {
		return fmt.Errorf("table of %d entries, want %d", len(t), f.lookupSize)
	}
	// The data plane must never point at a backend that is not there.
	// Each id once: a table has many more slots than backends.
	seen := make([]bool, f.maxBacks)
	for _, b := range t {
		if b == 0 || b < f.maxBacks && seen[b] {
			continue
		}
		if _, ok := f.backends[b]; !ok {
			return fmt.Errorf("table points at missing backend %d", b)
		}
		if b < f.maxBacks {
			seen[b] = true
		}
	}
	f.tables[vipID] = slices.Clone(t)
	f.record("put-table %d", vipID)
	return nil
}

func (f *Datapath) LookupTable(vipID uint32) ([]uint32, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.tables[vipID]), nil
}

func (f *Datapath) DeleteLookupTable(vipID uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.tables, vipID)
	f.record("del-table %d", vipID)
	return nil
}

func (f *Datapath) VIPCounters() (map[uint32]loader.Counters, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.countersFunc != nil {
		ids := make([]uint32, 0, len(f.vips))
		for _, m := range f.vips {
			ids = append(ids, m.ID)
		}
		slices.Sort(ids)
		return f.countersFunc(ids), nil
	}
	return maps.Clone(f.vipCounters), nil
}

func (f *Datapath) BackendCounters() (map[uint32]loader.Counters, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.countersFunc != nil {
		return f.countersFunc(slices.Sorted(maps.Keys(f.backends))), nil
	}
	return maps.Clone(f.backendCounters), nil
}

func (f *Datapath) BackendCountsByID() ([]loader.BackendCount, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ids := slices.Sorted(maps.Keys(f.backends))
	counters := f.backendCounters
	if f.countersFunc != nil {
		counters = f.countersFunc(ids)
	}
	out := make([]loader.BackendCount, 0, len(ids))
	for _, id := range ids {
		b := f.backends[id]
		out = append(out, loader.BackendCount{ID: id, VIPID: b.VIPID, Addr: b.Addr, Port: b.Port, Counters: counters[id]})
	}
	return out, nil
}

func (f *Datapath) ActionCounters() ([]loader.ActionCount, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.actions), nil
}

func (f *Datapath) DriverTxErrors() ([]loader.TxErrorCount, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.txErrors), nil
}

func (f *Datapath) DropCounters() (map[string]uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.drops), nil
}

func (f *Datapath) VIPDropCounters() (map[uint32]map[string]uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[uint32]map[string]uint64, len(f.vipDrops))
	for id, m := range f.vipDrops {
		out[id] = maps.Clone(m)
	}
	return out, nil
}

func (f *Datapath) FlowCountsByBackend() (map[uint32]loader.FlowCount, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.flowCounts++
	return maps.Clone(f.flows), nil
}

// FlowCountCalls counts the FlowCountsByBackend calls, each a walk of the
// whole connection table in the real data plane.
func (f *Datapath) FlowCountCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.flowCounts
}

func (f *Datapath) ConntrackEntries() (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.flows {
		n += c.Open()
	}
	return n, nil
}

// Conns walks the entries set with SetConns, unlocked, so fn may call
// the data plane.
func (f *Datapath) Conns(fn func(loader.Conn) bool) error {
	f.mu.Lock()
	conns := slices.Clone(f.conns)
	f.mu.Unlock()
	for _, c := range conns {
		if !fn(c) {
			break
		}
	}
	return nil
}

// checkMode refuses a forwarding mode the program does not know: the
// reconciler must give every entry its VIP's mode.
func checkMode(m loader.ForwardMode) error {
	switch m {
	case loader.ModeDR, loader.ModeNAT, loader.ModeFullNAT:
		return nil
	}
	return fmt.Errorf("forwarding mode %d", m)
}

func (f *Datapath) NATStats() (loader.NATStats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.natErr != nil {
		return loader.NATStats{}, f.natErr
	}
	return f.nat, nil
}

// ExpireNAT counts a sweep and returns what NATStats does.
func (f *Datapath) ExpireNAT() (loader.NATStats, error) {
	f.mu.Lock()
	f.sweeps++
	f.mu.Unlock()
	return f.NATStats()
}

func (f *Datapath) EventCounters() (map[string]uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.eventsErr != nil {
		return nil, f.eventsErr
	}
	return maps.Clone(f.events), nil
}

func (f *Datapath) Status() (loader.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return loader.Status{
		PinPath:    "/sys/fs/bpf/xdplb",
		Interfaces: slices.Clone(f.ifaces),
		Features:   f.features,
		Maps: []loader.MapFill{
			{Name: "vips", Entries: len(f.vips), MaxEntries: f.maxVIPs},
			{Name: "backends", Entries: len(f.backends), MaxEntries: f.maxBacks},
		},
	}, nil
}

// Close does nothing: there is nothing to release.
func (f *Datapath) Close() error { return nil }

// Remove empties the data plane, as unpinning every map does.
func (f *Datapath) Remove() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.vips = map[loader.VIPKey]loader.VIPMeta{}
	f.backends = map[uint32]loader.Backend{}
	f.tables = map[uint32][]uint32{}
	f.writes = append(f.writes, "remove")
	f.removed = true
	return nil
}

// Removed reports whether Remove was called.
func (f *Datapath) Removed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.removed
}

// PutSchedSet refuses a set that names a backend without an entry, as the
// table writes do.
func (f *Datapath) PutSchedSet(vipID uint32, members []loader.SchedMember) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(members) == 0 || len(members) > loader.MaxSchedMembers {
		return fmt.Errorf("scheduler set of %d members", len(members))
	}
	for _, m := range members {
		if _, ok := f.backends[m.ID]; !ok {
			return fmt.Errorf("scheduler set names missing backend %d", m.ID)
		}
	}
	f.sets[vipID] = slices.Clone(members)
	f.record("put-set %d", vipID)
	return nil
}

func (f *Datapath) DeleteSchedSet(vipID uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.sets, vipID)
	f.record("del-set %d", vipID)
	return nil
}

// SchedSets returns a copy of every scheduler set, by VIP id.
func (f *Datapath) SchedSets() map[uint32][]loader.SchedMember {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[uint32][]loader.SchedMember, len(f.sets))
	for id, s := range f.sets {
		out[id] = slices.Clone(s)
	}
	return out
}

func (f *Datapath) SetOpenFlows(counts map[uint32]int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	maps.Copy(f.open, counts)
	return nil
}

// OpenFlows is what SetOpenFlows last wrote, by backend id.
func (f *Datapath) OpenFlows() map[uint32]int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.open)
}
