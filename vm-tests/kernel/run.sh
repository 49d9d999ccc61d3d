#!/usr/bin/env bash
# make vm-test: the packet tests, the real-maps property test, the lab and
# the e2e tests on Debian 12's 6.1 kernel, in a VM under qemu's software
# emulation (KVM is not usable on CI's machines).
#
# The kernel package is downloaded from Debian and unpacked into a cache,
# never installed on the host. The VM has no disk and no network device:
# the host's root is its root, read-only over virtio-9p under a tmpfs
# overlay; a small initramfs (busybox, init.sh) loads 9p, virtio and
# overlay from the 6.1 modules. The test binaries are built here (go test
# -c, CGO_ENABLED=0) and run in the guest by guest.sh, which writes their
# output to a directory shared over 9p. This script prints a summary per
# suite and fails on any failure, a crash or the time limit.
#
# Settings (environment):
#   XDPLB_VM_KERNEL    kernel ABI, e.g. 6.1.0-57-amd64 (default: the newest
#                      linux-image-6.1.0-*-amd64 Debian offers); any Debian
#                      linux-image-ABI boots, e.g. 6.12.118+deb12-amd64
#   XDPLB_VM_SUITES    suites to run (default: loader property lab e2e)
#   XDPLB_VM_LOADER_RUN  -test.run pattern of the loader suite (default: all)
#   XDPLB_VM_E2E_RUN   -test.run pattern of the e2e suite (default: all)
#   XDPLB_VM_E2E_SKIP  -test.skip pattern of the e2e suite (default: none)
#   XDPLB_VM_STATUS    yes: time `xdplb status` on an idle daemon (default yes)
#   XDPLB_VM_TIMEOUT   bound of the whole VM run (default 60m; a full run
#                      takes about 45 min on a 2-core machine)
#   XDPLB_VM_SLOWNESS  XDPLB_TEST_SLOWNESS in the guest (default 25)
#   XDPLB_VM_CPUS, XDPLB_VM_MEM   vCPUs and memory (default 2, 4G)
#   XDPLB_VM_CACHE     where kernels are unpacked (default /var/cache/xdplb-vm)
# The suites' logs are kept in bin/vm-test/.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$REPO/vm-tests/kernel
GO=${GO:-go}
CACHE=${XDPLB_VM_CACHE:-/var/cache/xdplb-vm}
SUITES=${XDPLB_VM_SUITES:-loader property lab e2e}
LOADER_RUN=${XDPLB_VM_LOADER_RUN:--}
E2E_RUN=${XDPLB_VM_E2E_RUN:--}
E2E_SKIP=${XDPLB_VM_E2E_SKIP:--}
STATUS=${XDPLB_VM_STATUS:-yes}
TIMEOUT=${XDPLB_VM_TIMEOUT:-60m}
SLOWNESS=${XDPLB_VM_SLOWNESS:-25}
CPUS=${XDPLB_VM_CPUS:-2}
MEM=${XDPLB_VM_MEM:-4G}
LOGS=$REPO/bin/vm-test
START=$SECONDS
export CGO_ENABLED=0

# suite_spec NAME prints the suite's package and, in the guest, its
# -test.run and -test.skip patterns ("-": none) and time limit (about 3
# times what it took), separated by tabs.
suite_spec() {
	case $1 in
	loader) printf '%s\t' loader "$LOADER_RUN" - 30m ;;
	property) printf '%s\t' control/reconcile '^TestReconcilePropertyRealMaps$' - 10m ;;
	lab) printf '%s\t' internal/lab - - 5m ;;
	e2e) printf '%s\t' vm-tests/e2e "$E2E_RUN" "$E2E_SKIP" 30m ;;
	*) return 1 ;;
	esac
}

work='' qemu_job='' follow_job=''

log() { echo "vm-test: $*"; }
die() {
	echo "vm-test: $*" >&2
	exit 1
}

# cleanup stops qemu (by its pid file, checked to be qemu) and removes the
# run's directory, on success, failure and Ctrl-C alike.
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	set +e # every step, whatever the one before it did
	if [ -n "$work" ] && [ -s "$work/qemu.pid" ]; then
		local pid i
		pid=$(cat "$work/qemu.pid")
		if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = qemu-system-x86 ]; then
			kill -TERM "$pid" 2>/dev/null || true
			for ((i = 0; i < 50; i++)); do
				[ -e "/proc/$pid" ] || break
				sleep 0.2
			done
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	[ -n "$qemu_job" ] && kill -TERM "$qemu_job" 2>/dev/null
	[ -n "$follow_job" ] && kill -TERM "$follow_job" 2>/dev/null
	wait 2>/dev/null
	[ -n "$work" ] && rm -rf "$work"
	exit "$rc"
}

