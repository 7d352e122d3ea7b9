#!/usr/bin/env bash
# The system packages the README's two commands need, installed once and idempotently.
#
#   scripts/system-deps.sh run     # what `make run` needs: python3 with venv
#   scripts/system-deps.sh test    # what `make test` needs: the above, plus PostgreSQL
#                                  # (central's tests), sshd and curl (the deployment test), Node.js
#                                  # and npm (the Pyodide tests), gcc and libzstd-dev (the
#                                  # launcher tests), Chromium (the fleet page's browser test)
#   scripts/system-deps.sh bench   # what `make bench` adds: Python's headers (bsdiff4 and
#                                  # detools, compared in make bench-update, build C code)
#   scripts/system-deps.sh --list test   # print the Debian package names and stop
#
# Each need is checked by what it provides (a command, a header, a working `python3 -m venv`),
# not by package name, so a machine that has them from elsewhere (Node.js from another repo,
# PostgreSQL built by hand) installs nothing. The first call that installs anything runs
# `apt-get update` once; later calls find everything and take well under a second.
# As root it installs with apt-get; with passwordless sudo through sudo; otherwise it stops
# with one line naming the packages and the command to install them.
set -euo pipefail

say() { echo "system-deps.sh: $*" >&2; }

list_only=0
if [ "${1:-}" = "--list" ]; then
    list_only=1
    shift
fi
need="${1:-test}"
case "$need" in
    run | test | bench) ;;
    *) say "unknown set '$need'; use run, test or bench"; exit 2 ;;
esac

PY="${PYTHON:-python3}"
missing=()
want() { missing+=("$@"); }

# -- what `make run` needs ---------------------------------------------------------------
# Debian splits venv and ensurepip out of python3: without python3-venv, `python3 -m venv`
# makes a venv with no pip in it.
if ! command -v "$PY" >/dev/null 2>&1; then
    want python3 python3-venv
elif ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    say "$PY is Python $("$PY" -c 'import sys; print(sys.version.split()[0])'); edge_min needs" \
        "3.11 or newer: install python3.11 and python3.11-venv, then run make PYTHON=python3.11 $need"
    exit 1
elif ! "$PY" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    want python3-venv
fi

# -- what `make test` adds ---------------------------------------------------------------
have_any() {
    local path
    for path in "$@"; do
        if [ -e "$path" ]; then return 0; fi
    done
    return 1
}

if [ "$need" = test ] || [ "$need" = bench ]; then
    # central's PostgreSQL tests start a throwaway cluster (scripts/postgres.sh)
    if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then want postgresql; fi
    # the deployment test runs a real sshd on 127.0.0.1 and talks to it with ssh and scp
    if ! command -v sshd >/dev/null 2>&1 && ! have_any /usr/sbin/sshd /usr/local/sbin/sshd; then
        want openssh-server
    fi
    if ! command -v ssh >/dev/null 2>&1 || ! command -v scp >/dev/null 2>&1; then
        want openssh-client
    fi
    # manage_edge_device.sh (the operator's script, tested against a real central) uses curl
    if ! command -v curl >/dev/null 2>&1; then want curl; fi
    # the Pyodide tests run the pinned pyodide npm package under Node.js
    if ! command -v node >/dev/null 2>&1; then want nodejs; fi
    if ! command -v npm >/dev/null 2>&1; then want npm; fi
    # the launcher tests compile targets/gateway/launcher.c against libzstd.a
    if ! command -v gcc >/dev/null 2>&1; then want gcc libc6-dev; fi
    if [ ! -f /usr/include/zstd.h ]; then want libzstd-dev; fi
    # the fleet page's test drives Debian's Chromium through Playwright (whose own browser
    # download is not reachable from every machine): tests/integration/test_fleet_page.py
    if ! command -v chromium >/dev/null 2>&1 && [ ! -x /usr/bin/chromium ]; then want chromium; fi
fi

if [ "$need" = bench ]; then
    include=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])' 2>/dev/null || true)
    if [ ! -f "$include/Python.h" ]; then want python3-dev; fi
fi

if [ "$list_only" = 1 ]; then
    echo "${missing[*]}"
    exit 0
fi
if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
    as_root=(sudo -n)
else
    say "missing system packages for 'make $need': install them with:" \
        "sudo apt-get update && sudo apt-get install -y ${missing[*]}  (then run make $need again)"
    exit 1
fi

say "installing ${missing[*]} (Debian packages, for make $need)"
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq >&2
"${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
