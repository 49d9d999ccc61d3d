/* ratelimit.h: a VIP's new-flow rate limit, one token bucket per VIP shared by every CPU. */
#pragma once

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "maps.h"

/*
 * The bucket is GCRA (the virtual scheduling form of a token bucket): tat
 * is when the next flow is due at the rate. A flow is admitted when tat is
 * at most tau ahead of now, and moves tat one period on; after a quiet
 * spell tat is in the past and starts again from now, which is a full
 * bucket of burst flows.
 *
 * One bucket per VIP, not one per CPU: per-CPU buckets of rate/ncpu would
 * refuse flows while other CPUs' buckets sit full whenever RSS spreads
 * flows unevenly. The 64-bit atomics (fetch-and-add, compare-and-swap)
 * need no -mcpu=v3, only a kernel with BPF_ATOMIC (5.12). A refusal only
 * reads the line; an admission writes it once.
 *
 * Exactness: with the clock still, exactly burst flows pass however many
 * CPUs race, since each admission adds exactly one period to tat and an
 * add that went past the limit is taken back. The clock is the kernel
 * tick (bpf_jiffies64, inlined, where bpf_ktime_get_ns is a helper call),
 * so the bucket refills a tick's worth at once: over any interval T at
 * most burst + rate * (T + 1 tick) flows pass. Two races can be off by one
 * flow each: a CPU whose compare-and-swap lost to another's restart of an
 * idle bucket admits on the old schedule (at most one flow per CPU, when a
 * quiet VIP gets busy), and a flow may be refused while another CPU's add
 * is being taken back.
 */
static __always_inline int rate_admit(__u32 vip_id)
{
	struct vip_rate *r = bpf_map_lookup_elem(&vip_rates, &vip_id);
	__u64 now, tat, limit, old;

	/* No entry or no rate: the VIP's flag went up before its entry was
	 * written. The loader writes the entry first; admit meanwhile. */
	if (!r || !r->period)
		return 1;
	now = bpf_jiffies64() << RATE_CLOCK_SHIFT;
	/* Differences, compared signed: the clock may wrap, a bucket's
	 * numbers are never 2^63 apart. */
	tat = *(volatile __u64 *)&r->tat;
	if ((__s64)(tat - now) < 0) {
		if (__sync_val_compare_and_swap(&r->tat, tat, now + r->period) == tat)
			return 1;
		tat = *(volatile __u64 *)&r->tat;
	}
	limit = now + r->tau;
	if ((__s64)(tat - limit) > 0)
		return 0;
	old = __sync_fetch_and_add(&r->tat, r->period);
	if ((__s64)(old - limit) <= 0)
		return 1;
	__sync_fetch_and_sub(&r->tat, r->period);
	return 0;
}
