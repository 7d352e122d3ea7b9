#!/bin/bash
# build_edge_package.sh - Build the edge deployment package, meta-agent-edge.tar.gz.
#
#   ./build_edge_package.sh                          # the binary dist/edge-min-linux-$(uname -m)
#   ./build_edge_package.sh --binary dist/edge-min-linux-aarch64 --version 0.1.0
#   ./build_edge_package.sh --from-source            # no binary: a launcher + wheels
#   ./build_edge_package.sh --config-dir fleet/configs --output /tmp/meta-agent-edge.tar.gz
#
# The package, unpacked into /opt/meta-agent, holds:
#   edge-min                  the single-file binary (`make binary`), or with --from-source a
#                             launcher running `python3 -m edge_min.cli` from lib/python
#   lib/wheels/*.whl          (--from-source) edge_min and its dependencies (PyYAML, cbor2, and
#                             pycryptodome: encryption at rest is on by default)
#   meta-agent-edge.service   the systemd unit (targets/gateway/, or --unit FILE)
#   config/*.yaml             default configs (edge_min/defaults/, or --config-dir DIR)
#   setup.sh update.sh decommission.sh edgectl.sh device_common.sh   the device-side scripts
#   README.md VERSION BUILD_INFO SHA256SUMS
#
# Options: --from-source, --binary PATH, --unit FILE, --config-dir DIR, --version V,
# -o/--output FILE (default $EDGE_PACKAGE, else dist/meta-agent-edge.tar.gz).
# Environment: EDGE_PYTHON (the Python that builds the wheels; default .venv/bin/python, else
# python3), EDGE_PIP_DOWNLOAD_ARGS (pip download options for another device platform, e.g.
# "--platform manylinux2014_aarch64 --python-version 3.11 --implementation cp --abi cp311").
# A from-source package's dependency wheels fit the building Python's version and platform
# (pip download: needs the package index); the edge_min wheel is cached in
# .cache/edge-package/ so a rebuild of unchanged sources takes a second, not ten.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
ROOT="$(cd "$SCRIPT_DIR/../.." && pwd -P)"
CACHE="$ROOT/.cache/edge-package"
DEVICE_SCRIPTS=(setup.sh update.sh decommission.sh edgectl.sh device_common.sh)

die() {
    echo "build_edge_package.sh: error: $*" >&2
    exit 1
}
usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

FROM_SOURCE=0
BINARY=""
UNIT="$ROOT/targets/gateway/meta-agent-edge.service"
CONFIG_DIR="$ROOT/edge_min/defaults"
VERSION=""
OUTPUT="${EDGE_PACKAGE:-$ROOT/dist/meta-agent-edge.tar.gz}"
while [ $# -gt 0 ]; do
    case "$1" in
    --from-source) FROM_SOURCE=1 ;;
    --binary) BINARY="${2:?--binary needs a path}" && shift ;;
    --unit) UNIT="${2:?--unit needs a file}" && shift ;;
    --config-dir) CONFIG_DIR="${2:?--config-dir needs a folder}" && shift ;;
    --version) VERSION="${2:?--version needs a value}" && shift ;;
    -o | --output) OUTPUT="${2:?--output needs a path}" && shift ;;
    -h | --help) usage && exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done
[ "$FROM_SOURCE" = 1 ] && [ -n "$BINARY" ] && die "use --from-source or --binary, not both"

if [ -n "${EDGE_PYTHON:-}" ]; then
    PY="$EDGE_PYTHON"
elif [ -x "$ROOT/.venv/bin/python" ]; then
    PY="$ROOT/.venv/bin/python"
else
    PY="python3"
fi

STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE" "$STAGE.sums"' EXIT

# -- the program ------------------------------------------------------------------------------

source_digest() {
    # What the edge_min wheel is built from; a cached wheel is reused while this is unchanged.
    (cd "$ROOT" && find edge_min pyproject.toml -type f ! -path '*__pycache__*' ! -name '*.pyc' |
        LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16)
}

