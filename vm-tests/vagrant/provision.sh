#!/usr/bin/env bash
# Provisions one lab VM, as root, from what the Vagrantfile uploaded:
#
#   provision.sh ROLE DR_V4 DR_V6 [NAT_V4 NAT_V6]
#
# ROLE is client, lb or beN. /tmp/xdplb-guest.tar (`make vagrant-files`)
# holds xdplb as `make install` lays it out under /usr/local (the binary,
# its systemd unit, /etc/default/xdplb) and the test helper xdplb-vmtest.
# Vagrant set the IPv4 addresses; this adds the IPv6 ones and the role's
# set-up. Nothing is installed from a package archive, so the same script
# serves a box with no way out and a public one. Run again, it changes
# nothing.
set -euo pipefail
role=$1 dr4=$2 dr6=$3 nat4=${4:-} nat6=${5:-}
# The DR VIPs the backends hold on lo, and the load balancer on the NAT
# arm (the backends' gateway for replies from their NAT address).
vip4=10.200.0.100 vip6=fd00:200::100
lb_nat4=10.201.0.10 lb_nat6=fd00:201::10

if [ -f /tmp/xdplb-guest.tar ]; then
	tar -C / --no-same-owner --no-overwrite-dir -xf /tmp/xdplb-guest.tar
	rm -f /tmp/xdplb-guest.tar
fi
systemctl daemon-reload
if [ "$(hostname)" != "$role" ]; then
	echo "$role" >/etc/hostname
	hostname "$role"
	sed -i '/^127\.0\.1\.1\s/d' /etc/hosts
	echo "127.0.1.1 $role" >>/etc/hosts
fi

# The interface that holds an IPv4 address (names differ between boxes and
# providers: eth1, ens6, enp0s8, ...).
iface_of() {
	local dev
	dev=$(ip -o -4 addr show | awk -v a="$1" '$4 ~ "^"a"/" {print $2; exit}')
	[ -n "$dev" ] || { echo "provision: no interface has $1" >&2; exit 1; }
	echo "$dev"
}
dr=$(iface_of "$dr4")
ip -6 addr replace "$dr6/64" dev "$dr" nodad
nat=
if [ -n "$nat4" ]; then
	nat=$(iface_of "$nat4")
	ip -6 addr replace "$nat6/64" dev "$nat" nodad
fi
# Replies take the path the tests expect, not the one a loose reverse-path
# check would accept or refuse.
sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
for d in $dr $nat; do sysctl -qw "net.ipv4.conf.$d.rp_filter=0"; done

case $role in
be*)
	# DR: the VIPs on lo, never answered for in ARP (NDP answers only for
	# the interface's own addresses).
	sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2
	ip addr replace "$vip4/32" dev lo
	ip -6 addr replace "$vip6/128" dev lo nodad
	# nat: the client's packets arrive on the NAT arm with the client's own
	# address, which the DR segment reaches directly; replies from the NAT
	# address must go back through the load balancer, which translates them.
	ip route replace 10.201.0.0/24 dev "$nat" table 201
	ip route replace default via "$lb_nat4" dev "$nat" table 201
	ip -6 route replace fd00:201::/64 dev "$nat" table 201
	ip -6 route replace default via "$lb_nat6" dev "$nat" table 201
	ip rule show | grep -q "from $nat4 lookup 201" || ip rule add from "$nat4" table 201 pref 201
	ip -6 rule show | grep -q "from $nat6 lookup 201" || ip -6 rule add from "$nat6" table 201 pref 201
	# The backends' server: port 80 for the DR VIPs, 8080 for the NAT ones
	# (a translation that leaves the port alone fails).
	cat >/etc/systemd/system/xdplb-web.service <<EOF
[Unit]
Description=xdplb lab backend: answers its name
[Service]
ExecStart=/usr/local/bin/xdplb-vmtest serve -name $role -port 80 -port 8080
EOF
	systemctl daemon-reload
	systemctl restart xdplb-web
	;;
lb)
	# bpf_fib_lookup answers only for a forwarding interface.
	sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
	# The daemon's flags for xdplb.service; the tests start it.
	cat >/etc/default/xdplb <<EOF
# Written by vm-tests/vagrant/provision.sh.
XDPLB_OPTS="--iface $dr --iface $nat --xdp-mode auto"
EOF
	;;
client) ;;
*)
	echo "provision: unknown role $role" >&2
	exit 1
	;;
esac
echo "provisioned $role: $dr${nat:+ and $nat}, kernel $(uname -r)"
