#!/usr/bin/env bash
# Make the kernel run arm64 ELF files through qemu-aarch64-static (binfmt_misc). Idempotent.
# Needs root; in a container binfmt_misc is often not mounted, so mount it first.
set -euo pipefail
fs=/proc/sys/fs/binfmt_misc
if [[ ! -e $fs/status ]]; then
  mount -t binfmt_misc binfmt_misc "$fs"
fi
if [[ ! -e $fs/qemu-aarch64 ]]; then
  if command -v update-binfmts >/dev/null && [[ -e /usr/share/binfmts/qemu-aarch64 ]]; then
    update-binfmts --enable qemu-aarch64
  else
    # Debian's qemu-user-static registration, with F (the interpreter is opened now, so it
    # also works inside a chroot that has no qemu) and without binfmt-support.
    printf '%s' ':qemu-aarch64:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/usr/bin/qemu-aarch64-static:F' >"$fs/register"
  fi
fi
grep -q '^enabled' "$fs/qemu-aarch64" || { echo "binfmt: qemu-aarch64 is not enabled" >&2; exit 1; }
