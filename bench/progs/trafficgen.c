//go:build ignore

/* trafficgen.c: the veth benchmark's wire programs: a live-frames traffic generator, a pass program and a drop sink. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "GPL";

/* The headers of every generated frame: Ethernet, IPv4 without options, UDP. */
struct gen_header {
	struct ethhdr eth;
	struct iphdr ip;
	struct udphdr udp;
} __attribute__((packed));

/* Written whole into every frame, set from Go before load. A plain global
 * (.bss), not a const: the compiler must read it at run time, and a frame
 * recycled by the test-run page pool may come back rewritten by whoever
 * handled it (MACs swapped, TTL lowered, destination NATed), so nothing of
 * the previous contents is trusted. */
__u8 cfg_hdr[sizeof(struct gen_header)]; /* bytes: bpf2go cannot export iphdr's union */

/* Non-zero: every frame gets a 5-tuple of its own (source port and source
 * address from a per-CPU sequence number). A const, so the verifier drops
 * the branch in the one-flow generator. */
volatile const __u8 cfg_new_flows;

/* One sequence number per CPU: no atomics, no cache line bouncing. The CPU
 * number goes into the source address, so two CPUs never make the same
 * tuple when the generator thread migrates. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} gen_seq SEC(".maps");

/* IPv4 header checksum over the 20 bytes of an option-less header. It
 * takes a plain pointer: the header sits in a packed struct, at offset 14,
 * which is 2-byte aligned, all the 16-bit reads need. */
static __always_inline __u16 ip_checksum(const void *ip)
{
	const __u16 *w = ip;
	__u32 sum = 0;

#pragma unroll
	for (int i = 0; i < (int)(sizeof(struct iphdr) / 2); i++)
		sum += w[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

/* Run by BPF_PROG_TEST_RUN in live-frames mode with the generator's veth as
 * ingress: XDP_TX there sends the frame out of that veth to the LB's end. */
SEC("xdp")
int gen_udp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct gen_header *h = data;
	__u32 key = 0, cpu;
	__u64 *seq, n;
	__u8 *src;

	if ((void *)(h + 1) > data_end)
		return XDP_ABORTED;
	__builtin_memcpy(h, cfg_hdr, sizeof(*h));
	if (!cfg_new_flows)
		return XDP_TX;

	seq = bpf_map_lookup_elem(&gen_seq, &key);
	if (!seq)
		return XDP_ABORTED;
	n = (*seq)++;
	cpu = bpf_get_smp_processor_id();
	/* 2^31 tuples per CPU: 15 bits of port, 16 of address. */
	h->udp.source = bpf_htons(0x8000 | (n & 0x7fff));
	src = (__u8 *)&h->ip.saddr;
	src[1] = 128 | (cpu & 0x3f);
	src[2] = n >> 15;
	src[3] = n >> 23;
	/* UDP over IPv4 with checksum 0 (none) needs no L4 update. */
	h->ip.check = 0;
	h->ip.check = ip_checksum((void *)h + sizeof(struct ethhdr));
	return XDP_TX;
}

/* For the LB's veth in the kernel-forwarding case: a veth end takes frames
 * from its peer's XDP_TX/redirect only while it runs XDP itself. */
SEC("xdp")
int wire_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

/* The generator's veth receives what the LB sends back and drops it at
 * once, so the kernel stack is never the bottleneck; its rx counter is the
 * measurement. */
SEC("xdp")
int wire_sink(struct xdp_md *ctx)
{
	return XDP_DROP;
}
