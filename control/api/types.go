// Package api is the daemon's HTTP+JSON API on its unix socket: the wire
// types, the server, the client the CLI uses, and the Prometheus metrics.
package api

import (
	"net/netip"
	"time"

	"github.com/xdplb/xdplb/control/model"
)

// Types carried as JSON between the daemon's API (server.go) and its only
// client, the CLI (client.go).
//
// Routes (HTTP on the unix socket; {vip} is "ADDR:PORT/PROTO" and {backend}
// is "ADDR" or "ADDR:PORT", both path-escaped):
//
//	GET    /v1/vips                          -> []VIPStatus
//	POST   /v1/vips                   VIP    -> 201
//	PATCH  /v1/vips/{vip}[?force=true] VIPPatch -> 204; 409 when a mode or SNAT address change would break open flows, unless forced
//	DELETE /v1/vips/{vip}                    -> 204
//	GET    /v1/vips/{vip}/backends           -> []BackendStatus (the fallback last, marked)
//	POST   /v1/vips/{vip}/backends    Backend      -> 201
//	PATCH  /v1/vips/{vip}/backends/{backend} BackendPatch -> 204
//	DELETE /v1/vips/{vip}/backends/{backend}[?force=true] -> 204; 409 while it has open flows, unless forced
//	GET    /v1/state                         -> State
//	PUT    /v1/state                  State  -> 204 (apply)
//	PUT    /v1/state?dry_run=true     State  -> model.StateDiff: what the apply would change; nothing changes
//	GET    /v1/stats                         -> Stats (less the counters at the last zero)
//	POST   /v1/stats/zero                    -> 204: GET /v1/stats counts from now on (the metrics do not change)
//	GET    /v1/status                        -> DaemonStatus
//	GET    /v1/conns[?vip=V][&backend=B][&limit=N] -> ConnsLine per line (NDJSON), streamed; the last has End
//
// Errors are a 4xx/5xx status with APIError as the body.

// APIError is the body of every failed request.
type APIError struct {
	Error string `json:"error"`
}

// VIPStatus is a VIP with what the daemon knows of it now: its backends
// and fallback with their status, and its open flows (theirs summed). Its
// JSON is the VIP's with fields added, so a reader of []VIP reads it.
type VIPStatus struct {
	model.VIP
	Backends []BackendStatus `json:"backends"`
	Fallback *BackendStatus  `json:"fallback,omitempty"`
	Flows    int             `json:"flows"`
	HalfOpen int             `json:"half_open"`
	// ActivePools are the pools (backend priorities, best first) taking
	// the VIP's new flows, and ActivePriority the worst of them: -1 when
	// none does (its fallback takes them, or they are dropped), as
	// xdplb_vip_active_priority. Both unset before the VIP is reconciled.
	ActivePools    []uint32 `json:"active_pools,omitempty"`
	ActivePriority *int     `json:"active_priority,omitempty"`
}

// BackendStatus is a backend with what the daemon knows of it now.
type BackendStatus struct {
	model.Backend
	// Fallback: this is the VIP's fallback server, not one of its
	// backends; its State is model.FallbackActive, FallbackStandby or
	// BackendUnresolved, and it has no weight.
	Fallback bool `json:"fallback,omitempty"`
	// Removed: this backend left the VIP's config (an apply that swapped
	// the backend set) and keeps only its open flows, draining, until
	// they end; it is then deleted.
	Removed bool   `json:"removed,omitempty"`
	State   string `json:"state"`
	MAC     string `json:"mac,omitempty"`
	// Open flows in the connection table that point at it: established
	// ones, and half-open ones (only their opening seen: a SYN the
	// backend may have refused), which end within --half-open-timeout.
	Flows    int `json:"flows"`
	HalfOpen int `json:"half_open"`
	// Mode is the VIP's; SNATAddr the source address a fullnat VIP's
	// packets to the backend take (its own, or the one found for it).
	Mode     model.Mode `json:"mode,omitempty"`
	SNATAddr netip.Addr `json:"snat_addr,omitzero"`
	Iface    string     `json:"iface,omitempty"`  // the egress interface, once resolved or routed
	Reason   string     `json:"reason,omitempty"` // why it is unresolved
	// Health checks (empty without a check): the last probe's outcome
	// ("ok", "connect refused", "timeout", "http 503", ...) and when the
	// backend last changed between up and down.
	Check      string    `json:"check,omitempty"`
	CheckSince time.Time `json:"check_since,omitzero"`
}

