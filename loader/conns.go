package loader

import (
	"net/netip"
	"time"
)

// Conn is one connection-table entry as an operator reads it (`xdplb
// conns`): who, to which VIP, on which backend, and in what phase.
type Conn struct {
	Client    netip.AddrPort // the client's address and port
	VIP       VIPKey         // the service the client addressed
	BackendID uint32         // the backend the flow is placed on (Backends)
	Phase     FlowPhase      // as FlowCountsByBackend counts it
	// Closing: a TCP FIN or RST was seen (Phase is then FlowEnded); an
	// ended flow without it was idle past its phase's limit.
	Closing bool
	// Idle is the time since the flow's last stamp, which its packets
	// refresh about once a second (FLOW_TOUCH_TICKS), not per packet.
	Idle time.Duration
	// SNATPort is a full-NAT flow's source port toward its backend (the
	// address is its VIP's VIPMeta.SNATAddr); 0: none.
	SNATPort uint16
}

// Conns calls fn with every connection-table entry, then every flow of the
// half-open table, in the tables' own order, until fn returns false. The table changes under the walk: an
// entry is given at most once, and one inserted meanwhile may be missed.
func (d *Datapath) Conns(fn func(Conn) bool) error {
	d.mu.Lock()
	hz, err := d.ticks.rate()
	var now uint64
	if err == nil {
		now, err = d.ticks.now()
	}
	d.mu.Unlock()
	if err != nil {
		return err
	}
	stopped := false
	d.walkConntrackAt(now, func(k xdplbFlowKey, v flowVal) bool {
		stopped = !fn(connOf(k, v, now, hz, d.opts.HalfOpenTimeout, false))
		return !stopped
	})
	if stopped {
		return nil
	}
	return d.walkHalf(now, func(k xdplbFlowKey, v flowVal) bool {
		return fn(connOf(k, v, now, hz, d.opts.HalfOpenTimeout, true))
	})
}

// connOf is the entry k, v at now in kernel ticks at hz ticks a second;
// half: an entry of the half-open table.
func connOf(k xdplbFlowKey, v flowVal, now, hz uint64, halfOpen time.Duration, half bool) Conn {
	c := Conn{
		Client:    netip.AddrPortFrom(addrFrom16(k.Src), fromNetPort(k.Sport)),
		VIP:       VIPKey{Addr: addrFrom16(k.Dst), Port: fromNetPort(k.Dport), Proto: Protocol(k.Proto)},
		BackendID: v.BackendId,
		Phase:     flowPhase(k, v, now, hz, halfOpen, half),
		Closing:   v.Flags&uint32(xdplbFlowFlagsFLOW_F_CLOSING) != 0,
		SNATPort:  fromNetPort(uint16(v.Flags >> uint32(xdplbFlowFlagsFLOW_SNAT_PORT_SHIFT))),
	}
	// An entry refreshed during the walk is stamped after now: not idle.
	if v.LastSeen < now && hz != 0 {
		d := now - v.LastSeen // whole seconds first: no overflow after 200 days
		c.Idle = time.Duration(d/hz)*time.Second + time.Duration(d%hz*uint64(time.Second)/hz)
	}
	return c
}
