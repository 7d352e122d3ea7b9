#!/bin/bash
# Build an edge_min firmware disk image from Debian's packages and the gateway binary.
#
#   firmware/build.sh image  ARCH BINARY OUT.img        the whole disk (GPT: esp, edge-a,
#                                                        edge-b, edge-data)
#   firmware/build.sh rootfs ARCH BINARY OUT.rootfs      one slot's squashfs only: the payload
#                                                        of an update bundle (docs/firmware.md)
#
# ARCH is x86_64 or aarch64. Options (environment):
#   VERSION=0.1.0        the slot's /etc/edge-min-release version (default: edge_min's)
#   BROKEN_RUNTIME=1     rootfs only: a slot whose runtime exits at start (the A/B tests)
#   FIRMWARE_CACHE=DIR   downloads and work files (default .cache/firmware)
#
# Nothing is mounted and no loop device is used: partitions are files (mkfs.ext4 -d fills the
# data partition, mtools the ESP, mksquashfs the slots) written into the GPT at their start
# sectors with dd. Packages come from apt-get download and dpkg -x: nothing is installed on
# this machine but the tools (firmware/deps.sh), and the image's kernel, libc, busybox and
# systemd-boot are Debian 12's for ARCH.
set -euo pipefail
export LC_ALL=C
WHAT=$1 ARCH=$2 BIN=$3 OUT=$4
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
CACHE=${FIRMWARE_CACHE:-$REPO/.cache/firmware}
VERSION=${VERSION:-$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$REPO/edge_min/__init__.py")}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$REPO" log -1 --format=%ct 2>/dev/null || echo 0)}

case $ARCH in
  x86_64)  DEB=amd64 EFI=systemd-bootx64.efi BOOTEFI=BOOTX64.EFI CONSOLE=ttyS0 \
           LDSO=lib64/ld-linux-x86-64.so.2 TRIPLET=x86_64-linux-gnu STUB=linuxx64.efi.stub \
           OBJCOPY=objcopy OBJDUMP=objdump ESP_MB=64 VARS_TEMPLATE=/usr/share/OVMF/OVMF_VARS_4M.fd
           MODULES="virtio_pci virtio_blk virtio_net squashfs vfat nls_cp437 nls_ascii nls_iso8859_1 efivarfs" ;;
  aarch64) DEB=arm64 EFI=systemd-bootaa64.efi BOOTEFI=BOOTAA64.EFI CONSOLE=ttyAMA0 \
           LDSO=lib/ld-linux-aarch64.so.1 TRIPLET=aarch64-linux-gnu STUB=linuxaa64.efi.stub \
           OBJCOPY=aarch64-linux-gnu-objcopy OBJDUMP=aarch64-linux-gnu-objdump ESP_MB=128 \
           VARS_TEMPLATE=/usr/share/AAVMF/AAVMF_VARS.ms.fd
           MODULES="virtio_pci virtio_mmio virtio_blk virtio_net squashfs vfat nls_cp437 nls_ascii nls_iso8859_1 efivarfs" ;;
  *) echo "firmware/build.sh: ARCH must be x86_64 or aarch64, not '$ARCH'" >&2; exit 2 ;;
esac
[ -f "$BIN" ] || { echo "firmware/build.sh: no binary at $BIN: make binary (or binary-arm64) first" >&2; exit 2; }
case $(head -c 20 "$BIN" | od -An -tx1 | tr -d ' \n') in
  7f454c46*) ;;
  *) echo "firmware/build.sh: $BIN is not an ELF program" >&2; exit 2 ;;
esac

DL=$CACHE/dl/$DEB
WORK=$CACHE/work-$ARCH-$WHAT-$$
mkdir -p "$DL" "$(dirname "$OUT")"
rm -rf "$WORK"; mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT
log() { echo "firmware/build.sh: $*" >&2; }

