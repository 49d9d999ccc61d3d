/* types.h: every struct and enum shared with Go (exported by bpf2go -type). */
#pragma once

#include <linux/types.h>

/* Addresses are 16 bytes; IPv4 is stored IPv4-mapped (::ffff:a.b.c.d) so
 * Go fills them with netip.Addr.As16(). Ports are in network byte order. */

enum fwd_mode {
	FWD_MODE_DR = 1,      /* MAC rewrite; the backend owns the VIP on loopback */
	FWD_MODE_NAT = 2,     /* destination rewritten, replies reversed (nat.h) */
	FWD_MODE_FULLNAT = 3, /* NAT plus the source: SNAT address and port */
};

/* How a VIP chooses a new flow's backend (sched_algo.h). maglev and sh
 * hash into the VIP's lookup table; the others choose only for a packet
 * that opens a flow (a TCP SYN, a UDP datagram of an untracked flow): any
 * other packet of an unknown flow takes the table's 5-tuple slot. */
enum sched_kind {
	SCHED_MAGLEV = 1, /* 5-tuple hash */
	SCHED_SH = 2,     /* source address hash */
	SCHED_RR = 3,     /* the VIP's backends in turn (sched_set.ids), per-CPU cursor */
	SCHED_WRR = 4,    /* smooth weighted round robin (sched_set.seq), per-CPU cursor */
	SCHED_RANDOM = 5, /* a random slot of the lookup table: weighted random */
	SCHED_LC = 6,     /* fewest open flows (be_conns) */
	SCHED_WLC = 7,    /* fewest open flows per unit of weight */
	SCHED_KIND_MAX = 8,
};

/* A VIP's backends as rr, wrr, lc and wlc see them (map sched_sets, by VIP
 * id): the members of its lookup table, with their weights, and the wrr
 * sequence, written whole by the loader (a hash map value is replaced
 * atomically). Sizes bound the loops: a VIP with one of these schedulers
 * has at most SCHED_SET_MAX backends (model.MaxSchedBackends); lc and wlc
 * compare SCHED_LC_SCAN of them per new flow, all of them up to that
 * many, else a window of that many from a random member on. */
enum sched_limits {
	SCHED_SET_MAX = 1024,
	SCHED_SEQ_MAX = 4096,
	SCHED_LC_SCAN = 32,
};

struct sched_set {
	__u32 count;   /* members in ids and weights, 1..SCHED_SET_MAX */
	__u32 seq_len; /* slots of seq in use, 1..SCHED_SEQ_MAX */
	__u32 ids[SCHED_SET_MAX];     /* backend ids */
	__u32 weights[SCHED_SET_MAX]; /* their weights, >= 1 */
	__u16 seq[SCHED_SEQ_MAX];     /* wrr: indexes into ids, each member weight-many times, spread */
};

/* Per-VIP persistence (IPVS -p): the client's last backend (map persist),
 * looked up only when a flow is placed. */
struct persist_key {
	__u32 vip_id;
	__u8 client[16];
};

struct persist_val {
	__u32 backend_id;
	__u32 pad;
	__u64 stamp; /* bpf_jiffies64 of the client's last new flow */
};

/* A VIP's persistence (map vip_persist, by VIP id; read only with
 * VIP_F_PERSIST). */
struct persist_timeout {
	__u64 ticks; /* the timeout in kernel ticks */
	__u32 secs;  /* the timeout as configured, for the loader to read back */
	__u32 pad;
};

enum drop_reason {
	DROP_NONE = 0,
	DROP_NO_BACKEND = 1,      /* VIP has no lookup table or an empty slot */
	DROP_BACKEND_INVALID = 2, /* table points at a missing backend entry */
	DROP_MALFORMED_L4 = 3,    /* TCP/UDP header truncated or bad length */
	DROP_FRAGMENT = 4,        /* IP fragment addressed to a VIP address */
	DROP_IPV6_EXT = 5,        /* IPv6 extension header to a VIP address */
	DROP_REDIRECT_FAILED = 6, /* bpf_redirect to the egress interface failed */
	DROP_NO_HEALTHY_BACKEND = 7, /* every backend of the VIP failed its health checks */
	DROP_SNAT_EXHAUSTED = 8,  /* full NAT: every port tried is held by a live flow */
	DROP_NAT_TABLE_FULL = 9,  /* nat_flows has no room for the flow's reply translation */
	DROP_NAT_CONFLICT = 10,   /* a NAT flow's reply 5-tuple is a live flow's of another VIP or a full-NAT mapping */
	DROP_ANSWER_FAILED = 11,  /* an ICMP answer (router.h) could not be finished once begun */
	DROP_RATE_LIMITED = 12,   /* a new flow over its VIP's new-flow rate limit (ratelimit.h) */
	DROP_BACKENDS_FULL = 13,  /* every backend that could take a new flow is at its connection cap */
	DROP_REASON_MAX = 14,
};

