/* csum.h: incremental Internet checksum updates (RFC 1624) for the NAT rewrites. */
#pragma once

#include <linux/types.h>

/*
 * A change is kept as a one's complement sum of (~old + new) over the
 * 16-bit words it touched, and applied to every checksum that covers them:
 * HC' = ~(~HC + sum). The sum is independent of byte order (RFC 1071), so
 * the words are added as the host reads them from the packet, and the
 * result is stored the same way.
 */

static __always_inline __u32 csum_add(__u32 sum, __u32 v)
{
	sum += v;
	return sum + (sum < v);
}

static __always_inline __u16 csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return sum;
}

/* Adds the change of one 32-bit word from old to new. */
static __always_inline __u32 csum_diff32(__u32 sum, __u32 old, __u32 new)
{
	return csum_add(csum_add(sum, ~old), new);
}

static __always_inline __u32 csum_diff16(__u32 sum, __u16 old, __u16 new)
{
	return csum_add(csum_add(sum, (__u16)~old), new);
}

/* The change of a 16-byte address; for IPv4 only the last word is on the
 * wire (the others are the ::ffff: prefix, equal on both sides). */
static __always_inline __u32 csum_diff_addr(__u32 sum, const __u8 old[16], const __u8 new[16], int v6)
{
	const __u32 *o = (const __u32 *)(const void *)old;
	const __u32 *n = (const __u32 *)(const void *)new;

	if (v6) {
		sum = csum_diff32(sum, o[0], n[0]);
		sum = csum_diff32(sum, o[1], n[1]);
		sum = csum_diff32(sum, o[2], n[2]);
	}
	return csum_diff32(sum, o[3], n[3]);
}

/* Applies a change to a stored checksum. */
static __always_inline __u16 csum_apply(__u16 check, __u32 diff)
{
	return ~csum_fold(csum_add((__u16)~check, diff));
}

/* A UDP checksum: zero on IPv4 means "none" and stays so; a computed zero
 * is sent as 0xffff (RFC 768). */
static __always_inline __u16 csum_apply_udp(__u16 check, __u32 diff, int v6)
{
	__u16 c;

	if (!check && !v6)
		return 0;
	c = csum_apply(check, diff);
	return c ? c : 0xffff;
}
