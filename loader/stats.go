package loader

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// actionNames are the XDP verdicts in kernel order (XDP_ABORTED = 0 ...),
// which is also their order inside a slot of xdp_actions.
var actionNames = [...]string{"aborted", "drop", "pass", "tx", "redirect"}

// dropReasonNames reads the drop reasons from the program's own BTF, so a
// reason added in C gets a name here without a hand-kept table:
// DROP_IPV6_EXT becomes "ipv6_ext".
func dropReasonNames(spec *ebpf.CollectionSpec) (map[uint32]string, error) {
	var enum *btf.Enum
	if err := spec.Types.TypeByName("drop_reason", &enum); err != nil {
		return nil, fmt.Errorf("find enum drop_reason: %w", err)
	}
	out := make(map[uint32]string)
	for _, v := range enum.Values {
		if v.Value == uint64(xdplbDropReasonDROP_NONE) || v.Value >= uint64(xdplbDropReasonDROP_REASON_MAX) {
			continue
		}
		out[uint32(v.Value)] = strings.ToLower(strings.TrimPrefix(v.Name, "DROP_"))
	}
	return out, nil
}

func sumCounters(per []xdplbLbCounters) Counters {
	var c Counters
	for _, p := range per {
		c.Packets += p.Packets
		c.Bytes += p.Bytes
		c.Flows += p.Flows
	}
	return c
}

// lbCounters reads a per-CPU lb_counters map: ids with traffic, plus the
// ids in keep so a configured but idle VIP or backend reads as zero.
func lbCounters(m *ebpf.Map, keep func(uint32) bool) (map[uint32]Counters, error) {
	out := make(map[uint32]Counters)
	err := readPerCPU(m, func(id uint32, per []xdplbLbCounters) {
		c := sumCounters(per)
		if c != (Counters{}) || keep(id) {
			out[id] = c
		}
	})
	return out, err
}

// VIPCounters are summed over CPUs, by VIP id.
func (d *Datapath) VIPCounters() (map[uint32]Counters, error) {
	vips, err := d.VIPs()
	if err != nil {
		return nil, err
	}
	ids := make(map[uint32]bool, len(vips))
	for _, m := range vips {
		ids[m.ID] = true
	}
	out, err := lbCounters(d.objs.VipStats, func(id uint32) bool { return ids[id] })
	if err != nil {
		return nil, fmt.Errorf("read vip counters: %w", err)
	}
	err = readPerCPU(d.objs.VipIcmp, func(id uint32, per []uint64) {
		if c, ok := out[id]; ok {
			c.ICMPErrors = sum64(per)
			out[id] = c
		}
	})
	if err != nil {
		return nil, fmt.Errorf("read vip icmp counters: %w", err)
	}
	return out, nil
}

// BackendCounters are summed over CPUs, by backend id.
func (d *Datapath) BackendCounters() (map[uint32]Counters, error) {
	// Which ids hold a backend, from the raw entries: converting them
	// (Backends) took longer than reading the counters (a scrape reads
	// both at 32,000 backends).
	valid := make(map[uint32]bool)
	err := readArray(d.objs.Backends, func(id uint32, b xdplbBackend) {
		if b.valid() {
			valid[id] = true
		}
	})
	if err != nil {
		return nil, fmt.Errorf("read backends: %w", err)
	}
	out, err := lbCounters(d.objs.BackendStats, func(id uint32) bool { return valid[id] })
	if err != nil {
		return nil, fmt.Errorf("read backend counters: %w", err)
	}
	return out, nil
}

func sum64(per []uint64) uint64 {
	var n uint64
	for _, v := range per {
		n += v
	}
	return n
}

