#!/usr/bin/env bash
# Inside the arm64 root (build/arm64/chroot.sh): make the build venv, then build the binary.
#
#   in_root.sh [--variant base]     # arguments go to build/build_binary.py
#
# The venv (/opt/edge-min-build) holds build/requirements.txt, arm64 wheels from PyPI; it is
# kept with the root and remade only when that file changes. Everything in here but zig
# runs emulated, pip included.
set -euo pipefail
repo=${EDGE_MIN_REPO:?run through build/arm64/chroot.sh}
# Only the base variant for now: the onnx one needs onnxruntime (1.20-1.27: 1.28+ crash on
# import under this qemu) and numpy in a venv of its own, not made here yet.
case " $* " in
  *" onnx "* | *"=onnx "*) echo "in_root.sh: the aarch64 onnx variant is not set up yet" >&2; exit 2 ;;
esac
venv=/opt/edge-min-build
reqs=$repo/build/requirements.txt
want=$(sha256sum "$reqs" | cut -d' ' -f1)
if [[ ! -f $venv/.req-sha256 || $(cat "$venv/.req-sha256") != "$want" ]]; then
  started=$(date +%s)
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet -r "$reqs"
  echo "$want" >"$venv/.req-sha256"
  echo "arm64 build venv: $(( $(date +%s) - started ))s"
fi
export CC=$repo/build/arm64/zig-aarch64-cc
cd "$repo"
exec "$venv/bin/python" build/arm64/build_arm64.py "$@"
