/* conntrack.h: the connection tables: the cache-line one that pins an established flow to its backend, and the half-open one (ct_half) with its early drop. */
#pragma once

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "maps.h"
#include "parse.h"
#include "sched.h"
#include "stats.h"
#include "scratch.h"
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

/*
 * The connection table (conntrack, struct ct_bucket in types.h).
 *
 * A flow's 5-tuple hashes (flow_hash64) to 64 bits, computed once per
 * packet: two candidate buckets (from its two halves) and a fingerprint
 * (from a further mix of all of it). A lookup compares the fingerprint
 * with the 16 slots of both buckets, four cache lines with no dependency
 * between them, so their misses overlap: a cold lookup costs about one
 * memory latency, where the LRU hash it replaced walked a chain and its
 * list (8-10 dependent misses for a new flow). There is no list, no
 * garbage collection and no lock:
 *
 * - an insert takes an empty slot of the bucket with more of them (two
 *   choices keep the buckets even); with both buckets full, a slot idle
 *   past its limit (of the bucket with more of those), else a closing
 *   flow's, else the least recently stamped. It claims the tag with a
 *   compare-and-swap (BPF_ATOMIC, kernel 5.12+; clang emits the 64-bit
 *   one at any -mcpu), so two CPUs never take one slot for two flows. A live flow that loses its slot is counted (EV_CT_EVICTED_LIVE)
 *   and is placed again from the Maglev table by its next packet.
 * - a slot expires lazily: its idle limit (nat_config's TCP, UDP and
 *   closing limits, as for NAT translations) only decides whether an
 *   insert may take it; until then the flow keeps it.
 *
 * Fingerprint, not full key: a full-key slot (40 bytes of 5-tuple beside
 * the backend) makes a bucket 5 lines and the table about 3.5 times the
 * memory, and the prototype measured it at about the same cost per
 * packet; the keys are kept apart instead (ct_keys), for the loader only.
 * The fingerprint has 39 bits, so a packet of a flow the table does not
 * hold matches another flow of its buckets with a chance of 16 in 2^39
 * (one in 34 billion): it then follows that flow's backend, consistently,
 * as long as that flow holds its slot. (Not measured here side by side:
 * a full-key compare on every hit reads the key's line too.)
 *
 * Stamps are 32 bits of ticks: an idle time is right below 2^31 ticks (24
 * days at HZ=1000); a slot untouched for longer reads its age modulo
 * 2^32, which only changes which of the flows of a full bucket goes first.
 */

/* The fingerprint mix (MurmurHash3's 64-bit finaliser). */
static __always_inline __u64 fmix64(__u64 h)
{
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	return h;
}

/* The 5-tuple's hash, as five 64-bit words (the key is 8-byte aligned and
 * its padding zero) each folded in with a multiply and a rotate, then
 * mixed: a few dozen instructions. Not a keyed PRF; the seed keeps the
 * table's layout unknown outside. loader.ctHash is the same in Go. */
static __always_inline __u64 flow_hash64(const struct flow_key *k)
{
	const __u64 *w = (const __u64 *)(const void *)k;
	__u64 h = cfg_ct_seed;

#pragma unroll
	for (int i = 0; i < 5; i++) {
		h = (h ^ w[i]) * 0x9e3779b97f4a7c15ULL;
		h = (h << 31) | (h >> 33);
	}
	return fmix64(h);
}

/* n * x / 2^32: x spread over [0, n) without a division. */
static __always_inline __u32 hash_range(__u32 x, __u32 n)
{
	return ((__u64)x * n) >> 32;
}

static __always_inline __u64 ct_fingerprint(__u64 h)
{
	return (fmix64(h ^ 0x5bd1e9955bd1e995ULL) >> (CT_FP_SHIFT + 1)) | (1ULL << (63 - CT_FP_SHIFT));
}

/* A flow's two buckets and its fingerprint. Named fields, not arrays:
 * the verifier refuses a pointer read from the stack at a variable
 * offset, so the code picks one with a branch. No address of it is taken
 * (the bucket indexes are keys on the stack apart), so it lives in
 * registers: the program's stack is nearly all used. */
