// Package model holds the desired state's types (VIPs, backends, checks),
// their normalisation and validation, and the naming and comparison helpers
// the rest of the control plane shares. It imports nothing of ours but
// healthcheck, whose timing rules it applies so that they have one owner.
package model

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Protocol of a VIP, as written in configs and on the command line.
type Protocol string

const (
	TCP Protocol = "tcp"
	UDP Protocol = "udp"
)

// Mode is the forwarding mode of a VIP.
type Mode string

const (
	ModeDR      Mode = "dr"
	ModeNAT     Mode = "nat"
	ModeFullNAT Mode = "fullnat"
)

// DefaultMode is a VIP's mode when none is given.
const DefaultMode = ModeDR

// Modes are the forwarding modes a VIP may have, the default first.
func Modes() []Mode { return []Mode{ModeDR, ModeNAT, ModeFullNAT} }

// Scheduler picks the backend of a new flow.
type Scheduler string

const (
	SchedMaglev Scheduler = "maglev"
	SchedSH     Scheduler = "sh"
	SchedRR     Scheduler = "rr"
	SchedWRR    Scheduler = "wrr"
	SchedRandom Scheduler = "random"
	SchedLC     Scheduler = "lc"
	SchedWLC    Scheduler = "wlc"
)

// DefaultScheduler is a VIP's scheduler when none is given.
const DefaultScheduler = SchedMaglev

// Schedulers are the schedulers a VIP may have, the default first.
func Schedulers() []Scheduler {
	return []Scheduler{SchedMaglev, SchedSH, SchedRR, SchedWRR, SchedRandom, SchedLC, SchedWLC}
}

// Hashed reports whether s places every new flow by a hash into the VIP's
// lookup table (maglev, sh): every LB node with the same config then
// places a flow alike, whatever packet of it comes first.
func (s Scheduler) Hashed() bool { return s == SchedMaglev || s == SchedSH }

// UsesSet reports whether s schedules over the VIP's list of backends
// (rr, wrr, lc, wlc) rather than its lookup table; such a VIP has at most
// MaxSchedBackends backends.
func (s Scheduler) UsesSet() bool {
	return s == SchedRR || s == SchedWRR || s == SchedLC || s == SchedWLC
}

// MaxSchedBackends is how many backends (its fallback included) a VIP
// with a scheduler that UsesSet may have: the data plane's per-VIP list
// (bpf/types.h SCHED_SET_MAX) holds no more.
const MaxSchedBackends = 1024

// MaxPersistence is the longest persistence a VIP may have.
const MaxPersistence = Duration(24 * time.Hour)

// OneOf writes choices as help and messages list them: "a, b or c".
func OneOf[T ~string](choices []T) string {
	s := make([]string, len(choices))
	for i, c := range choices {
		s[i] = string(c)
	}
	if len(s) < 2 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}

// DefaultWeight is a backend's weight when none is given.
const DefaultWeight = 100

// MaxPriority is the worst pool a backend may be in (0, the default, is the
// primary pool); MaxFailoverBelow the largest VIP.FailoverBelow, a
// percentage.
const (
	MaxPriority      = 255
	MaxFailoverBelow = 100
)

// Duration is a time.Duration written as "1s", "500ms" in YAML and JSON.
type Duration time.Duration

// HealthCheck configures the active probes of a VIP's backends.
type HealthCheck struct {
	Type string `json:"type,omitempty" yaml:"type,omitempty"` // tcp|http|udp|none
	Port uint16 `json:"port,omitempty" yaml:"port,omitempty"`
	Path string `json:"path,omitempty" yaml:"path,omitempty"`
	// Expect is the HTTP statuses an http check takes for up, "LO-HI" or
	// one status; empty: 200-399 (healthcheck.DefaultExpect).
	Expect   string   `json:"expect,omitempty" yaml:"expect,omitempty"`
	Interval Duration `json:"interval,omitempty" yaml:"interval,omitempty"`
	Timeout  Duration `json:"timeout,omitempty" yaml:"timeout,omitempty"`
	Rise     int      `json:"rise,omitempty" yaml:"rise,omitempty"`
	Fall     int      `json:"fall,omitempty" yaml:"fall,omitempty"`
}