/* Packets not dropped but worth counting (map events): the NAT paths
 * pass to the kernel what they cannot forward themselves, and the ICMP
 * paths count what they translated. */
enum event {
	EV_NONE = 0,
	EV_FIB_NO_NEIGH = 1,     /* next hop not resolved: passed translated, the kernel resolves it */
	EV_FIB_FAILED = 2,       /* no route, unreachable, forwarding disabled: passed untouched */
	EV_FRAG_NEEDED = 3,      /* larger than the egress MTU: answered with ICMP, or passed to be fragmented */
	EV_TTL_EXCEEDED = 4,     /* TTL/hop limit would reach 0: answered with ICMP time exceeded (an ICMP error: passed) */
	EV_EGRESS_NOT_XDP = 5,   /* egress interface is not one of ours: passed translated */
	EV_ICMP_TO_BACKEND = 6,  /* ICMP error about a VIP flow sent to its backend */
	EV_ICMP_TO_CLIENT = 7,   /* ICMP error about a NAT flow translated back to the client */
	EV_NAT_REPLY = 8,        /* reply of a NAT flow translated back */
	EV_EARLY_DROP = 9,       /* a live half-open flow gave its place (a way of ct_half, an SNAT port) to a new flow */
	EV_CT_EVICTED_LIVE = 10, /* a live established flow (not idle past its limit, not closing) lost its slot of the connection table to a new one */
	EVENT_MAX = 11,
};

/* Slots per interface in the xdp action counters: XDP_ABORTED..XDP_REDIRECT. */
enum {
	XDP_ACTION_SLOTS = 5,
	MAX_IFINDEX_SLOTS = 1024, /* ifindex >= this is counted in slot 0 */
};

struct vip_key {
	__u8 addr[16];
	__u16 port; /* network byte order */
	__u8 proto; /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad;
};

/* The no-VIP pre-filter: one bit per fold of (address, port, protocol),
 * set for every VIP (vipfilter.h). 2^16 bits, 8 KiB: one array entry. */
enum {
	VIP_FILTER_BITS = 1 << 16,
	VIP_FILTER_WORDS = VIP_FILTER_BITS / 64,
};

struct vip_bitmap {
	__u64 bits[VIP_FILTER_WORDS];
};

struct vip_meta {
	__u32 vip_id; /* index into lookup tables and vip_stats */
	__u8 mode;    /* enum fwd_mode */
	__u8 sched;   /* enum sched_kind */
	__u16 flags;  /* VIP_F_* */
};

enum vip_flags {
	/* Backends are configured but all failed their checks: a new flow is
	 * counted as DROP_NO_HEALTHY_BACKEND rather than DROP_NO_BACKEND. */
	VIP_F_NO_HEALTHY = 1,
	/* The VIP has a new-flow rate limit (map vip_rates): a VIP without
	 * one pays the test of this bit and nothing else. */
	VIP_F_RATE_LIMIT = 2,
	/* Every backend that passes its checks is at its connection cap, so
	 * the control plane took them all out of the table: a new flow is
	 * counted as DROP_BACKENDS_FULL rather than DROP_NO_BACKEND. */
	VIP_F_BACKENDS_FULL = 4,
	/* The VIP has persistence (map vip_persist). */
	VIP_F_PERSIST = 8,
};

/* A VIP's new-flow rate limit (map vip_rates, by VIP id), a GCRA token
 * bucket (ratelimit.h) on the rate clock: bpf_jiffies64() <<
 * RATE_CLOCK_SHIFT, fine enough that a period of 10,000,000 flows a second
 * at HZ=100 is 168 units, off by 0.14%. rate and burst are the operator's;
 * the loader derives period and tau from them with the measured HZ. */