build_wheels() {
    local wheels="$STAGE/lib/wheels" digest cached src
    mkdir -p "$wheels" "$CACHE"
    digest="$(source_digest)"
    cached="$CACHE/edge_min-$digest"
    if ! ls "$cached"/*.whl >/dev/null 2>&1; then
        # Build from a copy: setuptools writes build/ and *.egg-info beside the sources, and
        # build/ is the binary recipe's folder in this repo.
        src="$(mktemp -d)"
        tar -C "$ROOT" -cf - --exclude=__pycache__ --exclude='*.pyc' \
            pyproject.toml README.md edge_min | tar -C "$src" -xf -
        # boot_integrity: sign the copy's program manifest (it ships inside the wheel) with
        # $EDGE_MIN_BUILD_KEY, else the development key under .cache/ (docs/security.md).
        (cd "$src" && PYTHONPATH="$src" "$PY" -m edge_min.cli security manifest --write \
            --key "${EDGE_MIN_BUILD_KEY:-$ROOT/.cache/build-key.ed25519}" >/dev/null) ||
            die "signing the program manifest failed (see above)"
        rm -rf "$cached.tmp" && mkdir -p "$cached.tmp"
        "$PY" -m pip wheel --quiet --no-deps --wheel-dir "$cached.tmp" "$src" ||
            die "pip wheel of the source tree failed (it needs setuptools from the index)"
        rm -rf "$src" "$cached"
        mv "$cached.tmp" "$cached"
    fi
    cp "$cached"/*.whl "$wheels/"
    # The versions installed here are the ones tested here: ship exactly those.
    local pins
    pins="$("$PY" -c 'import importlib.metadata as m
print(" ".join(f"{d}=={m.version(d)}" for d in ("PyYAML", "cbor2", "pycryptodome")))')"
    local extra=()
    [ -n "${EDGE_PIP_DOWNLOAD_ARGS:-}" ] && eval "extra=($EDGE_PIP_DOWNLOAD_ARGS)"
    # shellcheck disable=SC2086  # pins is a list of requirement words
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: --dest "$wheels" \
        "${extra[@]}" $pins || die "pip download of $pins failed (offline? see above)"
}

write_launcher() {
    cat >"$STAGE/edge-min" <<'EOF'
#!/bin/sh
# edge-min launcher of a from-source meta-agent-edge package: runs edge_min from lib/python
# with the interpreter setup.sh chose (lib/python.path), else $EDGE_MIN_PYTHON or python3.
here=$(CDPATH='' cd -- "$(dirname -- "$(readlink -f -- "$0")")" && pwd -P)
py=${EDGE_MIN_PYTHON:-}
[ -z "$py" ] && [ -r "$here/lib/python.path" ] && py=$(cat "$here/lib/python.path")
PYTHONPATH="$here/lib/python${PYTHONPATH:+:$PYTHONPATH}" exec "${py:-python3}" -m edge_min.cli "$@"
EOF
    chmod 0755 "$STAGE/edge-min"
}

if [ "$FROM_SOURCE" = 1 ]; then
    KIND=source
    build_wheels
    write_launcher
    [ -n "$VERSION" ] || VERSION="$(PYTHONPATH="$ROOT" "$PY" -c 'import edge_min; print(edge_min.__version__)')"
    PLATFORM="$("$PY" -c 'import sys, sysconfig; print(f"cp{sys.version_info[0]}{sys.version_info[1]}-{sysconfig.get_platform()}")')"
else
    KIND=binary
    BINARY="${BINARY:-$ROOT/dist/edge-min-linux-$(uname -m)}"
    [ -f "$BINARY" ] || die "no binary at $BINARY; build it with \`make binary\`, \
or package the source tree with --from-source"
    cp "$BINARY" "$STAGE/edge-min"
    chmod 0755 "$STAGE/edge-min"
    if [ -z "$VERSION" ]; then
        VERSION="$("$BINARY" version 2>/dev/null | awk '{print $2}')" ||
            die "cannot run $BINARY to ask its version (another architecture?); pass --version"
        [ -n "$VERSION" ] || die "$BINARY version printed nothing; pass --version"
    fi
    PLATFORM="$(file -b "$BINARY" 2>/dev/null | cut -d, -f2 | sed 's/^ *//' || true)"
    PLATFORM="${PLATFORM:-${BINARY##*edge-min-}}"
fi

# -- unit, configs, scripts -------------------------------------------------------------------

[ -f "$UNIT" ] || die "no systemd unit at $UNIT (the gateway target's \
targets/gateway/meta-agent-edge.service); pass --unit FILE"
cp "$UNIT" "$STAGE/meta-agent-edge.service"

mkdir -p "$STAGE/config"
shopt -s nullglob
configs=("$CONFIG_DIR"/*.yaml "$CONFIG_DIR"/*.yml "$CONFIG_DIR"/*.json)
[ ${#configs[@]} -gt 0 ] || die "no config files (*.yaml) in $CONFIG_DIR"
cp "${configs[@]}" "$STAGE/config/"
[ -f "$STAGE/config/edge-config.yaml" ] || die "$CONFIG_DIR has no edge-config.yaml"
# A bad config fails the build here, not the service on the device.
if [ "$KIND" = source ] || "$STAGE/edge-min" version >/dev/null 2>&1; then
    if [ "$KIND" = source ]; then
        check=(env PYTHONPATH="$ROOT" "$PY" -m edge_min.cli config check)
    else
        check=("$STAGE/edge-min" config check)
    fi
    "${check[@]}" "$STAGE"/config/* >/dev/null || {
        "${check[@]}" "$STAGE"/config/* >&2 || true
        die "the configs in $CONFIG_DIR do not validate (above)"
    }
fi

for script in "${DEVICE_SCRIPTS[@]}"; do
    cp "$SCRIPT_DIR/$script" "$STAGE/$script"
    chmod 0755 "$STAGE/$script"
done
if [ -f "$ROOT/docs/deployment.md" ]; then
    cp "$ROOT/docs/deployment.md" "$STAGE/README.md"
fi

echo "$VERSION" >"$STAGE/VERSION"
COMMIT="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    COMMIT="$COMMIT-dirty"
fi
cat >"$STAGE/BUILD_INFO" <<EOF
kind=$KIND
version=$VERSION
platform=$PLATFORM
commit=$COMMIT
built_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)
EOF

# -- checksums and the archive ---------------------------------------------------------------

(cd "$STAGE" && find . -type f | sed 's#^\./##' | LC_ALL=C sort | xargs sha256sum) \
    >"$STAGE.sums"
mv "$STAGE.sums" "$STAGE/SHA256SUMS"
chmod 0755 "$STAGE" # tar restores it on the PREFIX it is unpacked into
mkdir -p "$(dirname "$OUTPUT")"
tar -C "$STAGE" --sort=name --owner=0 --group=0 --numeric-owner -czf "$OUTPUT.tmp" .
mv "$OUTPUT.tmp" "$OUTPUT"
echo "built $OUTPUT: meta-agent-edge $VERSION ($KIND, $PLATFORM), \
$(du -h "$OUTPUT" | cut -f1), sha256 $(sha256sum "$OUTPUT" | cut -c1-16)…"