struct ct_ref {
	struct ct_bucket *b0, *b1;
	__u64 fp;
};

/* Bucket j (0 or 1) of the flow with hash h. */
static __always_inline __u32 ct_bucket_idx(__u64 h, int j)
{
	return hash_range(j ? h >> 32 : h, cfg_ct_buckets);
}

static __always_inline int ct_ref_of(__u64 h, struct ct_ref *r)
{
	__u32 idx0 = ct_bucket_idx(h, 0), idx1 = ct_bucket_idx(h, 1);

	r->fp = ct_fingerprint(h);
	r->b0 = bpf_map_lookup_elem(&conntrack, &idx0);
	r->b1 = bpf_map_lookup_elem(&conntrack, &idx1);
	return r->b0 && r->b1;
}

/*
 * The slot at pos (bucket j << 3 | slot) of r. pos goes through memory the
 * verifier does not follow (the per-CPU scratch) and comes back as any
 * number, bounded by the mask: a pointer at one of 16 fixed offsets would
 * have the verifier walk everything after it once per offset (the program
 * then exceeds its budget); at a variable offset it is one state.
 */
static __always_inline struct ct_slot *ct_slot_at(const struct ct_ref *r, __u32 pos)
{
	struct scratch *sc = scratch_get();
	struct ct_bucket *b;

	if (!sc)
		return NULL;
	*(volatile __u32 *)&sc->ct_pos = pos;
	pos = *(volatile __u32 *)&sc->ct_pos;
	b = (pos & CT_BUCKET_SLOTS) ? r->b1 : r->b0;
	return &b->slots[pos & (CT_BUCKET_SLOTS - 1)];
}

/* The slot whose fingerprint is r's, first bucket first, or NULL. */
static __always_inline struct ct_slot *ct_find(const struct ct_ref *r)
{
#pragma unroll
	for (int j = 0; j < 2; j++) {
#pragma unroll
		for (int i = 0; i < CT_BUCKET_SLOTS; i++) {
			const struct ct_slot *s = &(j ? r->b1 : r->b0)->slots[i];

			if ((s->tag >> CT_FP_SHIFT) == r->fp)
				return ct_slot_at(r, j << 3 | i);
		}
	}
	return NULL;
}

/* The flow's slot (h: flow_hash64 of its key), or NULL. */
static __always_inline struct ct_slot *conntrack_lookup(__u64 h)
{
	struct ct_ref r;

	if (!ct_ref_of(h, &r))
		return NULL;
	return ct_find(&r);
}

static __always_inline __u32 ct_backend_id(const struct ct_slot *s)
{
	return s->tag & CT_BACKEND_MASK;
}

/* The established-flow path, before the VIP map: the flow's slot names
 * its backend, the backend names its VIP (backend.vip_id), and vip_keys
 * confirms that VIP is the packet's. Returns the usable backend, or NULL
 * (no slot, a backend gone, down or reassigned, a VIP gone or renumbered)
 * for the VIP lookup path. *fv is the slot, if any. */
static __always_inline struct backend *conntrack_backend(const struct pkt *p, __u64 h, struct ct_slot **fv)
{
	struct ct_slot *v = conntrack_lookup(h);
	struct backend *be;
	__u32 bid;

	*fv = v;
	if (!v)
		return NULL;
	bid = ct_backend_id(v);
	be = bpf_map_lookup_elem(&backends, &bid);
	if (!be || !backend_usable(be) || !vip_id_matches(be->vip_id, p))
		return NULL;
	return be;
}

/* Stamps a tracked flow that keeps its backend; the slot is written at
 * most every FLOW_TOUCH_TICKS, not per packet. */
static __always_inline void conntrack_touch(struct ct_slot *v)
{
	__u32 now = bpf_jiffies64();

	if (now - v->stamp > FLOW_TOUCH_TICKS)
		v->stamp = now;
}