enum rate_clock {
	RATE_CLOCK_SHIFT = 24,
};

struct vip_rate {
	__u32 rate;   /* new flows a second; 0: none */
	__u32 burst;  /* flows that may come at once after a quiet spell; >= 1 */
	__u64 period; /* rate clock units between two flows at the rate */
	__u64 tau;    /* (burst - 1) * period: how far the schedule may run ahead of now */
	__u64 tat;    /* when the next flow is due at the rate; the program's alone, 0 at a change */
};

/* One backend of one VIP; the same server behind two VIPs has two ids. */
struct backend {
	__u8 addr[16];
	__u8 mac[6];     /* the backend's MAC (destination) */
	__u8 src_mac[6]; /* MAC of the egress interface (source) */
	__u32 ifindex;   /* egress interface */
	__u32 vip_id;    /* owning VIP: a stale flow entry is detected by this */
	__u16 port;      /* network byte order; 0 means the VIP's port */
	__u16 flags;     /* BACKEND_F_* */
};

enum backend_flags {
	BACKEND_F_VALID = 1,
	/* Failed its health checks: takes no packets, its flows are placed
	 * again (the entry stays so counters and ids survive a flap). */
	BACKEND_F_DOWN = 2,
	/* The VIP's mode, copied here so the established path never looks
	 * the VIP up; neither set is DR. */
	BACKEND_F_NAT = 4,
	BACKEND_F_FULLNAT = 8,
	/* Takes no new flows (drained, full, standby, leaving): persistence
	 * does not send a returning client to it. Kept for VIPs with
	 * persistence only; the others never read it. */
	BACKEND_F_NO_NEW = 16,
};

struct flow_key {
	__u8 src[16];
	__u8 dst[16];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
};

/*
 * The connection table (maps conntrack and ct_keys, conntrack.h): an
 * open-addressing table of buckets of CT_BUCKET_SLOTS slots, two 64-byte
 * cache lines each. A flow may live in either of two buckets chosen by its
 * 5-tuple's hash, and is found by a fingerprint of that hash, not by its
 * key: a lookup reads the two buckets (four lines, loaded in parallel) and
 * nothing else. Its full key is kept apart (ct_keys, same index) for the
 * control plane's listing, written on insert and never read by packets.
 */
enum ct_layout {
	CT_BUCKET_SLOTS = 8,
	/* ct_slot.tag: the fingerprint above this bit, the backend id below. */
	CT_FP_SHIFT = 24,
	CT_BACKEND_MASK = (1 << 24) - 1,
};

struct ct_slot {
	/* fingerprint << CT_FP_SHIFT | backend id; 0: a free slot. The
	 * fingerprint's top bit is always set, so a used tag is never 0. */
	__u64 tag;
	__u32 stamp; /* low 32 bits of bpf_jiffies64 at the flow's last stamp */
	__u32 meta;  /* FLOW_F_*, and a full-NAT flow's SNAT port (FLOW_SNAT_PORT_SHIFT) */
};

struct ct_bucket {
	struct ct_slot slots[CT_BUCKET_SLOTS];
};

/* The full keys of a bucket's slots (map ct_keys), 320 bytes: five lines. */
struct ct_bucket_keys {
	struct flow_key keys[CT_BUCKET_SLOTS];
};

enum flow_flags {
	/* A TCP FIN or RST was seen: the flow is ending, it no longer counts
	 * as open, and a SYN on the same 5-tuple starts a new flow. */
	FLOW_F_CLOSING = 1,
	/* The flow saw more than its opening: a TCP packet without SYN, or a
	 * second UDP datagram. Without it a flow is half-open (a SYN the
	 * backend may have refused with an RST a DR LB never sees) and
	 * counts as open for loader.Options.HalfOpenTimeout only. Every
	 * entry of the connection table has it but those an older build
	 * wrote; a half-open flow lives in ct_half (struct half_flow). */
	FLOW_F_ESTABLISHED = 2,
	/* A UDP flow (ct_slot.meta only): its idle limit is UDP's. */
	FLOW_F_UDP = 4,
	/* Full NAT keeps the flow's SNAT port (network order) in the top half
	 * of the flags (ct_slot.meta, half_flow.flags). */
	FLOW_SNAT_PORT_SHIFT = 16,
};

