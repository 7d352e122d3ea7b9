#!/usr/bin/env bash
# Create (once) the pristine Debian 12 (bookworm) amd64 root that `make test-fresh` copies
# for every run: a new machine with only what the README states as its prerequisites.
#
#   build/fresh/make_root.sh [BASE_DIR]      # default .cache/fresh-root/base (about 1-2 min, cached)
#
# minbase plus PACKAGES below, nothing else: python3-venv, PostgreSQL, sshd, Node.js, gcc,
# libzstd-dev, ... are the project's own scripts' job, and that is what the check tests.
# The apt lists are left EMPTY, as in Debian's container and cloud images: `apt-get install`
# without an `apt-get update` first fails there, as it would on such a machine (and a cached
# base may be months old, so stale lists would hide nothing better).
#
# Cached: a finished base carries .edge-min-base-ready with the hash of everything that
# decides its contents (suite, arch, mirrors, packages, this script's recipe version); a
# stamp with another hash makes it again. An interrupted debootstrap leaves BASE_DIR.partial,
# which the next run deletes. One failed debootstrap is retried once from scratch.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
base=${1:-${FRESH_BASE:-$repo/.cache/fresh-root/base}}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security_mirror=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
suite=bookworm
arch=amd64
# The README's prerequisites of a new machine, and only those.
packages=make,python3,ca-certificates,git
# Bump when the recipe below changes in a way the hash would not see.
recipe=1
stamp=$base/.edge-min-base-ready
key=$(printf '%s\n' "$suite" "$arch" "$mirror" "$security_mirror" "$packages" "$recipe" | sha256sum | cut -c1-16)

say() { echo "fresh/make_root: $*" >&2; }

if [[ -f $stamp ]] && [[ $(sed -n 's/^key=//p' "$stamp") == "$key" ]]; then
  say "base cached at $base ($(sed -n 's/^made=//p' "$stamp"))"
  exit 0
fi
[[ -f $stamp ]] && say "package list or recipe changed (key $key): making the base again"

[[ $(id -u) -eq 0 ]] || { say "must run as root (debootstrap, chroot)"; exit 1; }
if ! command -v debootstrap >/dev/null; then
  say "debootstrap not found; installing it (apt-get install debootstrap)"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap; } >&2; then
    say "could not install debootstrap; install it with: apt-get install -y debootstrap"
    exit 1
  fi
fi

partial=$base.partial
# debootstrap's own .deb cache, so a remake after a list change downloads only what changed.
debs=$(dirname "$base")/debootstrap-debs
rm -rf "$partial"
mkdir -p "$(dirname "$base")" "$debs"
started=$(date +%s)
bootstrap() {
  debootstrap --arch="$arch" --variant=minbase --include="$packages" \
    --cache-dir="$debs" "$suite" "$partial" "$mirror"
}
if ! bootstrap; then
  say "debootstrap failed; trying once more from scratch"
  rm -rf "$partial"
  bootstrap
fi

# What Debian's installer writes and debootstrap does not: sources for updates and
# security, /etc/hosts (without it `localhost` goes to DNS), a hostname.
cat >"$partial/etc/apt/sources.list" <<EOF
deb $mirror $suite main
deb $mirror $suite-updates main
deb $security_mirror $suite-security main
EOF
cat >"$partial/etc/hosts" <<'EOF'
127.0.0.1	localhost
127.0.1.1	edge-fresh
::1		localhost ip6-localhost ip6-loopback
ff02::1		ip6-allnodes
ff02::2		ip6-allrouters
EOF
echo edge-fresh >"$partial/etc/hostname"
# Empty apt lists and caches (see the header); debootstrap leaves its own behind.
find "$partial/var/lib/apt/lists" -mindepth 1 -maxdepth 1 ! -name partial ! -name lock -exec rm -rf {} +
rm -f "$partial"/var/cache/apt/*.bin "$partial"/var/cache/apt/archives/*.deb
# debootstrap copies the host's resolv.conf; run.sh puts the current one in at each run.
rm -f "$partial/etc/resolv.conf"

rm -rf "$base"
mv "$partial" "$base"
{
  echo "key=$key"
  echo "made=$(date -u +%FT%TZ) in $(( $(date +%s) - started ))s"
  echo "suite=$suite arch=$arch mirror=$mirror security=$security_mirror"
  echo "packages=$packages"
} >"$stamp"
say "base created at $base in $(( $(date +%s) - started ))s ($(du -sh "$base" | cut -f1))"
