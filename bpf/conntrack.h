/* conntrack.h: the connection tables: the LRU one that pins an established flow to its backend, and the half-open one (ct_half) with its early drop. */
#pragma once

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "maps.h"
#include "parse.h"
#include "sched.h"
#include "flowcount.h"

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
 * RST marks the entry closing, written once per flow, not per packet, and
 * counts the flow off its backend's open flows (lc, wlc).
 * Plain read-modify-writes: RSS keeps a flow's packets on one CPU (and the
 * atomic or would need -mcpu=v3). */
static __always_inline int conntrack_flagged(struct flow_val *v, __u8 tcp)
{
	if ((tcp & PKT_TCP_SYN) && (v->flags & FLOW_F_CLOSING))
		return 0;
	if ((tcp & PKT_TCP_END) && !(v->flags & FLOW_F_CLOSING)) {
		v->flags |= FLOW_F_CLOSING;
		open_flows_dec(v->backend_id);
	}
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
 * flow moved off an unusable backend keeps its state (old_flags, when
 * known) unless a SYN starts it afresh, and a FIN or RST (a flow that ends
 * as it is placed) is closing. A TCP packet without SYN is of an
 * established connection even when it is the first one seen (after an
 * eviction or a restart); a UDP datagram is only when an entry shows one
 * came before it. */
static __always_inline __u32 conntrack_new_flags(int known, __u32 old_flags, const struct pkt *p)
{
	__u32 flags = 0;

	if (known && !(p->tcp & PKT_TCP_SYN))
		flags = (old_flags & FLOW_F_CLOSING) | FLOW_F_ESTABLISHED;
	if (p->flow.proto == IPPROTO_TCP && !(p->tcp & PKT_TCP_SYN))
		flags |= FLOW_F_ESTABLISHED;
	if (p->tcp & PKT_TCP_END)
		flags |= FLOW_F_CLOSING;
	return flags;
}

/* Where a placed flow's entry was: none, the connection table's, or a way
 * of ct_half. */
enum flow_home {
	FLOW_NONE = 0,
	FLOW_IN_CT = 1,
	FLOW_IN_HALF = 2,
};

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

/*
 * The half-open table (ct_half, struct half_bucket in types.h). A flow
 * enters it on its first packet and leaves it for the connection table
 * when it is established (the callers decide when); until then its way
 * may be taken by a new flow: free ways first (empty, closing, or idle
 * beyond cfg_half_ticks), then, in a bucket of live flows, the least
 * recently used way (by the bucket's sequence) of the VIP that holds the
 * most ways of the bucket counting the new flow as one of its VIP's, a tie
 * going against the new flow's VIP. A flood of one VIP then takes its own
 * ways: another VIP's flow loses its way only to a flow of a VIP that
 * would hold more ways than it, which a flood does not. The bucket is the
 * 5-tuple's Maglev hash (flow_hash) modulo cfg_half_buckets.
 *
 * Every write, and every read whose result is used, holds the bucket's
 * lock, so a way is never read half written by another CPU: under it only
 * loads, stores and compares, no helper call (the verifier's rule).
 *
 * The three accessors are global functions (HALF_FN): the verifier checks
 * each once, on its own, where an inlined copy would be walked again for
 * every state of every caller (which exceeded its budget). A call costs a
 * few instructions, and only packets of flows the connection table does
 * not hold make one: the established path makes none.
 */
#define HALF_FN __attribute__((noinline))

/* 5-tuples compared as five words (flow keys are 8-byte aligned in map
 * values and in struct pkt), with no branch per word. */
static __always_inline int flow_key_eq(const struct flow_key *a, const struct flow_key *b)
{
	const __u64 *x = (const __u64 *)(const void *)a;
	const __u64 *y = (const __u64 *)(const void *)b;

	return ((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3]) | (x[4] ^ y[4])) == 0;
}

static __always_inline __u32 half_hash(const struct flow_key *k)
{
	return flow_hash(k, SCHED_MAGLEV);
}

static __always_inline struct half_bucket *half_bucket_of(__u32 h)
{
	__u32 idx = h % cfg_half_buckets;

	return bpf_map_lookup_elem(&ct_half, &idx);
}

static __always_inline __s64 *half_count_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&half_count, &zero);
}

/* now is the low 32 bits of bpf_jiffies64: the difference is right for
 * any idle time below 2^31 ticks (24 days at HZ=1000). */
static __always_inline int half_expired(const struct half_flow *w, __u32 now)
{
	return now - w->stamp > cfg_half_ticks;
}

/* A way in use that a new flow takes without evicting anyone. */
static __always_inline int half_free(const struct half_flow *w, __u32 now)
{
	return (w->flags & FLOW_F_CLOSING) || half_expired(w, now);
}

/* 1 if a == b, else 0, computed without a branch and hidden from the
 * compiler, which would make it one: a count of these then stays a range
 * to the verifier, not one exact value per path to walk. */
static __always_inline __u64 same_u32(__u32 a, __u32 b)
{
	__u64 x = a ^ b;

	asm volatile("" : "+r"(x));
	return (x - 1) >> 63;
}

/* half_get's mode: a packet's TCP flags (PKT_TCP_*), and HALF_TOUCH. */
#define HALF_TOUCH 0x100

/* Finds the key's flow in the half-open table (hash h) and copies its way
 * to *out, stamp as it was. With HALF_TOUCH in mode the way is stamped now
 * and marked closing on a FIN or RST (mode's PKT_TCP_*): a packet of the
 * flow. (A BPF function takes five arguments at most.) */