/* A NAT flow's reply translation, keyed by the reply's 5-tuple as it
 * arrives from the backend (map nat_flows): source the backend, destination
 * the client (nat) or the SNAT address and port (full NAT). */
/* A next hop bpf_fib_lookup gave, reused for nat_config.fib_cache_ticks
 * (fib.h): the FIB lookup is most of a NAT packet's cost. */
struct next_hop {
	__u8 dmac[6];
	__u8 smac[6];
	__u32 ifindex;    /* egress, one of tx_ports */
	__u32 in_ifindex; /* the ingress it was looked up for */
	__u16 max_len;    /* the largest packet that passed the MTU check */
	__u16 pad;
	__u64 stamp;      /* bpf_jiffies64 of the lookup; 0: none */
};

struct nat_state {
	__u8 vip[16];    /* the reply's new source */
	__u8 client[16]; /* full NAT: the reply's new destination */
	__u16 vip_port;    /* network byte order */
	__u16 client_port; /* network byte order; full NAT only */
	__u32 vip_id;
	__u32 flags;     /* NAT_F_* */
	__u32 pad;
	__u64 last_seen; /* bpf_jiffies64, refreshed as the flow's ct_slot.stamp */
	struct next_hop nh; /* toward the client, for the replies */
};

enum nat_flags {
	NAT_F_CLOSING = 1, /* FIN or RST seen either way: reclaimed after nat_config.closing_ticks */
	NAT_F_FULL = 2,    /* a full-NAT mapping: holds an SNAT port */
	NAT_F_REPLIED = 4, /* the backend answered (for TCP its SYN-ACK) */
	/* The client spoke after the backend's answer (for TCP the ACK of
	 * the SYN-ACK): idle for nat_config.tcp/udp_idle_ticks. Without it
	 * the translation is a half-open flow's, reclaimed after
	 * cfg_half_ticks idle, and its flow has a way in ct_half that may be
	 * given to a new flow (early drop), the translation with it. */
	NAT_F_ESTABLISHED = 8,
};

/* Set by the loader at load (map nat_params, one entry): ticks need the
 * kernel's measured HZ, which a const of the object cannot wait for. */
struct nat_config {
	__u16 snat_port_lo;    /* host order */
	__u16 pad;
	__u32 snat_port_count; /* >= 1 */
	__u64 tcp_idle_ticks;  /* an idle TCP translation may be reclaimed after this */
	__u64 udp_idle_ticks;
	__u64 closing_ticks;   /* after a FIN or RST */
	__u64 fib_cache_ticks; /* how long a next hop is reused (struct next_hop) */
};

/*
 * The half-open table (map ct_half): flows that saw only their opening (a
 * SYN, a first UDP datagram, the first packet seen of a flow picked up
 * mid-stream). A flow moves to the connection table on its second packet
 * (DR), or on its client's packet after the backend's answer (NAT), so a
 * flood of openings never evicts an established flow. The table is an
 * array of buckets of HALF_WAYS ways, a flow's bucket its 5-tuple hash's;
 * each bucket has a lock, so a way is never read half written. A way is
 * free when empty, closing or idle beyond cfg_half_ticks; a new flow in a
 * bucket without a free way takes the least recently used way of the VIP
 * that holds the most ways of the bucket, counting the new flow as one of
 * its own VIP's (a tie goes against it): a flood of one VIP takes its own
 * ways, never another VIP's while it holds more of them (conntrack.h).
 */
enum {
	HALF_WAYS = 8,
};

struct half_flow {
	struct flow_key key;
	__u32 vip_id;     /* 0: a free way */
	__u32 backend_id;
	__u32 flags;      /* as ct_slot.meta: FLOW_F_*, a full-NAT flow's SNAT port */
	__u32 stamp;      /* low 32 bits of bpf_jiffies64 at the flow's last packet: its expiry */
	/* half_bucket.seq at the flow's last packet: which of two flows is
	 * older, where the stamps (a tick is 4 ms at HZ=250, hundreds of SYNs
	 * in a flood) are mostly equal. */
	__u32 seq;
	__u32 pad;
};

struct half_bucket {
	struct bpf_spin_lock lock;
	__u32 seq; /* counts the bucket's writes (wrapping) */
	struct half_flow ways[HALF_WAYS];
};

struct lb_counters {
	__u64 packets;
	__u64 bytes;
	__u64 flows;
};
