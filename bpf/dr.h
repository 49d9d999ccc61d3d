/* dr.h: direct-return forwarding: MAC rewrite, then XDP_TX or bpf_redirect. */
#pragma once

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>

#include "stats.h"

/* Only the two MACs change: the backend holds the VIP on loopback and
 * answers the client directly, so L3/L4 and their checksums stay as sent. */
static __always_inline int dr_forward(struct xdp_md *ctx, const struct backend *be)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	long ret;

	/* Parsing keeps copies, not packet pointers (struct pkt), so the
	 * verifier needs the bound proved again here; it is one compare. */
	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	__builtin_memcpy(eth->h_dest, be->mac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, be->src_mac, ETH_ALEN);

	if (be->ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	ret = bpf_redirect(be->ifindex, 0);
	if (ret != XDP_REDIRECT) {
		count_drop(DROP_REDIRECT_FAILED);
		return XDP_DROP;
	}
	return XDP_REDIRECT;
}
