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
# One venv per variant: the base one holds build/requirements.txt, the onnx one adds
# build/arm64/requirements-onnx.txt (onnxruntime 1.27: 1.28+ crash on import under qemu).
case " $* " in
  *" onnx "* | *"=onnx "*) venv=/opt/edge-min-build-onnx; extra=$repo/build/arm64/requirements-onnx.txt ;;
  *) venv=/opt/edge-min-build; extra= ;;
esac
reqs=$repo/build/requirements.txt
want=$(cat "$reqs" ${extra:+"$extra"} | sha256sum | cut -d' ' -f1)
if [[ ! -f $venv/.req-sha256 || $(cat "$venv/.req-sha256") != "$want" ]]; then
  started=$(date +%s)
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet -r "$reqs" ${extra:+-r "$extra"}
  echo "$want" >"$venv/.req-sha256"
  echo "arm64 build venv $venv: $(( $(date +%s) - started ))s"
fi
export CC=$repo/build/arm64/zig-aarch64-cc
cd "$repo"
exec "$venv/bin/python" build/arm64/build_arm64.py "$@"