HALF_FN int half_get(const struct flow_key *key, __u32 h, __u32 now, __u32 mode, struct half_flow *out)
{
	struct half_bucket *b = half_bucket_of(h);
	int found = 0;

	if (!b || !key || !out)
		return 0;
	/* First without the lock: a new flow, whose packet this mostly is,
	 * is not there, and a miss needs no lock (a lock round trip is a
	 * tenth of a new flow's cost). A way written meanwhile may read
	 * torn: a false hit is checked again under the lock; a false miss
	 * would need the flow's own packets on two CPUs at once (RSS keeps
	 * them on one), and half_put finds the flow's way anyway. */
#pragma unroll
	for (int i = 0; i < HALF_WAYS; i++) {
		struct half_flow *w = &b->ways[i];

		found |= w->vip_id && flow_key_eq(&w->key, key);
	}
	if (!found)
		return 0;
	found = 0;
	bpf_spin_lock(&b->lock);
#pragma unroll
	for (int i = 0; i < HALF_WAYS; i++) {
		struct half_flow *w = &b->ways[i];

		if (found || !w->vip_id || !flow_key_eq(&w->key, key))
			continue;
		found = 1;
		out->vip_id = w->vip_id;
		out->backend_id = w->backend_id;
		out->flags = w->flags;
		out->stamp = w->stamp;
		if (mode & HALF_TOUCH) {
			w->stamp = now;
			w->seq = ++b->seq;
			if (mode & PKT_TCP_END)
				w->flags |= FLOW_F_CLOSING;
		}
	}
	bpf_spin_unlock(&b->lock);
	return found;
}

/*
 * Records a flow as half-open (in: its way as it is to be, stamp the time
 * now; h: its hash): in its own way if it has one, else in an empty way,
 * else in a free one, else in the way chosen as above (an early drop).
 * Returns 1 for an early drop, with *gone the flow that lost its way, for
 * the caller to drop its NAT translation; 0 otherwise (gone->vip_id 0). A
 * free way's former flow keeps its translation until that expires too (a
 * one-way UDP flow's replies keep it alive, and the way was only its
 * client's clock).
 */
HALF_FN int half_put(const struct half_flow *in, __u32 h, struct half_flow *gone)
{
	struct half_bucket *b = half_bucket_of(h);
	__s64 *count = half_count_get();
	__u32 take = HALF_WAYS, own = HALF_WAYS, empty = HALF_WAYS;
	struct half_flow *w;
	const struct flow_key *key;
	__u32 now, vip_id;
	int live = 0;

	if (!in || !gone)
		return 0;
	gone->vip_id = 0;
	if (!b)
		return 0;
	key = &in->key;
	now = in->stamp;
	vip_id = in->vip_id;
	bpf_spin_lock(&b->lock);
#pragma unroll
	for (int i = 0; i < HALF_WAYS; i++) {
		w = &b->ways[i];
		if (!w->vip_id) {
			if (empty == HALF_WAYS)
				empty = i;
		} else if (flow_key_eq(&w->key, key)) {
			own = i;
		} else if (take == HALF_WAYS && half_free(w, now)) {
			take = i;
		}
	}
	if (own < HALF_WAYS) {
		take = own;
	} else if (empty < HALF_WAYS) {
		take = empty;
	} else if (take == HALF_WAYS) {
		/* Every way holds a live flow of another 5-tuple. Score each
		 * way: its VIP's ways in the bucket (the new flow counted as
		 * one of its VIP's), then whether it is the new flow's VIP,
		 * then how long ago it was used, in the bucket's writes; the
		 * highest score goes. */
		__u64 best = 0;

		take = 0;
#pragma unroll
		for (int i = 0; i < HALF_WAYS; i++) {
			__u32 vi = b->ways[i].vip_id;
			__u64 same = same_u32(vi, vip_id);
			__u64 n = same;
			__u64 score;

#pragma unroll
			for (int j = 0; j < HALF_WAYS; j++)
				n += same_u32(b->ways[j].vip_id, vi);
			score = n << 33 | same << 32 | (__u32)(b->seq - b->ways[i].seq);
			if (score > best) {
				best = score;
				take = i;
			}
		}
		live = 1;
	}
	w = &b->ways[take & (HALF_WAYS - 1)];
	if (live) {
		gone->key = w->key;
		gone->vip_id = w->vip_id;
		gone->backend_id = w->backend_id;
		gone->flags = w->flags;
		gone->stamp = w->stamp;
	}
	if (!w->vip_id && count)
		*count += 1;
	*w = *in;
	w->seq = ++b->seq;
	bpf_spin_unlock(&b->lock);
	return live;
}

/* Frees the way of the key's flow (hash h), which has moved to the
 * connection table. */
HALF_FN int half_del(const struct flow_key *key, __u32 h)
{
	struct half_bucket *b = half_bucket_of(h);
	__s64 *count = half_count_get();

	if (!b || !key)
		return 0;
	bpf_spin_lock(&b->lock);
#pragma unroll
	for (int i = 0; i < HALF_WAYS; i++) {
		struct half_flow *w = &b->ways[i];

		if (w->vip_id && flow_key_eq(&w->key, key)) {
			w->vip_id = 0;
			if (count)
				*count -= 1;
		}
	}
	bpf_spin_unlock(&b->lock);
	return 0;
}
