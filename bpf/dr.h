/* dr.h: direct-return forwarding: MAC rewrite, then XDP_TX or bpf_redirect. */
#pragma once

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>

#include "stats.h"

/* Only the two MACs change: the backend holds the VIP on loopback and
 * answers the client directly, so L3/L4 and their checksums stay as sent. */
/* ingress_ifindex is read once per packet by the caller: each read of
 * ctx->ingress_ifindex is three dependent loads (rxq, dev, ifindex). */
static __always_inline int dr_forward(struct xdp_md *ctx, __u32 ingress_ifindex,
				      const struct backend *be)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	long ret;

	/* Parsing keeps copies, not packet pointers (struct pkt), so the
	 * verifier needs the bound proved again here; it is one compare. */
	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	/* mac and src_mac are adjacent in struct backend, as h_dest and
	 * h_source are in the header: one 12-byte copy in three words (the
	 * packed ethhdr would make it twelve byte copies). */
	_Static_assert(__builtin_offsetof(struct backend, src_mac) ==
			       __builtin_offsetof(struct backend, mac) + ETH_ALEN,
		       "backend MACs must be adjacent");
	_Static_assert(__builtin_offsetof(struct backend, mac) % 4 == 0, "backend mac must be word aligned");
	{
		const __u32 *src = (const __u32 *)(const void *)be->mac;
		__u32 *dst = data;

		dst[0] = src[0];
		dst[1] = src[1];
		dst[2] = src[2];
	}

	if (be->ifindex == ingress_ifindex)
		return XDP_TX;
	ret = bpf_redirect(be->ifindex, 0);
	if (ret != XDP_REDIRECT) {
		count_drop(DROP_REDIRECT_FAILED);
		return XDP_DROP;
	}
	return XDP_REDIRECT;
}
