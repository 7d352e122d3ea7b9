#!/bin/busybox sh
# /init of the edge_min firmware initramfs (busybox-static and the kernel modules only).
#
# Loads the modules, finds the partitions by their GPT names (PARTNAME= in sysfs: no udev,
# no blkid), mounts the slot the boot loader chose (edge.slot= on the command line) read-only
# as the new root, the data partition read-write under it (the options that keep SQLite's
# synchronous=FULL durable: see docs/firmware.md), the ESP read-only, and a provisioning seed
# drive (FAT, label EDGESEED) if one is attached; then switch_root into the slot's /sbin/init.
# Anything that fails here reboots after 5 s: the boot loader counts the try, so a slot that
# cannot even mount falls back like one whose runtime is unhealthy.
/bin/busybox mkdir -p /usr/bin /sbin /usr/sbin /proc /sys /dev /newroot /seed
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
up() { cut -d' ' -f1 /proc/uptime; }
log() { echo "edge-init[$(up)]: $*" > /dev/console; }
fail() { log "FAILED: $*; rebooting in 5 s"; sleep 5; echo b > /proc/sysrq-trigger; reboot -f; }
log "initramfs start"

for m in $(cat /etc/modules); do
  modprobe "$m" 2>/dev/null || log "modprobe $m failed"
done

SLOT=
for a in $(cat /proc/cmdline); do
  case $a in edge.slot=*) SLOT=${a#edge.slot=} ;; esac
done
case $SLOT in a|b) ;; *) fail "no edge.slot=a|b on the kernel command line" ;; esac

bylabel() {  # a GPT partition name -> /dev/NAME
  for u in /sys/class/block/*/uevent; do
    if grep -qx "PARTNAME=$1" "$u"; then echo "/dev/$(sed -n 's/^DEVNAME=//p' "$u")"; return 0; fi
  done
  return 1
}
i=0
while ! ROOTDEV=$(bylabel "edge-$SLOT"); do
  i=$((i + 1)); [ $i -gt 150 ] && fail "partition edge-$SLOT not found"
  sleep 0.1
done
DATADEV=$(bylabel edge-data) || fail "partition edge-data not found"
ESPDEV=$(bylabel esp) || fail "partition esp not found"
log "slot $SLOT: root $ROOTDEV, data $DATADEV, esp $ESPDEV"

mount -t squashfs -o ro "$ROOTDEV" /newroot || fail "slot $SLOT ($ROOTDEV) does not mount"
# ext4's barrier=1 (a cache flush at each journal commit and fsync) and data=ordered are its
# defaults; spelled out so no one "tunes" them away. errors=remount-ro keeps a damaged
# partition from being written further.
mount -t ext4 -o rw,noatime,barrier=1,data=ordered,errors=remount-ro "$DATADEV" /newroot/data \
  || fail "data partition ($DATADEV) does not mount"
mount -t vfat -o ro,noatime,fmask=0077,dmask=0077 "$ESPDEV" /newroot/efi || log "ESP does not mount"
SEED=$(findfs LABEL=EDGESEED 2>/dev/null) && \
  mount -t vfat -o ro "$SEED" /seed && log "seed drive $SEED attached"
echo "$SLOT" > /newroot/data/.booted-slot 2>/dev/null

log "switch_root into slot $SLOT"
if grep -q ' /seed ' /proc/mounts; then mkdir -p /dev/.seed; mount --move /seed /dev/.seed; fi
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/init