// ActionCounters lists every (interface, action) that was counted, and
// all five actions of the attached interfaces even when zero.
func (d *Datapath) ActionCounters() ([]ActionCount, error) {
	attached := make(map[uint32]bool)
	d.mu.Lock()
	for _, a := range d.links {
		attached[uint32(a.ifindex)] = true
	}
	d.mu.Unlock()

	var out []ActionCount
	err := readPerCPU(d.objs.XdpActions, func(idx uint32, per []uint64) {
		slot, action := idx/uint32(len(actionNames)), idx%uint32(len(actionNames))
		n := sum64(per)
		if n != 0 || attached[slot] {
			out = append(out, ActionCount{Ifindex: slot, Action: actionNames[action], Count: n})
		}
	})
	if err != nil {
		return nil, fmt.Errorf("read action counters: %w", err)
	}
	return out, nil
}

// DropCounters are by reason name, every reason present (zero included).
func (d *Datapath) DropCounters() (map[string]uint64, error) {
	out := make(map[string]uint64, len(d.dropNames))
	for _, name := range d.dropNames {
		out[name] = 0
	}
	err := readPerCPU(d.objs.Drops, func(r uint32, per []uint64) {
		if name, ok := d.dropNames[r]; ok {
			out[name] = sum64(per)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("read drop counters: %w", err)
	}
	return out, nil
}

// VIPDropCounters are the drops of packets to a VIP (a new flow refused:
// no backend, rate limited, the NAT table full, ...), by VIP id and
// reason name, summed over CPUs; only the reasons that counted. Drops
// that name no VIP (fragments, malformed headers, a failed redirect) are
// in DropCounters alone.
func (d *Datapath) VIPDropCounters() (map[uint32]map[string]uint64, error) {
	out := make(map[uint32]map[string]uint64)
	n := uint32(xdplbDropReasonDROP_REASON_MAX)
	err := readPerCPU(d.objs.VipDrops, func(key uint32, per []uint64) {
		c := sum64(per)
		name, ok := d.dropNames[key%n]
		if c == 0 || !ok {
			return
		}
		id := key / n
		if out[id] == nil {
			out[id] = make(map[string]uint64)
		}
		out[id][name] = c
	})
	if err != nil {
		return nil, fmt.Errorf("read vip drop counters: %w", err)
	}
	return out, nil
}

// walkConntrackAt calls fn for every flow of the connection table, until
// fn returns false, through its mapping (no syscall, about a millisecond
// per 100,000 slots), with stamps made full tick counts at now. The table
// changes under the walk, which is fine for statistics: a flow inserted
// meanwhile may be missed.
func (d *Datapath) walkConntrackAt(now uint64, fn func(xdplbFlowKey, flowVal) bool) {
	d.ct.walk(now, fn)
}

// How long an established flow without packets still counts as open
// (FlowCountsByBackend). Entries themselves stay until the LRU evicts them;
// these only decide whether an idle one is still a connection an operator
// must wait for. A half-open flow (only its opening seen: TCP SYNs, or one
// UDP datagram) counts for Options.HalfOpenTimeout: a DR LB never sees the
// backend's answer, so a SYN refused with an RST looks like this, and it
// must not hold a drain or `backend del` for an established flow's 15
// minutes. So does any flow of the half-open table (ct_half), which the
// program gives to a new flow once idle that long.
const (
	OpenFlowIdleTCP = 15 * time.Minute
	OpenFlowIdleUDP = 2 * time.Minute
)

// FlowCount is a backend's open flows, by phase.
type FlowCount struct {
	Established int // saw more than their opening, within OpenFlowIdleTCP/UDP
	HalfOpen    int // saw only their opening, within Options.HalfOpenTimeout
}

// Open is every flow that still counts as open.
func (c FlowCount) Open() int { return c.Established + c.HalfOpen }

// FlowPhase is what a connection-table entry is, at a given time.
type FlowPhase uint8

const (
	FlowEnded       FlowPhase = iota // closed by a FIN or RST, or idle past its limit
	FlowHalfOpen                     // only its opening seen, within Options.HalfOpenTimeout
	FlowEstablished                  // more than its opening, within OpenFlowIdleTCP/UDP
)

func (p FlowPhase) String() string {
	switch p {
	case FlowHalfOpen:
		return "half-open"
	case FlowEstablished:
		return "established"
	default:
		return "ended"
	}
}

// FlowCountsByBackend counts the open flows per backend id, established
// apart from half-open (flowPhase), over both tables.
func (d *Datapath) FlowCountsByBackend() (map[uint32]FlowCount, error) {
	d.mu.Lock()
	hz, err := d.ticks.rate()
	var now uint64
	if err == nil {
		now, err = d.ticks.now()
	}
	d.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return d.flowCountsByBackend(now, hz)
}

// flowCountsByBackend is FlowCountsByBackend at a given time in kernel
// ticks (the clock of flow_val.last_seen) at hz ticks a second.
func (d *Datapath) flowCountsByBackend(now, hz uint64) (map[uint32]FlowCount, error) {
	out := make(map[uint32]FlowCount)
	count := func(half bool) func(xdplbFlowKey, flowVal) bool {
		return func(k xdplbFlowKey, v flowVal) bool {
			switch flowPhase(k, v, now, hz, d.opts.HalfOpenTimeout, half) {
			case FlowEstablished:
				c := out[v.BackendId]
				c.Established++
				out[v.BackendId] = c
			case FlowHalfOpen:
				c := out[v.BackendId]
				c.HalfOpen++
				out[v.BackendId] = c
			}
			return true
		}
	}
	d.walkConntrackAt(now, count(false))
	if err := d.walkHalf(now, count(true)); err != nil {
		return nil, err
	}
	return out, nil
}

// flowPhase decides what an entry is at now: closing (FLOW_F_CLOSING) is
// ended at once; otherwise its idle limit is its phase's, halfOpen for a
// flow that saw only its opening. Every flow of the half-open table (half)
// is half-open, a flow picked up mid-stream too (FLOW_F_ESTABLISHED): it
// has sent one packet, and moves to the connection table with its next, so
// what stays there is as unconfirmed as a SYN (a spoofed ACK), and must
// count neither toward a backend's --max-conns nor beyond halfOpen.
func flowPhase(k xdplbFlowKey, v flowVal, now, hz uint64, halfOpen time.Duration, half bool) FlowPhase {
	if v.Flags&uint32(xdplbFlowFlagsFLOW_F_CLOSING) != 0 {
		return FlowEnded
	}
	phase, idle := FlowHalfOpen, halfOpen
	if v.Flags&uint32(xdplbFlowFlagsFLOW_F_ESTABLISHED) != 0 && !half {
		phase, idle = FlowEstablished, OpenFlowIdleTCP
		if Protocol(k.Proto) == ProtoUDP {
			idle = OpenFlowIdleUDP
		}
	}
	// An entry refreshed during the walk is stamped after now: fresh.
	if v.LastSeen >= now || now-v.LastSeen < uint64(idle.Seconds()*float64(hz)) {
		return phase
	}
	return FlowEnded
}

// ConntrackEntries is the number of flows the data plane tracks: the
// connection table's slots in use, finished flows included until their
// slot is taken again, and the half-open
// table's ways in use (halfCount).
func (d *Datapath) ConntrackEntries() (int, error) {
	half, err := d.halfCount()
	if err != nil {
		return 0, err
	}
	n, err := d.conntrackEntries()
	return n + half, err
}

// conntrackEntries is the connection table's slots in use, counted
// through its mapping (a few ms for a million slots, whatever the kernel).
func (d *Datapath) conntrackEntries() (int, error) {
	return d.ct.count(), nil
}

// Status reports attachments and map fill.
func (d *Datapath) Status() (Status, error) {
	st := Status{PinPath: d.pinDir, Features: d.features}
	d.mu.Lock()
	links := slices.Clone(d.links)
	d.mu.Unlock()
	for _, a := range links {
		is := IfaceStatus{Name: a.name, Ifindex: a.ifindex, Mode: modeInUse(a.ifindex, a.mode)}
		info, err := a.link.Info()
		if err != nil {
			return Status{}, fmt.Errorf("link info of %s: %w", a.name, err)
		}
		is.LinkID, is.ProgramID = uint32(info.ID), uint32(info.Program)
		st.Interfaces = append(st.Interfaces, is)
	}

	vips, err := d.VIPs()
	if err != nil {
		return Status{}, err
	}
	bes, err := d.Backends()
	if err != nil {
		return Status{}, err
	}
	half, err := d.halfCount()
	if err != nil {
		return Status{}, err
	}
	ct, err := d.conntrackEntries()
	if err != nil {
		return Status{}, err
	}
	addrs := 0
	if err := iterate(d.objs.VipAddrs, func([16]byte, uint32) { addrs++ }); err != nil {
		return Status{}, fmt.Errorf("read vip addresses: %w", err)
	}
	tables := 0
	for _, m := range vips {
		var id uint32
		err := d.objs.Lookup.Lookup(m.ID, &id)
		if err == nil {
			tables++
		} else if !errors.Is(err, ebpf.ErrKeyNotExist) {
			return Status{}, fmt.Errorf("read lookup %d: %w", m.ID, err)
		}
	}
	fill := func(name string, m *ebpf.Map, n int) {
		st.Maps = append(st.Maps, MapFill{Name: name, Entries: n, MaxEntries: m.MaxEntries()})
	}
	fill(xdplbMapVips, d.objs.Vips, len(vips))
	fill(xdplbMapVipAddrs, d.objs.VipAddrs, addrs)
	fill(xdplbMapBackends, d.objs.Backends, len(bes))
	fill(xdplbMapLookup, d.objs.Lookup, tables)
	st.Maps = append(st.Maps, MapFill{Name: xdplbMapConntrack, Entries: ct, MaxEntries: d.ConntrackSlots(), Bytes: d.ConntrackBytes()})
	st.Maps = append(st.Maps, MapFill{Name: xdplbMapCtHalf, Entries: half, MaxEntries: d.HalfOpenSize()})
	// The kernel's count, live; the last sweep's (which leaves out the
	// expired entries it deletes) where the kernel keeps none.
	natEntries, err := 0, errNoCount
	if d.features.ElemCount {
		natEntries, err = d.natCount()
	}
	if errors.Is(err, errNoCount) {
		var st NATStats
		st, err = d.NATStats()
		natEntries = st.Entries
	}
	if err != nil {
		return Status{}, fmt.Errorf("count nat flows: %w", err)
	}
	fill(xdplbMapNatFlows, d.objs.NatFlows, natEntries)
	return st, nil
}

// BackendCount is a backend's identity, as a scrape matches it with the
// configuration, and its counters summed over CPUs.
type BackendCount struct {
	ID    uint32
	VIPID uint32
	Addr  netip.Addr
	Port  uint16 // 0: the VIP's port
	Counters
}

// BackendCountsByID are the backends in the maps with their counters, by
// ascending id: what a scrape reads of 32,000 backends, with one read of
// the backends array and one of their per-CPU counters. Backends and
// BackendCounters read that array twice and convert every backend whole
// (its MACs allocated), which took a third of a scrape's map reads.
func (d *Datapath) BackendCountsByID() ([]BackendCount, error) {
	var out []BackendCount
	err := readArray(d.objs.Backends, func(id uint32, b xdplbBackend) {
		if b.valid() {
			out = append(out, BackendCount{ID: id, VIPID: b.VipId, Addr: addrFrom16(b.Addr), Port: fromNetPort(b.Port)})
		}
	})
	if err != nil {
		return nil, fmt.Errorf("read backends: %w", err)
	}
	// Both arrays are read in id order: merge.
	i := 0
	err = readPerCPU(d.objs.BackendStats, func(id uint32, per []xdplbLbCounters) {
		for i < len(out) && out[i].ID < id {
			i++
		}
		if i < len(out) && out[i].ID == id {
			out[i].Counters = sumCounters(per)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("read backend counters: %w", err)
	}
	return out, nil
}
