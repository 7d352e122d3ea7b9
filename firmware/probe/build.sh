#!/bin/bash
# Build out/disk.img: GPT with ESP (systemd-boot, BLS entries with boot counting),
# two squashfs root slots (edge-a, edge-b) and an ext4 data partition (edge-data).
# Debian packages only. No mounts, no loop devices.
#
# Env knobs:
#   BAD_SLOT_A=1   slot a's service is broken (health never answers) -> init reboots
#                  without blessing; used to test boot counting fallback to slot b.
#   TRIES=3        initial boot-counting tries for both entries.
#   SKIP_APT=1     do not run apt-get install.
set -euo pipefail
export LC_ALL=C
HERE=$(cd "$(dirname "$0")" && pwd)
cd "$HERE"
N="nice -n 19"
TRIES=${TRIES:-3}
BAD_SLOT_A=${BAD_SLOT_A:-0}

ts() { date +%s.%N; }
T0=$(ts)

# ---------------------------------------------------------------- packages
if [ "${SKIP_APT:-0}" != 1 ]; then
  # NOTE: systemd-boot-efi has an exact-version dependency on systemd; installing it
  # can pull a systemd point-release upgrade (252.38 -> 252.39 here).
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    qemu-system-x86 ovmf systemd-boot-efi mtools dosfstools fdisk busybox-static \
    squashfs-tools e2fsprogs cpio kmod curl >/dev/null
fi
T_APT=$(ts)

