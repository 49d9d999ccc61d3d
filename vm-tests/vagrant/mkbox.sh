#!/usr/bin/env bash
# Builds the Debian 12 Vagrant box of `make vagrant-test` from Debian's
# packages alone (no box from the internet): mkbox.sh OUT.box
#
# mmdebstrap makes the root file system; a raw disk gets one ext4 partition
# and BIOS grub through loop devices; qemu-img makes the compressed qcow2
# that vagrant-libvirt's box format wraps. The guests get what the tests
# need and nothing to build with: the load balancer and the test helper are
# static binaries copied in. Run as root; about 2-3 minutes, 300 MB.
#
# run.sh keys the box's name on a hash of this file: any change here makes
# the next run build a new box.
set -euo pipefail

out=${1:?usage: mkbox.sh OUT.box}
# Where the insecure key of Vagrant itself lives (the vagrant package).
pubkey=$(find /usr/share/rubygems-integration/all/gems -path '*/vagrant-*/keys/vagrant.pub' 2>/dev/null | sort | tail -1)
[ -n "$pubkey" ] || { echo "mkbox: Vagrant's insecure public key not found (apt-get install vagrant)" >&2; exit 1; }

# systemd and ifupdown boot the guest and bring eth0 up with DHCP (the
# management network Vagrant reaches it over); udev loads the virtio
# drivers; openssh-server and sudo are Vagrant's way in; iproute2, procps
# and iputils-ping are what provision.sh and the scenario run.
pkgs=systemd-sysv,udev,linux-image-amd64,openssh-server,sudo,ifupdown,isc-dhcp-client,iproute2,procps,iputils-ping,kmod,ca-certificates

work=$(mktemp -d "${TMPDIR:-/var/tmp}/xdplb-box.XXXXXX")
loop='' made='' mnt=$work/mnt
cleanup() {
	if mountpoint -q "$mnt"; then umount "$mnt"; fi
	if [ -n "$made" ]; then rm -f "$made"; fi
	if [ -n "$loop" ]; then losetup -d "$loop" 2>/dev/null || true; fi
	rm -rf "$work"
}
trap cleanup EXIT

echo "mkbox: root file system (mmdebstrap)"
# The host's apt sources, so the guests get the same mirror and security
# updates; a mirror that serves a fixed snapshot has expired Valid-Until.
sources=/etc/apt/sources.list.d/debian.sources
[ -f "$sources" ] || sources=/etc/apt/sources.list
# shellcheck disable=SC2016 # the hooks' "$1" is mmdebstrap's: the root
mmdebstrap --quiet --variant=minbase --include="$pkgs" \
	--aptopt='Acquire::Check-Valid-Until "false"' \
	--dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
	--dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
	--customize-hook='chroot "$1" useradd -m -s /bin/bash -U vagrant' \
	--customize-hook='echo "vagrant ALL=(ALL) NOPASSWD: ALL" > "$1/etc/sudoers.d/vagrant"; chmod 0440 "$1/etc/sudoers.d/vagrant"' \
	--customize-hook="mkdir -m 0700 \"\$1/home/vagrant/.ssh\"; cp $pubkey \"\$1/home/vagrant/.ssh/authorized_keys\"; chmod 0600 \"\$1/home/vagrant/.ssh/authorized_keys\"; chroot \"\$1\" chown -R vagrant:vagrant /home/vagrant/.ssh" \
	--customize-hook='echo "vagrant:vagrant" | chroot "$1" chpasswd' \
	--customize-hook='rm -f "$1"/etc/ssh/ssh_host_*' \
	--customize-hook='echo xdplb > "$1/etc/hostname"; printf "127.0.0.1 localhost\n127.0.1.1 xdplb\n::1 localhost ip6-localhost ip6-loopback\n" > "$1/etc/hosts"' \
	--customize-hook='rm -f "$1/etc/machine-id" && touch "$1/etc/machine-id"' \
	bookworm "$work/rootfs" "$sources"

