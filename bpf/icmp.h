/* icmp.h: ICMP and ICMPv6 errors about a VIP's flows: to the flow's backend, or translated back to its client. */
#pragma once

#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "maps.h"
#include "parse.h"
#include "csum.h"
#include "fib.h"
#include "stats.h"
#include "sched.h"
#include "conntrack.h"
#include "vipfilter.h"
#include "dr.h"
#include "nat.h"
#include "scratch.h"

/*
 * An ICMP error quotes the packet it is about, and the quoted 5-tuple
 * reversed (`fk` below) is the key of the flow's own entries:
 *
 *  - An error sent to a VIP address quotes a packet from the VIP: a reply
 *    (DR: sent by the backend; NAT: translated by us), reported by a router
 *    on the way to the client, fragmentation needed or packet too big above
 *    all. fk is then the client's 5-tuple: the connection table or, for a
 *    half-open flow, ct_half (or, for a flow neither holds, the VIP's
 *    Maglev table, as for any non-SYN)
 *    names the backend, which gets the error. For DR the frame goes as it
 *    is (the backend owns the VIP); for NAT it is translated as the flow's
 *    packets are, quoted packet included, so that path MTU discovery works
 *    in every mode.
 *  - An error from the backend's side quotes a packet we translated toward
 *    a NAT backend (port unreachable from a UDP backend, a router's
 *    fragmentation needed or time exceeded): fk is the flow's reply key in
 *    nat_flows, and the error is translated back and sent to the client.
 *
 * Whatever matches neither goes to the kernel untouched.
 */

#define ICMP_NOT_OURS (-1)

/* vip_id_matches (conntrack.h) for a flow key. */
static __always_inline int vip_id_matches_key(__u32 vip_id, const struct flow_key *fk)
{
	struct vip_key *k = bpf_map_lookup_elem(&vip_keys, &vip_id);

	return k && addr_eq(k->addr, fk->dst) && k->port == fk->dport && k->proto == fk->proto;
}

/* Rewrites the outer and the quoted headers to t and fixes every checksum
 * that covers them: the outer IPv4 header, the ICMP message (which covers
 * the quoted packet, and for ICMPv6 the outer addresses), the quoted IPv4
 * header and the quoted L4 checksum when it was quoted. Bounds first:
 * -1 leaves the packet untouched. */
static __always_inline int icmp_rewrite(struct xdp_md *ctx, const struct pkt *p, const struct icmp_nat *t)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 l3 = p->l3_off;
	__u32 ip_len = p->v6 ? sizeof(struct ipv6hdr) : sizeof(struct iphdr);
	__u32 outer = 0, inner = 0, icmp_diff;
	__u16 *icmp_check, *in_l4_check = NULL;
	__be16 *in_ports;
	void *in_l3;

	if (l3 > L3_OFF_MAX)
		return -1;
	/* The ICMP path takes IPv4 headers without options only (parse.h). */
	in_l3 = data + l3 + ip_len + ICMP_HDR_LEN;
	if (in_l3 + ip_len + ICMP_QUOTED_L4 > data_end)
		return -1;
	in_ports = in_l3 + ip_len;
	icmp_check = data + l3 + ip_len + 2;

	outer = csum_diff_addr(0, t->old_src, t->src, p->v6);
	outer = csum_diff_addr(outer, t->old_dst, t->dst, p->v6);
	inner = csum_diff_addr(0, p->flow.src, t->in_src, p->v6);
	inner = csum_diff_addr(inner, p->flow.dst, t->in_dst, p->v6);

	/* The ICMP checksum sees the quoted addresses and ports, and the new
	 * values of the quoted checksums. */
	icmp_diff = csum_diff16(inner, p->flow.sport, t->in_sport);
	icmp_diff = csum_diff16(icmp_diff, p->flow.dport, t->in_dport);
	/* The quoted TCP checksum only if it is quoted: inside the IP packet
	 * (a frame may carry a trailer after it), not only the frame. */
	if (p->flow.proto == IPPROTO_UDP)
		in_l4_check = (void *)in_ports + 6;
	else if (2 * ip_len + ICMP_HDR_LEN + 18 <= ip_tot_len(ctx, l3, p->v6) && (void *)in_ports + 18 <= data_end)
		in_l4_check = (void *)in_ports + 16;
	if (in_l4_check && (void *)(in_l4_check + 1) <= data_end) {
		__u16 old = *in_l4_check, new;
		__u32 d = csum_diff16(inner, p->flow.sport, t->in_sport);

		d = csum_diff16(d, p->flow.dport, t->in_dport);
		new = p->flow.proto == IPPROTO_UDP ? csum_apply_udp(old, d, p->v6) : csum_apply(old, d);
		icmp_diff = csum_diff16(icmp_diff, old, new);
		*in_l4_check = new;
	}
	if (p->v6) {
		struct ipv6hdr *ip6 = data + l3;
		struct ipv6hdr *ih = in_l3;

		if ((void *)(ih + 1) > data_end)
			return -1;
		icmp_diff = csum_add(icmp_diff, outer); /* the ICMPv6 pseudo-header */
		__builtin_memcpy(&ip6->saddr, t->src, 16);
		__builtin_memcpy(&ip6->daddr, t->dst, 16);
		__builtin_memcpy(&ih->saddr, t->in_src, 16);
		__builtin_memcpy(&ih->daddr, t->in_dst, 16);
	} else {
		struct iphdr *iph = data + l3;
		struct iphdr *ih = in_l3;
		__u16 old;

		if ((void *)(ih + 1) > data_end)
			return -1;
		__builtin_memcpy(&iph->saddr, t->src + 12, 4);
		__builtin_memcpy(&iph->daddr, t->dst + 12, 4);
		iph->check = csum_apply(iph->check, outer);
		__builtin_memcpy(&ih->saddr, t->in_src + 12, 4);
		__builtin_memcpy(&ih->daddr, t->in_dst + 12, 4);
		old = ih->check;
		ih->check = csum_apply(old, inner);
		icmp_diff = csum_diff16(icmp_diff, old, ih->check);
	}
	if ((void *)(in_ports + 2) > data_end || (void *)(icmp_check + 1) > data_end)
		return -1;
	in_ports[0] = t->in_sport;
	in_ports[1] = t->in_dport;
	*icmp_check = csum_apply(*icmp_check, icmp_diff);
	return 0;
}

