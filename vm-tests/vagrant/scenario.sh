#!/usr/bin/env bash
# DR scenario on the Vagrant lab, run on the lb VM as root after `make build`.
set -euo pipefail
cd /vagrant
dev=$(ip -o -4 addr show | awk '$4 ~ /^10\.200\.0\.10\// {print $2; exit}')
bin/xdplb daemon --iface "$dev" --xdp-mode auto --state-dir /var/lib/xdplb &
daemon=$!
trap 'kill $daemon; wait $daemon' EXIT
for _ in $(seq 50); do bin/xdplb status >/dev/null 2>&1 && break; sleep 0.1; done
bin/xdplb vip add 10.200.0.100:80/tcp --mode dr
for b in 11 12 13; do bin/xdplb backend add 10.200.0.100:80/tcp 10.200.0.$b; done
echo "now run on the client: for i in \$(seq 300); do curl -s http://10.200.0.100/; done | sort | uniq -c"
read -r -p "press enter when done to print stats " _
bin/xdplb stats
