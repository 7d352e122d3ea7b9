#!/usr/bin/env bash
# Run a command inside the arm64 root (every arm64 program in it runs through qemu-user-static).
#
#   build/arm64/chroot.sh ROOT_DIR COMMAND [ARG...]
#
# /proc, /dev and the repository (at the same path as on the host, so build paths agree)
# are mounted in a private mount namespace: they vanish when the command ends, even on a
# crash, and the root on disk stays a plain directory tree.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

if [[ ${1:-} != --inside ]]; then
  [[ $# -ge 2 ]] || { echo "usage: $0 ROOT_DIR COMMAND [ARG...]" >&2; exit 2; }
  exec unshare --mount --propagation private -- "$0" --inside "$@"
fi
shift
root=$(cd "$1" && pwd)
shift
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mkdir -p "$root$repo"
mount --bind "$repo" "$root$repo"
cp /etc/resolv.conf "$root/etc/resolv.conf"
# The host's CA bundle: pip in the root must trust what the host trusts (a network whose
# proxy re-signs TLS adds its CA there, and the root's own bundle doesn't have it).
host_ca=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
cp "$host_ca" "$root/etc/ssl/host-ca-certificates.crt"
# A clean environment: nothing from the host's venv or PATH leaks into the arm64 build. The
# signing key's paths pass (build/signing.py): the launcher compiled in here gets its public
# key, and build.sh's pack on the host signs with the same key (the files must be inside the
# repository, the only host folder mounted here; the development key in .cache/ is).
exec chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
  PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  SSL_CERT_FILE=/etc/ssl/host-ca-certificates.crt PIP_CERT=/etc/ssl/host-ca-certificates.crt \
  PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 \
  EDGE_MIN_REPO="$repo" HOST_ZIG="${HOST_ZIG:-}" \
  EDGE_MIN_SIGNING_KEY="${EDGE_MIN_SIGNING_KEY:-}" EDGE_MIN_SIGNING_PUBKEY="${EDGE_MIN_SIGNING_PUBKEY:-}" \
  EDGE_MIN_DOWNLOAD_FROM="${EDGE_MIN_DOWNLOAD_FROM:-}" "$@"
