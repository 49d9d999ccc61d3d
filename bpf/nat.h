/* nat.h: NAT and full NAT: rewriting a flow's packets toward its backend, SNAT ports, and reversing the replies. */
#pragma once

#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "maps.h"
#include "parse.h"
#include "csum.h"
#include "fib.h"
#include "stats.h"
#include "sched.h"
#include "conntrack.h"
#include "router.h"
#include "scratch.h"

/*
 * A NAT flow has two entries: the connection table's (client 5-tuple ->
 * backend, and for full NAT the SNAT port in ct_slot.meta) for the
 * packets toward the backend, and nat_flows' (the reply's 5-tuple -> VIP
 * and client) for the packets back. The reply's 5-tuple is what the
 * backend sends: from the backend's address and port, to the client (nat)
 * or to the SNAT address and port (full NAT), so a reply is found with the
 * packet's own flow key.
 *
 * Full NAT's (SNAT address, port, backend address, port) is the nat_flows
 * key, so holding a port is owning the key: a new flow inserts it with
 * BPF_NOEXIST, which one CPU wins, and no lock is taken. The ports tried
 * start at a hash of the client's 5-tuple, so a flow placed again (after
 * its connection-table entry was evicted, or after a restart) finds its own
 * mapping first and keeps its port.
 */

/* Ports tried for a new full-NAT flow before it is dropped as
 * snat_exhausted: with 16 tries a range is "exhausted" for a new flow when
 * 16 consecutive ports from its hash are live, which a uniformly 80% full
 * range gives 2.8% of new flows. */
#define SNAT_TRIES 16

/* Returned by the NAT paths when the packet must be placed again. */
#define NAT_REPLACE (-1)

static __always_inline int backend_is_nat(const struct backend *be)
{
	return be->flags & (BACKEND_F_NAT | BACKEND_F_FULLNAT);
}

static __always_inline __be16 backend_port(const struct backend *be, __be16 vip_port)
{
	return be->port ? be->port : vip_port;
}

static __always_inline struct nat_config *nat_cfg(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&nat_params, &zero);
}

static __always_inline const __u8 *snat_addr(__u32 vip_id)
{
	const __u8 *a = bpf_map_lookup_elem(&vip_snat, &vip_id);
	const __u64 *w = (const __u64 *)(const void *)a;

	/* All zero: the control plane has not given the VIP an address. */
	if (!a || (w[0] == 0 && w[1] == 0))
		return NULL;
	return a;
}

/* The reply's 5-tuple of a flow sent to be from (src, sport); every byte
 * is written. */
static __always_inline void nat_reply_key(struct flow_key *rk, const struct backend *be, __be16 bport,
					  const __u8 src[16], __be16 sport, __u8 proto)
{
	__builtin_memcpy(rk->src, be->addr, 16);
	__builtin_memcpy(rk->dst, src, 16);
	rk->sport = bport;
	rk->dport = sport;
	rk->proto = proto;
	/* Part of the hash key: a scratch key has old bytes there. */
	rk->pad[0] = 0;
	rk->pad[1] = 0;
	rk->pad[2] = 0;
}

/* A translation's idle limit: an established flow's by protocol, a
 * half-open one's cfg_half_ticks, at most closing_ticks once closing. */
static __always_inline int nat_expired(const struct nat_state *ns, __u64 now, const struct nat_config *cfg,
				       __u8 proto)
{
	__u64 idle = cfg_half_ticks;

	if (ns->flags & NAT_F_ESTABLISHED)
		idle = proto == IPPROTO_TCP ? cfg->tcp_idle_ticks : cfg->udp_idle_ticks;
	if ((ns->flags & NAT_F_CLOSING) && cfg->closing_ticks < idle)
		idle = cfg->closing_ticks;
	return now > ns->last_seen && now - ns->last_seen > idle;
}

static __always_inline int addr_eq(const __u8 a[16], const __u8 b[16])
{
	const __u64 *x = (const __u64 *)(const void *)a;
	const __u64 *y = (const __u64 *)(const void *)b;

	return x[0] == y[0] && x[1] == y[1];
}

