/* xdplb.c: entry points; top-level dispatch of a frame to pass, drop or forward. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "types.h"
#include "maps.h"
#include "parse.h"
#include "stats.h"
#include "sched.h"
#include "sched_algo.h"
#include "ratelimit.h"
#include "conntrack.h"
#include "vipfilter.h"
#include "dr.h"
#include "nat.h"
#include "icmp.h"

char LICENSE[] SEC("license") = "GPL";

/* Keep these enums in BTF so bpf2go exports them to Go (-type); nothing
 * else in the object names them. */
const enum fwd_mode unused_fwd_mode __attribute__((unused));
const enum sched_kind unused_sched_kind __attribute__((unused));
const enum backend_flags unused_backend_flags __attribute__((unused));
const enum vip_flags unused_vip_flags __attribute__((unused));
const enum flow_flags unused_flow_flags __attribute__((unused));
const enum nat_flags unused_nat_flags __attribute__((unused));
const enum rate_clock unused_rate_clock __attribute__((unused));
const enum ct_layout unused_ct_layout __attribute__((unused));
const struct nat_state unused_nat_state __attribute__((unused));
const struct persist_timeout unused_persist_timeout __attribute__((unused));

/* The rare paths with no port to match: ours (a VIP address) or not. */
static __always_inline int drop_if_vip_addr(const struct pkt *p, enum drop_reason reason)
{
	if (!bpf_map_lookup_elem(&vip_addrs, p->flow.dst))
		return XDP_PASS;
	count_drop(reason);
	return XDP_DROP;
}

/* A new flow of a VIP refused: counted for the VIP too. */
static __always_inline int drop_vip(__u32 vip_id, enum drop_reason reason)
{
	count_vip_drop(vip_id, reason);
	return XDP_DROP;
}

/* The forward path's answer for a packet that is not a VIP's after all (a
 * pre-filter false positive, or another port of a VIP's address): it may
 * still be a NAT reply. */
#define NOT_A_VIP (-1)

/* A packet of a tracked flow whose backend is no longer usable, of an
 * untracked flow, or a SYN reusing a closing flow's 5-tuple: find its VIP
 * and place it. old says where its (stale) entry is (enum flow_home),
 * old_flags are that entry's, h is the flow's hash (flow_hash64). An
 * established DR flow moved off its backend stays in the connection table;
 * any other placed flow starts half-open, in ct_half (conntrack.h), and
 * NAT's decide in nat_new_flow. */
static __always_inline int place(struct xdp_md *ctx, __u32 ifindex, const struct pkt *p, int old,
				 __u32 old_flags, __u64 h)
{
	enum drop_reason reason = DROP_NONE;
	struct vip_key vk = {};
	struct vip_meta *meta;
	struct backend *be = NULL;
	__u32 vip_id, bid = 0, ct_flags;

	__builtin_memcpy(vk.addr, p->flow.dst, sizeof(vk.addr));
	vk.port = p->flow.dport;
	vk.proto = p->flow.proto;
	meta = bpf_map_lookup_elem(&vips, &vk);
	if (!meta)
		return NOT_A_VIP;
	vip_id = meta->vip_id;
	ct_flags = conntrack_new_flags(old != FLOW_NONE, old_flags, p);

	/* A VIP without a rate limit pays this one test. A packet that opens
	 * a flow takes a token (a TCP SYN, a UDP datagram with no entry); one
	 * of a flow placed again (its backend gone, its entry evicted, a
	 * restart) belongs to a flow that is already open, and takes none. */
	if ((meta->flags & VIP_F_RATE_LIMIT) && !(ct_flags & FLOW_F_ESTABLISHED) && !rate_admit(vip_id)) {
		reason = DROP_RATE_LIMITED;
	} else {
		bid = sched_new_flow(p, meta, &reason);
		if (bid) {
			be = backend_for(bid, vip_id);
			if (!be)
				reason = DROP_BACKEND_INVALID;
		}
	}
	/* The VIP counts every packet sent to it, a flow only once placed. */
	count_lb(&vip_stats, vip_id, p->len, be != NULL);
	if (!be)
		return drop_vip(vip_id, reason);
	if (backend_is_nat(be)) {
		int ret = nat_new_flow(ctx, ifindex, p, be, bid, vip_id, ct_flags, h, old, &reason);

		if (reason != DROP_NONE)
			return drop_vip(vip_id, reason);
		count_lb(&backend_stats, bid, p->len, 1);
		return ret;
	}
	count_lb(&backend_stats, bid, p->len, 1);
	if (old == FLOW_IN_CT && !(p->tcp & PKT_TCP_SYN))
		conntrack_insert(&p->flow, h, bid, ct_flags);
	else
		half_track(p, h, vip_id, bid, ct_flags, old == FLOW_IN_CT);
	return dr_forward(ctx, ifindex, be);
}

/* half_open's answer when the packet must be placed (place). */
#define HALF_PLACE (-2)

/* A packet of a flow the connection table does not hold: a half-open
 * flow's, or a new one (HALF_PLACE, *old FLOW_NONE). A half-open flow
 * keeps its backend; its second packet that is no SYN establishes a DR
 * flow (moving it to the connection table), nat_half_open decides for
 * NAT. A flow to place again gets HALF_PLACE with *old FLOW_IN_HALF and
 * *old_flags its way's. */