// Backend is a real server behind a VIP.
type Backend struct {
	Address netip.Addr `json:"address" yaml:"address"`
	Port    uint16     `json:"port,omitempty" yaml:"port,omitempty"` // 0: the VIP's port
	Weight  uint32     `json:"weight" yaml:"weight"`
	Drain   bool       `json:"drain,omitempty" yaml:"drain,omitempty"`
	// Priority is the backend's pool: 0 (the default) the primary, higher
	// numbers backups that take new flows only when the better pools fail
	// (see VIP.FailoverBelow).
	Priority uint32 `json:"priority,omitempty" yaml:"priority,omitempty"`
	// MaxConns caps the backend's open connections (0: no cap): once it
	// has MaxConns it takes no new flows until it is back at or below
	// MaxConnsMin (Normalize writes DefaultConnsMin of MaxConns for 0).
	// Its open flows continue meanwhile.
	MaxConns    uint32 `json:"max_conns,omitempty" yaml:"max_conns,omitempty"`
	MaxConnsMin uint32 `json:"max_conns_min,omitempty" yaml:"max_conns_min,omitempty"`
	// Group is a label (a release: "v1", "v2", "blue") that `backend set
	// VIP --group G` changes as one: a canary's weight is shifted with
	// one command, in one change of the lookup table.
	Group string `json:"group,omitempty" yaml:"group,omitempty"`
}

// VIP is a virtual service and its backends.
type VIP struct {
	Address  netip.Addr `json:"address" yaml:"address"`
	Port     uint16     `json:"port" yaml:"port"`
	Protocol Protocol   `json:"protocol" yaml:"protocol"`
	Mode     Mode       `json:"mode,omitempty" yaml:"mode,omitempty"`
	// SNATAddr is the source address of a fullnat VIP's translated
	// packets; unset: the egress interface's primary address (see
	// reconcile). A netip.Addr is a struct with no exported field:
	// encoding/json's omitempty never omits it (omitzero does), and
	// yaml.v3's omitempty always does, so the file format's own document
	// (control/config) writes it.
	SNATAddr    netip.Addr   `json:"snat_addr,omitzero" yaml:"snat_addr,omitempty"`
	Scheduler   Scheduler    `json:"scheduler,omitempty" yaml:"scheduler,omitempty"`
	Announce    *bool        `json:"announce,omitempty" yaml:"announce,omitempty"` // nil: on when inside an attached subnet
	HealthCheck *HealthCheck `json:"healthcheck,omitempty" yaml:"healthcheck,omitempty"`
	// FailoverBelow (0-100) is when the next backup pool shares the VIP's
	// new flows: once the healthy weight of the pool before it falls below
	// this percentage of that pool's configured weight. 0: only when none
	// of that pool's backends is healthy.
	FailoverBelow uint32 `json:"failover_below,omitempty" yaml:"failover_below,omitempty"`
	// Fallback (nil: none) takes the VIP's new flows while none of its
	// backends can: all down, drained or unresolved, or none configured.
	Fallback *Fallback `json:"fallback,omitempty" yaml:"fallback,omitempty"`
	// MaxNewFlows caps the new flows the VIP takes a second (0: no cap),
	// up to MaxNewFlowsBurst at once after a quiet spell (Normalize
	// writes MaxNewFlows for 0). Packets of open flows are never counted.
	MaxNewFlows      uint32 `json:"max_new_flows,omitempty" yaml:"max_new_flows,omitempty"`
	MaxNewFlowsBurst uint32 `json:"max_new_flows_burst,omitempty" yaml:"max_new_flows_burst,omitempty"`
	// Persistence (0: none) sends a client's new flows to the backend its
	// last new flow went to, within this long of it, whatever the
	// scheduler (IPVS -p); a backend that is down, drained, full or gone
	// releases its clients.
	Persistence Duration  `json:"persistence,omitempty" yaml:"persistence,omitempty"`
	Backends    []Backend `json:"backends" yaml:"backends"`
}

// Fallback is a VIP's "sorry" server: a server of the VIP's mode, reached
// as its backends are (a DR fallback on a connected subnet and holding the
// VIP, a NAT one by route), that is not one of its backends. It is not
// health-checked: a sorry server often answers every request with a 503,
// which the VIP's check would take for down.
type Fallback struct {
	Address netip.Addr `json:"address" yaml:"address"`
	Port    uint16     `json:"port,omitempty" yaml:"port,omitempty"` // 0: the VIP's port
}