/* Is this translation the one of the flow that wants it? */
static __always_inline int nat_same_flow(const struct nat_state *cur, const struct nat_state *want)
{
	return cur->vip_id == want->vip_id && cur->vip_port == want->vip_port &&
	       cur->client_port == want->client_port && addr_eq(cur->client, want->client) &&
	       addr_eq(cur->vip, want->vip);
}

/* A translation found to be the flow's own, from before, taken up again:
 * a SYN starts the flow afresh (want's flags), any other packet keeps what
 * the translation saw, its being established above all. want gets the
 * flags written. */
static __always_inline void nat_resume(struct nat_state *cur, struct nat_state *want, const struct pkt *p)
{
	if (!(p->tcp & PKT_TCP_SYN))
		want->flags |= cur->flags & (NAT_F_REPLIED | NAT_F_ESTABLISHED | NAT_F_CLOSING);
	cur->flags = want->flags;
	cur->last_seen = want->last_seen;
}

/*
 * Finds a full-NAT flow its SNAT port: rk holds the reply key but the
 * port, h is the flow's hash (flow_hash64). Returns 0 with rk->dport set, or
 * the drop reason. When every port tried is held by a live flow, the port
 * of the oldest half-open one (of the new flow's VIP if one is among them,
 * the last tried of equals) goes to the new flow, and that flow loses its
 * way in ct_half: an early drop, as in ct_half, so that a flood of openings
 * cannot hold a backend's whole range for the half-open timeout. An
 * established flow's port is never taken. tmp is scratch for a key.
 */
static __always_inline enum drop_reason snat_alloc(const struct pkt *p, __u32 h, struct flow_key *rk,
						   struct nat_state *want, const struct nat_config *cfg,
						   struct flow_key *tmp)
{
	__u32 count = cfg->snat_port_count;
	__u64 best = 0;
	__be16 victim = 0;

	if (!count)
		return DROP_SNAT_EXHAUSTED;
	for (int i = 0; i < SNAT_TRIES; i++) {
		struct nat_state *cur;
		long err;

		rk->dport = bpf_htons(cfg->snat_port_lo + (h + i) % count);
		cur = bpf_map_lookup_elem(&nat_flows, rk);
		if (cur) {
			if (nat_same_flow(cur, want)) {
				nat_resume(cur, want, p);
				return DROP_NONE;
			}
			if (!nat_expired(cur, want->last_seen, cfg, p->flow.proto)) {
				if (!(cur->flags & NAT_F_ESTABLISHED)) {
					__u64 score = (__u64)(cur->vip_id == want->vip_id) << 32 |
						      (__u32)(want->last_seen - cur->last_seen);

					if (score >= best) {
						best = score;
						victim = rk->dport;
					}
				}
				continue;
			}
			/* Expired: one CPU's insert below wins the port; a CPU that
			 * loses goes on to the next. */
			bpf_map_delete_elem(&nat_flows, rk);
		}
		err = bpf_map_update_elem(&nat_flows, rk, want, BPF_NOEXIST);
		if (!err)
			return DROP_NONE;
		if (err != -17 /* EEXIST: another CPU took it */)
			return DROP_NAT_TABLE_FULL;
	}
	if (victim) {
		struct nat_state *cur;

		rk->dport = victim;
		cur = bpf_map_lookup_elem(&nat_flows, rk);
		/* Looked at again: it may have been established meanwhile. Its
		 * flow's way in ct_half goes with it (tmp: that flow's key). */
		if (cur && !(cur->flags & NAT_F_ESTABLISHED)) {
			__builtin_memcpy(tmp->src, cur->client, 16);
			__builtin_memcpy(tmp->dst, cur->vip, 16);
			tmp->sport = cur->client_port;
			tmp->dport = cur->vip_port;
			tmp->proto = p->flow.proto;
			tmp->pad[0] = 0;
			tmp->pad[1] = 0;
			tmp->pad[2] = 0;
			half_del(tmp, flow_hash64(tmp));
			bpf_map_delete_elem(&nat_flows, rk);
			if (!bpf_map_update_elem(&nat_flows, rk, want, BPF_NOEXIST)) {
				count_event(EV_EARLY_DROP);
				return DROP_NONE;
			}
		}
	}
	return DROP_SNAT_EXHAUSTED;
}

