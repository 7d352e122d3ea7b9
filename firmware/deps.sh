#!/bin/bash
# The tools make firmware and make test-firmware use, from Debian's packages (as root).
#
# The image's own pieces (kernel, libc, busybox, systemd-boot) are *downloaded* for each
# architecture by build.sh through a private apt state, never installed here: installing
# systemd-boot-efi would pin (and upgrade) this machine's systemd.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
TOOLS="qemu-system-x86 qemu-system-arm ovmf qemu-efi-aarch64 mtools dosfstools fdisk binutils-aarch64-linux-gnu
       squashfs-tools e2fsprogs cpio kmod curl busybox-static sbsigntool openssl python3"
missing=$(dpkg-query -W -f='${Package} ${Status}\n' $TOOLS 2>/dev/null \
          | awk '$NF != "installed" {print $1}'; for t in $TOOLS; do
            dpkg-query -W "$t" >/dev/null 2>&1 || echo "$t"; done)
missing=$(echo $missing | tr ' ' '\n' | sort -u)
if [ -n "$missing" ]; then
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends $missing >/dev/null
fi
exit 0
