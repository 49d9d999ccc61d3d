/* parse.h: Ethernet/VLAN, IPv4/IPv6 and TCP/UDP parsing, and the policy for frames we cannot parse. */
#pragma once

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "types.h"

/*
 * Policy for frames that are not plain Ethernet + IP + TCP/UDP
 * ============================================================
 * The program may only take (drop or forward) what is provably addressed to
 * one of our VIPs; everything else goes to the kernel untouched, which
 * validates it and keeps its own counters.
 *
 *  frame                                               | verdict
 *  ----------------------------------------------------+-----------------------------
 *  non-IP, ARP, more than one VLAN tag                 | XDP_PASS
 *  Ethernet, VLAN tag or IPv4/IPv6 header truncated     | XDP_PASS (not provably ours)
 *  IPv4 version != 4 or ihl < 5, IPv6 version != 6     | XDP_PASS
 *  IP total/payload length beyond the end of the frame | XDP_PASS (so any frame cut
 *                                                      |   short after the IP header)
 *  IPv4 with options                                   | parsed normally (L4 at ihl*4)
 *  ICMP/ICMPv6 error (v4 dest unreachable, time       | quoted flow a VIP's or a NAT
 *    exceeded; v6 dest unreachable, packet too big,    |   flow's: forwarded or translated
 *    time exceeded) quoting TCP/UDP, outer IPv4        |   (icmp.h); else XDP_PASS
 *    without options, inner IPv4 without options, no   |
 *    IPv6 extension headers, 8 quoted L4 bytes         |
 *  other ICMP, ICMPv6 (NDP), other L4 protocols        | XDP_PASS
 *  IPv4 fragment (MF set or offset != 0)               | dst is a VIP address: XDP_DROP,
 *                                                      |   DROP_FRAGMENT; else XDP_PASS
 *  IPv6 Fragment header                                | as above, DROP_FRAGMENT
 *  IPv6 other extension header (hop-by-hop, routing,   | dst is a VIP address: XDP_DROP,
 *    destination options, AH, mobility, HIP, shim6)    |   DROP_IPV6_EXT; else XDP_PASS
 *  L4 shorter than its header per the IP length        | dst is a VIP address: XDP_DROP,
 *    (TCP < 20 bytes, doff < 5, doff*4 > L4 length,    |   DROP_MALFORMED_L4; else
 *    UDP < 8 bytes, UDP length < 8 or > L4 length)     |   XDP_PASS
 *  TCP/UDP to a VIP address but no VIP (port, proto)   | XDP_PASS
 *
 * "VIP address" means any VIP on that address whatever its port and protocol
 * (map vip_addrs): with a fragment or a broken header the port is unknown.
 * A fragment is never forwarded: only the first one carries the ports, and
 * sending the rest to a backend chosen without them would mis-forward.
 * Frames shorter than an Ethernet header never reach XDP (and BPF_PROG_RUN
 * refuses them).
 */

/* What the parser found; the verdict for each is decided in xdplb.c. */
enum parse_result {
	PARSE_PASS = 0,     /* not ours or not provably ours: XDP_PASS */
	PARSE_OK,           /* TCP/UDP 5-tuple in pkt.flow */
	PARSE_FRAGMENT,     /* pkt.flow.dst is set */
	PARSE_IPV6_EXT,     /* pkt.flow.dst is set */
	PARSE_MALFORMED_L4, /* pkt.flow.dst is set */
	PARSE_ICMP_ERROR,   /* pkt.flow is the quoted packet's 5-tuple as quoted */
};

/* The TCP flags the data plane acts on, folded into one byte of struct pkt
 * so that an established packet (none of them) costs one compare. */
enum pkt_tcp {
	PKT_TCP_SYN = 1, /* SYN without ACK: the first packet of a connection */
	PKT_TCP_END = 2, /* FIN or RST: the connection is ending */
};

/* Aligned so the destination address can be compared as two 8-byte words
 * (conntrack.h). */
struct pkt {
	struct flow_key flow; /* addresses IPv4-mapped, ports network order */
	__u32 len;            /* whole frame, for byte counters */
	__u8 tcp;             /* PKT_TCP_*; 0 for UDP */
	__u8 v6;              /* IPv6, else IPv4 */
	/* Offsets from the frame's start, for the NAT rewrites: the IP
	 * header (14 or 18 with a VLAN tag) and the TCP/UDP header, or for an
	 * ICMP error the ICMP header; its quoted IP header follows 8 bytes on. */
	__u8 l3_off;
	__u8 l4_off;
} __attribute__((aligned(8)));

/* Bounds the verifier can carry through the rewrites. */
#define L3_OFF_MAX (14 + 4)
#define L4_OFF_MAX (L3_OFF_MAX + 60)

/* TCP header flag bits, in the byte at offset 13. */
#define TH_FIN 0x01
#define TH_SYN 0x02
#define TH_RST 0x04
#define TH_ACK 0x10
#define TH_FLAGS_OFF 13

#define VLAN_HDR_LEN 4
#define ICMP_HDR_LEN 8
#define ICMP_QUOTED_L4 8 /* RFC 792: at least 64 bits of the quoted datagram */
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