mkdir -p dl out work
KPKG=linux-image-cloud-amd64
# resolve the metapackage to the real image package
KREAL=$(apt-cache depends $KPKG | awk '/Depends: linux-image-/{print $2; exit}')
KV=${KREAL#linux-image-}
if ! ls dl/${KREAL}_*.deb >/dev/null 2>&1; then
  (cd dl && apt-get download "$KREAL" 2>&1 | grep -v unsandboxed || true)
fi
if [ ! -f work/kroot/boot/vmlinuz-$KV ]; then
  rm -rf work/kroot; mkdir -p work/kroot
  dpkg -x dl/${KREAL}_*.deb work/kroot
fi
T_DL=$(ts)

# ---------------------------------------------------------------- initramfs
MODS="virtio_pci virtio_blk virtio_net squashfs vfat nls_cp437 nls_iso8859_1 nls_utf8 nls_ascii efivarfs"
IR=work/initramfs
rm -rf $IR; mkdir -p $IR/{bin,dev,proc,sys,slot,data,esp,tmp,run,etc} $IR/lib/modules/$KV
cp /bin/busybox $IR/bin/busybox
# copy only the needed .ko files (+ their deps), keeping the tree layout, then depmod
depmod -b work/kroot $KV
for m in $MODS; do
  modprobe -d work/kroot -S $KV --show-depends $m | awk '$1=="insmod"{print $2}'
done | sort -u | while read -r ko; do
  rel=${ko#$HERE/work/kroot/lib/modules/$KV/}
  mkdir -p "$IR/lib/modules/$KV/$(dirname "$rel")"
  cp "$ko" "$IR/lib/modules/$KV/$rel"
done
cp work/kroot/lib/modules/$KV/modules.{order,builtin,builtin.modinfo} $IR/lib/modules/$KV/ 2>/dev/null || true
depmod -b $IR $KV
cp initramfs-init.sh $IR/init; chmod 755 $IR/init
(cd $IR && find . | cpio -o -H newc --quiet) | $N gzip -9 > work/initrd.img

# ---------------------------------------------------------------- root slots
mkslot() { # $1=slot letter $2=bad(0/1)
  local s=$1 bad=$2 d=work/slot-$1
  rm -rf $d; mkdir -p $d/bin $d/www $d/etc
  cp /bin/busybox $d/bin/busybox
  echo "ok slot=$s built=$(date -u +%FT%TZ)" > $d/www/health
  echo "$s" > $d/etc/edge-slot
  if [ "$bad" = 1 ]; then
    cat > $d/bin/edge-service <<'EOF'
#!/bin/busybox sh
echo "edge-service: deliberately broken slot, exiting"
exit 1
EOF
  else
    # placeholder for the real gateway binary
    cat > $d/bin/edge-service <<'EOF'
#!/bin/busybox sh
exec /slot/bin/busybox httpd -f -p 8000 -h /slot/www
EOF
  fi
  chmod 755 $d/bin/edge-service
  rm -f work/slot-$s.sqfs
  $N mksquashfs $d work/slot-$s.sqfs -comp xz -noappend -all-root -quiet >/dev/null
}
mkslot a "$BAD_SLOT_A"
mkslot b 0

# ---------------------------------------------------------------- data partition
DATA_MB=64
rm -f work/data.ext4
truncate -s ${DATA_MB}M work/data.ext4
mkfs.ext4 -q -F -L edge-data -E lazy_itable_init=0,lazy_journal_init=0 work/data.ext4

# ---------------------------------------------------------------- ESP
ESP_MB=64
rm -f work/esp.vfat
truncate -s ${ESP_MB}M work/esp.vfat
mkfs.vfat -F 32 -n ESP work/esp.vfat >/dev/null 2>&1 || mkfs.vfat -n ESP work/esp.vfat >/dev/null
export MTOOLS_SKIP_CHECK=1
M="-i work/esp.vfat"
mmd $M ::/EFI ::/EFI/BOOT ::/loader ::/loader/entries ::/edge
mcopy $M /usr/lib/systemd/boot/efi/systemd-bootx64.efi ::/EFI/BOOT/BOOTX64.EFI
mcopy $M work/kroot/boot/vmlinuz-$KV ::/edge/vmlinuz
mcopy $M work/initrd.img ::/edge/initrd.img
cat > work/loader.conf <<'EOF'
# glob, so a slot whose tries are exhausted (sorted last) is skipped automatically
default edge-*
timeout 0
editor no
EOF
mcopy $M work/loader.conf ::/loader/loader.conf
CMDLINE_COMMON="console=ttyS0 panic=5 rw quiet loglevel=4"
mkentry() { # $1=slot $2=version (higher version sorts first among same sort-key)
  local s=$1 v=$2 f=work/edge-$1+$TRIES.conf
  cat > $f <<EOF
title   Edge slot $s
sort-key edge
version $v
linux   /edge/vmlinuz
initrd  /edge/initrd.img
options root=PARTLABEL=edge-$s edge.slot=$s $CMDLINE_COMMON
EOF
  mcopy $M $f ::/loader/entries/edge-$s+$TRIES.conf
}
mkentry a 2
mkentry b 1
mdir $M -/ ::/ >/dev/null

# ---------------------------------------------------------------- GPT image
SLOT_MB=32
IMG=out/disk.img
rm -f $IMG
TOTAL_MB=$((1 + ESP_MB + 2*SLOT_MB + DATA_MB + 1))
truncate -s ${TOTAL_MB}M $IMG
sfdisk -q $IMG <<EOF
label: gpt
unit: sectors
first-lba: 2048
start=2048, size=$((ESP_MB*2048)), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="esp"
size=$((SLOT_MB*2048)), type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name="edge-a"
size=$((SLOT_MB*2048)), type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name="edge-b"
size=$((DATA_MB*2048)), type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="edge-data"
EOF
# write each part at its start sector (from sfdisk -J) with dd conv=notrunc
write_part() { # $1=partnum $2=file
  local start
  start=$(sfdisk -d $IMG | sed -n "s|^$IMG$1 : start= *\([0-9]*\),.*|\1|p")
  dd if="$2" of=$IMG bs=512 seek=$start conv=notrunc,sparse status=none
}
write_part 1 work/esp.vfat
write_part 2 work/slot-a.sqfs
write_part 3 work/slot-b.sqfs
write_part 4 work/data.ext4
T_END=$(ts)

echo "== sizes"
ls -l work/kroot/boot/vmlinuz-$KV work/initrd.img work/slot-a.sqfs work/slot-b.sqfs work/esp.vfat work/data.ext4 $IMG | awk '{printf "%-45s %10d bytes\n",$9,$5}'
echo "initramfs modules: $(find $IR -name '*.ko' | wc -l) files, $(du -sk $IR/lib/modules | cut -f1) KiB"
echo "disk.img allocated: $(du -k $IMG | cut -f1) KiB (sparse)"
sfdisk -d $IMG | sed -n '/start=/p'
echo "== times: apt=$(echo "$T_APT-$T0"|bc)s kernel-dl+extract=$(echo "$T_DL-$T_APT"|bc)s build=$(echo "$T_END-$T_DL"|bc)s"
