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

/* Size of the lookup tables (prime); the loader sets it together with the
 * inner map size so the modulo below never runs past a table. */
volatile const __u32 cfg_lookup_size = DEFAULT_LOOKUP_SIZE;

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

/* 5-tuple -> backend, shared by all CPUs: a flow whose packets arrive on
 * several CPUs (RSS changes, several queues) is found on each. The LRU list
 * is the common one, not per-CPU (BPF_F_NO_COMMON_LRU): each CPU still takes
 * free entries from a local cache refilled 128 at a time, so the global
 * lock is rare, and a new flow measured ~10% cheaper than with per-CPU
 * lists, which rotate and scan their list on every insert. It also lets one
 * CPU use the whole table: per-CPU lists give each CPU size/CPUs entries. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, DEFAULT_CONNTRACK_SIZE);
	__type(key, struct flow_key);
	__type(value, struct flow_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} conntrack SEC(".maps");

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
 * daemon's sweep. BPF_F_NO_PREALLOC: memory grows with the NAT flows, so a
 * DR-only LB pays nothing for a table sized like the connection table. */
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