/* A tracked flow's packet with SYN, FIN or RST (the rare case; plain
 * packets never get here). Returns whether the packet stays on the slot's
 * backend: a SYN on a closing flow is a new connection on a reused client
 * port and is placed again, a SYN on a live flow is a retransmit. FIN or
 * RST marks the flow closing, written once per flow, not per packet, and
 * counts the flow off its backend's open flows (lc, wlc).
 * Plain read-modify-writes: RSS keeps a flow's packets on one CPU. */
static __always_inline int conntrack_flagged(struct ct_slot *v, __u8 tcp)
{
	if ((tcp & PKT_TCP_SYN) && (v->meta & FLOW_F_CLOSING))
		return 0;
	if ((tcp & PKT_TCP_END) && !(v->meta & FLOW_F_CLOSING)) {
		v->meta |= FLOW_F_CLOSING;
		open_flows_dec(ct_backend_id(v));
	}
	return 1;
}

/* Marks a tracked flow established on its first packet that is not a SYN:
 * written once per flow, a load and a compare after. (Every flow of the
 * table is established when it gets there; this is for those an insert
 * marked otherwise.) */
static __always_inline void conntrack_established(struct ct_slot *v, __u8 tcp)
{
	if (!(tcp & PKT_TCP_SYN) && !(v->meta & FLOW_F_ESTABLISHED))
		v->meta |= FLOW_F_ESTABLISHED;
}

/* The flags of a flow about to be (re)written for a placed packet: a flow
 * moved off an unusable backend keeps its state (old_flags, when known)
 * unless a SYN starts it afresh, and a FIN or RST (a flow that ends as it
 * is placed) is closing. A TCP packet without SYN is of an established
 * connection even when it is the first one seen (after an eviction or a
 * restart); a UDP datagram is only when an entry shows one came before
 * it. */
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

/* A slot's standing for an insert (ct_victim): free (empty, or idle past
 * its limit), a closing flow's, or a live flow's. */
enum ct_class {
	CT_LIVE = 1,
	CT_CLOSING = 2,
	CT_FREE = 3,
};

/*
 * ct_victim is arithmetic without a branch: with one, the verifier walks
 * each of the 16 slots' outcomes as a path of its own (2^16 and more, over
 * its budget), and the compiler turns a select into a branch unless the
 * operands are hidden from it (an empty asm, as same_u32 below).
 */
static __always_inline __u64 ct_opaque(__u64 x)
{
	asm volatile("" : "+r"(x));
	return x;
}

/* 1 if x > y, else 0, for x and y below 2^63. */
static __always_inline __u64 ct_gt(__u64 x, __u64 y)
{
	return ct_opaque(y - x) >> 63;
}

/* a where bit is 1, b where it is 0 (bit is 0 or 1). */
static __always_inline __u64 ct_pick(__u64 bit, __u64 a, __u64 b)
{
	__u64 m = ct_opaque(-bit);

	return (a & m) | (b & ~m);
}

/* The slot's class (enum ct_class); *empty: its tag is 0. */
static __always_inline __u64 ct_class_of(const struct ct_slot *s, __u32 now, const struct nat_config *cfg,
					 __u64 *empty)
{
	__u64 meta = s->meta;
	__u64 used = ct_opaque(s->tag | -s->tag) >> 63;
	__u64 closing = meta & FLOW_F_CLOSING;
	__u64 idle = ct_pick((meta >> 2) & 1 /* FLOW_F_UDP */, cfg->udp_idle_ticks, cfg->tcp_idle_ticks);
	__u64 free;

	idle = ct_pick(closing & ct_gt(idle, cfg->closing_ticks), cfg->closing_ticks, idle);
	free = (used ^ 1) | ct_gt((__u32)(now - s->stamp), idle);
	*empty = used ^ 1;
	return ct_pick(free, CT_FREE, CT_LIVE + closing);
}

/* 1 if the class is CT_FREE (3, the one with both bits), else 0. */
static __always_inline __u64 ct_is_free(__u64 c)
{
	return ct_opaque(c) >> 1 & c & 1;
}