/* ::ffff:a.b.c.d, the form Go's netip.Addr.As16 gives for IPv4. */
static __always_inline void addr_from_v4(__u8 out[16], __be32 v4)
{
	__u32 *w = (__u32 *)out;

	w[0] = 0;
	w[1] = 0;
	w[2] = bpf_htonl(0x0000ffff);
	w[3] = v4;
}

static __always_inline int parse_tcp(void *l4, void *data_end, __u32 l4_len, struct pkt *p)
{
	struct tcphdr *th = l4;
	__u8 flags;

	if (l4_len < sizeof(*th))
		return PARSE_MALFORMED_L4;
	/* Always true once the IP length was checked against the frame, but
	 * the verifier cannot relate that scalar check to this pointer. */
	if ((void *)(th + 1) > data_end)
		return PARSE_PASS;
	if (th->doff < 5 || (__u32)th->doff * 4 > l4_len)
		return PARSE_MALFORMED_L4;
	p->flow.sport = th->source;
	p->flow.dport = th->dest;
	/* One byte load instead of three bitfield reads. */
	flags = *((__u8 *)th + TH_FLAGS_OFF);
	if ((flags & (TH_SYN | TH_ACK)) == TH_SYN)
		p->tcp |= PKT_TCP_SYN;
	if (flags & (TH_FIN | TH_RST))
		p->tcp |= PKT_TCP_END;
	return PARSE_OK;
}

static __always_inline int parse_udp(void *l4, void *data_end, __u32 l4_len, struct pkt *p)
{
	struct udphdr *uh = l4;
	__u32 ulen;

	if (l4_len < sizeof(*uh))
		return PARSE_MALFORMED_L4;
	if ((void *)(uh + 1) > data_end) /* see parse_tcp */
		return PARSE_PASS;
	ulen = bpf_ntohs(uh->len);
	if (ulen < sizeof(*uh) || ulen > l4_len)
		return PARSE_MALFORMED_L4;
	p->flow.sport = uh->source;
	p->flow.dport = uh->dest;
	return PARSE_OK;
}

static __always_inline int parse_l4(__u8 proto, void *l4, void *data_end, __u32 l4_len,
				    struct pkt *p)
{
	p->flow.proto = proto;
	if (proto == IPPROTO_TCP)
		return parse_tcp(l4, data_end, l4_len, p);
	return parse_udp(l4, data_end, l4_len, p);
}

/* The ports of a quoted TCP/UDP header: the first four bytes of both. */
static __always_inline void quoted_ports(const void *l4, struct pkt *p)
{
	const __be16 *ports = l4;

	p->flow.sport = ports[0];
	p->flow.dport = ports[1];
}

static __always_inline int parse_quoted_ipv4(struct iphdr *ih, void *data_end, struct pkt *p)
{
	if ((void *)(ih + 1) + ICMP_QUOTED_L4 > data_end)
		return PARSE_PASS;
	if (ih->version != 4 || ih->ihl != 5)
		return PARSE_PASS;
	if (ih->protocol != IPPROTO_TCP && ih->protocol != IPPROTO_UDP)
		return PARSE_PASS;
	if (ih->frag_off & bpf_htons(IP_OFFSET)) /* no ports quoted */
		return PARSE_PASS;
	addr_from_v4(p->flow.src, ih->saddr);
	addr_from_v4(p->flow.dst, ih->daddr);
	p->flow.proto = ih->protocol;
	quoted_ports(ih + 1, p);
	return PARSE_ICMP_ERROR;
}

/* ICMP errors that quote a flow: destination unreachable (fragmentation
 * needed and port unreachable among them) and time exceeded. */
static __always_inline int parse_icmp4(struct iphdr *iph, void *data_end, __u32 tot_len, struct pkt *p)
{
	__u8 *icmp = (void *)(iph + 1);

	if (iph->ihl != 5 || (iph->frag_off & bpf_htons(IP_MF | IP_OFFSET)))
		return PARSE_PASS;
	/* The quote must be inside the IP packet, not in a frame's trailer. */
	if (tot_len < sizeof(*iph) + ICMP_HDR_LEN + sizeof(struct iphdr) + ICMP_QUOTED_L4)
		return PARSE_PASS;
	if ((void *)icmp + ICMP_HDR_LEN > data_end)
		return PARSE_PASS;
	if (icmp[0] != 3 && icmp[0] != 11)
		return PARSE_PASS;
	p->l4_off = p->l3_off + sizeof(*iph);
	return parse_quoted_ipv4((void *)icmp + ICMP_HDR_LEN, data_end, p);
}

