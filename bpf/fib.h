/* fib.h: the next hop of a translated packet from the kernel's FIB, and sending it there. */
#pragma once

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>

#include "maps.h"
#include "parse.h"
#include "stats.h"

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

/* Asks the FIB for the route from src to dst of a packet of tot_len bytes
 * (the MTU is checked against it) arriving on ifindex; fib is all
 * overwritten. */
static __always_inline long fib_next_hop(struct xdp_md *ctx, __u32 ifindex, int v6, const __u8 src[16],
					 const __u8 dst[16], __u8 proto, __u16 tot_len,
					 struct bpf_fib_lookup *fib)
{
	__builtin_memset(fib, 0, sizeof(*fib));
	fib->ifindex = ifindex;
	fib->l4_protocol = proto;
	fib->tot_len = tot_len;
	if (v6) {
		fib->family = AF_INET6;
		__builtin_memcpy(fib->ipv6_src, src, 16);
		__builtin_memcpy(fib->ipv6_dst, dst, 16);
	} else {
		fib->family = AF_INET;
		__builtin_memcpy(&fib->ipv4_src, src + 12, 4);
		__builtin_memcpy(&fib->ipv4_dst, dst + 12, 4);
	}
	return bpf_fib_lookup(ctx, fib, sizeof(*fib), 0);
}

/* fib_route's answer for a route whose egress has no XDP program of ours
 * (not in tx_ports); not a BPF_FIB_LKUP_RET_* value. */
#define FIB_RET_NOT_XDP 100

static __always_inline int next_hop_fresh(const struct next_hop *nh, __u32 ifindex, __u16 tot_len, __u64 now,
					  __u64 ttl)
{
	return nh->stamp && now - nh->stamp < ttl && nh->in_ifindex == ifindex && tot_len <= nh->max_len;
}

/*
 * The next hop toward dst for a packet of tot_len bytes arriving on
 * ifindex: from nh while it is fresh (the same ingress, younger than
 * fib_cache_ticks, the packet no longer than one the MTU check passed),
 * else from the FIB, remembered in nh when the route succeeds through one
 * of our interfaces. On BPF_FIB_LKUP_RET_SUCCESS fib->ifindex, dmac and
 * smac are set and the egress is in tx_ports. nh may be NULL (no cache).
 * The source takes no part: policy routing by source is not followed
 * beyond the first packet of a cache period.
 */
static __always_inline long fib_route(struct xdp_md *ctx, __u32 ifindex, int v6, const __u8 src[16],
				      const __u8 dst[16], __u8 proto, __u16 tot_len, struct bpf_fib_lookup *fib,
				      struct next_hop *nh)
{
	__u32 zero = 0;
	struct nat_config *cfg = bpf_map_lookup_elem(&nat_params, &zero);
	__u64 now = bpf_jiffies64();
	long rc;

	if (nh && cfg && next_hop_fresh(nh, ifindex, tot_len, now, cfg->fib_cache_ticks)) {
		fib->ifindex = nh->ifindex;
		__builtin_memcpy(fib->dmac, nh->dmac, ETH_ALEN);
		__builtin_memcpy(fib->smac, nh->smac, ETH_ALEN);
		return BPF_FIB_LKUP_RET_SUCCESS;
	}
	rc = fib_next_hop(ctx, ifindex, v6, src, dst, proto, tot_len, fib);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return rc;
	if (!bpf_map_lookup_elem(&tx_ports, &fib->ifindex))
		return FIB_RET_NOT_XDP;
	if (nh) {
		__u16 max_len = tot_len;

		/* The same route, fresh: it passed longer packets before. */
		if (nh->stamp && now - nh->stamp < (cfg ? cfg->fib_cache_ticks : 0) && nh->ifindex == fib->ifindex &&
		    nh->max_len > max_len)
			max_len = nh->max_len;
		__builtin_memcpy(nh->dmac, fib->dmac, ETH_ALEN);
		__builtin_memcpy(nh->smac, fib->smac, ETH_ALEN);
		nh->ifindex = fib->ifindex;
		nh->in_ifindex = ifindex;
		nh->max_len = max_len;
		nh->stamp = now ? now : 1;
	}
	return BPF_FIB_LKUP_RET_SUCCESS;
}

/* Writes the next hop's MACs and sends the frame out of fib->ifindex: back
 * out of the interface it came in on (XDP_TX) or through tx_ports to
 * another attached one. fib->ifindex is in tx_ports (fib_route). */
static __always_inline int fib_send(struct xdp_md *ctx, __u32 ifindex, const struct bpf_fib_lookup *fib)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	long ret;

	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	__builtin_memcpy(eth->h_dest, fib->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib->smac, ETH_ALEN);
	if (fib->ifindex == ifindex)
		return XDP_TX;
	ret = bpf_redirect_map(&tx_ports, fib->ifindex, 0);
	if (ret != XDP_REDIRECT) {
		count_drop(DROP_REDIRECT_FAILED);
		return XDP_DROP;
	}
	return XDP_REDIRECT;
}