root=$work/rootfs
# Host keys are made on the guest's first boot, each guest its own; before
# Debian's `sshd -t` check, which fails without them.
mkdir -p "$root/etc/systemd/system/ssh.service.d"
cat >"$root/etc/systemd/system/ssh.service.d/hostkeys.conf" <<'EOF'
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
EOF
cat >"$root/etc/network/interfaces" <<'EOF'
source /etc/network/interfaces.d/*

auto lo
iface lo inet loopback

auto eth0
iface eth0 inet dhcp
EOF
# Vagrant logs in as soon as sshd answers; no DNS lookups of its address.
echo "UseDNS no" >"$root/etc/ssh/sshd_config.d/vagrant.conf"

kver=$(find "$root/lib/modules" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort | tail -1)
uuid=$(cat /proc/sys/kernel/random/uuid)
echo "UUID=$uuid / ext4 errors=remount-ro 0 1" >"$root/etc/fstab"

echo "mkbox: disk (kernel $kver)"
disk=$work/box.raw
truncate -s 8G "$disk"
echo 'start=2048, type=83, bootable' | sfdisk --quiet "$disk"
loop=$(losetup --find --show --partscan "$disk")
part=${loop}p1
if [ ! -b "$part" ]; then
	# No udev on the host: make the partition's node from sysfs.
	partx -a "$loop" 2>/dev/null || true
	if [ ! -b "$part" ]; then
		n=$(basename "$loop")
		IFS=: read -r major minor <"/sys/block/$n/${n}p1/dev"
		mknod "$part" b "$major" "$minor"
		made=$part
	fi
fi
mkfs.ext4 -q -U "$uuid" -L xdplb-root "$part"
mkdir -p "$mnt"
mount "$part" "$mnt"
# xattrs carry file capabilities (ping's cap_net_raw).
tar -C "$root" --xattrs --xattrs-include='*' --numeric-owner -cf - . |
	tar -C "$mnt" --xattrs --xattrs-include='*' --numeric-owner -xf -
grub-install --target=i386-pc --boot-directory="$mnt/boot" --modules='part_msdos ext2' "$loop" 2>&1 |
	grep -v '^Installation finished' || true
# grub and the kernel on the serial console too, which run.sh keeps in a
# file per guest: the only screen a guest without graphics has.
cat >"$mnt/boot/grub/grub.cfg" <<EOF
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=0
search --no-floppy --fs-uuid --set=root $uuid
linux /boot/vmlinuz-$kver root=UUID=$uuid ro console=tty0 console=ttyS0,115200 net.ifnames=0 biosdevname=0
initrd /boot/initrd.img-$kver
boot
EOF
# A box without its grub.cfg boots to a grub prompt nobody sees, and
# vagrant up waits for an address until its time limit.
for f in grub/grub.cfg grub/i386-pc/normal.mod "vmlinuz-$kver" "initrd.img-$kver"; do
	[ -s "$mnt/boot/$f" ] || { echo "mkbox: /boot/$f missing on the disk" >&2; exit 1; }
done
sync -f "$mnt"
umount "$mnt"
if [ -n "$made" ]; then rm -f "$made"; made=; fi
losetup -d "$loop"
loop=

echo "mkbox: box"
qemu-img convert -O qcow2 -c "$disk" "$work/box.img"
rm -f "$disk"
cat >"$work/metadata.json" <<'EOF'
{"provider": "libvirt", "format": "qcow2", "virtual_size": 8}
EOF
cat >"$work/Vagrantfile" <<'EOF'
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |libvirt|
    libvirt.disk_bus = "virtio"
  end
end
EOF
tar -C "$work" -cf "$out.tmp" metadata.json Vagrantfile box.img
mv "$out.tmp" "$out"
echo "mkbox: $out ($(du -h "$out" | cut -f1))"
