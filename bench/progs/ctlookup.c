//go:build ignore

/* ctlookup.c: the connection table's established lookup alone, side by side with the LRU hash it replaced: a program per table that times a lookup and one that fills. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>

/* The product's table, its lookup, touch and insert as they are. Only
 * what these programs call is loaded (the maps they use, sized from Go). */
#include "../../bpf/conntrack.h"

char LICENSE[] SEC("license") = "GPL";

/* The LRU hash's value as the replaced table had it (struct flow_val):
 * backend, flags, and the bpf_jiffies64 stamp, 16 bytes. */
struct lru_val {
	__u32 backend_id;
	__u32 flags;
	__u64 last_seen;
};

/* The replaced table: an LRU hash of 5-tuples, its LRU list common to the
 * CPUs, sized from Go. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1);
	__type(key, struct flow_key);
	__type(value, struct lru_val);
} cl_lru SEC(".maps");

/* Timed runs that found no flow: the benchmark checks it stays 0. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} cl_miss SEC(".maps");

/* The frame's 5-tuple as xdplb keys it (IPv4-mapped addresses, padding
 * zero), from an IPv4 TCP frame without options: the same few loads for
 * both tables, so they cancel in the comparison. */
static __always_inline int cl_key(struct xdp_md *ctx, struct flow_key *k)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct tcphdr *tcp = (void *)(ip + 1);

	if ((void *)(tcp + 1) > data_end)
		return 0;
	k->src[10] = k->src[11] = 0xff;
	k->dst[10] = k->dst[11] = 0xff;
	__builtin_memcpy(&k->src[12], &ip->saddr, 4);
	__builtin_memcpy(&k->dst[12], &ip->daddr, 4);
	k->sport = tcp->source;
	k->dport = tcp->dest;
	k->proto = IPPROTO_TCP;
	return 1;
}

/* Swap the MACs and send: the floor's own work. */
static __always_inline int cl_tx(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	unsigned char tmp[ETH_ALEN];

	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	__builtin_memcpy(tmp, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, tmp, ETH_ALEN);
	return XDP_TX;
}

static __always_inline int cl_missed(void)
{
	__u32 zero = 0;
	__u64 *c = bpf_map_lookup_elem(&cl_miss, &zero);

	if (c)
		*c += 1;
	return XDP_PASS;
}

/* The replaced established path's table work: the LRU lookup (which
 * marks the entry used) and the stamp, rewritten at most every
 * FLOW_TOUCH_TICKS, as conntrack_touch did. */
SEC("xdp")
int cl_lru_lookup(struct xdp_md *ctx)
{
	struct flow_key k = {};
	struct lru_val *v;
	__u64 now;

	if (!cl_key(ctx, &k))
		return XDP_DROP;
	v = bpf_map_lookup_elem(&cl_lru, &k);
	if (!v)
		return cl_missed();
	now = bpf_jiffies64();
	if (now - v->last_seen > FLOW_TOUCH_TICKS)
		v->last_seen = now;
	return cl_tx(ctx);
}

/* Puts the frame's flow into the LRU hash unless it is there. */
SEC("xdp")
int cl_lru_fill(struct xdp_md *ctx)
{
	struct flow_key k = {};
	struct lru_val v = {.backend_id = 1, .flags = FLOW_F_ESTABLISHED};

	if (!cl_key(ctx, &k))
		return XDP_DROP;
	if (bpf_map_lookup_elem(&cl_lru, &k))
		return cl_tx(ctx);
	v.last_seen = bpf_jiffies64();
	if (bpf_map_update_elem(&cl_lru, &k, &v, BPF_NOEXIST))
		return XDP_DROP;
	return cl_tx(ctx);
}

/* The cache-line table's established path's table work: the 5-tuple's
 * hash (the LRU hashes inside its lookup), the lookup and the touch, the
 * product's own functions. */
SEC("xdp")
int cl_new_lookup(struct xdp_md *ctx)
{
	struct flow_key k = {};
	struct ct_slot *s;

	if (!cl_key(ctx, &k))
		return XDP_DROP;
	s = conntrack_lookup(flow_hash64(&k));
	if (!s)
		return cl_missed();
	conntrack_touch(s);
	return cl_tx(ctx);
}

/* Puts the frame's flow into the cache-line table (conntrack_insert, as
 * a flow's second packet does) unless it is there. */
SEC("xdp")
int cl_new_fill(struct xdp_md *ctx)
{
	struct flow_key k = {};
	__u64 h;

	if (!cl_key(ctx, &k))
		return XDP_DROP;
	h = flow_hash64(&k);
	if (conntrack_lookup(h))
		return cl_tx(ctx);
	if (!conntrack_insert(&k, h, 1, FLOW_F_ESTABLISHED))
		return XDP_DROP;
	return cl_tx(ctx);
}