static __always_inline int half_open(struct xdp_md *ctx, __u32 ifindex, const struct pkt *p, __u64 h, int *old,
				     __u32 *old_flags)
{
	__u32 now = bpf_jiffies64();
	struct scratch *sc = scratch_get();
	struct half_flow *hf;
	struct backend *be;
	__u32 bid, flags;

	if (!sc || !half_get(&p->flow, h, now, p->tcp | HALF_TOUCH, &sc->hf))
		return HALF_PLACE;
	hf = &sc->hf;
	bid = hf->backend_id;
	flags = hf->flags;
	*old = FLOW_IN_HALF;
	*old_flags = flags;
	be = bpf_map_lookup_elem(&backends, &bid);
	/* Placed again: a backend gone, down or reassigned, a flow idle past
	 * the half-open timeout, or a SYN on a closed flow's 5-tuple. */
	if (!be || !backend_usable(be) || !vip_id_matches(be->vip_id, p) || half_expired(hf, now) ||
	    ((p->tcp & PKT_TCP_SYN) && (flags & FLOW_F_CLOSING)))
		return HALF_PLACE;
	if (backend_is_nat(be)) {
		int ret = nat_half_open(ctx, ifindex, p, be, hf, h);

		if (ret == NAT_REPLACE)
			return HALF_PLACE;
		count_lb(&vip_stats, be->vip_id, p->len, 0);
		count_lb(&backend_stats, bid, p->len, 0);
		return ret;
	}
	if (!(p->tcp & PKT_TCP_SYN)) {
		flags |= FLOW_F_ESTABLISHED;
		if (p->tcp & PKT_TCP_END)
			flags |= FLOW_F_CLOSING;
		conntrack_insert(&p->flow, h, bid, flags);
		half_del(&p->flow, h);
	}
	count_lb(&vip_stats, be->vip_id, p->len, 0);
	count_lb(&backend_stats, bid, p->len, 0);
	return dr_forward(ctx, ifindex, be);
}

/* A packet addressed to a possible VIP (its pre-filter bit is set). Every
 * path that places the packet ends in the one call of place at the end:
 * it is inlined, NAT and all. */
static __always_inline int forward(struct xdp_md *ctx, __u32 ifindex, struct pkt *p)
{
	int old = FLOW_NONE;
	__u32 old_flags = 0;
	struct ct_slot *fv;
	struct backend *be;
	/* The one hash of the 5-tuple: the connection table's buckets and
	 * fingerprint, ct_half's bucket, the SNAT port's first try. */
	__u64 h = flow_hash64(&p->flow);

	be = conntrack_backend(p, h, &fv);
	/* An established packet carries no SYN, FIN or RST: one byte
	 * compare, and the entry is not written. */
	if (be && (!p->tcp || conntrack_flagged(fv, p->tcp))) {
		conntrack_established(fv, p->tcp);
		if (!backend_is_nat(be)) {
			conntrack_touch(fv);
			count_lb(&vip_stats, be->vip_id, p->len, 0);
			count_lb(&backend_stats, ct_backend_id(fv), p->len, 0);
			return dr_forward(ctx, ifindex, be);
		}
		{
			int ret = nat_established(ctx, ifindex, p, be, fv);

			if (ret != NAT_REPLACE) {
				count_lb(&vip_stats, be->vip_id, p->len, 0);
				count_lb(&backend_stats, ct_backend_id(fv), p->len, 0);
				return ret;
			}
		}
	}
	if (fv) {
		old = FLOW_IN_CT;
		old_flags = fv->meta & ~FLOW_F_UDP;
	} else {
		int ret = half_open(ctx, ifindex, p, h, &old, &old_flags);

		if (ret != HALF_PLACE)
			return ret;
	}
	return place(ctx, ifindex, p, old, old_flags, h);
}

/* Cheapest first: clear pre-filter bits pass non-VIP traffic with no hash
 * lookup; an established flow costs one (the connection table); only a
 * flow it does not hold looks in ct_half, only placing a flow looks the
 * VIP up, and only a packet from a NAT backend's address and port looks
 * nat_flows up. */
static __always_inline int process(struct xdp_md *ctx, __u32 ifindex)
{
	struct pkt p = {}; /* zeroed: flow_key padding is part of the hash key */
	const struct vip_bitmap *filter;
	int ret;

	switch (parse_packet(ctx, &p)) {
	case PARSE_OK:
		break;
	case PARSE_FRAGMENT:
		return drop_if_vip_addr(&p, DROP_FRAGMENT);
	case PARSE_IPV6_EXT:
		return drop_if_vip_addr(&p, DROP_IPV6_EXT);
	case PARSE_MALFORMED_L4:
		return drop_if_vip_addr(&p, DROP_MALFORMED_L4);
	case PARSE_ICMP_ERROR:
		return icmp_error(ctx, ifindex, &p);
	default:
		return XDP_PASS;
	}

	filter = vip_filter_get();
	if (vip_filter_may_match(filter, &p.flow)) {
		ret = forward(ctx, ifindex, &p);
		if (ret != NOT_A_VIP)
			return ret;
	}
	if (reply_filter_may_match(filter, &p.flow))
		return nat_reply(ctx, ifindex, &p);
	return XDP_PASS;
}

SEC("xdp")
int xdplb_main(struct xdp_md *ctx)
{
	/* Read once: each read of the field is three dependent loads. */
	__u32 ifindex = ctx->ingress_ifindex;

	return count_action(ifindex, process(ctx, ifindex));
}

/* For peer ends of veth pairs: a veth loses the XDP_TX/redirected frames
 * for a peer that runs no XDP program of its own (nor has GRO on). */
SEC("xdp")
int xdplb_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}
