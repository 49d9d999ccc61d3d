/* router.h: the ICMP errors a router sends, made in place: fragmentation needed / packet too big, time exceeded. */
#pragma once

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "parse.h"
#include "csum.h"
#include "stats.h"

/*
 * The frame becomes the error in place, sent back out of the interface it
 * came in on (XDP_TX, MACs swapped, a VLAN tag kept): a new IP and ICMP
 * header are grown in front of the packet's own IP header, which with the
 * first 8 bytes of its L4 header is the quoted part, and the rest is cut.
 * The error comes from the address the packet was sent to (the VIP for a
 * client's packet): the sender matches it by the quoted header only.
 * Quoted: an IPv4 header without options, or the IPv6 header, plus 8
 * bytes; anything else is passed to the kernel.
 */

#define ICMP_ERR_TTL 64
#define ICMP_FRAG_QUOTE (sizeof(struct iphdr) + ICMP_QUOTED_L4)
#define ICMP6_PTB_QUOTE (sizeof(struct ipv6hdr) + ICMP_QUOTED_L4)

/* Once the frame is grown it cannot go to the kernel as it came: a step
 * that fails after that (none can, but the verifier wants the checks)
 * drops it, counted. */
static __always_inline int answer_failed(void)
{
	count_drop(DROP_ANSWER_FAILED);
	return XDP_DROP;
}

/* The one's complement sum of n 4-byte-aligned bytes at p, folded. */
static __always_inline __u16 csum_region(void *p, __u32 n, __u32 seed)
{
	return ~csum_fold(bpf_csum_diff(NULL, 0, p, n, seed));
}

/* Moves the Ethernet header (and VLAN tag) grow bytes forward, to the new
 * start of the frame, swapping the MACs on the way. */
static __always_inline int answer_move_l2(void *data, void *data_end, __u32 grow, __u32 l3)
{
	struct ethhdr *eth = data, *old = data + grow;
	__u8 mac[ETH_ALEN];

	if ((void *)(old + 1) > data_end || data + grow + L3_OFF_MAX > data_end)
		return -1;
	__builtin_memcpy(mac, old->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, old->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, mac, ETH_ALEN);
	eth->h_proto = old->h_proto;
	if (l3 > sizeof(*eth)) /* the tag and the encapsulated ethertype */
		__builtin_memcpy((void *)(eth + 1), (void *)(old + 1), VLAN_HDR_LEN);
	return 0;
}

/* Grows grow bytes in front of the IP header at l3 and cuts the frame to
 * l3 + grow + quote: the L2 header moves to the new start, the packet's
 * own IP header and first bytes stay where they are, now the quote.
 * Returns 0, XDP_PASS when nothing was changed (no room), or the drop of
 * answer_failed once the frame was changed. */
static __always_inline int answer_reshape(struct xdp_md *ctx, __u32 l3, __u32 grow, __u32 quote)
{
	void *data, *data_end;

	if (bpf_xdp_adjust_head(ctx, -(int)grow))
		return XDP_PASS;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (answer_move_l2(data, data_end, grow, l3))
		return answer_failed(); /* cannot happen: the bytes were there before the move */
	if (bpf_xdp_adjust_tail(ctx, (int)(l3 + grow + quote) - (int)(data_end - data)))
		return answer_failed();
	return 0;
}

/* The start of the answer's ICMP header, len bytes of it in reach. */
static __always_inline __u8 *answer_icmp(struct xdp_md *ctx, __u32 l3, __u32 ip_len, __u32 len)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 *icmp;

	if (l3 > L3_OFF_MAX)
		return NULL;
	icmp = data + l3 + ip_len;
	if ((void *)icmp + len > data_end)
		return NULL;
	return icmp;
}

static __always_inline void answer_icmp_header(__u8 *icmp, __u8 type, __u8 code, __u32 rest)
{
	icmp[0] = type;
	icmp[1] = code;
	*(__u16 *)(icmp + 2) = 0;
	*(__be32 *)(icmp + 4) = bpf_htonl(rest);
}

/* The IPv4 error type/code with the 32 bits after the checksum (rest). */
static __always_inline int icmp_answer4(struct xdp_md *ctx, const struct pkt *p, __u8 type, __u8 code, __u32 rest)
{
	const __u32 len = ICMP_HDR_LEN + ICMP_FRAG_QUOTE;
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 l3 = p->l3_off;
	struct iphdr *iph, *old;
	__be32 src, dst;
	__u8 *icmp;
	int ret;

	if (l3 != 14 && l3 != 18)
		return XDP_PASS;
	old = data + l3;
	if ((void *)(old + 1) + ICMP_QUOTED_L4 > data_end || old->ihl != 5)
		return XDP_PASS;
	src = old->daddr;
	dst = old->saddr;
	ret = answer_reshape(ctx, l3, sizeof(*iph) + ICMP_HDR_LEN, ICMP_FRAG_QUOTE);
	if (ret)
		return ret;
	icmp = answer_icmp(ctx, l3, sizeof(*iph), len);
	if (!icmp)
		return answer_failed();
	iph = (void *)icmp - sizeof(*iph);

	*(__u16 *)iph = bpf_htons(0x45c0); /* version 4, ihl 5, DSCP CS6 as the kernel's ICMP */
	iph->tot_len = bpf_htons(sizeof(*iph) + len);
	iph->id = 0;
	iph->frag_off = 0;
	iph->ttl = ICMP_ERR_TTL;
	iph->protocol = IPPROTO_ICMP;
	iph->check = 0;
	iph->saddr = src;
	iph->daddr = dst;
	iph->check = csum_region(iph, sizeof(*iph), 0);

	answer_icmp_header(icmp, type, code, rest);
	*(__u16 *)(icmp + 2) = csum_region(icmp, len, 0);
	return XDP_TX;
}

