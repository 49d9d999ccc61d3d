#!/bin/busybox sh
# shellcheck shell=dash
# The VM's /init, in the initramfs run.sh builds: loads virtio, 9p and
# overlay from the guest kernel's own modules, mounts the host's root
# (read-only, over 9p) under a tmpfs overlay, the run's output directory
# (read-write, over 9p) at its host path and the guest kernel's modules at
# /lib/modules, then hands over to guest.sh on that root. /config (written
# by run.sh) sets KVER, MODDIR, OUT and GUEST.
set -eu
/bin/busybox --install -s /bin
export PATH=/bin
# shellcheck source=/dev/null
. /config

fail() {
	echo "xdplb-vm: init: $*"
	poweroff -f
}

mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev

# In the order run.sh computed from modules.dep: dependencies first.
while read -r m; do
	insmod "/modules/$m" || fail "insmod $m"
done </modules.order

mkdir -p /lower /rw /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 hostroot /lower ||
	fail "mount the host's root over 9p"
mount -t tmpfs -o mode=0755 tmpfs /rw
mkdir -p /rw/upper /rw/work
# The host's root may hold files that the upper layer would shadow
# oddly (xattrs, redirects): none of overlay's optional features is used.
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work,redirect_dir=off,index=off,metacopy=off \
	overlay /newroot || fail "mount the overlay"

mkdir -p "/newroot$OUT" "/newroot/lib/modules/$KVER"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 xdplbout "/newroot$OUT" ||
	fail "mount the output directory over 9p"
mount -o bind "/newroot$MODDIR" "/newroot/lib/modules/$KVER" || fail "bind the modules"

umount /proc /sys /dev
exec switch_root /newroot /bin/bash "$GUEST" "$OUT"