/* Inserts a NAT (not full NAT) flow's translation at rk, or takes over
 * the one there if it is the same flow's or has expired. */
static __always_inline enum drop_reason nat_claim(struct flow_key *rk, struct nat_state *want, const struct pkt *p)
{
	struct nat_state *cur;
	struct nat_config *cfg;
	long err;

	err = bpf_map_update_elem(&nat_flows, rk, want, BPF_NOEXIST);
	if (!err)
		return DROP_NONE;
	if (err != -17 /* EEXIST */)
		return DROP_NAT_TABLE_FULL;
	cur = bpf_map_lookup_elem(&nat_flows, rk);
	cfg = nat_cfg();
	if (cur && cfg && !nat_same_flow(cur, want) && !nat_expired(cur, want->last_seen, cfg, p->flow.proto))
		return DROP_NAT_CONFLICT;
	if (cur && nat_same_flow(cur, want) && !(p->tcp & PKT_TCP_SYN))
		want->flags |= cur->flags & (NAT_F_REPLIED | NAT_F_ESTABLISHED | NAT_F_CLOSING);
	if (bpf_map_update_elem(&nat_flows, rk, want, BPF_ANY))
		return DROP_NAT_TABLE_FULL;
	return DROP_NONE;
}

/* Rewrites a TCP/UDP packet's addresses and ports and fixes the IPv4
 * header and L4 checksums. Every bound is checked before the first write,
 * so a failure (-1) leaves the packet as it came. */
static __always_inline int nat_rewrite(struct xdp_md *ctx, const struct pkt *p, const __u8 src[16],
				       __be16 sport, const __u8 dst[16], __be16 dport)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 l3 = p->l3_off, l4 = p->l4_off;
	__u32 addrs, ports;
	__u16 *check;

	if (l3 > L3_OFF_MAX || l4 > L4_OFF_MAX)
		return -1;
	addrs = csum_diff_addr(0, p->flow.src, src, p->v6);
	addrs = csum_diff_addr(addrs, p->flow.dst, dst, p->v6);
	ports = csum_diff16(addrs, p->flow.sport, sport);
	ports = csum_diff16(ports, p->flow.dport, dport);

	if (p->flow.proto == IPPROTO_TCP) {
		struct tcphdr *th = data + l4;

		if ((void *)(th + 1) > data_end)
			return -1;
		check = &th->check;
	} else {
		struct udphdr *uh = data + l4;

		if ((void *)(uh + 1) > data_end)
			return -1;
		check = &uh->check;
	}
	if (p->v6) {
		struct ipv6hdr *ip6 = data + l3;

		if ((void *)(ip6 + 1) > data_end)
			return -1;
		__builtin_memcpy(&ip6->saddr, src, 16);
		__builtin_memcpy(&ip6->daddr, dst, 16);
	} else {
		struct iphdr *iph = data + l3;

		if ((void *)(iph + 1) > data_end)
			return -1;
		__builtin_memcpy(&iph->saddr, src + 12, 4);
		__builtin_memcpy(&iph->daddr, dst + 12, 4);
		iph->check = csum_apply(iph->check, addrs);
	}
	/* Both L4 headers start with the ports. */
	{
		__be16 *pp = data + l4;

		if ((void *)(pp + 2) > data_end)
			return -1;
		pp[0] = sport;
		pp[1] = dport;
	}
	if (p->flow.proto == IPPROTO_TCP)
		*check = csum_apply(*check, ports);
	else
		*check = csum_apply_udp(*check, ports, p->v6);
	return 0;
}

/* The IP header's TTL or hop limit; 0 when the header is out of reach. */
static __always_inline __u8 ip_ttl(struct xdp_md *ctx, __u32 l3, int v6)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	if (l3 > L3_OFF_MAX)
		return 0;
	if (v6) {
		struct ipv6hdr *ip6 = data + l3;

		if ((void *)(ip6 + 1) > data_end)
			return 0;
		return ip6->hop_limit;
	} else {
		struct iphdr *iph = data + l3;

		if ((void *)(iph + 1) > data_end)
			return 0;
		return iph->ttl;
	}
}

