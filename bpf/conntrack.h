/* conntrack.h: the LRU connection table that pins an established flow to its backend. */
#pragma once

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "maps.h"
#include "parse.h"

#define NSEC_PER_SEC 1000000000ULL

/* A backend entry is usable for a VIP while it is valid and still owned by
 * that VIP: ids are reused, and a stale flow must not follow an id that now
 * belongs to another VIP. */
static __always_inline struct backend *backend_for(__u32 id, __u32 vip_id)
{
	struct backend *be = bpf_map_lookup_elem(&backends, &id);

	if (!be || !(be->flags & BACKEND_F_VALID) || be->vip_id != vip_id)
		return NULL;
	return be;
}

/* The established-flow path: one lookup, plus a coarse clock read; the
 * entry is written at most once a second, not per packet. The LRU lookup
 * itself marks the entry as recently used. */
static __always_inline struct flow_val *conntrack_lookup(const struct pkt *p)
{
	struct flow_val *v = bpf_map_lookup_elem(&conntrack, &p->flow);
	__u64 now;

	if (!v)
		return NULL;
	now = bpf_ktime_get_coarse_ns();
	if (now - v->last_seen_ns > NSEC_PER_SEC)
		v->last_seen_ns = now;
	return v;
}

/* Failure (an LRU under memory pressure) is not fatal: the next packet of
 * the flow is scheduled again from the same table, to the same backend. */
static __always_inline void conntrack_insert(const struct pkt *p, __u32 backend_id)
{
	struct flow_val v = {
		.backend_id = backend_id,
		.last_seen_ns = bpf_ktime_get_coarse_ns(),
	};

	bpf_map_update_elem(&conntrack, &p->flow, &v, BPF_ANY);
}
