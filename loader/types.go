package loader

import (
	"fmt"
	"net"
	"net/netip"
	"time"
)

// Protocol is an IP protocol number carried in a VIP key.
type Protocol uint8

const (
	ProtoTCP Protocol = 6
	ProtoUDP Protocol = 17
)

// ForwardMode says how packets reach a backend (bpf enum fwd_mode).
type ForwardMode uint8

const (
	ModeDR      ForwardMode = 1 // MAC rewrite; the backend owns the VIP
	ModeNAT     ForwardMode = 2 // destination address and port rewritten, replies reversed
	ModeFullNAT ForwardMode = 3 // ModeNAT plus the source: an LB address and a port of Options.SNATPorts
)

// IsNAT reports whether m rewrites addresses (its next hop comes from the
// kernel's FIB, not from Backend.MAC).
func (m ForwardMode) IsNAT() bool { return m == ModeNAT || m == ModeFullNAT }

// HashKind is a VIP's scheduler (bpf enum sched_kind): what a new flow is
// hashed on to pick a lookup table slot (maglev, sh), or how it is chosen
// otherwise (bpf/sched_algo.h). The name is from when only the hash
// differed.
type HashKind uint8

const (
	HashMaglev HashKind = 1 // 5-tuple
	HashSource HashKind = 2 // source address only
	SchedRR    HashKind = 3 // the VIP's backends in turn (PutSchedSet)
	SchedWRR   HashKind = 4 // smooth weighted round robin (PutSchedSet)
	SchedRand  HashKind = 5 // weighted random: a random slot of the lookup table
	SchedLC    HashKind = 6 // fewest open flows (PutSchedSet, SetOpenFlows)
	SchedWLC   HashKind = 7 // fewest open flows per weight (PutSchedSet, SetOpenFlows)
)

// UsesSet reports whether k chooses from the VIP's backend set
// (PutSchedSet) rather than its lookup table alone.
func (k HashKind) UsesSet() bool {
	return k == SchedRR || k == SchedWRR || k == SchedLC || k == SchedWLC
}

// CountsFlows reports whether k reads the open-flow counts (SetOpenFlows).
func (k HashKind) CountsFlows() bool { return k == SchedLC || k == SchedWLC }

// VIPKey identifies a virtual service.
type VIPKey struct {
	Addr  netip.Addr // IPv4 or IPv6, unmapped
	Port  uint16
	Proto Protocol
}

// VIPMeta is what the data plane knows of a VIP besides its key.
type VIPMeta struct {
	ID   uint32 // 1..MaxVIPs-1; indexes the lookup table and VIP counters
	Mode ForwardMode
	Hash HashKind
	// NoHealthy: backends are configured but every one failed its checks;
	// new flows are dropped as "no_healthy_backend" (VIP_F_NO_HEALTHY).
	NoHealthy bool
	// SNATAddr is the source address of a ModeFullNAT VIP's translated
	// packets (map vip_snat); unset for the other modes.
	SNATAddr netip.Addr
	// BackendsFull: every backend that passes its checks is at its
	// connection cap and out of the table; new flows are dropped as
	// "backends_full" (VIP_F_BACKENDS_FULL).
	BackendsFull bool
	// RateLimit caps the new flows the VIP takes (map vip_rates); the
	// zero value is none.
	RateLimit RateLimit
	// Persistence (whole seconds; 0: none) sends a client's new flows to
	// the backend of its last one within this long (map persist).
	Persistence time.Duration
}

// RateLimit is a VIP's new-flow rate limit: Rate new flows a second, up
// to Burst at once after a quiet spell. All CPUs share one bucket
// (bpf/ratelimit.h). Rate 0 is no limit.
type RateLimit struct {
	Rate  uint32
	Burst uint32 // >= 1 with a Rate
}

// Backend is one backend of one VIP as the data plane sees it. A backend
// of a NAT VIP needs no MAC, SrcMAC or Ifindex: its next hop is looked up
// per packet in the kernel's FIB (bpf_fib_lookup).
type Backend struct {
	ID    uint32 // 1..MaxBackends-1; 0 marks an empty lookup-table slot
	VIPID uint32
	Addr  netip.Addr
	Port  uint16 // 0: the VIP's port
	// Mode is the forwarding mode of the backend's VIP: the established
	// path reads it here, never looking the VIP up.
	Mode    ForwardMode
	MAC     net.HardwareAddr
	SrcMAC  net.HardwareAddr // MAC of the egress interface
	Ifindex uint32           // egress interface
	// Down: failed its health checks. It takes no packets and its flows
	// are placed again; the entry stays (BACKEND_F_DOWN).
	Down bool
	// NoNew: takes no new flows (not in its VIP's table), so persistence
	// sends no returning client to it (BACKEND_F_NO_NEW).
	NoNew bool
}

// PortRange is an inclusive range of ports.
type PortRange struct{ Lo, Hi uint16 }

func (r PortRange) String() string { return fmt.Sprintf("%d-%d", r.Lo, r.Hi) }

// Size is the number of ports in r.
func (r PortRange) Size() int { return int(r.Hi) - int(r.Lo) + 1 }

// NATStats describes the NAT table (map nat_flows).
type NATStats struct {
	Entries int // reply translations, live or expired but not yet reclaimed
	// SNATPortsInUse counts live full-NAT mappings: (SNAT address,
	// port, backend) triples held by a flow that is neither expired nor
	// closed.
	SNATPortsInUse int
}

// Counters are summed over CPUs.
type Counters struct {
	Packets uint64
	Bytes   uint64
	Flows   uint64
	// ICMPErrors counts the ICMP/ICMPv6 errors about the VIP's flows
	// that were forwarded to a backend or translated back to a client
	// (VIP counters only).
	ICMPErrors uint64
}

// XDPMode selects how the program is attached.
type XDPMode string

const (
	XDPModeNative  XDPMode = "native"
	XDPModeGeneric XDPMode = "generic"
	XDPModeAuto    XDPMode = "auto" // native, falling back to generic
)

// ActionCount is how often the program returned Action on an interface.
type ActionCount struct {
	Ifindex uint32 // 0: interfaces whose ifindex is beyond the counter array
	Action  string // aborted, drop, pass, tx, redirect
	Count   uint64
}

// TxErrorCount is how many frames an interface's driver refused to send of
// those returned with XDP_TX or redirected (Datapath.DriverTxErrors).
type TxErrorCount struct {
	Ifindex uint32
	Count   uint64
}

// MapFill is how full one map is.
type MapFill struct {
	Name       string
	Entries    int
	MaxEntries uint32
	// Bytes is the map's memory where it is known and large (the
	// connection table's: its slots and their keys); 0 otherwise.
	Bytes uint64
}

// IfaceStatus describes one attachment of the program.
type IfaceStatus struct {
	Name      string
	Ifindex   int
	Mode      XDPMode // the mode actually in use
	ProgramID uint32
	LinkID    uint32
}

// Status is the data plane's state for `xdplb status`.
type Status struct {
	Interfaces []IfaceStatus
	Maps       []MapFill
	PinPath    string
	Features   Features // what Load found in the kernel
}
