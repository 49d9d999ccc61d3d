#!/usr/bin/env bash
# The Vagrant lab's tests, from the host, once `vagrant up` has provisioned
# the lab (Vagrantfile): each step runs on a guest over ssh with Vagrant's
# own ssh configuration (`vagrant ssh-config`; the same as `vagrant ssh`,
# without starting Vagrant for every command). Non-interactive, every step
# bounded; prints a line per test, the guests' kernels and
# `vagrant: N passed, N failed`, and exits non-zero on any failure.
#
#   vm-tests/vagrant/scenario.sh
#
# What it checks, on the lab's VIPs (DR segment, port 80):
#   .100 / ::100  dr       backends be1, be2 on their DR address, port 80
#   .101 / ::101  nat      backends on the NAT arm, port 8080; they see the client
#   .102 / ::102  fullnat  backends on the NAT arm, port 8080; they see the LB
# distribution over both backends in each mode and family; a backend
# failure (its server stopped) and its rejoin; three restarts of the
# daemon (systemctl restart xdplb) under traffic on new and long-lived
# connections, none of which may fail.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit

# Software emulation runs 20-30x slower than the host: every limit has room.
T=${XDPLB_VAGRANT_STEP_TIMEOUT:-300}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if ! timeout 300 vagrant ssh-config >"$tmp/ssh_config" 2>"$tmp/err"; then
	cat "$tmp/err" >&2
	echo "scenario: vagrant ssh-config failed: is the lab up (vagrant up)?" >&2
	exit 1
fi

# on HOST CMD: runs CMD as root on HOST, bounded by $T seconds.
on() {
	local host=$1
	shift
	timeout --kill-after=10 "$T" ssh -F "$tmp/ssh_config" -o LogLevel=ERROR -o BatchMode=yes \
		-o ConnectTimeout=60 -o ServerAliveInterval=15 "$host" "sudo sh -c '$*'" </dev/null
}

passed=0 failed=0
# check NAME CMD...: one test; its output is shown indented.
check() {
	local name=$1
	shift
	local start=$SECONDS
	if "$@" >"$tmp/out" 2>&1; then
		passed=$((passed + 1))
		echo "ok    $name ($((SECONDS - start))s)"
	else
		failed=$((failed + 1))
		echo "FAIL  $name ($((SECONDS - start))s)"
	fi
	sed 's/^/      /' "$tmp/out"
}

hosts="client lb be1 be2"
kernels() {
	local h
	for h in $hosts; do
		printf '%s %s\n' "$h" "$(on "$h" 'uname -r')" || return 1
	done
}

# The desired state, whole: every VIP with its health check.
cat >"$tmp/lab.yaml" <<'EOF'
vips:
EOF
hc='healthcheck: {type: tcp, interval: 2s, timeout: 1500ms, rise: 2, fall: 2}'
for fam in 4 6; do
	if [ $fam = 4 ]; then v=10.200.0. n=10.201.0.; else v=fd00:200:: n=fd00:201::; fi
	cat >>"$tmp/lab.yaml" <<EOF
  - {address: ${v}100, port: 80, protocol: tcp, mode: dr, $hc,
     backends: [{address: ${v}11}, {address: ${v}12}]}
  - {address: ${v}101, port: 80, protocol: tcp, mode: nat, $hc,
     backends: [{address: ${n}11, port: 8080}, {address: ${n}12, port: 8080}]}
  - {address: ${v}102, port: 80, protocol: tcp, mode: fullnat, $hc,
     backends: [{address: ${n}11, port: 8080}, {address: ${n}12, port: 8080}]}
EOF
done

