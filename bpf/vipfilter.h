/* vipfilter.h: the no-VIP pre-filter: one bit test decides that most non-VIP traffic passes. */
#pragma once

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "maps.h"
#include "parse.h"

/* Multiplicative (Fibonacci) hashing: the top bits of the product mix
 * every input bit, so the XOR fold below spreads well over the bitmap. */
#define VIP_FOLD_MUL 0x9e3779b1U

/*
 * The bit of a (destination, port, protocol). The loader computes the same
 * fold in Go (vipFilterBit in loader/vipfilter.go), reading the address as
 * four little-endian words and the port as the raw network-order value, as
 * this program does on its bpfel target. A clear bit proves "no VIP": the
 * frame is passed before any hash lookup. A set bit may be a collision
 * (a false positive), which just takes the normal path: connection table,
 * then the VIP map, which passes it.
 */
static __always_inline __u32 vip_filter_bit(const struct flow_key *k)
{
	__u32 w[4];
	__u32 h;

	__builtin_memcpy(w, k->dst, sizeof(w));
	h = w[0] ^ w[1] ^ w[2] ^ w[3] ^ (((__u32)k->dport << 16) | k->proto);
	return (h * VIP_FOLD_MUL) >> 16;
}

/* The bitmap, looked up once per packet for both folds. Cannot fail for
 * index 0 of a one-entry array; if it ever did, NULL makes every bit read
 * as set, and taking the normal path is always correct. */
static __always_inline const struct vip_bitmap *vip_filter_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&vip_filter, &zero);
}

static __always_inline int filter_bit_set(const struct vip_bitmap *f, __u32 bit)
{
	if (!f)
		return 1;
	return (f->bits[(bit / 64) & (VIP_FILTER_WORDS - 1)] >> (bit % 64)) & 1;
}

static __always_inline int vip_filter_may_match(const struct vip_bitmap *f, const struct flow_key *k)
{
	return filter_bit_set(f, vip_filter_bit(k));
}

/*
 * The same bitmap holds a second fold, over a NAT backend's address,
 * salted so the two rarely share bits: a reply of a NAT flow comes from
 * there, and a clear bit passes a non-VIP packet without looking
 * nat_flows up. The address alone, not its port: a backend entry does not
 * know its VIP's port or protocol, and the loader writes it before the VIP.
 * The loader computes the same fold as replyFilterBit.
 */
#define REPLY_FOLD_SALT 0x5bd1e995U

static __always_inline __u32 reply_filter_bit(const struct flow_key *k)
{
	__u32 w[4];
	__u32 h;

	__builtin_memcpy(w, k->src, sizeof(w));
	h = w[0] ^ w[1] ^ w[2] ^ w[3] ^ REPLY_FOLD_SALT;
	return (h * VIP_FOLD_MUL) >> 16;
}

static __always_inline int reply_filter_may_match(const struct vip_bitmap *f, const struct flow_key *k)
{
	return filter_bit_set(f, reply_filter_bit(k));
}
