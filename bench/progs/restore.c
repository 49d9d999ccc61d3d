//go:build ignore

/* restore.c: the packet benchmark's restore harness: write the frame as it came back into the buffer, then tail-call the program under test. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

/* The longest frame the harness restores: the packet benchmark's are 64
 * and 74 bytes. */
#define RESTORE_MAX 128

/* Set from Go before load. The length is a const, so the verifier knows
 * the size of the one store exactly; the frame is a plain global (.bss)
 * the helper reads from. */
volatile const __u32 cfg_len;
__u8 cfg_frame[RESTORE_MAX];

/* Slot 0: the program under test (xdplb, the floor, or the new-flow
 * harness in front of either). */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} rs_target SEC(".maps");

/* With a repeat count the kernel re-runs on the frame the previous run
 * left. A NAT rewrite is not idempotent (addresses, ports, TTL), so every
 * repeat after the first would see a translated frame and take another
 * path; writing the original frame back first makes every repeat the same
 * packet. The floor runs through the same harness, so the store's cost is
 * in both figures and can be taken out again. */
SEC("xdp")
int restore(struct xdp_md *ctx)
{
	__u32 len = cfg_len;

	if (len == 0 || len > RESTORE_MAX)
		return XDP_ABORTED;
	if (bpf_xdp_store_bytes(ctx, 0, cfg_frame, len))
		return XDP_ABORTED;
	bpf_tail_call(ctx, &rs_target, 0);
	return XDP_ABORTED; /* no target: the run reports it */
}