/* Whether an IPv4 packet has DF set. */
static __always_inline int ip_dont_fragment(struct xdp_md *ctx, __u32 l3)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *iph = data + l3;

	if (l3 > L3_OFF_MAX || (void *)(iph + 1) > data_end)
		return 1;
	return !!(iph->frag_off & bpf_htons(0x4000));
}

/* The IP packet's length, for the FIB's MTU check. */
static __always_inline __u16 ip_tot_len(struct xdp_md *ctx, __u32 l3, int v6)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	if (l3 > L3_OFF_MAX)
		return 0;
	if (v6) {
		struct ipv6hdr *ip6 = data + l3;

		if ((void *)(ip6 + 1) > data_end)
			return 0;
		return bpf_ntohs(ip6->payload_len) + sizeof(*ip6);
	} else {
		struct iphdr *iph = data + l3;

		if ((void *)(iph + 1) > data_end)
			return 0;
		return bpf_ntohs(iph->tot_len);
	}
}

/* Decrements the TTL or hop limit as a router does (IPv4: and the header
 * checksum); the caller checked it is above 1. */
static __always_inline void ip_dec_ttl(struct xdp_md *ctx, __u32 l3, int v6)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	if (l3 > L3_OFF_MAX)
		return;
	if (v6) {
		struct ipv6hdr *ip6 = data + l3;

		if ((void *)(ip6 + 1) <= data_end)
			ip6->hop_limit--;
	} else {
		struct iphdr *iph = data + l3;
		__u16 *w = (void *)iph + 8; /* TTL and protocol */
		__u16 old;

		if ((void *)(iph + 1) > data_end)
			return;
		old = *w;
		iph->ttl--;
		iph->check = csum_apply(iph->check, csum_diff16(0, old, *w));
	}
}

/*
 * Routes a packet whose new addresses and ports are given, then rewrites
 * and sends it. A packet too big for the egress MTU or out of TTL is
 * answered as a router does (router.h). What the program cannot send
 * itself goes to the kernel, counted: untouched when there is no route,
 * translated when only the next hop is missing (no neighbour entry yet, an
 * egress without XDP) or an IPv4 packet must be fragmented, so the kernel
 * forwards it, resolving the neighbour on the way.
 */
static __always_inline int nat_send(struct xdp_md *ctx, __u32 ifindex, const struct pkt *p,
				    const __u8 src[16], __be16 sport, const __u8 dst[16], __be16 dport,
				    struct next_hop *nh)
{
	struct scratch *sc = scratch_get();
	struct bpf_fib_lookup *fib;
	__u32 l3 = p->l3_off;
	long rc;

	if (!sc)
		return XDP_PASS;
	fib = &sc->fib;
	if (ip_ttl(ctx, l3, p->v6) <= 1)
		return answer_ttl_exceeded(ctx, p);
	rc = fib_route(ctx, ifindex, p->v6, src, dst, p->flow.proto, ip_tot_len(ctx, l3, p->v6), fib, nh);
	switch (rc) {
	case BPF_FIB_LKUP_RET_SUCCESS:
		break;
	case BPF_FIB_LKUP_RET_NO_NEIGH:
		if (nat_rewrite(ctx, p, src, sport, dst, dport) == 0)
			count_event(EV_FIB_NO_NEIGH);
		return XDP_PASS;
	case FIB_RET_NOT_XDP:
		if (nat_rewrite(ctx, p, src, sport, dst, dport) == 0)
			count_event(EV_EGRESS_NOT_XDP);
		return XDP_PASS;
	case BPF_FIB_LKUP_RET_FRAG_NEEDED:
		if (!p->v6 && !ip_dont_fragment(ctx, l3)) {
			/* The kernel fragments it on the way out. */
			if (nat_rewrite(ctx, p, src, sport, dst, dport) == 0)
				count_event(EV_FRAG_NEEDED);
			return XDP_PASS;
		}
		return answer_too_big(ctx, p, fib->mtu_result);
	default:
		count_event(EV_FIB_FAILED);
		return XDP_PASS;
	}
	if (nat_rewrite(ctx, p, src, sport, dst, dport))
		return XDP_PASS;
	ip_dec_ttl(ctx, l3, p->v6);
	return fib_send(ctx, ifindex, fib);
}