# ------------------------------------------------------------------ Debian packages
# A private apt state per architecture (its own lists, cache and sources; no dpkg status, no
# `dpkg --add-architecture`): the image's packages are downloaded for ARCH and unpacked with
# dpkg -x, and this machine's apt and dpkg are left as they were. The sources are the
# host's own Debian 12 mirrors.
APTDIR=$CACHE/apt-$DEB
mkdir -p "$APTDIR/lists/partial" "$APTDIR/cache/archives/partial" "$APTDIR/etc"
for suite in "bookworm main" "bookworm-updates main"; do
  echo "deb [arch=$DEB signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ${DEBIAN_MIRROR:-http://deb.debian.org/debian} $suite"
done > "$APTDIR/etc/sources.list"
echo "deb [arch=$DEB signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ${DEBIAN_SECURITY:-http://deb.debian.org/debian-security} bookworm-security main" \
  >> "$APTDIR/etc/sources.list"
APT=(-o "Dir::State::Lists=$APTDIR/lists" -o "Dir::Cache=$APTDIR/cache"
     -o "Dir::Etc::SourceList=$APTDIR/etc/sources.list" -o Dir::Etc::SourceParts=/nonexistent
     -o Dir::State::status=/dev/null -o "APT::Architecture=$DEB" -o "APT::Architectures=$DEB")
if [ "${REFRESH_APT:-0}" = 1 ] || ! ls "$APTDIR/lists/"*_Packages* >/dev/null 2>&1; then
  apt-get -q "${APT[@]}" update >/dev/null \
    || { log "apt-get update of the $DEB package lists failed (a Debian mirror must be reachable)"; exit 1; }
fi
# A package for ARCH, downloaded once into the cache and unpacked into $WORK/pkg/NAME.
fetch() {
  local name=$1 deb
  deb=$(ls "$DL/${name}_"*"_$DEB.deb" "$DL/${name}_"*"_all.deb" 2>/dev/null | head -1 || true)
  if [ -z "$deb" ]; then
    (cd "$DL" && apt-get -q "${APT[@]}" download "$name" >/dev/null 2>&1) \
      || { log "apt-get download $name ($DEB) failed; REFRESH_APT=1 re-reads the lists"; exit 1; }
    deb=$(ls "$DL/${name}_"*".deb" | head -1)
  fi
  rm -rf "$WORK/pkg/$name"; mkdir -p "$WORK/pkg/$name"
  dpkg -x "$deb" "$WORK/pkg/$name"
  echo "$WORK/pkg/$name"
}
kernel_package() {  # the cloud flavour's real image package (the metapackage only depends)
  apt-cache "${APT[@]}" depends "linux-image-cloud-$DEB" 2>/dev/null \
    | awk '/Depends: linux-image-/{print $2; exit}' | sed 's/:.*//'
}

BUSYBOX=$(fetch busybox-static)/bin/busybox
LIBC=$(fetch libc6)
LIBGCC=$(fetch libgcc-s1)
ZLIB=$(fetch zlib1g)

# ------------------------------------------------------------------ the slot's root
make_rootfs() {  # $1 = output squashfs
  local R=$WORK/rootfs
  rm -rf "$R"
  mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,run,tmp,data,efi,lib,lib64}
  install -m 0755 "$BIN" "$R/usr/bin/edge-min"
  # the build's signed program manifest, beside the program: tamper detection's
  # boot_integrity check verifies the running binary against it
  [ -f "$BIN.manifest.json" ] && install -m 0644 "$BIN.manifest.json" "$R/usr/bin/edge-min.manifest.json"
  if [ "${BROKEN_RUNTIME:-0}" = 1 ]; then  # the firmware boot runs; its runtime cannot
    mv "$R/usr/bin/edge-min" "$R/usr/bin/edge-min.real"
    cat > "$R/usr/bin/edge-min" <<'EOS'
