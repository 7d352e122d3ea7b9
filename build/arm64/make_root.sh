#!/usr/bin/env bash
# Create (once) the Debian bookworm arm64 root that builds the aarch64 binary, run through
# qemu-user-static on this x86_64 host: no Docker, no arm64 machine.
#
#   build/arm64/make_root.sh [ROOT_DIR]      # default .cache/arm64-root (about 6 min, cached)
#
# The root is cached: a finished one carries .edge-min-root-ready and is reused as is. An
# interrupted debootstrap leaves ROOT_DIR.partial, which the next run deletes and redoes.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
root=${1:-${ARM64_ROOT:-$repo/.cache/arm64-root}}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
stamp=$root/.edge-min-root-ready
# What the in-root build needs: CPython 3.11 with headers for Nuitka, gcc/libc6-dev because
# Nuitka checks for a C compiler and links against arm64 libpython (the compiling itself is
# done by zig, natively, see zig-aarch64-cc), patchelf for the standalone rpaths, zlib1g-dev for
# the launcher's libzstd.a, ca-certificates for pip.
packages=python3,python3-venv,python3-dev,python3-pip,gcc,libc6-dev,patchelf,make,libzstd-dev,ca-certificates

"$here/binfmt.sh"

if [[ -f $stamp ]]; then
  # A root cached before a package joined the list gets it now (apt, emulated).
  if [[ ! -f $root/usr/include/zstd.h ]]; then
    "$here/chroot.sh" "$root" /bin/sh -c \
      'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libzstd-dev'
  fi
  echo "arm64 root: cached at $root"
  exit 0
fi
for tool in debootstrap qemu-aarch64-static; do
  command -v "$tool" >/dev/null || { echo "make_root: $tool not found; apt-get install debootstrap qemu-user-static binfmt-support" >&2; exit 1; }
done

partial=$root.partial
rm -rf "$partial"
mkdir -p "$(dirname "$root")"
started=$(date +%s)
# minbase: only essential packages plus the list, the smallest root that builds (~600 MB).
# A second try after a failure: one dropped download from the mirror shouldn't fail CI.
if ! debootstrap --arch=arm64 --variant=minbase --include="$packages" bookworm "$partial" "$mirror"; then
  echo "make_root: debootstrap failed; trying once more from scratch" >&2
  rm -rf "$partial"
  debootstrap --arch=arm64 --variant=minbase --include="$packages" bookworm "$partial" "$mirror"
fi
# The static emulator inside the root too, so it also works where binfmt lacks the F flag.
cp /usr/bin/qemu-aarch64-static "$partial/usr/bin/"
cp /etc/resolv.conf "$partial/etc/resolv.conf"
rm -rf "$root"
mv "$partial" "$root"
echo "bookworm arm64 $(date -u +%FT%TZ) $(( $(date +%s) - started ))s" >"$stamp"
echo "arm64 root: created at $root in $(( $(date +%s) - started ))s"
