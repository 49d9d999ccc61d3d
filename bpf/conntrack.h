/* conntrack.h: the LRU connection table that pins an established flow to its backend. */
#pragma once

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "maps.h"
#include "parse.h"

/* A tracked flow's stamp is rewritten at most every this many kernel ticks
 * (0.26 s at HZ=1000, 2.6 s at HZ=100): the idle limits it serves are
 * minutes (loader.OpenFlowIdle*), and a write per packet would bounce the
 * entry's cache line between CPUs. */
#define FLOW_TOUCH_TICKS 256

/* The flow clock is bpf_jiffies64: the verifier inlines it on x86-64 into
 * one load of the kernel's jiffies (~0.3 ns), where bpf_ktime_get_coarse_ns
 * is a helper call (~7 ns). The loader converts ticks with the measured
 * tick rate. */

/* A backend entry is usable for a VIP while it is valid, not down and still
 * owned by that VIP: ids are reused, and a stale flow must not follow an id
 * that now belongs to another VIP. A down backend's entry stays VALID (ids
 * and counters survive a flap) but takes no packets: its flows are placed
 * again. Both flags are tested with one compare. */
static __always_inline int backend_usable(const struct backend *be)
{
	return (be->flags & (BACKEND_F_VALID | BACKEND_F_DOWN)) == BACKEND_F_VALID;
}

static __always_inline struct backend *backend_for(__u32 id, __u32 vip_id)
{
	struct backend *be = bpf_map_lookup_elem(&backends, &id);

	if (!be || !backend_usable(be) || be->vip_id != vip_id)
		return NULL;
	return be;
}

/* Does the VIP with this id exist and is it the one the packet is
 * addressed to? vip_keys holds each live id's key (all zero for a free
 * id): a flow whose VIP was deleted, or whose VIP id now names another
 * VIP, fails here and takes the VIP lookup path, as if untracked. */
static __always_inline int vip_id_matches(__u32 vip_id, const struct pkt *p)
{
	struct vip_key *k = bpf_map_lookup_elem(&vip_keys, &vip_id);
	const __u64 *a, *b;

	if (!k)
		return 0;
	/* Word compares, not the byte or half-word loads the 2-byte
	 * alignment of the types would give: map values are 8-byte aligned,
	 * and so is struct pkt, with dst at offset 16. */
	a = (const __u64 *)(const void *)k->addr;
	b = (const __u64 *)(const void *)p->flow.dst;
	return a[0] == b[0] && a[1] == b[1] && k->port == p->flow.dport &&
	       k->proto == p->flow.proto;
}

/* The established-flow path, before the VIP map: the flow's entry names
 * its backend, the backend names its VIP (backend.vip_id), and vip_keys
 * confirms that VIP is the packet's. Returns the usable backend, or NULL
 * (no entry, a backend gone, down or reassigned, a VIP gone or renumbered)
 * for the VIP lookup path. *fv is the entry, if any. */
static __always_inline struct backend *conntrack_backend(const struct pkt *p, struct flow_val **fv)
{
	struct flow_val *v = bpf_map_lookup_elem(&conntrack, &p->flow);
	struct backend *be;
	__u32 bid;

	*fv = v;
	if (!v)
		return NULL;
	bid = v->backend_id;
	be = bpf_map_lookup_elem(&backends, &bid);
	if (!be || !backend_usable(be) || !vip_id_matches(be->vip_id, p))
		return NULL;
	return be;
}

/* Stamps a tracked flow that keeps its backend; the entry is written at
 * most every FLOW_TOUCH_TICKS, not per packet. The LRU lookup itself marks
 * the entry as recently used. */
static __always_inline void conntrack_touch(struct flow_val *v)
{
	__u64 now = bpf_jiffies64();

	if (now - v->last_seen > FLOW_TOUCH_TICKS)
		v->last_seen = now;
}

/* A tracked flow's packet with SYN, FIN or RST (the rare case; plain
 * packets never get here). Returns whether the packet stays on the entry's
 * backend: a SYN on a closing entry is a new connection on a reused client
 * port and is placed again, a SYN on a live entry is a retransmit. FIN or
 * RST marks the entry closing, written once per flow, not per packet.
 * Plain read-modify-writes: RSS keeps a flow's packets on one CPU (and the
 * atomic or would need -mcpu=v3). */
static __always_inline int conntrack_flagged(struct flow_val *v, __u8 tcp)
{
	if ((tcp & PKT_TCP_SYN) && (v->flags & FLOW_F_CLOSING))
		return 0;
	if ((tcp & PKT_TCP_END) && !(v->flags & FLOW_F_CLOSING))
		v->flags |= FLOW_F_CLOSING;
	return 1;
}

/* Marks a tracked flow established on its first packet that is not a SYN
 * (conntrack_backend found the entry, so for UDP this is at least the
 * second datagram): written once per flow, a load and a compare after. */
static __always_inline void conntrack_established(struct flow_val *v, __u8 tcp)
{
	if (!(tcp & PKT_TCP_SYN) && !(v->flags & FLOW_F_ESTABLISHED))
		v->flags |= FLOW_F_ESTABLISHED;
}

/* The flags of an entry about to be (re)written for a placed packet: a
 * flow moved off an unusable backend keeps its state unless a SYN starts
 * it afresh, and a FIN or RST (a flow that ends as it is placed) is
 * closing. A TCP packet without SYN is of an established connection even
 * when it is the first one seen (after an LRU eviction or a restart); a
 * UDP datagram is only when an entry shows one came before it. */
static __always_inline __u32 conntrack_new_flags(const struct flow_val *old, const struct pkt *p)
{
	__u32 flags = 0;

	if (old && !(p->tcp & PKT_TCP_SYN))
		flags = (old->flags & FLOW_F_CLOSING) | FLOW_F_ESTABLISHED;
	if (p->flow.proto == IPPROTO_TCP && !(p->tcp & PKT_TCP_SYN))
		flags |= FLOW_F_ESTABLISHED;
	if (p->tcp & PKT_TCP_END)
		flags |= FLOW_F_CLOSING;
	return flags;
}

/* Failure (an LRU under memory pressure) is not fatal: the next packet of
 * the flow is scheduled again from the same table, to the same backend. */
static __always_inline void conntrack_insert(const struct pkt *p, __u32 backend_id, __u32 flags)
{
	struct flow_val v = {
		.backend_id = backend_id,
		.flags = flags,
		.last_seen = bpf_jiffies64(),
	};

	bpf_map_update_elem(&conntrack, &p->flow, &v, BPF_ANY);
}