start_daemon() {
	on lb 'systemctl start xdplb && systemctl is-active xdplb && xdplb-vmtest summary'
}
apply_vips() {
	timeout 60 ssh -F "$tmp/ssh_config" -o LogLevel=ERROR -o BatchMode=yes lb \
		'cat >/tmp/lab.yaml' <"$tmp/lab.yaml" &&
		on lb 'xdplb apply -f /tmp/lab.yaml && xdplb vip list' &&
		wait_backends up 11 12
}
# wait_backends up|down HOST...: every VIP's backends with those host
# numbers reach the state.
wait_backends() {
	local state=$1 vip addrs h
	shift
	for vip in 10.200.0.100:80/tcp 10.200.0.101:80/tcp 10.200.0.102:80/tcp \
		'[fd00:200::100]:80/tcp' '[fd00:200::101]:80/tcp' '[fd00:200::102]:80/tcp'; do
		addrs=
		for h in "$@"; do
			case $vip in
			10.200.0.100*) addrs+=10.200.0.$h, ;;
			10.200.0.*) addrs+=10.201.0.$h, ;;
			*::100*) addrs+=fd00:200::$h, ;;
			*) addrs+=fd00:201::$h, ;;
			esac
		done
		on lb "xdplb-vmtest wait -vip $vip -$state $addrs -timeout 120s" || return 1
	done
}
# get LABEL URL PEER [WANT]: requests from the client on new connections.
get() {
	on client "xdplb-vmtest get -name \"$1\" -url \"$2\" -n ${GET_N:-40} -want ${4:-be1,be2} -peer $3 ${5:-}"
}

backend_fails() {
	on be2 'systemctl stop xdplb-web' &&
		wait_backends down 12 &&
		get 'dr ipv4, be2 down' http://10.200.0.100/ 10.200.0.2 be1 '-min-share 1' &&
		get 'nat ipv4, be2 down' http://10.200.0.101/ 10.200.0.2 be1 '-min-share 1' &&
		get 'fullnat ipv6, be2 down' 'http://[fd00:200::102]/' fd00:201::10 be1 '-min-share 1'
}
backend_rejoins() {
	on be2 'systemctl start xdplb-web' &&
		wait_backends up 11 12 &&
		get 'dr ipv4' http://10.200.0.100/ 10.200.0.2 &&
		get 'nat ipv4' http://10.200.0.101/ 10.200.0.2
}

# Three restarts under traffic: the client's load runs in the background
# (an ssh session of its own) while the daemon restarts; the load must see
# no failure, on new connections or on long-lived ones.
restarts() {
	local urls='http://10.200.0.100/,http://[fd00:200::100]/,http://10.200.0.101/,http://10.200.0.102/,http://[fd00:200::102]/'
	on client 'rm -f /tmp/load.stop' || return 1
	timeout --kill-after=10 $((T * 4)) ssh -F "$tmp/ssh_config" -o LogLevel=ERROR -o BatchMode=yes client \
		"xdplb-vmtest load -url '$urls' -stop /tmp/load.stop -interval 100ms -conns 1" >"$tmp/load" 2>&1 </dev/null &
	local load=$! ok=0 i t
	sleep 10 # the load is under way, its long-lived connections open
	for i in 1 2 3; do
		t=$SECONDS
		if ! on lb 'systemctl restart xdplb && systemctl is-active xdplb >/dev/null && xdplb status >/dev/null'; then
			echo "restart $i failed"
			ok=1
			break
		fi
		echo "restart $i: $((SECONDS - t))s; $(on lb 'xdplb-vmtest summary -tables')"
		sleep 5
	done
	on client 'touch /tmp/load.stop' || ok=1
	wait "$load" || ok=1
	cat "$tmp/load"
	return $ok
}

check "guests answer; kernels" kernels
kern=$(paste -sd, "$tmp/out" | sed 's/,/, /g')
check "daemon starts (xdplb.service)" start_daemon
check "VIPs applied, every backend up" apply_vips
check "dr ipv4: both backends" get 'dr ipv4' http://10.200.0.100/ 10.200.0.2
check "dr ipv6: both backends" get 'dr ipv6' 'http://[fd00:200::100]/' fd00:200::2
check "nat ipv4: both backends, they see the client" get 'nat ipv4' http://10.200.0.101/ 10.200.0.2
check "nat ipv6: both backends, they see the client" get 'nat ipv6' 'http://[fd00:200::101]/' fd00:200::2
check "fullnat ipv4: both backends, they see the lb" get 'fullnat ipv4' http://10.200.0.102/ 10.201.0.10
check "fullnat ipv6: both backends, they see the lb" get 'fullnat ipv6' 'http://[fd00:200::102]/' fd00:201::10
check "backend failure: be2 down, be1 takes every new flow" backend_fails
check "backend rejoin: be2 up, both take new flows" backend_rejoins
check "three daemon restarts under traffic, no failed connection" restarts

echo "vagrant: kernels ${kern:-unknown}"
echo "vagrant: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
