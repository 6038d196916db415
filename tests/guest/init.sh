#!/bin/busybox sh
# /init of the v2 guest's initramfs: load the modules that reach the host's
# root over 9p, mount that root read-only and hand over to stage2.sh in it.
# Everything it needs is in guest.env (written by run.py).
B=/bin/busybox
die() { echo "v2-guest init: $*"; $B sync; echo o > /proc/sysrq-trigger; $B sleep 5; exit 1; }
$B mkdir -p /proc /sys /dev /newroot
$B mount -t proc proc /proc || die "mount /proc"
$B mount -t sysfs sysfs /sys || die "mount /sys"
$B mount -t devtmpfs devtmpfs /dev || die "mount /dev"
. /guest.env
for m in $SV_GUEST_MODULES; do
    $B insmod "/modules/$m.ko" || die "insmod $m"
done
$B mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /newroot \
    || die "mount the host's root over 9p"
for d in proc sys dev; do
    $B mount --move "/$d" "/newroot/$d" || die "move /$d"
done
exec $B switch_root /newroot /bin/sh "$SV_GUEST_CHECKOUT/tests/guest/stage2.sh"
