/* sched_algo.h: placing a new flow by the VIP's scheduler: rr, wrr, lc, wlc (over the VIP's sched_set), random (over its lookup table), persistence; maglev and sh are schedule() in sched.h. */
#pragma once

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "maps.h"
#include "parse.h"
#include "sched.h"
#include "conntrack.h"
#include "flowcount.h"

/* The verifier checks each of these once, on its own (as HALF_FN in
 * conntrack.h): they run only when a flow is placed. */
#define SCHED_FN __attribute__((noinline))

/* x & mask, the mask kept: the compiler knows an index taken modulo a
 * count <= the array's size is in bounds and would drop it, but the
 * verifier cannot tell a modulo computed as x - x / n * n is. */
static __always_inline __u32 bound(__u32 x, __u32 mask)
{
	asm volatile("" : "+r"(x));
	return x & mask;
}

/* Slot slot of the VIP's lookup table: a backend id, or 0. */
static __always_inline __u32 table_backend(__u32 vip_id, __u32 slot)
{
	void *table = bpf_map_lookup_elem(&lookup, &vip_id);
	__u32 *bid;

	if (!table)
		return 0;
	bid = bpf_map_lookup_elem(table, &slot);
	return bid ? *bid : 0;
}

/* This CPU's next turn of the VIP's rr/wrr walk. Each CPU walks the
 * sequence on its own from its own start (the CPU number times the golden
 * ratio, so CPUs that each see a few flows do not all begin at the first
 * member): every CPU's flows follow the weights exactly over each of its
 * cycles, and the VIP's over all CPUs within one cycle per CPU. */
static __always_inline __u32 cursor_next(__u32 vip_id)
{
	__u32 *c = bpf_map_lookup_elem(&sched_cursor, &vip_id);
	__u32 turn;

	if (!c)
		return 0;
	turn = *c;
	*c = turn + 1;
	return turn + bpf_get_smp_processor_id() * 0x9e3779b1u;
}

/* least_conns' walk, one member a step of bpf_loop: the verifier checks
 * the step once, where a loop of SCHED_LC_SCAN steps with a compare each
 * would be walked path by path (beyond its budget). */
struct lc_walk {
	const struct sched_set *s;
	__u32 count;
	__u32 j; /* the member of this step */
	__u32 weighted;
	__u32 best; /* 0: none yet */
	__u64 best_c, best_w;
};

static long lc_step(__u32 i, void *data)
{
	struct lc_walk *x = data;
	const struct sched_set *s = x->s;
	__u32 j = bound(x->j, SCHED_SET_MAX - 1); /* j < count <= SCHED_SET_MAX already */
	__u32 bid = s->ids[j];
	__u64 w = x->weighted ? s->weights[j] : 1;
	__s64 *c = bpf_map_lookup_elem(&be_conns, &bid);
	__u64 conns = c && *c > 0 ? *c : 0;

	/* Counts below 2^32 and weights below 2^16: no overflow. */
	if (w && (!x->best || conns * x->best_w < x->best_c * w)) {
		x->best_c = conns;
		x->best_w = w;
		x->best = bid;
	}
	if (++j >= x->count)
		j = 0;
	x->j = j;
	return 0;
}

/* The member of s with the fewest open flows (lc), or per unit of weight
 * (wlc: conns_i * w_best < conns_best * w_i), among SCHED_LC_SCAN members
 * from a random one on (all of them when there are no more): a random
 * start also spreads the new flows among members that tie. */
static __always_inline __u32 least_conns(const struct sched_set *s, __u32 count, int weighted)
{
	struct lc_walk x = {
		.s = s,
		.count = count,
		.j = bpf_get_prandom_u32() % count,
		.weighted = weighted,
		.best_w = 1,
	};

	__u32 n = count < SCHED_LC_SCAN ? count : SCHED_LC_SCAN;

	/* The first member outside bpf_loop: kernels before 6.8 verify a
	 * callback once, with the caller's stack as it is at the call, and
	 * would take x.best == 0 for a fact, removing the compare as dead
	 * code (on 6.1 lc and wlc then took the last member walked). After
	 * this step x.best is a value read from the maps. */
	lc_step(0, &x);
	bpf_loop(n - 1, lc_step, &x, 0);
	return x.best;
}

/* rr, wrr, lc, wlc: the backend for a new flow from the VIP's sched_set,
 * or 0 when it has none (no usable backend: the caller's table path says
 * why). lc and wlc count the flow on its backend. */
