package loader

// The C structs and enums shared with Go are exported by -type, so Go never
// keeps a hand-written copy of them.
//go:generate go tool bpf2go -tags linux -target bpfel -output-stem xdplb -type vip_key -type vip_bitmap -type vip_meta -type backend -type flow_key -type ct_bucket -type ct_slot -type ct_bucket_keys -type lb_counters -type drop_reason -type event -type nat_state -type nat_config -type vip_rate -type half_bucket -type half_flow -type sched_set -type persist_key -type persist_val -type persist_timeout xdplb ../bpf/xdplb.c -- -I/usr/include/x86_64-linux-gnu -O2 -g -Wall -Werror