/* The state of a new NAT flow's reply translation. */
static __always_inline void nat_state_for(struct nat_state *ns, const struct pkt *p, __u32 vip_id, __u32 flags,
					  __u64 now)
{
	__builtin_memcpy(ns->vip, p->flow.dst, 16);
	__builtin_memcpy(ns->client, p->flow.src, 16);
	ns->vip_port = p->flow.dport;
	ns->client_port = p->flow.sport;
	ns->vip_id = vip_id;
	ns->flags = flags;
	ns->pad = 0;
	ns->last_seen = now;
	__builtin_memset(&ns->nh, 0, sizeof(ns->nh));
}

/* Drops the translation of a NAT flow whose way in ct_half went to
 * another flow by early drop (g: the way as it was), if it is still that
 * flow's and not established; a DR flow has none. rk is scratch for the
 * reply key. */
static __always_inline void nat_forget(const struct half_flow *g, struct flow_key *rk)
{
	__u32 bid = g->backend_id;
	struct backend *be = bpf_map_lookup_elem(&backends, &bid);
	const __u8 *src = g->key.src;
	__be16 sport = g->key.sport;
	struct nat_state *ns;

	if (!be || !backend_is_nat(be))
		return;
	if (be->flags & BACKEND_F_FULLNAT) {
		src = snat_addr(g->vip_id);
		sport = g->flags >> FLOW_SNAT_PORT_SHIFT;
		if (!src || !sport)
			return;
	}
	nat_reply_key(rk, be, backend_port(be, g->key.dport), src, sport, g->key.proto);
	ns = bpf_map_lookup_elem(&nat_flows, rk);
	if (ns && !(ns->flags & NAT_F_ESTABLISHED) && ns->vip_id == g->vip_id &&
	    ns->client_port == g->key.sport && addr_eq(ns->client, g->key.src))
		bpf_map_delete_elem(&nat_flows, rk);
}

/*
 * Records a placed flow as half-open (half_put) and accounts for what that
 * takes: a live flow that lost its way to it is counted as an early drop,
 * and its NAT translation dropped with it; the flow's own entry in
 * the connection table (was_ct: a SYN on a closed flow's 5-tuple, a NAT
 * flow that must be answered anew) removed, so that its packets find the
 * half-open one.
 */
static __always_inline void half_track(const struct pkt *p, __u64 h, __u32 vip_id, __u32 bid, __u32 flags,
				       int was_ct)
{
	struct scratch *sc = scratch_get();

	if (was_ct)
		conntrack_delete(h);
	if (!sc)
		return;
	sc->put.key = p->flow;
	sc->put.vip_id = vip_id;
	sc->put.backend_id = bid;
	sc->put.flags = flags;
	sc->put.stamp = bpf_jiffies64();
	if (half_put(&sc->put, h, &sc->gone)) {
		count_event(EV_EARLY_DROP);
		nat_forget(&sc->gone, &sc->rk);
	}
}

/* A new flow of a NAT VIP placed on be (id bid): records both entries and
 * sends the packet; ct_flags are the connection-table flags (conntrack.h),
 * h the flow's hash and old where its entry was (enum flow_home). A flow
 * that finds its own established translation (placed again after its
 * entry was evicted, or after a restart) goes back to the connection
 * table; any other starts half-open, in ct_half. */