/*
 * The slot an insert takes while its buckets have an empty one: the first
 * empty slot of the bucket with more of them (the first bucket of equals),
 * as ct_victim's position; 2 * CT_BUCKET_SLOTS when both are full. The
 * common case below the design load, and 16 loads and some arithmetic:
 * ct_victim's scores (expiry by protocol, closing, age) cost several
 * times that, and are needed only once both buckets are full.
 */
static __always_inline __u32 ct_empty_slot(const struct ct_ref *r)
{
	__u64 n0 = 0, n1 = 0, first0 = CT_BUCKET_SLOTS, first1 = CT_BUCKET_SLOTS;

#pragma clang loop unroll(disable)
	for (__u32 i = 0; i < CT_BUCKET_SLOTS; i++) {
		__u64 t0 = r->b0->slots[i].tag, t1 = r->b1->slots[i].tag;
		__u64 e0 = (ct_opaque(t0 | -t0) >> 63) ^ 1, e1 = (ct_opaque(t1 | -t1) >> 63) ^ 1;

		n0 += e0;
		n1 += e1;
		/* first_j is CT_BUCKET_SLOTS (bit 3) until an empty is seen */
		first0 = ct_pick(e0 & (first0 >> 3), i, first0);
		first1 = ct_pick(e1 & (first1 >> 3), i, first1);
	}
	if (!(n0 | n1))
		return 2 * CT_BUCKET_SLOTS;
	return ct_pick(ct_gt(n1, n0), CT_BUCKET_SLOTS | first1, first0);
}

/*
 * Chooses the slot an insert takes once both buckets are full: the highest
 * of score = class << 40 | in the bucket with more free slots << 39 |
 * empty << 38 | age << 4, the first of equals in bucket order: a free slot
 * (idle past its limit) of the bucket with more of them, else a closing
 * flow's, else the least recently stamped. Returns the slot's position
 * (bucket j << 3 | slot) and sets *tag to its tag as read, *cls its class.
 * loader.ctTable.victim is the same in Go.
 */
static __always_inline __u32 ct_victim(const struct ct_ref *r, __u32 now, const struct nat_config *cfg,
				       __u64 *tag, __u32 *cls)
{
	__u64 nfree0 = 0, nfree1 = 0, pref0, pref1;
	__u64 best = 0, t = 0, empty;

	/* Loops, not unrolled: unrolled, the compiler loads all 16 slots
	 * first and spills them, past what a global function's frame may
	 * add to the program's (512 bytes for the chain). */
#pragma clang loop unroll(disable)
	for (__u32 k = 0; k < 2 * CT_BUCKET_SLOTS; k++) {
		const struct ct_bucket *b = (k & CT_BUCKET_SLOTS) ? r->b1 : r->b0;
		__u64 f = ct_is_free(ct_class_of(&b->slots[k & (CT_BUCKET_SLOTS - 1)], now, cfg, &empty));
		__u64 in1 = k >> 3;

		nfree0 += f & (in1 ^ 1);
		nfree1 += f & in1;
	}
	pref1 = ct_gt(nfree1, nfree0);
	pref0 = pref1 ^ 1;
#pragma clang loop unroll(disable)
	for (__u32 k = 0; k < 2 * CT_BUCKET_SLOTS; k++) {
		const struct ct_bucket *b = (k & CT_BUCKET_SLOTS) ? r->b1 : r->b0;
		const struct ct_slot *s = &b->slots[k & (CT_BUCKET_SLOTS - 1)];
		__u64 ci = ct_class_of(s, now, cfg, &empty);
		__u64 fr = ct_is_free(ci);
		__u64 pref = ct_pick(k >> 3, pref1, pref0);
		/* The position rides in the low bits, earlier ones higher, so
		 * that of equal scores the first wins: fewer values to carry
		 * through the loop (the frame's limit above). */
		__u64 score = ci << 40 | (fr & pref) << 39 | (fr & empty) << 38 | (__u64)(__u32)(now - s->stamp) << 4 |
			      (2 * CT_BUCKET_SLOTS - 1 - k);
		__u64 win = ct_gt(score, best);

		best = ct_pick(win, score, best);
		t = ct_pick(win, s->tag, t);
	}
	*tag = t;
	*cls = best >> 40;
	return 2 * CT_BUCKET_SLOTS - 1 - (best & (2 * CT_BUCKET_SLOTS - 1));
}

