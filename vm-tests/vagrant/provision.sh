#!/usr/bin/env bash
# Provisions one lab VM: provision.sh ROLE V4 V6
set -euo pipefail
role=$1 v4=$2 v6=$3
vip4=10.200.0.100 vip6=fd00:200::100
dev=$(ip -o -4 addr show | awk -v a="$v4" '$4 ~ "^"a"/" {print $2; exit}')
ip -6 addr replace "$v6/64" dev "$dev" nodad

case $role in
be*)
	# DR real server: owns the VIP on loopback, never answers ARP/NDP for it.
	apt-get update -qq && apt-get install -y -qq nginx-light >/dev/null
	echo "$role" >/var/www/html/index.html
	sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2
	ip addr replace "$vip4/32" dev lo
	ip -6 addr replace "$vip6/128" dev lo nodad
	;;
lb)
	apt-get update -qq && apt-get install -y -qq make git golang-go jq >/dev/null
	echo "build with: cd /vagrant && make build (Go >= 1.26 from go.dev if Debian's is older)"
	;;
client)
	apt-get update -qq && apt-get install -y -qq curl >/dev/null
	;;
esac
