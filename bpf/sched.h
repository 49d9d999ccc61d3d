/* sched.h: choosing a new flow's backend from the VIP's lookup table, and the flow hash. */
#pragma once

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "maps.h"
#include "parse.h"

/* A fixed seed, not a random one: every LB node with the same lookup table
 * must map a flow to the same slot, so flows survive a move between nodes. */
#define FLOW_HASH_SEED 0x9e3779b9

/* MurmurHash3 (x86_32) block and finalisation steps. */
static __always_inline __u32 rotl32(__u32 x, __u32 r)
{
	return (x << r) | (x >> (32 - r));
}

static __always_inline __u32 hash_mix(__u32 h, __u32 k)
{
	k *= 0xcc9e2d51;
	k = rotl32(k, 15);
	k *= 0x1b873593;
	h ^= k;
	h = rotl32(h, 13);
	return h * 5 + 0xe6546b64;
}

static __always_inline __u32 hash_final(__u32 h, __u32 len)
{
	h ^= len;
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

static __always_inline __u32 hash_addr(__u32 h, const __u8 addr[16])
{
	__u32 w;

#pragma unroll
	for (int i = 0; i < 4; i++) {
		__builtin_memcpy(&w, addr + 4 * i, sizeof(w));
		h = hash_mix(h, w);
	}
	return h;
}

static __always_inline __u32 flow_hash(const struct flow_key *k, __u8 sched)
{
	__u32 h = hash_addr(FLOW_HASH_SEED, k->src);

	if (sched == SCHED_SH)
		return hash_final(h, 16);
	h = hash_addr(h, k->dst);
	h = hash_mix(h, ((__u32)k->sport << 16) | k->dport);
	h = hash_mix(h, k->proto);
	return hash_final(h, 40);
}

/* Why a VIP has no backend for a new flow: every configured backend failed
 * its checks, every one that passes them is at its connection cap (the
 * control plane says which in vip_meta), or none is in service. */
static __always_inline enum drop_reason no_backend_reason(const struct vip_meta *meta)
{
	if (meta->flags & VIP_F_NO_HEALTHY)
		return DROP_NO_HEALTHY_BACKEND;
	if (meta->flags & VIP_F_BACKENDS_FULL)
		return DROP_BACKENDS_FULL;
	return DROP_NO_BACKEND;
}

/* Returns the backend id for a new flow, or 0 with *reason set. */
static __always_inline __u32 schedule(const struct pkt *p, const struct vip_meta *meta,
				      enum drop_reason *reason)
{
	__u32 vip_id = meta->vip_id;
	__u8 sched = meta->sched;
	__u32 slot, *bid;
	void *table;

	/* A TCP packet of an unknown flow that is not a SYN was placed earlier,
	 * before a restart or by another LB node: only the 5-tuple hash, which
	 * every node shares whatever the VIP's scheduler, finds it again. */
	if (p->flow.proto == IPPROTO_TCP && !(p->tcp & PKT_TCP_SYN))
		sched = SCHED_MAGLEV;
	slot = flow_hash(&p->flow, sched) % cfg_lookup_size;

	table = bpf_map_lookup_elem(&lookup, &vip_id);
	if (!table) {
		*reason = no_backend_reason(meta);
		return 0;
	}
	/* slot < cfg_lookup_size == the inner map's size; the array lookup
	 * checks the bound again, so a NULL here is only a defensive path. */
	bid = bpf_map_lookup_elem(table, &slot);
	if (!bid || *bid == 0) {
		*reason = no_backend_reason(meta);
		return 0;
	}
	return *bid;
}
