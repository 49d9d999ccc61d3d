#!/usr/bin/env bash
# `make vagrant-test`: the Vagrant lab from nothing to nothing, with no
# internet and no terminal. As root, on a machine with the packages of
# `make vagrant-deps`, after `make vagrant-files`:
#
#  1. the box: built once by mkbox.sh from Debian's packages and cached as
#     $cache/xdplb-bookworm-HASH.box, HASH that of mkbox.sh (a changed
#     recipe builds a new box, and the old file goes);
#  2. libvirt: virtlogd and libvirtd started by pid files unless a libvirtd
#     answers already (PID 1 need not be systemd), a storage pool of ours;
#  3. vagrant up of client, lb, be1 and be2 (Vagrantfile), with Vagrant's
#     state in $cache (VAGRANT_HOME) and the run directory, not in ~ or the
#     work tree; software emulation (qemu) where the CPU has no VT-x/AMD-V;
#  4. the tests: scenario.sh;
#  5. clean-up, also on failure, Ctrl-C or a time limit: the VMs, networks,
#     pool and box registration it made, the daemons it started and the
#     firewall chains they left; the cached box file stays.
#
# Every step is bounded. The logs of the last run stay in $cache/run.
set -euo pipefail
cd "$(dirname "$0")/../.."

cache=${XDPLB_VAGRANT_CACHE:-/var/cache/xdplb-vagrant}
run=$cache/run
pool=xdplb-vagrant
prefix=xdplb-vt-
networks="xdplb-mgmt xdplb-dr xdplb-nat"
# timeout runs the program virsh, not this function (timeout cannot run a
# shell builtin or function: there is no `command` program).
virsh() { timeout 60 virsh -c qemu:///system "$@"; }

[ "$(id -u)" -eq 0 ] || { echo "vagrant-test: run as root (libvirt's daemons, loop devices)" >&2; exit 1; }
[ -f bin/xdplb-guest.tar ] || { echo "vagrant-test: bin/xdplb-guest.tar missing: make vagrant-files" >&2; exit 1; }

hash=$(sha256sum vm-tests/vagrant/mkbox.sh | cut -c1-12)
box=xdplb-bookworm-$hash
boxfile=$cache/$box.box

export VAGRANT_HOME=$cache/vagrant.d
export VAGRANT_DOTFILE_PATH=$run/dot
export VAGRANT_DEFAULT_PROVIDER=libvirt
export VAGRANT_CHECKPOINT_DISABLE=1 VAGRANT_NO_COLOR=1 VAGRANT_FORCE_COLOR=0
export LIBVIRT_DEFAULT_URI=qemu:///system
export XDPLB_BOX=$box XDPLB_LIBVIRT_POOL=$pool XDPLB_LIBVIRT_PREFIX=$prefix
export XDPLB_ISOLATED=1 XDPLB_CONSOLE_DIR=$run
if grep -qwE 'vmx|svm' /proc/cpuinfo && [ -w /dev/kvm ]; then
	export XDPLB_LIBVIRT_DRIVER=kvm
else
	export XDPLB_LIBVIRT_DRIVER=qemu
fi

log() { echo "vagrant-test: $*"; }

# bounded SECONDS CMD...: CMD with a time limit, in the background so that
# a signal to this script is handled at once (the trap stops it); a
# command under timeout is in a process group of its own and would not
# see the terminal's Ctrl-C.
child=
bounded() {
	local t=$1
	shift
	timeout --kill-after=30 "$t" "$@" &
	child=$!
	local rc=0
	wait "$child" || rc=$?
	child=
	return $rc
}

# The daemons this run started, by their pid files.
stop_daemon() {
	local pidfile=$1 pid
	[ -s "$pidfile" ] || return 0
	pid=$(cat "$pidfile")
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid"
		for _ in $(seq 60); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.5
		done
		kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
	fi
	rm -f "$pidfile"
}

# The LIBVIRT_* chains libvirtd makes when it starts: the jumps to them
# from the built-in chains, then the chains. Only when this run started
# libvirtd on a host that had none.
remove_libvirt_chains() {
	local ipt table rule chain
	for ipt in iptables ip6tables; do
		command -v $ipt >/dev/null || continue
		for table in filter nat mangle; do
			$ipt -t $table -S 2>/dev/null | grep -E '^-A [A-Z]+ .*-j LIBVIRT_' | grep -vE '^-A LIBVIRT_' |
				while read -r rule; do
					# shellcheck disable=SC2086 # the rule's words, as -S wrote them
					$ipt -t $table ${rule/-A/-D} 2>/dev/null || true
				done
			for chain in $($ipt -t $table -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^LIBVIRT_/ {print $2}'); do
				$ipt -t $table -F "$chain" 2>/dev/null || true
			done
			for chain in $($ipt -t $table -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^LIBVIRT_/ {print $2}'); do
				$ipt -t $table -X "$chain" 2>/dev/null || true
			done
		done
	done
}

# clean_up DIR: everything a run with run directory DIR made, whether it
# got that far or not; safe to run twice. Also run first, for what a run
# killed without its trap left behind.
clean_up() {
	local dir=$1 d n v
	if [ -d "$dir/dot" ] && libvirt_up; then
		VAGRANT_DOTFILE_PATH=$dir/dot timeout --kill-after=30 300 vagrant destroy -f >>"$dir/destroy.log" 2>&1 || true
	fi
	if libvirt_up; then
		for d in $(virsh list --all --name 2>/dev/null | grep "^$prefix" || true); do
			virsh destroy "$d" >/dev/null 2>&1 || true
			virsh undefine "$d" --remove-all-storage >/dev/null 2>&1 || virsh undefine "$d" >/dev/null 2>&1 || true
		done
		for n in $networks; do
			virsh net-destroy "$n" >/dev/null 2>&1 || true
			virsh net-undefine "$n" >/dev/null 2>&1 || true
		done
		if virsh pool-info "$pool" >/dev/null 2>&1; then
			for v in $(virsh vol-list "$pool" 2>/dev/null | awk 'NR > 2 && $1 != "" {print $1}'); do
				virsh vol-delete --pool "$pool" "$v" >/dev/null 2>&1 || true
			done
			virsh pool-destroy "$pool" >/dev/null 2>&1 || true
			virsh pool-undefine "$pool" >/dev/null 2>&1 || true
		fi
	fi
	rm -rf "$cache/pool" "$VAGRANT_HOME"
	if [ -f "$dir/libvirtd.pid" ] || [ -f "$dir/virtlogd.pid" ]; then
		stop_daemon "$dir/libvirtd.pid"
		stop_daemon "$dir/virtlogd.pid"
		[ -f "$dir/chains-were-there" ] || remove_libvirt_chains
	fi
}

libvirt_up() { timeout 20 virsh -c qemu:///system version >/dev/null 2>&1; }

# shellcheck disable=SC2317 # a trap
finish() {
	local rc=$?
	trap - EXIT
	trap '' INT TERM # the clean-up is bounded: let it finish
	if [ -n "$child" ]; then
		kill -TERM "$child" 2>/dev/null || true
		wait "$child" 2>/dev/null || true
	fi
	local t=$SECONDS
	log "cleaning up"
	clean_up "$run"
	log "clean-up $((SECONDS - t))s; $((SECONDS - total))s in all; logs in $run"
	exit "$rc"
}

# What an earlier run left behind, if it was killed without its clean-up.
mkdir -p "$cache"
if [ -d "$run" ]; then
	clean_up "$run"
fi
rm -rf "$run"
mkdir -p "$run"
total=$SECONDS
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# 1. The box.
t=$SECONDS
if [ ! -f "$boxfile" ]; then
	log "building box $box (log: $run/mkbox.log)"
	rm -f "$cache"/xdplb-bookworm-*.box
	if ! TMPDIR=$cache bounded 1800 vm-tests/vagrant/mkbox.sh "$boxfile" >"$run/mkbox.log" 2>&1; then
		tail -20 "$run/mkbox.log"
		exit 1
	fi
	log "box built in $((SECONDS - t))s ($(du -h "$boxfile" | cut -f1))"
else
	log "box $box cached"
fi

# 2. libvirt.
t=$SECONDS
if ! libvirt_up; then
	if iptables -S 2>/dev/null | grep -q '^-N LIBVIRT_'; then touch "$run/chains-were-there"; fi
	log "starting virtlogd and libvirtd"
	virtlogd -d -p "$run/virtlogd.pid"
	libvirtd -d -p "$run/libvirtd.pid"
	for _ in $(seq 60); do libvirt_up && break; sleep 1; done
	libvirt_up || { echo "vagrant-test: libvirtd does not answer" >&2; exit 1; }
fi
for n in $networks; do
	if virsh net-info "$n" >/dev/null 2>&1; then
		echo "vagrant-test: libvirt network $n exists already: not ours to take" >&2
		exit 1
	fi
done
mkdir -p "$cache/pool"
virsh pool-define-as "$pool" dir --target "$cache/pool" >/dev/null
virsh pool-start "$pool" >/dev/null
bounded 300 vagrant box add --force --name "$box" "$boxfile" >"$run/box-add.log" 2>&1 || { cat "$run/box-add.log"; exit 1; }
log "libvirt and box ready in $((SECONDS - t))s (driver $XDPLB_LIBVIRT_DRIVER)"

# 3. The VMs.
t=$SECONDS
log "vagrant up: client, lb, be1, be2 (log: $run/up.log)"
if ! bounded 2400 vagrant up >"$run/up.log" 2>&1; then
	tail -30 "$run/up.log"
	for c in "$run"/*.console.log; do [ -f "$c" ] && { echo "--- $c"; tail -15 "$c"; }; done
	exit 1
fi
up=$((SECONDS - t))
log "up in ${up}s"

# 4. The tests.
t=$SECONDS
rc=0
bounded 2400 vm-tests/vagrant/scenario.sh || rc=$?
log "scenario $((SECONDS - t))s"
exit $rc
