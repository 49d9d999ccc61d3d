/* types.h: every struct and enum shared with Go (exported by bpf2go -type). */
#pragma once

#include <linux/types.h>

/* Addresses are 16 bytes; IPv4 is stored IPv4-mapped (::ffff:a.b.c.d) so
 * Go fills them with netip.Addr.As16(). Ports are in network byte order. */

enum fwd_mode {
	FWD_MODE_DR = 1,
};

/* How the scheduler hashes a new flow into the VIP's lookup table. */
enum sched_kind {
	SCHED_MAGLEV = 1, /* 5-tuple hash */
	SCHED_SH = 2,     /* source address hash */
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
	DROP_REASON_MAX = 8,
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
};

struct flow_key {
	__u8 src[16];
	__u8 dst[16];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct flow_val {
	__u32 backend_id;
	__u32 flags; /* FLOW_F_* */
	__u64 last_seen; /* bpf_jiffies64 (kernel ticks), refreshed every FLOW_TOUCH_TICKS */
};

enum flow_flags {
	/* A TCP FIN or RST was seen: the flow is ending, it no longer counts
	 * as open, and a SYN on the same 5-tuple starts a new flow. */
	FLOW_F_CLOSING = 1,
};

struct lb_counters {
	__u64 packets;
	__u64 bytes;
	__u64 flows;
};
