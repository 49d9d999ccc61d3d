#!/usr/bin/env bash
# DR scenario on the Vagrant lab, run on the lb VM as root after `make build`:
# a VIP with three backends, then three daemon restarts under the client's
# traffic (the netns versions are vm-tests/e2e: TestDRIPv4, TestHitlessRestartAndUpgrade).
set -euo pipefail
cd /vagrant
dev=$(ip -o -4 addr show | awk '$4 ~ /^10\.200\.0\.10\// {print $2; exit}')
daemon=
start() {
	bin/xdplb daemon --iface "$dev" --xdp-mode auto --state-dir /var/lib/xdplb &
	daemon=$!
	for _ in $(seq 50); do bin/xdplb status >/dev/null 2>&1 && return; sleep 0.1; done
	echo "daemon did not answer within 5s" >&2
	exit 1
}
stop() { kill "$daemon"; wait "$daemon" || true; }
conntrack_entries() { bin/xdplb status -o json | jq '.maps[] | select(.name == "conntrack") | .entries'; }
trap stop EXIT

start
bin/xdplb vip add 10.200.0.100:80/tcp --mode dr
for b in 11 12 13; do bin/xdplb backend add 10.200.0.100:80/tcp 10.200.0.$b; done
echo "now run on the client: for i in \$(seq 300); do curl -s http://10.200.0.100/; done | sort | uniq -c"
read -r -p "press enter when done to print stats " _
bin/xdplb stats

echo "restarts: run on the client (30 s of requests, each line a failure):"
echo "  for i in \$(seq 3000); do curl -s -m 1 -o /dev/null http://10.200.0.100/ || echo failed \$i; sleep 0.01; done"
read -r -p "press enter once it runs to restart the daemon three times " _
for i in 1 2 3; do
	before=$(conntrack_entries)
	stop
	sleep 1 # forwarding goes on without a daemon
	start
	after=$(conntrack_entries)
	echo "restart $i: connection table entries $before before, $after after"
	sleep 2
done
echo "the client loop should print no failure"
