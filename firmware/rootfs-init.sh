#!/bin/sh
# /sbin/init of an edge_min firmware slot (PID 1 after the initramfs's switch_root).
#
# Mounts the file systems the runtime needs, brings the network up (DHCP, else QEMU's
# 10.0.2.15/24), and runs `edge-min firmware boot` (targets/firmware/boot.py): provisioning,
# the A/B decisions with the boot loader, and the runtime itself. Its exit code 75 asks for a
# reboot (a trial that failed, a switch to the other slot), and so does any other failure of
# it (the boot loader counts the try: a slot whose boot cannot even run falls back); only a
# clean stop (exit 0, after SIGTERM) powers off. Either way the data partition is synced and
# remounted read-only first.
export PATH=/usr/bin:/bin:/usr/sbin:/sbin
export HOME=/run/home XDG_CACHE_HOME=/run/cache TMPDIR=/tmp
up() { cut -d' ' -f1 /proc/uptime; }
log() { echo "edge-init[$(up)]: $*" > /dev/console; }
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
mkdir -p /run/home /run/cache /run/seed /dev/pts /dev/shm
mount -t devpts devpts /dev/pts 2>/dev/null
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
mount -t efivarfs efivarfs /sys/firmware/efi/efivars 2>/dev/null
[ -d /dev/.seed ] && mount --move /dev/.seed /run/seed
hostname edge-min
ip link set lo up
ip link set eth0 up 2>/dev/null
if ! udhcpc -i eth0 -n -q -t 4 -T 1 -s /etc/udhcpc.script >/dev/null 2>&1; then
  ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2
fi
log "network: $(ip -4 addr show eth0 | sed -n 's/.*inet \([^ ]*\).*/\1/p')"

finish() {
  sync
  mount -o remount,ro /data 2>/dev/null
  mount -o remount,ro /efi 2>/dev/null
  if [ "$1" = 0 ]; then log "powering off"; poweroff -f; fi
  [ "$1" = 75 ] || sleep 5  # a failure: slow down a loop of them
  log "rebooting"; reboot -f
}
trap 'kill -TERM $BOOT 2>/dev/null' TERM INT
/usr/bin/edge-min firmware boot > /dev/console 2>&1 &
BOOT=$!
wait $BOOT; rc=$?
[ $rc -gt 128 ] && wait $BOOT && rc=$?  # woken by the trap: wait for the real exit
log "edge-min firmware boot exited with status $rc"
finish $rc