// CounterSet is packets, bytes and new flows since the program was loaded.
type CounterSet struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
	Flows   uint64 `json:"flows"`
}

// BackendStats are the counters of one backend of a VIP.
type BackendStats struct {
	Address  netip.Addr `json:"address"`
	Port     uint16     `json:"port,omitempty"`
	Fallback bool       `json:"fallback,omitempty"` // the VIP's fallback server
	CounterSet
	mapped bool   // the backend has an entry in the maps
	id     uint32 // its id there, when mapped
}

// VIPStats are the counters of one VIP and its backends.
type VIPStats struct {
	VIP string `json:"vip"` // "ADDR:PORT/PROTO"
	CounterSet
	// ICMPErrors counts the ICMP errors about the VIP's flows forwarded
	// to their backend or translated back to their client.
	ICMPErrors uint64 `json:"icmp_errors"`
	// Drops are the VIP's new flows refused, by reason (rate_limited,
	// backends_full, no_backend, no_healthy_backend, nat_table_full, ...):
	// only the reasons that counted. They are in Stats.Drops too.
	Drops    map[string]uint64 `json:"drops,omitempty"`
	Backends []BackendStats    `json:"backends"`
	mapped   bool              // the VIP has an entry in the maps
	id       uint32            // its id there, when mapped
}

// ActionStats is how often the program returned an action on an interface.
type ActionStats struct {
	Iface  string `json:"iface"`
	Action string `json:"action"`
	Count  uint64 `json:"count"`
}

// TxErrorStats is how many frames an interface's driver refused to send
// of those the program returned with XDP_TX or redirected, which Actions
// counts as tx or redirect: they were lost. The driver counts them, in
// its ethtool statistics, since the interface was created; an interface
// whose driver keeps no such counter, or in generic XDP mode, has none.
type TxErrorStats struct {
	Iface string `json:"iface"`
	Count uint64 `json:"count"`
}

// Stats is what `xdplb stats` shows; rates are computed by the CLI from two
// samples. The counters count from Since, when `stats --zero` last ran
// (zero: never, they count from the program's first load); the metrics
// are never zeroed.
type Stats struct {
	Time    time.Time     `json:"time"`
	Since   time.Time     `json:"since,omitzero"`
	VIPs    []VIPStats    `json:"vips"`
	Actions []ActionStats `json:"actions"`
	// TxErrors are beside Actions, not among them: they are no verdict
	// of the program but a part of its tx and redirect verdicts.
	TxErrors []TxErrorStats    `json:"tx_errors"`
	Drops    map[string]uint64 `json:"drops"`
}

// Conn is one connection-table entry, as `xdplb conns` shows it.
type Conn struct {
	Protocol model.Protocol `json:"protocol"`
	Client   netip.AddrPort `json:"client"`
	VIP      string         `json:"vip"` // "ADDR:PORT/PROTO"
	// Backend is where the flow goes: the backend's address and port (the
	// VIP's when it has none). Unset when the entry's backend is no longer
	// one of the VIP's: its next packet places it again.
	Backend netip.AddrPort `json:"backend,omitzero"`
	// State is established, half-open (only its opening seen), closing
	// (a TCP FIN or RST seen) or expired (idle past its phase's limit);
	// the last two no longer count as open flows.
	State       string `json:"state"`
	IdleSeconds int64  `json:"idle_seconds"`
	// A full-NAT flow's source toward its backend: the port it holds, and
	// its VIP's SNAT address.
	SNATAddr netip.Addr `json:"snat_addr,omitzero"`
	SNATPort uint16     `json:"snat_port,omitempty"`
}

// ConnsLine is one line of GET /v1/conns: a Conn, or, last, End.
type ConnsLine struct {
	Conn *Conn     `json:"conn,omitempty"`
	End  *ConnsEnd `json:"end,omitempty"`
}