/* Routes and sends a translated ICMP error, with nat_send's rules for what
 * goes to the kernel. */
static __always_inline int icmp_send(struct xdp_md *ctx, __u32 ifindex, const struct pkt *p,
				     const struct icmp_nat *t)
{
	struct scratch *sc = scratch_get();
	struct bpf_fib_lookup *fib;
	__u32 l3 = p->l3_off;
	long rc;

	if (!sc)
		return XDP_PASS;
	fib = &sc->fib;
	if (ip_ttl(ctx, l3, p->v6) <= 1) {
		count_event(EV_TTL_EXCEEDED);
		return XDP_PASS;
	}
	rc = fib_route(ctx, ifindex, p->v6, t->src, t->dst, p->v6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP,
		       ip_tot_len(ctx, l3, p->v6), fib, NULL);
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH || rc == FIB_RET_NOT_XDP) {
		if (icmp_rewrite(ctx, p, t) == 0)
			count_event(rc == FIB_RET_NOT_XDP ? EV_EGRESS_NOT_XDP : EV_FIB_NO_NEIGH);
		return XDP_PASS;
	}
	if (rc != BPF_FIB_LKUP_RET_SUCCESS) {
		count_event(rc == BPF_FIB_LKUP_RET_FRAG_NEEDED ? EV_FRAG_NEEDED : EV_FIB_FAILED);
		return XDP_PASS;
	}
	if (icmp_rewrite(ctx, p, t))
		return XDP_PASS;
	ip_dec_ttl(ctx, l3, p->v6);
	return fib_send(ctx, ifindex, fib);
}

/* Starts t with the outer addresses as they are, new and old. */
static __always_inline int icmp_outer_addrs(struct xdp_md *ctx, const struct pkt *p, struct icmp_nat *t)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 l3 = p->l3_off;

	if (l3 > L3_OFF_MAX)
		return -1;
	if (p->v6) {
		struct ipv6hdr *ip6 = data + l3;

		if ((void *)(ip6 + 1) > data_end)
			return -1;
		__builtin_memcpy(t->src, &ip6->saddr, 16);
		__builtin_memcpy(t->dst, &ip6->daddr, 16);
	} else {
		struct iphdr *iph = data + l3;

		if ((void *)(iph + 1) > data_end)
			return -1;
		addr_from_v4(t->src, iph->saddr);
		addr_from_v4(t->dst, iph->daddr);
	}
	__builtin_memcpy(t->old_src, t->src, 16);
	__builtin_memcpy(t->old_dst, t->dst, 16);
	return 0;
}

/* An error about a VIP flow's reply: to the flow's backend. t starts with
 * the outer addresses (icmp_outer_addrs). */
