#!/usr/bin/env bash
# The firmware part of `make ci-full`, together with the aarch64 gateway binary's.
#
# The x86_64 image's tests (two QEMU guests at a time, about 15 minutes) run while
# build/arm64/ci.sh builds and tests the aarch64 binary (mostly one emulated Nuitka
# process): the two overlap on 2 cores instead of adding up. Then the aarch64 image is
# built from that binary and booted. When this machine cannot run arm64 programs at all,
# build/arm64/ci.sh says so and skips, and so is the aarch64 image here, with that reason.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
mkdir -p .cache/firmware
# Everything apt installs, first: the two steps below must not race for dpkg's lock.
bash firmware/deps.sh
if ! command -v qemu-aarch64-static >/dev/null || ! command -v debootstrap >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap qemu-user-static binfmt-support
fi
log=.cache/firmware/ci-x86_64.log
make test-firmware-x86_64 > "$log" 2>&1 &
x86=$!
arm_rc=0
bash build/arm64/ci.sh || arm_rc=$?
x86_rc=0
wait $x86 || x86_rc=$?
echo "--- the x86_64 firmware image's tests, run beside the aarch64 build: exit $x86_rc"
cat "$log"
aarch64_rc=0
if [ -x dist/edge-min-linux-aarch64 ]; then
  make test-firmware-aarch64 || aarch64_rc=$?
else
  echo "ci-full: aarch64 firmware image SKIPPED: no dist/edge-min-linux-aarch64 (see the arm64 step above)" >&2
fi
echo "--- exit codes: aarch64 binary $arm_rc, x86_64 firmware $x86_rc, aarch64 firmware $aarch64_rc"
[ $arm_rc -eq 0 ] && [ $x86_rc -eq 0 ] && [ $aarch64_rc -eq 0 ]