#!/bin/sh
# A deliberately broken version: `run` exits at once, everything else is the real program.
for a in "$@"; do [ "$a" = run ] && { echo "edge-min: this version cannot start" >&2; exit 3; }; done
exec /usr/bin/edge-min.real "$@"
EOS
    chmod 0755 "$R/usr/bin/edge-min"
  fi
  install -m 0755 "$BUSYBOX" "$R/bin/busybox"
  # busybox's applets as links (the list is the same for both architectures' 1.35)
  for applet in $(/bin/busybox --list 2>/dev/null || busybox --list); do
    [ -e "$R/bin/$applet" ] || ln -s busybox "$R/bin/$applet"
  done
  # glibc, libgcc_s (pthread_cancel loads it) and zlib (the binary's zlib module links it);
  # the binary bundles everything else (`ldd` over its unpacked files: tests/firmware)
  cp -a "$LIBC/lib/$TRIPLET" "$R/lib/"
  cp -a "$LIBGCC/lib/$TRIPLET/"libgcc_s.so* "$ZLIB/lib/$TRIPLET/"libz.so* "$R/lib/$TRIPLET/"
  rm -rf "$R/lib/$TRIPLET/gconv" "$R/lib/$TRIPLET/audit"
  mkdir -p "$R/$(dirname "$LDSO")"
  [ -e "$R/$LDSO" ] || ln -sf "/lib/$TRIPLET/$(basename "$LDSO")" "$R/$LDSO"
  install -m 0755 "$HERE/rootfs-init.sh" "$R/sbin/init"
  install -m 0755 "$HERE/udhcpc.script" "$R/etc/udhcpc.script"
  printf 'root:x:0:0:root:/run/home:/bin/sh\n' > "$R/etc/passwd"
  printf 'root:x:0:\n' > "$R/etc/group"
  printf '127.0.0.1 localhost edge-min\n::1 localhost\n' > "$R/etc/hosts"
  ln -s /run/resolv.conf "$R/etc/resolv.conf"
  printf 'VERSION=%s\nARCH=%s\nBUILT=%s\n' "$VERSION" "$ARCH" "$SOURCE_DATE_EPOCH" \
    > "$R/etc/edge-min-release"
  [ "${BROKEN_RUNTIME:-0}" = 1 ] && echo "BROKEN_RUNTIME=1" >> "$R/etc/edge-min-release"
  # -nopad: the image is exactly its superblock's bytes_used (what the device reads back)
  # SOURCE_DATE_EPOCH (exported above) sets every timestamp: the same inputs, the same image
  mksquashfs "$R" "$1" -comp xz -noappend -all-root -nopad -quiet >/dev/null
}

if [ "$WHAT" = rootfs ]; then
  make_rootfs "$OUT"
  log "wrote $OUT ($(stat -c %s "$OUT") bytes, version $VERSION)"
  exit 0
fi
[ "$WHAT" = image ] || { log "WHAT must be image or rootfs, not '$WHAT'"; exit 2; }