static __always_inline int nat_new_flow(struct xdp_md *ctx, __u32 ifindex, const struct pkt *p,
					const struct backend *be, __u32 bid, __u32 vip_id, __u32 ct_flags,
					__u64 h, int old, enum drop_reason *reason)
{
	struct scratch *sc = scratch_get();
	__be16 bport = backend_port(be, p->flow.dport);
	__u64 now = bpf_jiffies64();
	const __u8 *src = p->flow.src;
	__be16 sport = p->flow.sport;
	struct nat_state *ns;
	struct flow_key *rk;

	if (!sc) {
		*reason = DROP_NAT_TABLE_FULL;
		return XDP_DROP;
	}
	ns = &sc->ns;
	rk = &sc->rk;
	nat_state_for(ns, p, vip_id, ct_flags & FLOW_F_CLOSING ? NAT_F_CLOSING : 0, now);
	if (be->flags & BACKEND_F_FULLNAT) {
		struct nat_config *cfg = nat_cfg();

		src = snat_addr(vip_id);
		if (!src || !cfg) {
			*reason = DROP_BACKEND_INVALID;
			return XDP_DROP;
		}
		ns->flags |= NAT_F_FULL;
		nat_reply_key(rk, be, bport, src, 0, p->flow.proto);
		*reason = snat_alloc(p, (__u32)h, rk, ns, cfg, &sc->gone.key);
		if (*reason != DROP_NONE)
			return XDP_DROP;
		sport = rk->dport;
		ct_flags |= (__u32)sport << FLOW_SNAT_PORT_SHIFT;
	} else {
		/* The client's 5-tuple makes the key unique but for a flow that
		 * takes another's: a client port reused toward another VIP on
		 * the same backend, or a source forged to a live full-NAT
		 * mapping. Those are refused, never overwritten. */
		nat_reply_key(rk, be, bport, src, sport, p->flow.proto);
		*reason = nat_claim(rk, ns, p);
		if (*reason != DROP_NONE)
			return XDP_DROP;
	}
	if (ns->flags & NAT_F_ESTABLISHED) {
		conntrack_insert(&p->flow, h, bid, ct_flags | FLOW_F_ESTABLISHED);
		if (old == FLOW_IN_HALF)
			half_del(&p->flow, h);
	} else {
		half_track(p, h, vip_id, bid, ct_flags, old == FLOW_IN_CT);
	}
	return nat_send(ctx, ifindex, p, src, sport, be->addr, bport, bpf_map_lookup_elem(&backend_nh, &bid));
}

/*
 * A packet of an established NAT flow. Every FLOW_TOUCH_TICKS, when the
 * connection-table entry is stamped, the reply translation is stamped too
 * (so a flow that only sends keeps it) and checked: a translation reclaimed
 * meanwhile, or a full-NAT VIP whose SNAT address changed, makes the flow
 * placed again (NAT_REPLACE). A FIN or RST marks the translation closing.
 * A translation an older build wrote is marked established here.
 */
static __always_inline int nat_established(struct xdp_md *ctx, __u32 ifindex, const struct pkt *p,
					   const struct backend *be, struct ct_slot *fv)
{
	__be16 bport = backend_port(be, p->flow.dport);
	const __u8 *src = p->flow.src;
	__be16 sport = p->flow.sport;
	__u64 now = bpf_jiffies64();

	if (be->flags & BACKEND_F_FULLNAT) {
		src = snat_addr(be->vip_id);
		sport = fv->meta >> FLOW_SNAT_PORT_SHIFT;
		/* No port: the flow was placed while its VIP was not full NAT. */
		if (!src || !sport)
			return NAT_REPLACE;
	}
	if ((__u32)now - fv->stamp > FLOW_TOUCH_TICKS || (p->tcp & PKT_TCP_END)) {
		struct scratch *sc = scratch_get();
		struct nat_state *ns;

		if (!sc)
			return NAT_REPLACE;
		nat_reply_key(&sc->rk, be, bport, src, sport, p->flow.proto);
		ns = bpf_map_lookup_elem(&nat_flows, &sc->rk);
		if (!ns || ns->vip_id != be->vip_id || ns->client_port != p->flow.sport ||
		    !addr_eq(ns->client, p->flow.src))
			return NAT_REPLACE;
		fv->stamp = now;
		ns->last_seen = now;
		if (!(ns->flags & NAT_F_ESTABLISHED))
			ns->flags |= NAT_F_ESTABLISHED;
		if ((p->tcp & PKT_TCP_END) && !(ns->flags & NAT_F_CLOSING))
			ns->flags |= NAT_F_CLOSING;
	}
	{
		__u32 bid = ct_backend_id(fv);

		return nat_send(ctx, ifindex, p, src, sport, be->addr, bport, bpf_map_lookup_elem(&backend_nh, &bid));
	}
}

