//go:build ignore

/* flowset.c: the benchmark's flow-set harness: give the frame the source of flow i of a set (i in order, or at random below n), then tail-call the program under test. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "GPL";

/* Offsets in the frame, set from Go before load: the TCP/UDP source port
 * and the source IPv4 address. Constants, so the verifier knows each write
 * is in bounds after one check. */
volatile const __u32 cfg_sport_off;
volatile const __u32 cfg_saddr_off;

/* What the next run writes, set from Go between runs: with random 0 flow
 * next (then next + 1), else a flow drawn from [0, n) by the generator
 * rng. One entry, not per-CPU: a test run stays on its CPU, and the
 * benchmark runs one at a time. */
struct fs_state {
	__u64 next;
	__u64 rng;
	__u32 n;
	__u32 random;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fs_state);
} fs_st SEC(".maps");

/* Slot 0: the program under test. */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} fs_target SEC(".maps");

/* Flow i's source: port 32768 + i mod 2^15, address 100.64.0.0 + i / 2^15
 * (in 100.64.0.0/10, apart from every address of the benchmarks;
 * progs.FlowSetSource is the same in Go). A random draw is the top half
 * of a 64-bit LCG's state scaled to [0, n) by a multiply, no division:
 * the run's cost does not depend on n. */
SEC("xdp")
int flowset(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 key = 0, sport_off = cfg_sport_off, saddr_off = cfg_saddr_off;
	struct fs_state *st;
	__u64 i;

	if (sport_off > 128 || saddr_off > 128)
		return XDP_ABORTED;
	if (data + sport_off + 2 > data_end || data + saddr_off + 4 > data_end)
		return XDP_ABORTED;
	st = bpf_map_lookup_elem(&fs_st, &key);
	if (!st)
		return XDP_ABORTED;
	if (st->random) {
		st->rng = st->rng * 6364136223846793005ULL + 1442695040888963407ULL;
		i = ((st->rng >> 32) * st->n) >> 32;
	} else {
		i = st->next++;
	}
	*(__u16 *)(data + sport_off) = bpf_htons(0x8000 | (i & 0x7fff));
	*(__u32 *)(data + saddr_off) = bpf_htonl(0x64400000 | ((i >> 15) & 0x3fffff));
	bpf_tail_call(ctx, &fs_target, 0);
	return XDP_ABORTED; /* no target: the run reports it */
}
