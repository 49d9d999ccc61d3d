package loader

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// How long a NAT translation outlives its flow's last packet before its
// entry (and for full NAT its SNAT port) may be reclaimed: an idle
// established flow's as long as the connection table counts it open
// (OpenFlowIdle*), a half-open one's after Options.HalfOpenTimeout, a
// closed one's after NATClosingTimeout (or the half-open timeout if
// shorter), as IPVS's and Cilium's close timeouts.
const NATClosingTimeout = 10 * time.Second

// NextHopReuse is how long the program reuses a next hop the FIB gave for
// a NAT backend or a NAT flow's client before it asks again: a route or
// neighbour change reaches NAT traffic within it. The FIB lookup is most
// of a NAT packet's cost (about 70 ns for IPv4, 190 ns for IPv6 here).
const NextHopReuse = 250 * time.Millisecond

// writeNATParams gives the program its SNAT port range and the NAT
// timeouts in kernel ticks (map nat_params).
func (d *Datapath) writeNATParams() error {
	hz, err := d.ticks.rate()
	if err != nil {
		return fmt.Errorf("nat timeouts: %w", err)
	}
	ticks := func(t time.Duration) uint64 { return uint64(t.Seconds() * float64(hz)) }
	p := xdplbNatConfig{
		SnatPortLo:    d.opts.SNATPorts.Lo,
		SnatPortCount: uint32(d.opts.SNATPorts.Size()),
		TcpIdleTicks:  ticks(OpenFlowIdleTCP),
		UdpIdleTicks:  ticks(OpenFlowIdleUDP),
		ClosingTicks:  ticks(NATClosingTimeout),
		FibCacheTicks: max(ticks(NextHopReuse), 1),
	}
	if err := d.objs.NatParams.Put(uint32(0), p); err != nil {
		return fmt.Errorf("write nat params: %w", err)
	}
	d.natParams = p
	return nil
}

// SNATPorts is the full-NAT source port range the program was loaded with.
func (d *Datapath) SNATPorts() PortRange { return d.opts.SNATPorts }

// natExpired is nat_expired of bpf/nat.h; halfTicks is cfg_half_ticks.
func natExpired(k xdplbFlowKey, v xdplbNatState, now uint64, p xdplbNatConfig, halfTicks uint64) bool {
	idle := halfTicks
	if v.Flags&uint32(xdplbNatFlagsNAT_F_ESTABLISHED) != 0 {
		idle = p.TcpIdleTicks
		if Protocol(k.Proto) == ProtoUDP {
			idle = p.UdpIdleTicks
		}
	}
	if v.Flags&uint32(xdplbNatFlagsNAT_F_CLOSING) != 0 {
		idle = min(idle, p.ClosingTicks)
	}
	return now > v.LastSeen && now-v.LastSeen > idle
}

// NATStats reports the NAT table as of the last ExpireNAT sweep (a sweep
// now if there was none): a scrape must not walk the table.
func (d *Datapath) NATStats() (NATStats, error) {
	d.natMu.Lock()
	st, ok := d.natStats, d.natSwept
	d.natMu.Unlock()
	if ok {
		return st, nil
	}
	return d.ExpireNAT()
}

// ExpireNAT walks the NAT table, deletes the translations whose flow is
// closed or idle beyond its timeout, and returns what remains. The daemon
// runs it every few seconds; the program reclaims an expired full-NAT
// port itself when it wants it, so this only keeps the table from filling.
// A translation refreshed between the walk and its delete is lost with its
// flow's next reply, which then goes to the kernel: the window is one
// syscall for a flow idle for its whole timeout.
func (d *Datapath) ExpireNAT() (NATStats, error) {
	d.mu.Lock()
	now, err := d.ticks.now()
	d.mu.Unlock()
	if err != nil {
		return NATStats{}, err
	}
	var st NATStats
	var stale []xdplbFlowKey
	err = iterate(d.objs.NatFlows, func(k xdplbFlowKey, v xdplbNatState) {
		if natExpired(k, v, now, d.natParams, d.halfTicks) {
			stale = append(stale, k)
			return
		}
		st.Entries++
		if v.Flags&uint32(xdplbNatFlagsNAT_F_FULL) != 0 && v.Flags&uint32(xdplbNatFlagsNAT_F_CLOSING) == 0 {
			st.SNATPortsInUse++
		}
	})
	if err != nil {
		return NATStats{}, fmt.Errorf("read nat flows: %w", err)
	}
	for _, k := range stale {
		if err := d.objs.NatFlows.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return NATStats{}, fmt.Errorf("expire nat flow: %w", err)
		}
	}
	d.natMu.Lock()
	d.natStats, d.natSwept = st, true
	d.natMu.Unlock()
	return st, nil
}

// eventNames reads the event names from the program's BTF, as
// dropReasonNames does: EV_FIB_NO_NEIGH becomes "fib_no_neigh".
func eventNames(spec *ebpf.CollectionSpec) (map[uint32]string, error) {
	var enum *btf.Enum
	if err := spec.Types.TypeByName("event", &enum); err != nil {
		return nil, fmt.Errorf("find enum event: %w", err)
	}
	out := make(map[uint32]string)
	for _, v := range enum.Values {
		if v.Value == uint64(xdplbEventEV_NONE) || v.Value >= uint64(xdplbEventEVENT_MAX) {
			continue
		}
		out[uint32(v.Value)] = strings.ToLower(strings.TrimPrefix(v.Name, "EV_"))
	}
	return out, nil
}

// EventCounters returns the data plane's non-drop events by name, every
// event present (zero included): packets passed to the kernel for it to
// resolve a neighbour or answer as a router, ICMP errors forwarded, NAT
// replies translated.
func (d *Datapath) EventCounters() (map[string]uint64, error) {
	out := make(map[string]uint64, len(d.eventNames))
	for _, name := range d.eventNames {
		out[name] = 0
	}
	err := readPerCPU(d.objs.Events, func(e uint32, per []uint64) {
		if name, ok := d.eventNames[e]; ok {
			out[name] = sum64(per)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("read event counters: %w", err)
	}
	return out, nil
}
