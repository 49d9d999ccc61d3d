/* maps.h: every map of the data plane; sizes are defaults the loader overrides before load. */
#pragma once

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "types.h"

/* Defaults only: the loader sets the real sizes from its Options, so these
 * just keep the object loadable on its own (bpftool, tests). */
#define DEFAULT_MAX_VIPS 1024
#define DEFAULT_MAX_BACKENDS 65536
#define DEFAULT_LOOKUP_SIZE 65537
#define DEFAULT_CONNTRACK_SIZE (1 << 20)
#define DEFAULT_HALF_BUCKETS (DEFAULT_CONNTRACK_SIZE / 4 / HALF_WAYS)
#define DEFAULT_PERSIST_SIZE (DEFAULT_CONNTRACK_SIZE / 8)
/* At most 70% of the slots in use at the design load (loader: ctBuckets). */
#define DEFAULT_CT_BUCKETS ((DEFAULT_CONNTRACK_SIZE * 10 / 7 + CT_BUCKET_SLOTS - 1) / CT_BUCKET_SLOTS)

/* Size of the lookup tables (prime); the loader sets it together with the
 * inner map size so the modulo below never runs past a table. */
volatile const __u32 cfg_lookup_size = DEFAULT_LOOKUP_SIZE;

/* The half-open table's buckets (ct_half's size), and how long a half-open
 * flow lives without a packet, in kernel ticks (--half-open-timeout at the
 * measured tick rate; the loader sets both). */
volatile const __u32 cfg_half_buckets = DEFAULT_HALF_BUCKETS;
volatile const __u32 cfg_half_ticks = 60 * 250;

/* The connection table's buckets (conntrack's size), and the seed of the
 * flow hash (flow_hash64, conntrack.h): random per table, kept with it in
 * ct_seed so a restart finds its flows again, and unknown to clients, who
 * then cannot aim a flood of flows at the buckets of another's. */
volatile const __u32 cfg_ct_buckets = DEFAULT_CT_BUCKETS;
volatile const __u64 cfg_ct_seed = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DEFAULT_MAX_VIPS);
	__type(key, struct vip_key);
	__type(value, struct vip_meta);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vips SEC(".maps");

/* VIP id -> its key, or all zero for a free id. The established-flow path
 * finds a flow's VIP through its backend (backend.vip_id) and checks here
 * that this VIP still exists and is the one the packet is addressed to,
 * instead of hashing the packet's (address, port, protocol) into vips. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DEFAULT_MAX_VIPS);
	__type(key, __u32);
	__type(value, struct vip_key);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vip_keys SEC(".maps");

/* The no-VIP pre-filter (vipfilter.h), rebuilt by the loader from all VIPs
 * whenever one is added or removed. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct vip_bitmap);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vip_filter SEC(".maps");

/* Address -> number of VIPs on it. Only the rare paths read it (fragments,
 * IPv6 extension headers, broken L4): there the port is unknown, and the
 * address alone decides between "ours, drop and count" and "not ours, pass". */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DEFAULT_MAX_VIPS);
	__type(key, __u8[16]);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vip_addrs SEC(".maps");

/* Backend id -> backend; id 0 stays empty so a zero lookup slot means "none". */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DEFAULT_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct backend);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} backends SEC(".maps");

/* One lookup table per VIP: slot -> backend id. No BPF_F_INNER_MAP, so the
 * kernel refuses an inner map whose size differs from the template: a table
 * can never be shorter than cfg_lookup_size. BPF_F_MMAPABLE: the loader
 * fills a new table through one mmap and a copy instead of per-entry
 * syscall work; the kernel also refuses tables without it. */
struct lookup_table {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DEFAULT_LOOKUP_SIZE);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, __u32);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, DEFAULT_MAX_VIPS);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct lookup_table); /* must be last: a flexible array */
} lookup SEC(".maps");