// Backend is the fallback as a backend of the VIP: it names it in the
// maps, the network's answers and the checks of the host's addresses.
func (f Fallback) Backend() Backend { return Backend{Address: f.Address, Port: f.Port, Weight: 1} }

// String is how a fallback is named: "ADDR" or "ADDR:PORT".
func (f Fallback) String() string { return BackendName(f.Address, f.Port) }

// State is the whole desired state: what `export` prints and `apply` takes.
type State struct {
	VIPs []VIP `json:"vips" yaml:"vips"`
}

// VIPID is the key of a VIP: "10.0.0.1:80/tcp" or "[2001:db8::1]:80/tcp".
type VIPID struct {
	Addr     netip.Addr
	Port     uint16
	Protocol Protocol
}

func (id VIPID) String() string {
	return netip.AddrPortFrom(id.Addr, id.Port).String() + "/" + string(id.Protocol)
}

// ID returns the key of v.
func (v *VIP) ID() VIPID { return VIPID{Addr: v.Address, Port: v.Port, Protocol: v.Protocol} }

// ParseVIPID parses "ADDR:PORT/PROTO".
func ParseVIPID(s string) (VIPID, error) {
	ap, proto, ok := strings.Cut(s, "/")
	if !ok {
		return VIPID{}, fmt.Errorf("vip %q: want ADDR:PORT/PROTO", s)
	}
	addrPort, err := netip.ParseAddrPort(ap)
	if err != nil {
		return VIPID{}, fmt.Errorf("vip %q: %w", s, err)
	}
	p := Protocol(strings.ToLower(proto))
	if p != TCP && p != UDP {
		return VIPID{}, fmt.Errorf("vip %q: protocol must be tcp or udp", s)
	}
	if addrPort.Port() == 0 {
		return VIPID{}, fmt.Errorf("vip %q: port must be 1-65535", s)
	}
	return VIPID{Addr: addrPort.Addr().Unmap(), Port: addrPort.Port(), Protocol: p}, nil
}

// ParseBackendAddr parses "ADDR" or "ADDR:PORT" ("[V6]:PORT" for IPv6 with a port).
func ParseBackendAddr(s string) (netip.Addr, uint16, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap(), 0, nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.Addr{}, 0, fmt.Errorf("backend %q: want ADDR or ADDR:PORT", s)
	}
	return ap.Addr().Unmap(), ap.Port(), nil
}

// String prints a Duration as Go does ("1.5s").
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalText writes a Duration as "1s"; YAML and JSON both use it.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText reads "1s", "500ms", or a bare number of seconds.
func (d *Duration) UnmarshalText(b []byte) error {
	s := string(b)
	if v, err := time.ParseDuration(s); err == nil {
		*d = Duration(v)
		return nil
	}
	if secs, err := strconv.ParseFloat(s, 64); err == nil {
		*d = Duration(secs * float64(time.Second))
		return nil
	}
	return fmt.Errorf("duration %q: want a value like 1s or 500ms", s)
}

// BackendPatch changes a backend; nil fields stay as they are.
type BackendPatch struct {
	Weight *uint32 `json:"weight,omitempty"`
	Drain  *bool   `json:"drain,omitempty"`
	// Priority moves the backend to another pool.
	Priority *uint32  `json:"priority,omitempty"`
	MaxConns *ConnCap `json:"max_conns,omitempty"`
}

// ConnCap is a backend's connection cap as `--max-conns N[,min=M]` gives
// it: Max 0 removes the cap, Min 0 is DefaultConnsMin of Max.
type ConnCap struct {
	Max uint32 `json:"max"`
	Min uint32 `json:"min,omitempty"`
}

// Apply makes the change on b.
func (p BackendPatch) Apply(b *Backend) {
	if p.Weight != nil {
		b.Weight = *p.Weight
	}
	if p.Drain != nil {
		b.Drain = *p.Drain
	}
	if p.Priority != nil {
		b.Priority = *p.Priority
	}
	if p.MaxConns != nil {
		b.MaxConns, b.MaxConnsMin = p.MaxConns.Max, p.MaxConns.Min
	}
}