static __always_inline int icmp_answer6(struct xdp_md *ctx, const struct pkt *p, __u8 type, __u8 code, __u32 rest)
{
	const __u32 len = ICMP_HDR_LEN + ICMP6_PTB_QUOTE;
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 l3 = p->l3_off, sum;
	struct ipv6hdr *ip6, *old;
	struct in6_addr src, dst;
	__u8 *icmp;
	int ret;

	if (l3 != 14 && l3 != 18)
		return XDP_PASS;
	old = data + l3;
	if ((void *)(old + 1) + ICMP_QUOTED_L4 > data_end)
		return XDP_PASS;
	src = old->daddr;
	dst = old->saddr;
	ret = answer_reshape(ctx, l3, sizeof(*ip6) + ICMP_HDR_LEN, ICMP6_PTB_QUOTE);
	if (ret)
		return ret;
	icmp = answer_icmp(ctx, l3, sizeof(*ip6), len);
	if (!icmp)
		return answer_failed();
	ip6 = (void *)icmp - sizeof(*ip6);

	*(__be32 *)ip6 = bpf_htonl(0x60000000);
	ip6->payload_len = bpf_htons(len);
	ip6->nexthdr = IPPROTO_ICMPV6;
	ip6->hop_limit = ICMP_ERR_TTL;
	ip6->saddr = src;
	ip6->daddr = dst;

	answer_icmp_header(icmp, type, code, rest);
	/* The pseudo-header: both addresses, the length and next header. */
	sum = bpf_csum_diff(NULL, 0, (void *)&ip6->saddr, 32, 0);
	sum = csum_add(sum, bpf_htonl(len));
	sum = csum_add(sum, bpf_htonl(IPPROTO_ICMPV6));
	*(__u16 *)(icmp + 2) = csum_region(icmp, len, sum);
	return XDP_TX;
}

/* Whether a router may send an ICMP error to a packet's source: not to an
 * address that is no single host's (RFC 1812 4.3.2.7, RFC 4443 2.4):
 * unspecified, loopback, link-local, multicast, or IPv4's 0/8 and 240/4
 * (broadcast included). Such a packet passes untouched and the kernel,
 * which drops martian sources, has it. The FIB usually refuses these
 * first, but a reused next hop (nat.h) does not ask it. */
static __always_inline int icmp_error_allowed(const struct pkt *p)
{
	const __u8 *a = p->flow.src;

	if (p->v6) {
		__u64 hi = *(const __u64 *)a, lo = *(const __u64 *)(a + 8);

		if (a[0] == 0xff || (a[0] == 0xfe && (a[1] & 0xc0) == 0x80))
			return 0; /* multicast, link-local */
		return hi != 0 || (lo != 0 && lo != bpf_cpu_to_be64(1)); /* ::, ::1 */
	}
	/* IPv4-mapped: the address is in the last 4 bytes. */
	return a[12] != 0 && a[12] != 127 && a[12] < 224 && !(a[12] == 169 && a[13] == 254);
}

/* A packet of a NAT flow, as it came (untranslated), is larger than the
 * egress MTU and may not be fragmented: fragmentation needed (3/4, the MTU
 * in the low 16 bits) or packet too big (2/0, the MTU). */
static __always_inline int answer_too_big(struct xdp_md *ctx, const struct pkt *p, __u16 mtu)
{
	if (!icmp_error_allowed(p))
		return XDP_PASS;
	count_event(EV_FRAG_NEEDED);
	if (p->v6)
		return icmp_answer6(ctx, p, 2, 0, mtu);
	return icmp_answer4(ctx, p, 3, 4, mtu);
}

/* A packet of a NAT flow whose TTL or hop limit runs out here: time
 * exceeded in transit (IPv4 11/0, IPv6 3/0). */
static __always_inline int answer_ttl_exceeded(struct xdp_md *ctx, const struct pkt *p)
{
	if (!icmp_error_allowed(p))
		return XDP_PASS;
	count_event(EV_TTL_EXCEEDED);
	if (p->v6)
		return icmp_answer6(ctx, p, 3, 0, 0);
	return icmp_answer4(ctx, p, 11, 0, 0);
}