preflight() {
	[ "$(id -u)" -eq 0 ] || die "run as root (the kernel cache, and the tests in the guest)"
	local c
	for c in qemu-system-x86_64 /bin/busybox depmod cpio gzip xz apt-get dpkg-deb timeout "$GO"; do
		command -v "$c" >/dev/null || die "$c is missing: run 'make vm-deps'"
	done
	/bin/busybox --list | grep -qx switch_root || die "/bin/busybox is not busybox-static's: run 'make vm-deps'"
	for c in $SUITES; do
		suite_spec "$c" >/dev/null || die "unknown suite $c (XDPLB_VM_SUITES: loader property lab e2e)"
	done
}

# newest_offered prints the ABI of the newest 6.1 kernel image Debian offers.
newest_offered() {
	apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' |
		awk '{sub(/^linux-image-/, "", $1); print $1}' | sort -V | tail -n 1
}

# kernel_abi picks the kernel: XDPLB_VM_KERNEL, else the newest Debian
# offers (after an apt-get update if the lists name none).
kernel_abi() {
	if [ -n "${XDPLB_VM_KERNEL:-}" ]; then
		echo "$XDPLB_VM_KERNEL"
		return
	fi
	local abi
	abi=$(newest_offered)
	if [ -z "$abi" ]; then
		apt-get update -qq >&2
		abi=$(newest_offered)
	fi
	[ -n "$abi" ] || die "Debian offers no linux-image-6.1.0-*-amd64"
	echo "$abi"
}

# fetch_kernel downloads linux-image-ABI and unpacks it into the cache
# (once per ABI), with a modules.dep of its own: unpacked, not installed,
# the package's scripts never run.
fetch_kernel() {
	local abi=$1 dir=$CACHE/linux-$1
	[ -e "$dir/.complete" ] && return
	log "fetching linux-image-$abi into $dir"
	mkdir -p "$CACHE"
	local tmp
	tmp=$(mktemp -d "$CACHE/fetch.XXXXXX")
	if ! (cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root "linux-image-$abi"); then
		apt-get update -qq
		(cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root "linux-image-$abi") ||
			{ rm -rf "$tmp"; die "apt-get download linux-image-$abi failed"; }
	fi
	dpkg-deb -x "$tmp"/linux-image-*.deb "$tmp/root"
	depmod -b "$tmp/root" "$abi"
	dpkg-deb -f "$tmp"/linux-image-*.deb Version >"$tmp/root/.complete"
	rm -rf "$dir"
	mv "$tmp/root" "$dir"
	rm -rf "$tmp"
}

# build_binaries builds, on the host, the binary under test, every suite's
# test binary and the e2e upgrade build (the guest builds nothing).
build_binaries() {
	local bin=$work/bin name pkg
	mkdir -p "$bin"
	log "building the test binaries"
	(cd "$REPO" && $GO build -ldflags "-X main.version=$(git describe --tags --always --dirty 2>/dev/null || echo dev)" \
		-o "$bin/xdplb" ./cmd/xdplb)
	for name in $SUITES; do
		IFS=$'\t' read -r pkg _ <<<"$(suite_spec "$name")"
		(cd "$REPO" && $GO test -c -o "$bin/$name.test" "./$pkg/")
	done
	if [[ " $SUITES " == *" e2e "* ]]; then
		(cd "$REPO/vm-tests/e2e" && "$bin/e2e.test" -build-upgrade "$bin/xdplb-upgrade")
	else
		cp "$bin/xdplb" "$bin/xdplb-upgrade"
	fi
}