// ConnsEnd closes a GET /v1/conns stream: how many entries matched the
// filter and how many of those the limit left out. Error is set when the
// walk of the table failed part way (the status line was sent already).
type ConnsEnd struct {
	Matched int    `json:"matched"`
	Omitted int    `json:"omitted"`
	Error   string `json:"error,omitempty"`
}

// ConnsFilter selects the entries of GET /v1/conns.
type ConnsFilter struct {
	VIP *model.VIPID // nil: every VIP
	// Backend and BackendPort: the backend's address, and its port (0:
	// any); an invalid Backend: every backend.
	Backend     netip.Addr
	BackendPort uint16
	Limit       int // at most this many are sent; 0: all
}

// IfaceInfo is one interface the program is attached to.
type IfaceInfo struct {
	Name      string `json:"name"`
	Ifindex   int    `json:"ifindex"`
	XDPMode   string `json:"xdp_mode"`
	ProgramID uint32 `json:"program_id"`
	LinkID    uint32 `json:"link_id"`
}

// MapInfo is how full one map is.
type MapInfo struct {
	Name       string `json:"name"`
	Entries    int    `json:"entries"`
	MaxEntries uint32 `json:"max_entries"`
	Bytes      uint64 `json:"bytes,omitempty"` // memory, where the data plane says (the connection table)
}

// KernelInfo is the running kernel and what the data plane found in it
// when it loaded (loader.Features); how each interface runs XDP is in its
// IfaceInfo.
type KernelInfo struct {
	Release string `json:"release"` // uname -r
	BTF     bool   `json:"btf"`     // /sys/kernel/btf/vmlinux
	// ElemCount: bpf_map_sum_elem_count (6.6+) counts the tables' entries;
	// Count says how they are counted: "kernel", or "walk" without it.
	ElemCount         bool   `json:"elem_count"`
	Count             string `json:"count"`
	BatchLookup       bool   `json:"batch_lookup"`        // BPF_MAP_LOOKUP_BATCH: table walks in batches
	BatchUpdateTables bool   `json:"batch_update_tables"` // BPF_MAP_UPDATE_BATCH: an apply's lookup tables in one call
	Mmapable          bool   `json:"mmapable"`            // BPF_F_MMAPABLE: lookup tables written in place
}

// DaemonStatus is what `xdplb status` shows.
type DaemonStatus struct {
	Version    string      `json:"version"`
	StartTime  time.Time   `json:"start_time"`
	Uptime     string      `json:"uptime"`
	PinPath    string      `json:"pin_path"`
	Kernel     KernelInfo  `json:"kernel"`
	Interfaces []IfaceInfo `json:"interfaces"`
	Maps       []MapInfo   `json:"maps"`
	VIPs       int         `json:"vips"`
	// Schedulers counts the VIPs of each scheduler in use (maglev for a
	// VIP that names none).
	Schedulers map[string]int `json:"schedulers"`
	Backends   int            `json:"backends"`
	BGP        *BGPStatus     `json:"bgp,omitempty"` // nil: the daemon runs no BGP speaker
}

// BGPStatus is the daemon's BGP speaker: who it is, the VIP routes it
// announces and its sessions.
type BGPStatus struct {
	ASN      uint32       `json:"asn"`
	RouterID netip.Addr   `json:"router_id"`
	HoldTime string       `json:"hold_time"`
	Routes   []string     `json:"routes"` // the VIP host routes (/32, /128) offered to the peers
	Sessions []BGPSession `json:"sessions"`
}

// BGPSession is one peer's session.
type BGPSession struct {
	Peer    netip.Addr `json:"peer"`
	PeerASN uint32     `json:"peer_asn"`
	Port    uint16     `json:"port"`
	State   string     `json:"state"` // idle, connect, active, opensent, openconfirm, established
	Up      bool       `json:"up"`
	// Since is when the session came up (up) or last went down.
	Since  time.Time `json:"since,omitzero"`
	Uptime string    `json:"uptime,omitempty"` // how long it has been up
	// Routes is how many routes are announced on the session.
	Routes    int        `json:"routes_announced"`
	LocalAddr netip.Addr `json:"local_addr,omitzero"` // the next hop of its routes, while up
	LastError string     `json:"last_error,omitempty"`
}