static __always_inline int parse_icmp6(struct ipv6hdr *ip6, void *data_end, __u32 plen, struct pkt *p)
{
	__u8 *icmp = (void *)(ip6 + 1);
	struct ipv6hdr *ih;

	if (plen < ICMP_HDR_LEN + sizeof(struct ipv6hdr) + ICMP_QUOTED_L4)
		return PARSE_PASS;
	if ((void *)icmp + ICMP_HDR_LEN > data_end)
		return PARSE_PASS;
	/* 1 destination unreachable, 2 packet too big, 3 time exceeded */
	if (icmp[0] < 1 || icmp[0] > 3)
		return PARSE_PASS;
	ih = (void *)icmp + ICMP_HDR_LEN;
	if ((void *)(ih + 1) + ICMP_QUOTED_L4 > data_end)
		return PARSE_PASS;
	if (ih->version != 6 || (ih->nexthdr != IPPROTO_TCP && ih->nexthdr != IPPROTO_UDP))
		return PARSE_PASS;
	p->l4_off = p->l3_off + sizeof(*ip6);
	p->v6 = 1;
	__builtin_memcpy(p->flow.src, &ih->saddr, 16);
	__builtin_memcpy(p->flow.dst, &ih->daddr, 16);
	p->flow.proto = ih->nexthdr;
	quoted_ports(ih + 1, p);
	return PARSE_ICMP_ERROR;
}

static __always_inline int parse_ipv4(struct iphdr *iph, void *data_end, struct pkt *p)
{
	__u32 hlen, tot_len;

	if ((void *)(iph + 1) > data_end)
		return PARSE_PASS;
	if (iph->version != 4 || iph->ihl < 5)
		return PARSE_PASS;
	hlen = iph->ihl * 4;
	tot_len = bpf_ntohs(iph->tot_len);
	/* Compare lengths as scalars: cheaper for the verifier than a
	 * variable-offset packet pointer, and the same test. */
	if (tot_len < hlen || tot_len > (__u64)(data_end - (void *)iph))
		return PARSE_PASS;
	if (iph->protocol == IPPROTO_ICMP)
		return parse_icmp4(iph, data_end, tot_len, p);
	if (iph->protocol != IPPROTO_TCP && iph->protocol != IPPROTO_UDP)
		return PARSE_PASS;

	addr_from_v4(p->flow.dst, iph->daddr);
	if (iph->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return PARSE_FRAGMENT;
	addr_from_v4(p->flow.src, iph->saddr);
	p->l4_off = p->l3_off + hlen;
	/* hlen is ihl*4 <= 60, so the verifier can bound the L4 pointer. */
	return parse_l4(iph->protocol, (void *)iph + hlen, data_end, tot_len - hlen, p);
}

static __always_inline int ipv6_is_ext(__u8 nexthdr)
{
	switch (nexthdr) {
	case IPPROTO_HOPOPTS:
	case IPPROTO_ROUTING:
	case IPPROTO_DSTOPTS:
	case IPPROTO_AH:
	case IPPROTO_MH:
	case 139: /* HIP */
	case 140: /* Shim6 */
		return 1;
	}
	return 0;
}

static __always_inline int parse_ipv6(struct ipv6hdr *ip6, void *data_end, struct pkt *p)
{
	__u32 plen;
	__u8 nh;

	if ((void *)(ip6 + 1) > data_end)
		return PARSE_PASS;
	if (ip6->version != 6)
		return PARSE_PASS;
	plen = bpf_ntohs(ip6->payload_len);
	if (plen > (__u64)(data_end - (void *)(ip6 + 1)))
		return PARSE_PASS;

	nh = ip6->nexthdr;
	if (nh == IPPROTO_FRAGMENT) {
		__builtin_memcpy(p->flow.dst, &ip6->daddr, 16);
		return PARSE_FRAGMENT;
	}
	if (ipv6_is_ext(nh)) {
		__builtin_memcpy(p->flow.dst, &ip6->daddr, 16);
		return PARSE_IPV6_EXT;
	}
	if (nh == IPPROTO_ICMPV6)
		return parse_icmp6(ip6, data_end, plen, p); /* errors only: NDP passes */
	if (nh != IPPROTO_TCP && nh != IPPROTO_UDP)
		return PARSE_PASS;

	p->v6 = 1;
	p->l4_off = p->l3_off + sizeof(*ip6);
	__builtin_memcpy(p->flow.src, &ip6->saddr, 16);
	__builtin_memcpy(p->flow.dst, &ip6->daddr, 16);
	return parse_l4(nh, ip6 + 1, data_end, plen, p);
}

/* Fills p and says what the frame is; never touches the packet. */
static __always_inline int parse_packet(struct xdp_md *ctx, struct pkt *p)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	void *l3 = eth + 1;
	__be16 proto;

	p->len = data_end - data;
	if (l3 > data_end)
		return PARSE_PASS;
	proto = eth->h_proto;

	/* One 802.1Q or 802.1ad tag; a second tag leaves proto non-IP: pass. */
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		if (l3 + VLAN_HDR_LEN > data_end)
			return PARSE_PASS;
		/* The encapsulated ethertype is the tag's last two bytes. */
		proto = *(__be16 *)(l3 + 2);
		l3 += VLAN_HDR_LEN;
	}
	p->l3_off = l3 - data;

	if (proto == bpf_htons(ETH_P_IP))
		return parse_ipv4(l3, data_end, p);
	if (proto == bpf_htons(ETH_P_IPV6))
		return parse_ipv6(l3, data_end, p);
	return PARSE_PASS;
}
