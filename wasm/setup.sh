#!/bin/sh
# Prepare the offline Pyodide harness: the pinned pyodide npm package and the pure-Python
# wheels of edge_min's dependencies. Idempotent and fast when already done, so `make test`
# can call it every time:
#   - `npm ci` runs only when node_modules lacks pyodide or package-lock.json changed;
#   - pip downloads only what wasm/.cache/dist lacks, and every file is checked against
#     its pinned sha256, so a cache hit is as trustworthy as a fresh download.
# Nothing is fetched when the harness runs: run_python.mjs reads only these local files.
# Env: PYTHON (a python with pip; default: the repo's .venv, else python3).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
cache="$here/.cache"
dist="$cache/dist"
wheels="$cache/wheels"

# Pins. cbor2 5.x is the last line with a pure-Python wheel; PyYAML ships no pure wheel,
# so its sdist is repackaged (lib/yaml runs without libyaml). Same version as Pyodide's own.
CBOR2_FILE=cbor2-5.9.0-py3-none-any.whl
CBOR2_SHA256=27695cbd70c90b8de5c4a284642c2836449b14e2c2e07e3ffe0744cb7669a01b
PYYAML_VERSION=6.0.3
PYYAML_FILE=pyyaml-$PYYAML_VERSION.tar.gz
PYYAML_SHA256=d76623373421df22fb4cf8817020cbb7ef15c725b9d5e45f17e189bfc384190f
PYYAML_WHEEL=pyyaml-$PYYAML_VERSION-py3-none-any.whl

say() { echo "wasm/setup.sh: $*"; }
die() { echo "wasm/setup.sh: error: $*" >&2; exit 1; }

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# Verify a cached download; a corrupt or tampered file is deleted so the next run refetches.
check_sha256() {
    actual=$(sha256_of "$1")
    if [ "$actual" != "$2" ]; then
        rm -f "$1"
        die "$1: sha256 is $actual, pinned $2; deleted it, run wasm/setup.sh again"
    fi
}

command -v node >/dev/null 2>&1 || die "node not found on PATH; install Node.js >= 18 (Debian 12: apt-get install nodejs npm)"
command -v npm >/dev/null 2>&1 || die "npm not found on PATH; install npm (Debian: apt-get install npm)"

# --- the pyodide npm package -------------------------------------------------------------
stamp="$here/node_modules/.edge-min-lock.sha256"
lock_sum=$(sha256_of "$here/package-lock.json")
if [ -f "$here/node_modules/pyodide/package.json" ] && [ -f "$stamp" ] \
    && [ "$(cat "$stamp")" = "$lock_sum" ]; then
    say "node_modules up to date"
else
    say "npm ci (pyodide from package-lock.json)"
    (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$lock_sum" >"$stamp"
fi

# --- pure-Python wheels ------------------------------------------------------------------
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$repo/.venv/bin/python" ]; then PYTHON="$repo/.venv/bin/python"; else PYTHON=python3; fi
fi
mkdir -p "$dist" "$wheels"

if [ ! -f "$dist/$CBOR2_FILE" ]; then
    say "downloading $CBOR2_FILE"
    "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps \
        --only-binary=:all: --platform any --implementation py --abi none \
        --python-version 3.14 --dest "$dist" "cbor2==5.9.0"
fi
check_sha256 "$dist/$CBOR2_FILE" "$CBOR2_SHA256"

if [ ! -f "$dist/$PYYAML_FILE" ]; then
    say "downloading $PYYAML_FILE"
    # --no-binary for pyyaml only: pip prepares the sdist's metadata in a build env, and
    # --no-binary=:all: would compile that env's Cython from source (minutes, not seconds).
    "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps \
        --no-binary=pyyaml --dest "$dist" "pyyaml==$PYYAML_VERSION"
fi
check_sha256 "$dist/$PYYAML_FILE" "$PYYAML_SHA256"

# Compare, not just test for presence: the loaded copy must be the verified download.
cmp -s "$dist/$CBOR2_FILE" "$wheels/$CBOR2_FILE" || cp "$dist/$CBOR2_FILE" "$wheels/$CBOR2_FILE"
if [ ! -f "$wheels/$PYYAML_WHEEL" ] || [ "$here/make_pure_wheel.py" -nt "$wheels/$PYYAML_WHEEL" ]; then
    say "building $PYYAML_WHEEL from the sdist"
    "$PYTHON" "$here/make_pure_wheel.py" "$dist/$PYYAML_FILE" "$wheels" >/dev/null
fi

# run_python.mjs loads every wheel in this folder: drop any left over from older pins.
for wheel in "$wheels"/*.whl; do
    case "$(basename "$wheel")" in
        "$CBOR2_FILE" | "$PYYAML_WHEEL") ;;
        *) say "removing stale $(basename "$wheel")"; rm -f "$wheel" ;;
    esac
done

version=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$here/node_modules/pyodide/package.json" | head -n 1)
say "ready: pyodide $version, wheels in ${wheels#"$repo"/}: $(cd "$wheels" && echo *.whl)"