static __always_inline int icmp_to_backend(struct xdp_md *ctx, __u32 ifindex, const struct pkt *p,
					   const struct flow_key *fk, struct icmp_nat *t)
{
	__u64 h = flow_hash64(fk);
	struct ct_slot *fv = conntrack_lookup(h);
	struct scratch *sc = scratch_get();
	struct backend *be = NULL;
	__u32 ct_flags = 0;
	int held = 0;
	__be16 bport;

	if (!sc)
		return XDP_PASS;
	if (fv) {
		ct_flags = fv->meta;
		held = 1;
	} else if (half_get(fk, h, 0, 0, &sc->hf)) {
		/* A half-open flow's: its way in ct_half, read only. */
		ct_flags = sc->hf.flags;
		held = 1;
	}
	if (held) {
		__u32 bid = fv ? ct_backend_id(fv) : sc->hf.backend_id;

		be = bpf_map_lookup_elem(&backends, &bid);
		if (be && (!backend_usable(be) || !vip_id_matches_key(be->vip_id, fk)))
			be = NULL;
	}
	if (!be) {
		enum drop_reason reason = DROP_NONE;
		struct vip_key vk = {};
		struct vip_meta *meta;
		__u32 bid;

		__builtin_memcpy(vk.addr, fk->dst, 16);
		vk.port = fk->dport;
		vk.proto = fk->proto;
		meta = bpf_map_lookup_elem(&vips, &vk);
		if (!meta)
			return ICMP_NOT_OURS;
		/* Not a SYN: the Maglev table, as for any packet of a flow we
		 * do not hold. */
		__builtin_memset(&sc->quoted, 0, sizeof(sc->quoted));
		sc->quoted.flow = *fk;
		bid = schedule(&sc->quoted, meta, &reason);
		be = bid ? backend_for(bid, meta->vip_id) : NULL;
		if (!be)
			return XDP_PASS;
		held = 0;
	}
	if (!backend_is_nat(be)) {
		count_vip_icmp(be->vip_id);
		count_event(EV_ICMP_TO_BACKEND);
		return dr_forward(ctx, ifindex, be);
	}

	/* As the flow's packets are translated: the VIP becomes the backend
	 * (outer destination, quoted source); for full NAT the client becomes
	 * the SNAT address and port (quoted destination, and outer source so
	 * that the backend, which may have no route to the reporting router,
	 * takes it as from us). */
	bport = backend_port(be, fk->dport);
	__builtin_memcpy(t->dst, be->addr, 16);
	__builtin_memcpy(t->in_src, be->addr, 16);
	t->in_sport = bport;
	__builtin_memcpy(t->in_dst, p->flow.dst, 16);
	t->in_dport = p->flow.dport;
	if (be->flags & BACKEND_F_FULLNAT) {
		const __u8 *snat = snat_addr(be->vip_id);

		/* The SNAT port is the connection table's: without the entry
		 * there is no flow at the backend to tell. */
		if (!snat || !held)
			return XDP_PASS;
		__builtin_memcpy(t->src, snat, 16);
		__builtin_memcpy(t->in_dst, snat, 16);
		t->in_dport = ct_flags >> FLOW_SNAT_PORT_SHIFT;
	}
	count_vip_icmp(be->vip_id);
	count_event(EV_ICMP_TO_BACKEND);
	return icmp_send(ctx, ifindex, p, t);
}

/* An error about a packet we translated toward a NAT backend: back to the
 * flow's client, as its replies are translated. */
static __always_inline int icmp_to_client(struct xdp_md *ctx, __u32 ifindex, const struct pkt *p,
					  const struct flow_key *fk, struct icmp_nat *t)
{
	struct nat_state *ns = bpf_map_lookup_elem(&nat_flows, fk);

	if (!ns)
		return XDP_PASS;
	count_vip_icmp(ns->vip_id);
	count_event(EV_ICMP_TO_CLIENT);
	/* From the backend itself (port unreachable): from the VIP, as the
	 * client knows it; from a router: as it is. */
	if (addr_eq(t->src, fk->src))
		__builtin_memcpy(t->src, ns->vip, 16);
	__builtin_memcpy(t->in_src, p->flow.src, 16);
	t->in_sport = p->flow.sport;
	if (ns->flags & NAT_F_FULL) {
		__builtin_memcpy(t->dst, ns->client, 16);
		__builtin_memcpy(t->in_src, ns->client, 16);
		t->in_sport = ns->client_port;
	}
	__builtin_memcpy(t->in_dst, ns->vip, 16);
	t->in_dport = ns->vip_port;
	return icmp_send(ctx, ifindex, p, t);
}

/* p->flow is the quoted 5-tuple (parse.h, PARSE_ICMP_ERROR). */
static __always_inline int icmp_error(struct xdp_md *ctx, __u32 ifindex, const struct pkt *p)
{
	struct flow_key fk = {};
	struct scratch *sc = scratch_get();
	const struct vip_bitmap *filter;
	struct icmp_nat *t;
	int ret;

	if (!sc)
		return XDP_PASS;
	t = &sc->icmp;
	__builtin_memset(t, 0, sizeof(*t));
	/* An error goes to the source of the packet it quotes: anything
	 * else is not about one of our flows (or is forged). */
	if (icmp_outer_addrs(ctx, p, t) || !addr_eq(t->dst, p->flow.src))
		return XDP_PASS;

	__builtin_memcpy(fk.src, p->flow.dst, 16);
	__builtin_memcpy(fk.dst, p->flow.src, 16);
	fk.sport = p->flow.dport;
	fk.dport = p->flow.sport;
	fk.proto = p->flow.proto;
	filter = vip_filter_get();
	if (vip_filter_may_match(filter, &fk)) {
		ret = icmp_to_backend(ctx, ifindex, p, &fk, t);
		if (ret != ICMP_NOT_OURS)
			return ret;
	}
	if (reply_filter_may_match(filter, &fk))
		return icmp_to_client(ctx, ifindex, p, &fk, t);
	return XDP_PASS;
}
