/* flowcount.h: the per-backend open-flow counts that lc and wlc read (map be_conns). */
#pragma once

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "maps.h"

/* One more open flow on the backend: an atomic add on a line the CPUs
 * share, paid by new flows of lc/wlc VIPs only. */
static __always_inline void open_flows_inc(__u32 bid)
{
	__s64 *c = bpf_map_lookup_elem(&be_conns, &bid);

	if (c)
		__sync_fetch_and_add(c, 1);
}

/* A tracked flow saw its first FIN or RST: one open flow less. Backends
 * that nobody counts (those of VIPs that are not lc/wlc) stay at 0, so
 * their closing flows cost a read and no write. */
static __always_inline void open_flows_dec(__u32 bid)
{
	__s64 *c = bpf_map_lookup_elem(&be_conns, &bid);

	if (c && *c > 0)
		__sync_fetch_and_add(c, -1);
}
