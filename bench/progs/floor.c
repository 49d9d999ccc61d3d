//go:build ignore

/* floor.c: the benchmark's floor, the least an XDP forwarder can do: swap the MACs and send the frame back out. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

/* Touches the same bytes a DR rewrite touches (both MACs) and returns the
 * same verdict, so the ratio xdplb/floor is the price of everything else:
 * parsing, the VIP lookup, the connection table and the counters. Swapping
 * is its own inverse, so repeated runs on one frame stay valid. */
SEC("xdp")
int floor_tx(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	unsigned char tmp[ETH_ALEN];

	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	__builtin_memcpy(tmp, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, tmp, ETH_ALEN);
	return XDP_TX;
}