/* The connection table (struct ct_bucket, types.h; conntrack.h): flows
 * established, shared by all CPUs, so a flow whose packets arrive on
 * several CPUs is found on each. An array, not a hash map: the program
 * places and expires flows itself, lock-free. BPF_F_MMAPABLE: the loader
 * lists, counts and migrates flows through one mapping of it, with no
 * syscall per entry. Array memory is allocated (vmalloc) and zeroed when
 * the map is made, every page of it resident from then on: the first flows
 * pay no page fault, only the cache and TLB misses of any large table. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DEFAULT_CT_BUCKETS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct ct_bucket);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} conntrack SEC(".maps");

/* The connection table's full keys, by the same bucket index: written when
 * a flow takes a slot, read only by the loader (listing, counts per
 * backend, drain). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DEFAULT_CT_BUCKETS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct ct_bucket_keys);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ct_keys SEC(".maps");

/* cfg_ct_seed as the table was made with it: the loader reads it back on a
 * restart (the program reads the constant). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ct_seed SEC(".maps");

/* Half-open flows (struct half_bucket, types.h): a bucket array rather than
 * an LRU hash, whose victim is the least recently used entry of the whole
 * table whatever its state or VIP. Here the program chooses: free ways
 * first, then the flooded VIP's own. Pinned with the connection table. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DEFAULT_HALF_BUCKETS);
	__type(key, __u32);
	__type(value, struct half_bucket);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ct_half SEC(".maps");

/* Ways of ct_half in use, per CPU: +1 when a free way is taken, -1 when a
 * flow leaves for the connection table; the sum is exact (each change is
 * made under the bucket's lock). Expired ways count until they are reused,
 * as finished flows do in the connection table. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __s64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} half_count SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DEFAULT_MAX_VIPS);
	__type(key, __u32);
	__type(value, struct lb_counters);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vip_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DEFAULT_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct lb_counters);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} backend_stats SEC(".maps");

/* Index: ifindex slot * XDP_ACTION_SLOTS + action. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_IFINDEX_SLOTS * XDP_ACTION_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xdp_actions SEC(".maps");

/* The key type is the enum itself so bpf2go exports it to Go. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DROP_REASON_MAX);
	__type(key, enum drop_reason);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} drops SEC(".maps");

/* Events that are not drops (enum event), per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, EVENT_MAX);
	__type(key, enum event);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} events SEC(".maps");

/* Drops of packets to a VIP, by VIP id * DROP_REASON_MAX + reason: only
 * the drop paths that know the VIP (a new flow refused) count here, beside
 * drops. The loader sizes it with the VIPs. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DEFAULT_MAX_VIPS * DROP_REASON_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vip_drops SEC(".maps");

/* VIP id -> its new-flow rate limit (struct vip_rate), read only for a VIP
 * with VIP_F_RATE_LIMIT. Shared by the CPUs, not per CPU: the limit holds
 * for the VIP whatever RSS does, at the cost of one atomic add on a shared
 * line per flow admitted (never per established packet, nor per refusal). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DEFAULT_MAX_VIPS);
	__type(key, __u32);
	__type(value, struct vip_rate);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vip_rates SEC(".maps");

/* ICMP errors about a VIP's flows forwarded or translated, by VIP id. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DEFAULT_MAX_VIPS);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vip_icmp SEC(".maps");

/* VIP id -> the SNAT address of a full-NAT VIP (IPv4-mapped for IPv4).
 * Looked up by id on every full-NAT packet: an array lookup is inlined. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DEFAULT_MAX_VIPS);
	__type(key, __u32);
	__type(value, __u8[16]);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vip_snat SEC(".maps");

/* Reply 5-tuple -> how to translate it back (struct nat_state). A plain
 * hash, not an LRU: an LRU could evict the translation of a live flow and
 * hand its SNAT port to another, which full NAT must never do. Entries are
 * reclaimed when expired, by the program when it wants the port and by the
 * daemon's sweep, and a half-open flow's (no NAT_F_ESTABLISHED) when its
 * way in ct_half goes to another flow: half-open translations are at most
 * ct_half's ways (plus those whose way was lost, which expire), so a flood
 * of openings leaves the rest of the table to established flows.
 * BPF_F_NO_PREALLOC: memory grows with the NAT flows, so a DR-only LB pays
 * nothing for a table sized like the connection table. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DEFAULT_CONNTRACK_SIZE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct flow_key);
	__type(value, struct nat_state);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nat_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nat_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nat_params SEC(".maps");

/* The attached interfaces, for NAT's redirects: the FIB may name an egress
 * the program is not on, and XDP can only send through one that is. Not
 * pinned: each load fills its own with the interfaces it attaches to. */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, MAX_IFINDEX_SLOTS);
	__type(key, __u32);
	__type(value, struct bpf_devmap_val);
} tx_ports SEC(".maps");

/* Backend id -> its next hop for NAT (struct next_hop), as the FIB gave it
 * lately. Shared by the CPUs: each refreshes it at most once per
 * fib_cache_ticks. Not pinned: a cache, a new program starts empty. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DEFAULT_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct next_hop);
} backend_nh SEC(".maps");

/* VIP id -> its backends for rr, wrr, lc and wlc (struct sched_set), for
 * VIPs with one of those schedulers only. A hash, not an array: a VIP
 * with another scheduler costs nothing, and an update swaps the whole
 * value, so a packet never sees half a set. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DEFAULT_MAX_VIPS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct sched_set);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sched_sets SEC(".maps");

/* VIP id -> the rr/wrr cursor of this CPU: no shared line per new flow.
 * Not pinned: a new program starts its cursors again. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DEFAULT_MAX_VIPS);
	__type(key, __u32);
	__type(value, __u32);
} sched_cursor SEC(".maps");

/* Backend id -> its open flows, for lc and wlc: +1 when a new flow is
 * placed on a backend of an lc/wlc VIP, -1 when a tracked flow first sees
 * a FIN or RST (while above 0); the daemon writes the connection table's
 * count about once a second, which covers flows that end by expiry. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DEFAULT_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, __s64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} be_conns SEC(".maps");

/* VIP id -> its persistence (struct persist_timeout). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DEFAULT_MAX_VIPS);
	__type(key, __u32);
	__type(value, struct persist_timeout);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vip_persist SEC(".maps");

/* (VIP id, client address) -> the client's backend (persistence). An LRU:
 * the clients not seen for longest give way; an entry past its VIP's
 * timeout is ignored and replaced. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, DEFAULT_PERSIST_SIZE);
	__type(key, struct persist_key);
	__type(value, struct persist_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} persist SEC(".maps");