SCHED_FN __u32 sched_set_pick(__u32 vip_id, __u32 sched)
{
	struct sched_set *s = bpf_map_lookup_elem(&sched_sets, &vip_id);
	__u32 count, bid = 0, i;

	if (!s)
		return 0;
	count = s->count;
	if (count == 0 || count > SCHED_SET_MAX)
		return 0;
	switch (sched) {
	case SCHED_RR:
		i = cursor_next(vip_id) % count;
		bid = s->ids[bound(i, SCHED_SET_MAX - 1)];
		break;
	case SCHED_WRR: {
		__u32 len = s->seq_len;

		if (len == 0 || len > SCHED_SEQ_MAX)
			return 0;
		i = cursor_next(vip_id) % len;
		i = s->seq[bound(i, SCHED_SEQ_MAX - 1)];
		if (i >= count)
			return 0;
		bid = s->ids[bound(i, SCHED_SET_MAX - 1)];
		break;
	}
	case SCHED_LC:
	case SCHED_WLC:
		bid = least_conns(s, count, sched == SCHED_WLC);
		break;
	}
	return bid;
}

static __always_inline void persist_key_of(struct persist_key *k, const struct flow_key *f, __u32 vip_id)
{
	k->vip_id = vip_id;
	__builtin_memcpy(k->client, f->src, sizeof(k->client));
}

/* The client's backend by persistence, or 0: none recorded, or one past
 * the VIP's timeout, or whose backend is gone, down, reassigned, or takes
 * no new flows (drained, full, standby): the caller then schedules and
 * records its choice. A hit is stamped now: the timeout counts from the
 * client's last new flow. */
SCHED_FN __u32 persist_get(const struct flow_key *f, __u32 vip_id)
{
	struct persist_timeout *vp = bpf_map_lookup_elem(&vip_persist, &vip_id);
	struct persist_key k = {};
	struct persist_val *v;
	struct backend *be;
	__u64 now;
	__u32 bid;

	if (!f || !vp)
		return 0;
	persist_key_of(&k, f, vip_id);
	v = bpf_map_lookup_elem(&persist, &k);
	if (!v)
		return 0;
	now = bpf_jiffies64();
	if (now - v->stamp > vp->ticks)
		return 0;
	bid = v->backend_id;
	be = backend_for(bid, vip_id);
	if (!be || (be->flags & BACKEND_F_NO_NEW))
		return 0;
	v->stamp = now;
	return bid;
}

/* Records the client's backend. Failure (an LRU under pressure) only
 * loses the client's persistence. */
static __always_inline void persist_put(const struct flow_key *f, __u32 vip_id, __u32 bid)
{
	struct persist_key k = {};
	struct persist_val v = {.backend_id = bid, .stamp = bpf_jiffies64()};

	persist_key_of(&k, f, vip_id);
	bpf_map_update_elem(&persist, &k, &v, BPF_ANY);
}

/* Returns the backend id for a flow to place, or 0 with *reason set. A
 * packet that opens a flow (a TCP SYN, a UDP datagram: an untracked UDP
 * flow's first, as far as this node knows) goes by the VIP's persistence,
 * then its scheduler; any other packet (TCP without SYN: a flow placed
 * before a restart or by another LB node) takes the table's 5-tuple slot
 * whatever the scheduler (schedule), which only maglev and sh placed it
 * by. */
static __always_inline __u32 sched_new_flow(const struct pkt *p, const struct vip_meta *meta, enum drop_reason *reason)
{
	__u32 vip_id = meta->vip_id;
	__u8 sched = meta->sched;
	int persist = meta->flags & VIP_F_PERSIST;
	__u32 bid = 0;

	if (p->flow.proto == IPPROTO_TCP && !(p->tcp & PKT_TCP_SYN))
		return schedule(p, meta, reason);
	if (persist)
		bid = persist_get(&p->flow, vip_id);
	if (!bid) {
		switch (sched) {
		case SCHED_RR:
		case SCHED_WRR:
		case SCHED_LC:
		case SCHED_WLC:
			bid = sched_set_pick(vip_id, sched);
			break;
		case SCHED_RANDOM:
			bid = table_backend(vip_id, bpf_get_prandom_u32() % cfg_lookup_size);
			break;
		}
		/* maglev, sh, or no set or table slot: the table decides, and
		 * says why there is no backend. */
		if (!bid)
			bid = schedule(p, meta, reason);
		if (!bid)
			return 0;
		if (persist)
			persist_put(&p->flow, vip_id, bid);
	}
	if (sched == SCHED_LC || sched == SCHED_WLC)
		open_flows_inc(bid);
	return bid;
}
