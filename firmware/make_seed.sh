#!/bin/bash
# Make a provisioning seed drive: a small FAT image labelled EDGESEED (docs/firmware.md).
#
#   firmware/make_seed.sh OUT.img FILE...
#
# FILEs are copied to the drive's top folder: seed.json (required: {"format": 1, ...}), any
# of the five config files, and update-root.json. Attach it as a second drive (qemu.sh
# --seed OUT.img) or write it to a USB stick; the device applies it at its next boot.
set -euo pipefail
OUT=${1:?usage: firmware/make_seed.sh OUT.img seed.json [edge-config.yaml ...]}
shift
[ $# -gt 0 ] || { echo "firmware/make_seed.sh: no files given (seed.json at least)" >&2; exit 2; }
have_seed=0
for f in "$@"; do
  [ -f "$f" ] || { echo "firmware/make_seed.sh: no such file: $f" >&2; exit 2; }
  [ "$(basename "$f")" = seed.json ] && have_seed=1
done
[ $have_seed = 1 ] || { echo "firmware/make_seed.sh: seed.json is missing: {\"format\": 1, \"device_id\": \"...\"}" >&2; exit 2; }
rm -f "$OUT"
truncate -s 4M "$OUT"
mkfs.vfat -n EDGESEED "$OUT" >/dev/null
export MTOOLS_SKIP_CHECK=1
mcopy -i "$OUT" "$@" ::/