// NewFlowLimit is a VIP's new-flow rate limit as `--max-new-flows
// RATE[,burst=N]` gives it: Rate 0 removes the limit, Burst 0 is Rate.
type NewFlowLimit struct {
	Rate  uint32 `json:"rate"`
	Burst uint32 `json:"burst,omitempty"`
}

// VIPPatch changes the options of a VIP (not its backends); nil fields
// stay as they are. `vip set` sends one.
type VIPPatch struct {
	Mode      *Mode      `json:"mode,omitempty"`
	Scheduler *Scheduler `json:"scheduler,omitempty"`
	// SNATAddr: the invalid address (JSON "") is none: a fullnat VIP takes
	// the egress interface's.
	SNATAddr    *netip.Addr       `json:"snat_addr,omitempty"`
	Announce    *bool             `json:"announce,omitempty"`
	HealthCheck *HealthCheckPatch `json:"healthcheck,omitempty"`
	// Fallback: an invalid address removes the fallback.
	Fallback *Fallback `json:"fallback,omitempty"`
	// FailoverBelow: see VIP.FailoverBelow.
	FailoverBelow *uint32       `json:"failover_below,omitempty"`
	MaxNewFlows   *NewFlowLimit `json:"max_new_flows,omitempty"`
	// Persistence: 0 removes it.
	Persistence *Duration `json:"persistence,omitempty"`
}

// HealthCheckPatch changes a VIP's health check; nil fields stay as they
// are. Type "none" removes the check, and takes no other field.
type HealthCheckPatch struct {
	Type     *string   `json:"type,omitempty"`
	Port     *uint16   `json:"port,omitempty"`
	Path     *string   `json:"path,omitempty"`
	Expect   *string   `json:"expect,omitempty"`
	Interval *Duration `json:"interval,omitempty"`
	Timeout  *Duration `json:"timeout,omitempty"`
	Rise     *int      `json:"rise,omitempty"`
	Fall     *int      `json:"fall,omitempty"`
}

// IsZero reports whether p changes nothing.
func (p VIPPatch) IsZero() bool {
	return p.Mode == nil && p.Scheduler == nil && p.SNATAddr == nil && p.Announce == nil &&
		(p.HealthCheck == nil || p.HealthCheck.IsZero()) && p.Fallback == nil &&
		p.FailoverBelow == nil && p.MaxNewFlows == nil && p.Persistence == nil
}

// IsZero reports whether p changes nothing.
func (p HealthCheckPatch) IsZero() bool { return p == HealthCheckPatch{} }

// Apply makes the change on v; v is then to be normalized and validated.
// The error (ErrInvalid) is a change that cannot be made whatever the
// values: settings of a check that v does not have.
func (p VIPPatch) Apply(v *VIP) error {
	if p.Mode != nil {
		v.Mode = *p.Mode
	}
	if p.Scheduler != nil {
		v.Scheduler = *p.Scheduler
	}
	if p.SNATAddr != nil {
		v.SNATAddr = *p.SNATAddr
	}
	if p.Announce != nil {
		a := *p.Announce
		v.Announce = &a
	}
	if p.Fallback != nil {
		if p.Fallback.Address.IsValid() {
			f := *p.Fallback
			v.Fallback = &f
		} else {
			v.Fallback = nil
		}
	}
	if p.FailoverBelow != nil {
		v.FailoverBelow = *p.FailoverBelow
	}
	if p.MaxNewFlows != nil {
		v.MaxNewFlows, v.MaxNewFlowsBurst = p.MaxNewFlows.Rate, p.MaxNewFlows.Burst
	}
	if p.Persistence != nil {
		v.Persistence = *p.Persistence
	}
	if p.HealthCheck != nil && !p.HealthCheck.IsZero() {
		hc, err := p.HealthCheck.apply(v.HealthCheck)
		if err != nil {
			return Invalidf("vip %s: healthcheck: %s", v.ID(), err)
		}
		v.HealthCheck = hc
	}
	return nil
}

