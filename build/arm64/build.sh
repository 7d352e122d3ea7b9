#!/usr/bin/env bash
# make binary-arm64: build dist/edge-min-linux-aarch64 on this x86_64 host, end to end.
#
#   build/arm64/build.sh [--variant base]
#
# Phases (each timed; the times also go to .cache/arm64-build-times.log):
#   tools  apt-get install debootstrap qemu-user-static binfmt-support (if missing)
#   root   Debian bookworm arm64 root in .cache/arm64-root (ARM64_ROOT), made once (~6 min)
#   zig    .cache/zig-venv with the pinned ziglang (host x86_64 zig)
#   build  inside the root: the build venv (once), then build/build_binary.py with CC=zig
#   pack   on the host: the standalone folder and the launcher into dist/ (build/onefile.py)
# Needs root (mount, chroot, binfmt_misc). No Docker.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
root=${ARM64_ROOT:-$repo/.cache/arm64-root}
zig_venv=$repo/.cache/zig-venv
log=$repo/.cache/arm64-build-times.log
mkdir -p "$repo/.cache"

phase_start=0
begin() { phase=$1; phase_start=$(date +%s); echo "== arm64 $phase" >&2; }
end() {
  local took=$(( $(date +%s) - phase_start ))
  echo "== arm64 $phase: ${took}s" >&2
  echo "$(date -u +%FT%TZ) $phase ${took}s" >>"$log"
}

begin tools
if ! command -v debootstrap >/dev/null || ! command -v qemu-aarch64-static >/dev/null \
   || ! command -v update-binfmts >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap qemu-user-static binfmt-support
fi
end

begin root
"$here/make_root.sh" "$root"
end

begin zig
stamp=$zig_venv/.installed-stamp
if [[ ! -f $stamp || $here/requirements-host.txt -nt $stamp ]]; then
  rm -rf "$zig_venv"
  python3 -m venv "$zig_venv"
  "$zig_venv/bin/pip" install --quiet -r "$here/requirements-host.txt"
  touch "$stamp"
fi
host_zig=$("$zig_venv/bin/python" -c 'import ziglang, os; print(os.path.join(os.path.dirname(ziglang.__file__), "zig"))')
"$host_zig" version >/dev/null
end

begin build
HOST_ZIG=$host_zig "$here/chroot.sh" "$root" /bin/bash "$repo/build/arm64/in_root.sh" --no-pack "$@"
end

# The payload is packed here, natively: zstd level 19 over ~70 MB (~200 MB for -onnx) would
# take many minutes under emulation.
begin pack
variant=base
case " $* " in *" onnx "* | *"=onnx "*) variant=onnx ;; esac
# build_binary.py --pack also signs the program manifest the binary's boot_integrity check
# reads (dist/<name>.manifest.json), as the x86_64 build does after its own pack.
"$zig_venv/bin/python" "$repo/build/build_binary.py" --pack "$repo/build/out/aarch64/$variant/pack.json"
end
