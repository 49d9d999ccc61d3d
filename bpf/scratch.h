/* scratch.h: per-CPU working memory for the NAT, ICMP and half-open paths, which would not fit the 512-byte stack together with the rest once inlined. */
#pragma once

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "types.h"
#include "parse.h"

/* The new headers of a translated ICMP error: outer addresses, and the
 * quoted packet's addresses and ports; old_* are the outer addresses as
 * they came. */
struct icmp_nat {
	__u8 src[16];
	__u8 dst[16];
	__u8 old_src[16];
	__u8 old_dst[16];
	__u8 in_src[16];
	__u8 in_dst[16];
	__be16 in_sport;
	__be16 in_dport;
};

/* One packet's temporaries; a program runs to completion on its CPU, so
 * one per CPU is never shared. Each user initialises what it reads. */
struct scratch {
	struct bpf_fib_lookup fib;
	struct nat_state ns;
	struct flow_key rk;
	struct icmp_nat icmp;
	struct pkt quoted; /* the flow an ICMP error is about, to schedule it */
	struct half_flow hf;   /* the packet's flow's way in ct_half, as found */
	struct half_flow put;  /* a placed flow's way, as half_put takes it */
	struct half_flow gone; /* the flow whose way a new flow took */
	__u32 ct_pos;          /* conntrack_insert's chosen slot, read back (see there) */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	/* Sizes, not types: bpf2go would export the value's type to Go, and
	 * cannot write bpf_fib_lookup's anonymous unions. */
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(struct scratch));
} scratch SEC(".maps");

static __always_inline struct scratch *scratch_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&scratch, &zero);
}