/*
 * Records a flow (key, h its flow_hash64) on backend_id with flags,
 * stamped now: in its own slot if it has one, else in the slot ct_victim
 * chooses, claimed by a compare-and-swap of its tag. The stamp and flags
 * are written after the claim, so another CPU may for a moment see the
 * new tag with the old stamp; only an insert into the same bucket at that
 * moment looks at them. Failure (another CPU took the slot first) is not
 * fatal: the flow's next packet is placed again from the same Maglev
 * table, to the same backend. Returns whether the flow has its slot.
 * A global function, as the half-open table's are (HALF_FN, below): it
 * runs only when a flow is placed or established, and inlined at its
 * four callers it would not fit the stack beside them.
 */
__attribute__((noinline)) int conntrack_insert(const struct flow_key *key, __u64 h, __u32 backend_id, __u32 flags)
{
	struct nat_config *cfg;
	struct ct_bucket_keys *keys;
	struct ct_slot *s;
	struct ct_ref r;
	__u32 now = bpf_jiffies64();
	__u32 zero = 0, cls = CT_FREE, pos, idx;
	__u64 old = 0, tag;

	if (!key || !ct_ref_of(h, &r))
		return 0;
	tag = r.fp << CT_FP_SHIFT | (backend_id & CT_BACKEND_MASK);
	if (key->proto == IPPROTO_UDP)
		flags |= FLOW_F_UDP;
	s = ct_find(&r);
	if (s) {
		/* The flow's own slot: a new backend, or new flags. */
		s->tag = tag;
		s->stamp = now;
		s->meta = flags;
		return 1;
	}
	cfg = bpf_map_lookup_elem(&nat_params, &zero);
	if (!cfg)
		return 0;
	pos = ct_empty_slot(&r);
	if (pos >= 2 * CT_BUCKET_SLOTS)
		pos = ct_victim(&r, now, cfg, &old, &cls);
	s = ct_slot_at(&r, pos);
	if (!s)
		return 0;
	if (__sync_val_compare_and_swap(&s->tag, old, tag) != old)
		return 0;
	s->stamp = now;
	s->meta = flags;
	if (cls == CT_LIVE)
		count_event(EV_CT_EVICTED_LIVE);
	idx = ct_bucket_idx(h, pos & CT_BUCKET_SLOTS);
	keys = bpf_map_lookup_elem(&ct_keys, &idx);
	if (keys)
		keys->keys[pos & (CT_BUCKET_SLOTS - 1)] = *key;
	return 1;
}

/* Frees the flow's slot (h: flow_hash64 of its key), if it has one. */
static __always_inline void conntrack_delete(__u64 h)
{
	struct ct_slot *s = conntrack_lookup(h);

	if (s) {
		__u64 t = s->tag;

		__sync_val_compare_and_swap(&s->tag, t, 0);
	}
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
 * 5-tuple's flow_hash64 spread over cfg_half_buckets.
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

/* A flow's bucket in ct_half, from its flow_hash64 (bits the connection
 * table's buckets use too: the tables are apart, so that is harmless). */
static __always_inline struct half_bucket *half_bucket_of(__u64 h)
{
	__u32 idx = hash_range(h >> 16, cfg_half_buckets);

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
HALF_FN int half_get(const struct flow_key *key, __u64 h, __u32 now, __u32 mode, struct half_flow *out)
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
HALF_FN int half_put(const struct half_flow *in, __u64 h, struct half_flow *gone)
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
HALF_FN int half_del(const struct flow_key *key, __u64 h)
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
