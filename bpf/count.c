/* count.c: reads the element count the kernel keeps for a map (no walk). */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

/* Only the fields read here, relocated against the running kernel's BTF
 * (CO-RE), so no vmlinux.h is needed. */
struct bpf_iter_meta {
	struct seq_file *seq;
} __attribute__((preserve_access_index));

struct bpf_map {
	__u32 id;
} __attribute__((preserve_access_index));

struct bpf_iter__bpf_map {
	struct bpf_iter_meta *meta;
	struct bpf_map *map;
} __attribute__((preserve_access_index));

/* Kernel 6.6+: the sum of the map's per-CPU element counters, which hash
 * maps (LRU ones included) keep on every insert and delete. */
extern __s64 bpf_map_sum_elem_count(const struct bpf_map *map) __ksym;

/* The id of the map to count, set from Go before load. */
volatile const __u32 target_map_id;

/* Runs once per map in the system; writes one __s64 for the target. */
SEC("iter/bpf_map")
int count_elems(struct bpf_iter__bpf_map *ctx)
{
	struct bpf_map *map = ctx->map;
	__s64 n;

	if (!map || map->id != target_map_id)
		return 0;
	n = bpf_map_sum_elem_count(map);
	bpf_seq_write(ctx->meta->seq, &n, sizeof(n));
	return 0;
}