// apply returns the check hc (nil: none) changed by p. A new type starts
// from that type's defaults but keeps the timing (port, interval,
// timeout, rise, fall) of the check it replaces.
func (p HealthCheckPatch) apply(hc *HealthCheck) (*HealthCheck, error) {
	var out HealthCheck
	has := hc != nil && hc.Type != "" && hc.Type != CheckNone
	if has {
		out = *hc
	}
	if p.Type != nil {
		t := strings.ToLower(*p.Type)
		if t == CheckNone || t == "" {
			if p != (HealthCheckPatch{Type: p.Type}) {
				return nil, errors.New("a check of type none takes no other setting")
			}
			return &HealthCheck{Type: CheckNone}, nil
		}
		if t != out.Type {
			// What only the old type had goes: an http path and statuses
			// mean nothing to a tcp check.
			out.Type, out.Path, out.Expect = t, "", ""
		}
	} else if !has {
		return nil, errors.New("the vip has no check to change: give its type too")
	}
	if p.Port != nil {
		out.Port = *p.Port
	}
	if p.Path != nil {
		out.Path = *p.Path
	}
	if p.Expect != nil {
		out.Expect = *p.Expect
	}
	if p.Interval != nil {
		out.Interval = *p.Interval
	}
	if p.Timeout != nil {
		out.Timeout = *p.Timeout
	}
	if p.Rise != nil {
		out.Rise = *p.Rise
	}
	if p.Fall != nil {
		out.Fall = *p.Fall
	}
	return &out, nil
}

// Backend states shown by `backend list`.
const (
	BackendUp         = "up"
	BackendDraining   = "draining"   // weight 0 or drain: open flows only
	BackendUnresolved = "unresolved" // dr: no neighbour entry (MAC) yet; nat: no route through an attached interface
	BackendDown       = "down"       // failed health checks
	BackendStandby    = "standby"    // up, in a backup pool that takes no new flows: a better pool suffices
	BackendFull       = "full"       // at its connection cap (max_conns): open flows only, until back at max_conns_min
)

// States of a VIP's fallback, shown by `backend list` and `vip list`
// (BackendUnresolved too).
const (
	FallbackActive  = "active"  // takes the new flows: no backend can
	FallbackStandby = "standby" // takes none: a backend can; its open flows continue
)

// BackendState is what `backend list` shows: draining wins over down (the
// operator's decision first), down over unresolved (the checks say more
// than a missing MAC or route).
func BackendState(drained, up, resolved bool) string {
	switch {
	case drained:
		return BackendDraining
	case !up:
		return BackendDown
	case !resolved:
		return BackendUnresolved
	default:
		return BackendUp
	}
}

// Drained reports whether b takes no new flows (weight 0 or drain).
func (b Backend) Drained() bool { return b.Weight == 0 || b.Drain }

// Neighbour is where a DR backend is: the interface it is reached through
// and its MAC.
type Neighbour struct {
	Ifindex int
	Iface   string
	SrcMAC  net.HardwareAddr // MAC of the egress interface
	MAC     net.HardwareAddr // nil: not resolved (yet)
}

// Resolution is the outcome of resolving one backend address.
type Resolution struct {
	Neighbour
	Err error
}

// Route is how a NAT backend is reached: the attached interface the
// kernel routes it through, and that interface's primary address of the
// backend's family, which a fullnat VIP without a SNAT address takes
// (invalid: the interface has none). Err: no route through an attached
// interface; it wraps ErrInvalid.
type Route struct {
	Ifindex int
	Iface   string
	Primary netip.Addr
	Err     error
}

// IsNAT reports whether m rewrites addresses (nat, fullnat): its backends
// are reached by route, they may listen on another port than the VIP's.
func (m Mode) IsNAT() bool { return m == ModeNAT || m == ModeFullNAT }

// Clone returns a deep copy of s.
func (s State) Clone() State {
	out := State{}
	if s.VIPs != nil {
		out.VIPs = make([]VIP, len(s.VIPs))
		for i := range s.VIPs {
			out.VIPs[i] = s.VIPs[i].Clone()
		}
	}
	return out
}

// Clone returns a deep copy of v.
func (v VIP) Clone() VIP {
	out := v
	if v.Announce != nil {
		a := *v.Announce
		out.Announce = &a
	}
	if v.HealthCheck != nil {
		hc := *v.HealthCheck
		out.HealthCheck = &hc
	}
	if v.Fallback != nil {
		f := *v.Fallback
		out.Fallback = &f
	}
	if v.Backends != nil {
		out.Backends = append([]Backend{}, v.Backends...)
	}
	return out
}
