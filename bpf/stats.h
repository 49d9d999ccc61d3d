/* stats.h: per-CPU counters per VIP, per backend, per XDP action and per drop reason. */
#pragma once

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "maps.h"

/* Per-CPU slots: plain increments, no atomics needed. */
static __always_inline void count_lb(void *map, __u32 id, __u32 bytes, __u64 new_flow)
{
	struct lb_counters *c = bpf_map_lookup_elem(map, &id);

	if (!c)
		return;
	c->packets++;
	c->bytes += bytes;
	c->flows += new_flow;
}

static __always_inline void count_drop(enum drop_reason reason)
{
	__u64 *c = bpf_map_lookup_elem(&drops, &reason);

	if (c)
		*c += 1;
}

/* A drop of a packet to a known VIP: counted by reason, and by VIP and
 * reason. Drop paths only. */
static __always_inline void count_vip_drop(__u32 vip_id, enum drop_reason reason)
{
	__u32 key = vip_id * DROP_REASON_MAX + reason;
	__u64 *c;

	count_drop(reason);
	c = bpf_map_lookup_elem(&vip_drops, &key);
	if (c)
		*c += 1;
}

/* Every verdict leaves through here so xdp_actions sees all of them. */
static __always_inline int count_action(__u32 ingress_ifindex, int action)
{
	__u32 slot = ingress_ifindex;
	__u32 idx;
	__u64 *c;

	if (slot >= MAX_IFINDEX_SLOTS)
		slot = 0;
	/* Unknown actions cannot come from this program; the bound is for
	 * the map index. */
	if ((__u32)action >= XDP_ACTION_SLOTS)
		return action;
	idx = slot * XDP_ACTION_SLOTS + action;
	c = bpf_map_lookup_elem(&xdp_actions, &idx);
	if (c)
		*c += 1;
	return action;
}

static __always_inline void count_event(enum event ev)
{
	__u64 *c = bpf_map_lookup_elem(&events, &ev);

	if (c)
		*c += 1;
}

static __always_inline void count_vip_icmp(__u32 vip_id)
{
	__u64 *c = bpf_map_lookup_elem(&vip_icmp, &vip_id);

	if (c)
		*c += 1;
}
