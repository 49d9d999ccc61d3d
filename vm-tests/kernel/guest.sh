#!/usr/bin/env bash
# PID 1 of the VM run.sh boots: on the host's root (read-only, under a
# tmpfs overlay), runs each suite's test binary that run.sh built on the
# host, then times `xdplb status` on an idle daemon, writes everything to
# the shared output directory $1 and powers the VM off. Progress lines on
# the console start with "xdplb-vm: ", which run.sh shows.
#
# $1/config sets REPO, SLOWNESS, XDPLB and UPGRADE (the binaries), STATUS (yes
# to time `xdplb status`), LOADER_TEST (the loader's test binary, for the
# count benchmark: empty for none); $1/suites has a line per suite: name, the
# package's directory, the test binary, the -test.run and -test.skip
# patterns ("-" for none) and the time limit, separated by tabs.
set -uo pipefail

out=$1
# shellcheck source=/dev/null
. "$out/config"
export HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/go/bin

say() { echo "xdplb-vm: $*" >/dev/console; }

# mounts gives the guest what a host has: fresh /proc, /sys, /dev and
# /run (not the host's), a bpffs and cgroup2.
mounts() {
	mount -t proc proc /proc
	mount -t sysfs sys /sys
	mount -t devtmpfs dev /dev
	mkdir -p /dev/pts /dev/shm
	mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
	mount -t tmpfs tmpfs /dev/shm
	mount -t tmpfs -o mode=0755 tmpfs /run
	mount -t bpf bpf /sys/fs/bpf
	mount -t cgroup2 cgroup2 /sys/fs/cgroup
	ip link set lo up
	hostname xdplb-vm
}

# run_suite runs one test binary in its package's directory (its testdata
# is there; writes go to the overlay) and leaves its verbose output, exit
# code and duration in $out.
run_suite() {
	local name=$1 dir=$2 bin=$3 run=$4 skip=$5 limit=$6
	local args=(-test.v -test.count=1 -test.timeout "$limit")
	[ "$run" != - ] && args+=(-test.run "$run")
	[ "$skip" != - ] && args+=(-test.skip "$skip")
	say "$name: running ($dir)"
	local start=$SECONDS
	(cd "$dir" && "$bin" "${args[@]}") >"$out/$name.log" 2>&1 </dev/null
	local rc=$?
	echo "$rc" >"$out/$name.rc"
	echo $((SECONDS - start)) >"$out/$name.secs"
	say "$name: exit $rc in $((SECONDS - start)) s: $(grep -c '^--- PASS' "$out/$name.log") passed," \
		"$(grep -c '^--- FAIL' "$out/$name.log") failed, $(grep -c '^--- SKIP' "$out/$name.log") skipped"
}

# now_ms is the monotonic-enough wall clock in milliseconds.
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# time_status starts an idle daemon with a 1,048,576-entry connection
# table on a veth in a namespace of its own and times five `xdplb status`
# calls; it writes key=value lines to $out/status.
time_status() {
	local d=/tmp/xdplb-status ns=xdplb-status
	local sock=$d/xdplb.sock
	say "status: timing xdplb status on an idle daemon"
	mkdir -p "$d/state" "$d/bpffs"
	mount -t bpf bpf "$d/bpffs"
	ip netns add $ns
	ip -n $ns link add v0 type veth peer name v1
	ip -n $ns link set v0 up
	ip -n $ns link set v1 up
	ip netns exec $ns "$XDPLB" --socket "$sock" daemon --iface v0 --conntrack-size 1048576 \
		--state-dir "$d/state" --bpffs "$d/bpffs" --metrics-addr 127.0.0.1:0 >"$out/status-daemon.log" 2>&1 &
	local daemon=$! i ms times=() ready=no
	for ((i = 0; i < 600; i++)); do
		if "$XDPLB" --socket "$sock" status >/dev/null 2>&1; then
			ready=yes
			break
		fi
		sleep 0.5
	done
	if [ $ready = yes ]; then
		sleep 2 # idle
		for i in 1 2 3 4 5; do
			local t0
			t0=$(now_ms)
			"$XDPLB" --socket "$sock" status >/dev/null 2>&1 || ready=no
			ms=$(($(now_ms) - t0))
			times+=("$ms")
		done
		"$XDPLB" --socket "$sock" status -o json >"$out/status.json" 2>&1
		# xdplb version: the cost of starting the binary at all.
		local t0
		t0=$(now_ms)
		"$XDPLB" version >/dev/null
		echo "version_ms=$(($(now_ms) - t0))" >>"$out/status"
	fi
	kill -TERM $daemon 2>/dev/null
	wait $daemon
	{
		echo "ready=$ready"
		echo "status_ms='${times[*]}'"
	} >>"$out/status"
	ip netns exec $ns "$XDPLB" detach --state-dir "$d/state" --bpffs "$d/bpffs" >/dev/null 2>&1
	ip netns del $ns
	umount "$d/bpffs"
	say "status: ${times[*]} ms"
	[ -n "$LOADER_TEST" ] || return 0
	# What a status or a scrape costs on a full table when the kernel
	# cannot count it: the walk of 1,048,576 entries.
	say "status: counting a full 1,048,576-entry table"
	(cd "$REPO/loader" && "$LOADER_TEST" -test.run '^$' -test.bench '^BenchmarkConntrackEntries$' \
		-test.benchtime 3x -test.timeout 20m) >"$out/count-bench.log" 2>&1 </dev/null
	echo "walk_ns=$(awk '$1 ~ /^BenchmarkConntrackEntries\/walk/ {print $3}' "$out/count-bench.log")" >>"$out/status"
}

main() {
	mounts
	uname -r >"$out/kernel"
	export CI=true XDPLB_TEST_SLOWNESS=$SLOWNESS XDPLB_BINARY=$XDPLB XDPLB_UPGRADE_BINARY=$UPGRADE
	say "kernel $(uname -r), $(nproc) CPUs, $(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024)) MiB"
	local name dir bin run skip limit
	while IFS=$'\t' read -r name dir bin run skip limit; do
		run_suite "$name" "$dir" "$bin" "$run" "$skip" "$limit"
	done <"$out/suites"
	[ "$STATUS" = yes ] && time_status
	touch "$out/done"
	sync
	say "done"
	echo o >/proc/sysrq-trigger
	sleep 60
}

main