# ------------------------------------------------------------------ kernel and initramfs
KPKG=$(kernel_package)
[ -n "$KPKG" ] || { log "no linux-image-cloud-$DEB in apt's lists: run firmware/deps.sh"; exit 1; }
KROOT=$(fetch "$KPKG")
KV=${KPKG#linux-image-}
VMLINUZ=$KROOT/boot/vmlinuz-$KV
SDBOOT_PKG=$(fetch systemd-boot-efi)
SDBOOT=$SDBOOT_PKG/usr/lib/systemd/boot/efi/$EFI

IR=$WORK/initramfs
mkdir -p "$IR"/{bin,dev,proc,sys,newroot,seed,etc} "$IR/lib/modules/$KV"
install -m 0755 "$BUSYBOX" "$IR/bin/busybox"
depmod -b "$KROOT" "$KV"
for m in $MODULES; do
  modprobe -d "$KROOT" -S "$KV" --show-depends "$m" 2>/dev/null | awk '$1=="insmod"{print $2}'
done | sort -u | while read -r ko; do
  rel=${ko#"$KROOT"/lib/modules/"$KV"/}
  mkdir -p "$IR/lib/modules/$KV/$(dirname "$rel")"
  cp "$ko" "$IR/lib/modules/$KV/$rel"
done
cp "$KROOT/lib/modules/$KV/"modules.{order,builtin,builtin.modinfo} "$IR/lib/modules/$KV/" 2>/dev/null || true
depmod -b "$IR" "$KV"
echo "$MODULES" | tr ' ' '\n' > "$IR/etc/modules"
install -m 0755 "$HERE/initramfs-init.sh" "$IR/init"
find "$IR" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
(cd "$IR" && find . | sort | cpio -o -H newc --quiet --reproducible) | gzip -9 -n > "$WORK/initrd.img"

make_rootfs "$WORK/rootfs.img"

# ------------------------------------------------------------------ Secure Boot, UKIs
# One unified kernel image per slot (systemd's stub + the kernel + the initramfs + that
# slot's command line, signed as one file), and systemd-boot signed, with our db key
# (firmware/secureboot.sh; FIRMWARE_SB_KEYS names a product line's own keys). Under Secure
# Boot the firmware refuses an unsigned or altered loader or UKI, and the stub ignores any
# command line but its own, so the initramfs and the command line are covered too. The
# same files boot without Secure Boot. The enrolled variable store is written beside the
# image (.secboot-vars.fd): firmware/qemu.sh --secure-boot boots with it.
SB_KEYS=${FIRMWARE_SB_KEYS:-$CACHE/secureboot-keys}
bash "$HERE/secureboot.sh" keys "$SB_KEYS"
section_end() {  # the first free address after a PE file's sections, aligned to 1 MiB
  local idx name size vma rest end max=0
  while read -r idx name size vma rest; do
    [[ $idx =~ ^[0-9]+$ ]] || continue
    end=$((0x$vma + 0x$size)); [ $end -gt $max ] && max=$end
  done < <("$OBJDUMP" -h "$1")
  echo $(( (max + 1048575) / 1048576 * 1048576 ))
}
uki() {  # $1 = slot, $2 = output
  local osrel=$WORK/osrel-$1 cmdline=$WORK/cmdline-$1 stub=$SDBOOT_PKG/usr/lib/systemd/boot/efi/$STUB
  printf 'ID=edge-min\nNAME=edge_min\nVERSION_ID=%s\nPRETTY_NAME="edge_min %s (slot %s)"\n' \
    "$VERSION" "$VERSION" "$1" > "$osrel"
  printf '%s' "root=PARTLABEL=edge-$1 edge.slot=$1 console=$CONSOLE panic=5 loglevel=4" > "$cmdline"
  local base linux initrd
  base=$(section_end "$stub")
  linux=$((base + 0x200000))
  initrd=$(( (linux + $(stat -c %s "$VMLINUZ") + 0x1fffff) / 0x100000 * 0x100000 ))
  "$OBJCOPY" \
    --add-section .osrel="$osrel" --change-section-vma .osrel=$(printf 0x%x "$base") \
    --add-section .cmdline="$cmdline" --change-section-vma .cmdline=$(printf 0x%x $((base + 0x100000))) \
    --add-section .linux="$VMLINUZ" --change-section-vma .linux=$(printf 0x%x "$linux") \
    --add-section .initrd="$WORK/initrd.img" --change-section-vma .initrd=$(printf 0x%x "$initrd") \
    "$stub" "$WORK/uki-$1.unsigned"
  bash "$HERE/secureboot.sh" sign "$SB_KEYS" "$WORK/uki-$1.unsigned" "$2"
}
uki a "$WORK/slot-a.efi"
uki b "$WORK/slot-b.efi"
bash "$HERE/secureboot.sh" sign "$SB_KEYS" "$SDBOOT" "$WORK/$BOOTEFI"
bash "$HERE/secureboot.sh" vars "$SB_KEYS" "$VARS_TEMPLATE" "${OUT%.img}.secboot-vars.fd"

# ------------------------------------------------------------------ ESP
SLOT_MB=64 DATA_MB=${DATA_MB:-192}
truncate -s ${ESP_MB}M "$WORK/esp.vfat"
mkfs.vfat -F 32 -n ESP "$WORK/esp.vfat" >/dev/null
export MTOOLS_SKIP_CHECK=1
M="-i $WORK/esp.vfat"
mmd $M ::/EFI ::/EFI/BOOT ::/EFI/edge ::/loader ::/loader/entries
mcopy $M "$WORK/$BOOTEFI" "::/EFI/BOOT/$BOOTEFI"
mcopy $M "$WORK/slot-a.efi" "$WORK/slot-b.efi" ::/EFI/edge/
printf '# a glob: an entry id keeps its boot counter, and a used-up one sorts last\ndefault edge-*\ntimeout 0\neditor no\n' \
  > "$WORK/loader.conf"
mcopy $M "$WORK/loader.conf" ::/loader/loader.conf
for slot in a b; do  # the factory image: the same version in both slots, a first, blessed
  version=1; [ $slot = a ] && version=2
  cat > "$WORK/edge-$slot.conf" <<EOF
title    edge_min $VERSION (slot $slot)
sort-key edge
version  $version
efi      /EFI/edge/slot-$slot.efi
EOF
  mcopy $M "$WORK/edge-$slot.conf" "::/loader/entries/edge-$slot.conf"
done

# ------------------------------------------------------------------ data partition
mkdir -p "$WORK/data"/{logs,config,edge}
truncate -s ${DATA_MB}M "$WORK/data.ext4"
mkfs.ext4 -q -F -L edge-data -E lazy_itable_init=0,lazy_journal_init=0 -d "$WORK/data" \
  "$WORK/data.ext4"

# ------------------------------------------------------------------ the GPT disk
rm -f "$OUT"
truncate -s $((1 + ESP_MB + 2 * SLOT_MB + DATA_MB + 1))M "$OUT"
sfdisk -q "$OUT" <<EOF
label: gpt
unit: sectors
first-lba: 2048
start=2048, size=$((ESP_MB * 2048)), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="esp"
size=$((SLOT_MB * 2048)), type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name="edge-a"
size=$((SLOT_MB * 2048)), type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name="edge-b"
size=$((DATA_MB * 2048)), type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="edge-data"
EOF
part() {  # $1 = partition number, $2 = its content
  local start
  start=$(sfdisk -d "$OUT" | sed -n "s|^$OUT$1 : start= *\([0-9]*\),.*|\1|p")
  dd if="$2" of="$OUT" bs=512 seek="$start" conv=notrunc,sparse status=none
}
part 1 "$WORK/esp.vfat"
part 2 "$WORK/rootfs.img"
part 3 "$WORK/rootfs.img"
part 4 "$WORK/data.ext4"
cp "$WORK/rootfs.img" "${OUT%.img}.rootfs"

# what was built, for docs/benchmarks.md and the tests
python3 - "$OUT" "$ARCH" "$VERSION" "$KV" "$BIN" "$WORK" "$VMLINUZ" <<'EOF'
import json, os, sys
out, arch, version, kv, binary, work, vmlinuz = sys.argv[1:]
size = lambda p: os.stat(p).st_size
doc = {"arch": arch, "version": version, "kernel": kv,
       "image_bytes": size(out), "image_allocated": os.stat(out).st_blocks * 512,
       "rootfs_bytes": size(os.path.join(work, "rootfs.img")), "binary_bytes": size(binary),
       "vmlinuz_bytes": size(vmlinuz), "initrd_bytes": size(os.path.join(work, "initrd.img"))}
json.dump(doc, open(out[:-4] + ".json", "w"), indent=1, sort_keys=True)
print(json.dumps(doc))
EOF
log "wrote $OUT"
