#!/usr/bin/env bash
# The aarch64 part of `make ci-full`: build dist/edge-min-linux-aarch64 and test it under
# qemu, if this machine can run arm64 programs at all. In a fresh clone 16 minutes here
# (the arm64 root 3.5, the build 12, the tests under qemu 0.2; build/arm64/README.md).
#
# Skipped, with the reason, only when the kernel can't be made to run arm64 programs
# (binfmt_misc can't be mounted or written, as in some containers): that is the machine,
# not the code. A build or test that fails is a failure.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
if ! command -v qemu-aarch64-static >/dev/null || ! command -v debootstrap >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap qemu-user-static binfmt-support
fi
if ! why=$("$here/binfmt.sh" 2>&1); then
  echo "ci-full: aarch64 build SKIPPED: this kernel won't run arm64 programs through qemu ($why)" >&2
  exit 0
fi
exec make -C "$repo" test-binary-arm64