/*
 * A packet of a half-open NAT flow from its client (hf: its way in
 * ct_half, h its hash), sent as an established flow's are. The client's
 * first packet after the backend answered that is no SYN (the ACK of the
 * SYN-ACK, a UDP flow's next datagram) establishes it: the translation is
 * marked so and the flow moves from ct_half to the connection table. A
 * spoofed SYN never gets there: its client never sees the SYN-ACK.
 * NAT_REPLACE when the translation is no longer the flow's (dropped, or
 * its SNAT port taken by an early drop).
 */
static __always_inline int nat_half_open(struct xdp_md *ctx, __u32 ifindex, const struct pkt *p,
					 const struct backend *be, const struct half_flow *hf, __u64 h)
{
	__be16 bport = backend_port(be, p->flow.dport);
	struct scratch *sc = scratch_get();
	const __u8 *src = p->flow.src;
	__be16 sport = p->flow.sport;
	__u32 bid = hf->backend_id;
	__u32 flags = hf->flags;
	struct nat_state *ns;

	if (!sc)
		return NAT_REPLACE;
	if (be->flags & BACKEND_F_FULLNAT) {
		src = snat_addr(be->vip_id);
		sport = flags >> FLOW_SNAT_PORT_SHIFT;
		if (!src || !sport)
			return NAT_REPLACE;
	}
	nat_reply_key(&sc->rk, be, bport, src, sport, p->flow.proto);
	ns = bpf_map_lookup_elem(&nat_flows, &sc->rk);
	if (!ns || ns->vip_id != be->vip_id || ns->client_port != p->flow.sport || !addr_eq(ns->client, p->flow.src))
		return NAT_REPLACE;
	ns->last_seen = bpf_jiffies64();
	if ((p->tcp & PKT_TCP_END) && !(ns->flags & NAT_F_CLOSING))
		ns->flags |= NAT_F_CLOSING;
	if (!(p->tcp & PKT_TCP_SYN) && (ns->flags & NAT_F_REPLIED)) {
		ns->flags |= NAT_F_ESTABLISHED;
		flags |= FLOW_F_ESTABLISHED;
		if (p->tcp & PKT_TCP_END)
			flags |= FLOW_F_CLOSING;
		conntrack_insert(&p->flow, h, bid, flags);
		half_del(&p->flow, h);
	}
	return nat_send(ctx, ifindex, p, src, sport, be->addr, bport, bpf_map_lookup_elem(&backend_nh, &bid));
}

/* A packet from a NAT backend: if it is a reply of a NAT flow, translated
 * back (source the VIP, and for full NAT destination the client) and sent
 * toward the client; anything else goes to the kernel untouched. */
static __always_inline int nat_reply(struct xdp_md *ctx, __u32 ifindex, const struct pkt *p)
{
	struct nat_state *ns = bpf_map_lookup_elem(&nat_flows, &p->flow);
	const __u8 *dst = p->flow.dst;
	__be16 dport = p->flow.dport;
	__u64 now;

	if (!ns)
		return XDP_PASS;
	if (ns->flags & NAT_F_FULL) {
		dst = ns->client;
		dport = ns->client_port;
	}
	now = bpf_jiffies64();
	if (now - ns->last_seen > FLOW_TOUCH_TICKS)
		ns->last_seen = now;
	/* Written once per flow: what makes a half-open flow's next client
	 * packet establish it (nat_half_open). */
	if (!(ns->flags & NAT_F_REPLIED))
		ns->flags |= NAT_F_REPLIED;
	if ((p->tcp & PKT_TCP_END) && !(ns->flags & NAT_F_CLOSING))
		ns->flags |= NAT_F_CLOSING;
	count_event(EV_NAT_REPLY);
	return nat_send(ctx, ifindex, p, ns->vip, ns->vip_port, dst, dport, &ns->nh);
}
