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

/* Writes the next hop's MACs and sends the frame out of fib->ifindex: back
 * out of the interface it came in on (XDP_TX) or through tx_ports to
 * another attached one. The caller has checked fib->ifindex is in tx_ports. */
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