# module_order prints the module files (relative to the modules
# directory) that the named modules need, dependencies first, each once;
# none for a module built into the kernel.
module_order() {
	local moddir=$1 m line deps i
	shift
	for m in "$@"; do
		grep -qE "(^|/)$m\.ko\$" "$moddir/modules.builtin" && continue
		line=$(grep -E "(^|/)$m\.ko(\.xz)?:" "$moddir/modules.dep") || die "no module $m in $moddir"
		read -r -a deps <<<"${line#*:}"
		for ((i = ${#deps[@]} - 1; i >= 0; i--)); do
			echo "${deps[i]}"
		done
		echo "${line%%:*}"
	done | awk '!seen[$0]++'
}

# build_initramfs makes the VM's initramfs: busybox, init.sh, the modules
# that mount the root, and /config.
build_initramfs() {
	local abi=$1 moddir=$CACHE/linux-$1/lib/modules/$1 root=$work/initramfs ko
	mkdir -p "$root"/{bin,modules,proc,sys,dev}
	cp /bin/busybox "$root/bin/busybox"
	install -m 0755 "$HERE/init.sh" "$root/init"
	# Uncompressed for busybox's insmod (6.1's are; later kernels' are xz).
	module_order "$moddir" virtio_pci 9pnet_virtio 9p overlay | while read -r ko; do
		case $ko in
		*.xz) xz -dc "$moddir/$ko" >"$root/modules/$(basename "$ko" .xz)" ;;
		*) cp "$moddir/$ko" "$root/modules/" ;;
		esac
		basename "$ko" .xz
	done >"$root/modules.order"
	{
		printf 'KVER=%q\n' "$abi"
		printf 'MODDIR=%q\n' "$moddir"
		printf 'OUT=%q\n' "$work/out"
		printf 'GUEST=%q\n' "$HERE/guest.sh"
	} >"$root/config"
	(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$work/initramfs.gz"
}

# write_guest_config tells guest.sh what to run.
write_guest_config() {
	local out=$work/out name pkg run skip limit
	mkdir -p "$out"
	{
		printf 'SLOWNESS=%q\n' "$SLOWNESS"
		printf 'XDPLB=%q\n' "$work/bin/xdplb"
		printf 'UPGRADE=%q\n' "$work/bin/xdplb-upgrade"
		printf 'STATUS=%q\n' "$STATUS"
		printf 'REPO=%q\n' "$REPO"
		if [[ " $SUITES " == *" loader "* ]]; then
			printf 'LOADER_TEST=%q\n' "$work/bin/loader.test"
		else
			echo "LOADER_TEST="
		fi
	} >"$out/config"
	for name in $SUITES; do
		IFS=$'\t' read -r pkg run skip limit <<<"$(suite_spec "$name")"
		printf '%s\t' "$name" "$REPO/$pkg" "$work/bin/$name.test" "$run" "$skip" "$limit"
		echo
	done >"$out/suites"
}

# boot runs the VM to its end (guest.sh powers it off) or the time limit,
# showing guest.sh's progress lines.
boot() {
	local abi=$1 kdir=$CACHE/linux-$1 console=$work/console.log
	log "booting $abi under qemu (TCG, $CPUS vCPUs, $MEM), at most $TIMEOUT"
	: >"$console"
	timeout --kill-after=30s "$TIMEOUT" qemu-system-x86_64 \
		-name xdplb-vm -nodefaults -no-user-config -display none -no-reboot \
		-accel tcg,thread=multi -cpu max -smp "$CPUS" -m "$MEM" \
		-kernel "$kdir/boot/vmlinuz-$abi" -initrd "$work/initramfs.gz" \
		-append "console=ttyS0 panic=-1 quiet loglevel=4 mitigations=off" \
		-serial "file:$console" -monitor none -nic none -pidfile "$work/qemu.pid" \
		-fsdev local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap \
		-device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot \
		-fsdev "local,id=out,path=$work/out,security_model=none,multidevs=remap" \
		-device virtio-9p-pci,fsdev=out,mount_tag=xdplbout \
		</dev/null >"$work/qemu.log" 2>&1 &
	qemu_job=$!
	tail -n +1 -F --pid="$qemu_job" "$console" 2>/dev/null |
		sed -un -e 's/\r$//' -e 's/^xdplb-vm: /  /p' -e '/Kernel panic\|BUG:\|Oops\|WARNING:/p' &
	follow_job=$!
	local rc=0
	wait "$qemu_job" || rc=$?
	qemu_job=
	wait "$follow_job" 2>/dev/null || true
	follow_job=
	if [ "$rc" -eq 124 ]; then
		log "the VM ran out of its $TIMEOUT"
	elif [ "$rc" -ne 0 ]; then
		log "qemu exited $rc:"
		cat "$work/qemu.log"
	fi
	return 0
}

# count KIND LOG: how many top-level tests the verbose log reports as KIND.
count() { grep -c "^--- $1: " "$2" || true; }

# summary prints a line per suite and the totals and fails on any failure
# or a suite that did not finish.
summary() {
	local abi=$1 out=$work/out name pkg log rc p f s secs bad=0 tp=0 tf=0 ts=0
	rm -rf "$LOGS"
	mkdir -p "$LOGS"
	cp "$out"/*.log "$out"/status.json "$work/console.log" "$LOGS/" 2>/dev/null || true
	echo
	log "Debian 12's kernel $(cat "$out/kernel" 2>/dev/null || echo "$abi (did not boot)")" \
		"(linux-image-$abi $(cat "$CACHE/linux-$abi/.complete")), qemu TCG, $CPUS vCPUs, $MEM," \
		"XDPLB_TEST_SLOWNESS=$SLOWNESS; logs in ${LOGS#"$REPO"/}/"
	printf '  %-10s %-20s %7s %7s %8s %8s\n' suite package passed failed skipped time
	for name in $SUITES; do
		IFS=$'\t' read -r pkg _ <<<"$(suite_spec "$name")"
		log=$out/$name.log
		if [ ! -e "$out/$name.rc" ]; then
			printf '  %-10s %-20s %7s %7s %8s %8s  did not finish\n' "$name" "$pkg" - - - -
			bad=1
			tf=$((tf + 1))
			continue
		fi
		rc=$(cat "$out/$name.rc")
		p=$(count PASS "$log") f=$(count FAIL "$log") s=$(count SKIP "$log")
		secs=$(cat "$out/$name.secs")
		if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
			f=1 # a panic, a time-out or a crash: no test said FAIL
		fi
		printf '  %-10s %-20s %7d %7d %8d %5dm%02ds%s\n' "$name" "$pkg" "$p" "$f" "$s" $((secs / 60)) $((secs % 60)) \
			"$([ "$rc" -ne 0 ] && echo "  exit $rc")"
		tp=$((tp + p)) tf=$((tf + f)) ts=$((ts + s))
		[ "$rc" -eq 0 ] || bad=1
	done
	status_line "$out"
	for name in $SUITES; do
		if [ ! -e "$out/$name.rc" ] || [ "$(cat "$out/$name.rc")" -eq 0 ]; then
			continue
		fi
		echo
		log "$name failed (its whole log: ${LOGS#"$REPO"/}/$name.log):"
		failures "$out/$name.log"
	done
	[ -e "$out/done" ] || { log "the guest did not finish: the end of its console:"; tail -n 30 "$work/console.log"; bad=1; }
	log "$((SECONDS - START)) s in all"
	echo "vm-test: $tp passed, $tf failed, $ts skipped"
	return $bad
}

# failures prints, from a verbose test log, each failed test with the
# messages its test file logged (the first 20 lines), or the end of the log
# when no test failed (a panic, a time-out).
failures() {
	if ! grep -q '^--- FAIL: ' "$1"; then
		tail -n 40 "$1"
		return
	fi
	awk '/^=== RUN   / { n = 0; delete lines }
		/^    [^ ]+_test\.go:[0-9]+: / && n < 20 { lines[n++] = $0 }
		/^--- FAIL: / { print; for (i = 0; i < n; i++) print lines[i] }' "$1"
}

# status_line prints what time_status in guest.sh measured.
status_line() {
	local out=$1 ready='' status_ms='' version_ms='' walk_ns='' method
	[ -e "$out/status" ] || return 0
	# shellcheck source=/dev/null
	. "$out/status"
	if [ "$ready" != yes ]; then
		echo "  xdplb status: the idle daemon did not come up (${LOGS#"$REPO"/}/status-daemon.log)"
		return 0
	fi
	method=$(grep -o '"count": *"[a-z]*"' "$out/status.json" 2>/dev/null | grep -o '[a-z]*"$' | tr -d '"')
	echo "  xdplb status, idle daemon, empty 1,048,576-entry connection table: ${status_ms// / ms, } ms" \
		"(tables counted by: ${method:-?}; xdplb version alone: $version_ms ms)"
	if [ -n "$walk_ns" ]; then
		echo "  counting a full 1,048,576-entry connection table by walking it: $((walk_ns / 1000000)) ms" \
			"(BenchmarkConntrackEntries/walk)"
	fi
}

main() {
	preflight
	trap cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	local abi
	abi=$(kernel_abi)
	fetch_kernel "$abi"
	mkdir -p "$CACHE"
	work=$(mktemp -d "$CACHE/run.XXXXXX")
	build_binaries
	build_initramfs "$abi"
	write_guest_config
	boot "$abi"
	local rc=0
	summary "$abi" || rc=$?
	return $rc
}

main "$@"
