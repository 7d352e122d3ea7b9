#!/bin/busybox sh
# /init of the edge initramfs (busybox-static only).
/bin/busybox mkdir -p /usr/bin /sbin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
up() { cut -d' ' -f1 /proc/uptime; }
log() { echo "edge-init[$(up)]: $*" > /dev/console; }
log "start (kernel uptime at init)"

EFIGUID=4a67b082-0a4c-41cf-b6c7-440b29bb8c4f
VARS=/sys/firmware/efi/efivars

for m in virtio_pci virtio_blk virtio_net squashfs vfat nls_cp437 nls_iso8859_1 nls_utf8 nls_ascii efivarfs; do
  modprobe $m || log "modprobe $m failed"
done

SLOT=; ROOT=
for a in $(cat /proc/cmdline); do
  case $a in
    edge.slot=*) SLOT=${a#edge.slot=} ;;
    root=PARTLABEL=*) ROOT=${a#root=PARTLABEL=} ;;
  esac
done
[ -n "$ROOT" ] || ROOT=edge-$SLOT
log "slot=$SLOT root=PARTLABEL=$ROOT"

# PARTLABEL lookup without udev/blkid: the kernel exports GPT names as PARTNAME= in uevent
bylabel() {
  for u in /sys/class/block/*/uevent; do
    if grep -qx "PARTNAME=$1" "$u"; then
      echo /dev/$(sed -n 's/^DEVNAME=//p' "$u"); return 0
    fi
  done
  return 1
}
i=0
while ! ROOTDEV=$(bylabel "$ROOT"); do
  i=$((i+1)); [ $i -gt 100 ] && { log "root $ROOT not found"; sleep 2; reboot -f; }
  sleep 0.1
done
DATADEV=$(bylabel edge-data); ESPDEV=$(bylabel esp)
log "root=$ROOTDEV data=$DATADEV esp=$ESPDEV write_cache=$(cat /sys/block/vda/queue/write_cache)"

mount -t squashfs -o ro "$ROOTDEV" /slot || { log "mount slot failed"; sleep 2; reboot -f; }
# ext4 defaults already give barrier=1 (flush/FUA on fsync/commit) and data=ordered;
# spelled out here. SQLite synchronous=FULL then is durable iff the virtual disk honours
# flushes (QEMU cache=none|writeback|writethrough|directsync; NOT cache=unsafe).
e2fsck -p "$DATADEV" >/dev/null 2>&1   # busybox has no e2fsck; the kernel replays the journal on mount
mount -t ext4 -o rw,noatime,barrier=1,data=ordered,errors=remount-ro "$DATADEV" /data || log "mount data failed"
grep -E ' /(slot|data) ' /proc/mounts > /dev/console
echo "$(up) slot=$SLOT" >> /data/boots.log; sync

# network: QEMU user-net static config
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
log "eth0 up: $(ip -4 addr show eth0 | sed -n 's/.*inet \([^ ]*\).*/\1/p')"

# placeholder service from the slot
/slot/bin/edge-service > /dev/console 2>&1 &
SVC=$!
ok=0
for i in $(seq 1 100); do
  # NB: busybox 1.35 (Debian static) "wget -T" segfaults; use timeout(1) instead
  if timeout 3 wget -q -O /tmp/h http://127.0.0.1:8000/health 2>/dev/null; then ok=1; break; fi
  kill -0 $SVC 2>/dev/null || { [ $i -gt 5 ] && break; }
  sleep 0.2
done
mount -t efivarfs efivarfs $VARS 2>/dev/null
readvar() { [ -f $VARS/$1-$EFIGUID ] && dd if=$VARS/$1-$EFIGUID bs=1 skip=4 2>/dev/null | tr -d '\000'; }
log "LoaderEntrySelected=$(readvar LoaderEntrySelected) LoaderBootCountPath=$(readvar LoaderBootCountPath)"
if [ $ok != 1 ]; then
  log "service FAILED health check; not blessing, rebooting"
  sync; umount /data; sleep 1; reboot -f
fi
log "service healthy: $(cat /tmp/h)"

# bless: rename \loader\entries\edge-a+2-1.conf -> edge-a.conf on the ESP
BCP=$(readvar LoaderBootCountPath)
if [ -n "$BCP" ]; then
  mount -t vfat -o rw "$ESPDEV" /esp
  P=/esp$(echo "$BCP" | tr '\\' '/')
  NEW=$(echo "$P" | sed -E 's/\+[0-9]+(-[0-9]+)?\.conf$/.conf/')
  if [ -f "$P" ] && [ "$P" != "$NEW" ]; then
    mv "$P" "$NEW" && sync && log "blessed: $BCP -> ${NEW#/esp}"
  else
    log "bless: $P not found (already blessed?)"
  fi
  ls /esp/loader/entries > /dev/console
  umount /esp
else
  log "no LoaderBootCountPath: entry has no counter (already blessed)"
fi

# one-shot request test: host drops /data/oneshot-request containing an entry id
if [ -f /data/oneshot-request ]; then
  ID=$(cat /data/oneshot-request); rm -f /data/oneshot-request; sync
  F=$VARS/LoaderEntryOneShot-$EFIGUID
  [ -f $F ] && chattr -i $F
  # attributes NV|BS|RT = 0x00000007 LE, then UTF-16LE id, then UTF-16 NUL
  { printf '\007\000\000\000'; printf '%s' "$ID" | sed 's/./&\n/g' | while IFS= read -r c; do [ -n "$c" ] && printf '%s\000' "$c"; done; printf '\000\000'; } > /tmp/oneshot
  hexdump -C /tmp/oneshot > /dev/console
  cat /tmp/oneshot > $F && log "LoaderEntryOneShot=$ID written; rebooting" 
  umount /data; sleep 1; reboot -f
fi

awk '/MemTotal|MemFree|MemAvailable|^Cached|Shmem:/{printf "%s %s kB; ",$1,$2} END{print ""}' /proc/meminfo > /dev/console
free > /dev/console
log "READY"

# background fsync writer (exercises the ext4 journal for the SIGKILL test)
( n=0; while [ $n -lt 2000 ]; do
    dd if=/dev/urandom of=/data/w.$((n % 20)) bs=16k count=4 conv=fsync 2>/dev/null
    echo "$n" >> /data/writer.log
    n=$((n+1))
  done ) &
while :; do sleep 3600; done
