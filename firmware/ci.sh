#!/usr/bin/env bash
# The firmware part of `make ci-full`: build both images and run tests/firmware under QEMU.
#
# The aarch64 image needs dist/edge-min-linux-aarch64, which build/arm64/ci.sh (run just
# before) builds when this machine can run arm64 programs at all; when it could not, the
# aarch64 image is skipped with that reason and the x86_64 one is still built and tested.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
if [ -x "$repo/dist/edge-min-linux-aarch64" ]; then
  exec make -C "$repo" test-firmware
fi
echo "ci-full: aarch64 firmware image SKIPPED: no dist/edge-min-linux-aarch64 (see the arm64 step above)" >&2
exec make -C "$repo" test-firmware-x86_64
