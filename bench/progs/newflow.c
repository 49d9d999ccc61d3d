//go:build ignore

/* newflow.c: the packet benchmark's new-flow harness: give the frame a 5-tuple of its own, then tail-call the program under test. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "GPL";

/* Offsets in the frame, set from Go before load: the TCP/UDP source port
 * and the last 4 bytes of the source address (all of an IPv4 address).
 * Constants, so the verifier knows each write is in bounds after one check. */
volatile const __u32 cfg_sport_off;
volatile const __u32 cfg_saddr_off;

/* One sequence number per CPU: no atomics. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} nf_seq SEC(".maps");

/* Slot 0: the program under test (xdplb, or the floor for the harness's
 * own cost). */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} nf_target SEC(".maps");

/* With a repeat count the kernel re-runs on the frame it already ran on;
 * rewriting the tuple first makes every repeat a genuinely new flow. The
 * 48-bit sequence goes into the port (16 bits) and the address (24 bits),
 * and the CPU into the address's top byte, so no two runs, on any CPU,
 * share a tuple before 2^40 runs. Checksums are not fixed: the program
 * under test does not verify them, and the cost is the harness's, which
 * the floor run through the same harness cancels. */
SEC("xdp")
int newflow(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 key = 0, sport_off = cfg_sport_off, saddr_off = cfg_saddr_off;
	__u64 *seq, n;

	/* Bounds the verifier can use: the offsets are at most a few dozen. */
	if (sport_off > 128 || saddr_off > 128)
		return XDP_ABORTED;
	if (data + sport_off + 2 > data_end || data + saddr_off + 4 > data_end)
		return XDP_ABORTED;
	seq = bpf_map_lookup_elem(&nf_seq, &key);
	if (!seq)
		return XDP_ABORTED;
	n = (*seq)++;
	*(__u16 *)(data + sport_off) = bpf_htons(n & 0xffff);
	*(__u32 *)(data + saddr_off) =
		bpf_htonl(((0xc0 | (bpf_get_smp_processor_id() & 0x3f)) << 24) | ((n >> 16) & 0xffffff));
	bpf_tail_call(ctx, &nf_target, 0);
	return XDP_ABORTED; /* no target: the run reports it */
}
