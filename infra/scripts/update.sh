#!/bin/sh
# update.sh - replace this install with a newer package; roll back if it does not come up.
#
#   cd /opt/meta-agent && ./update.sh [/tmp/meta-agent-edge.tar.gz]
#
# 1. unpacks the new package into $PREFIX/.staging and verifies its SHA256SUMS (a bad
#    package changes nothing);
# 2. stops the runtime, moves the current install into $PREFIX/.previous and the new one
#    into $PREFIX, and runs the new setup.sh (configs an operator changed are kept);
# 3. when the new version does not answer GET /health within EDGE_HEALTH_TIMEOUT seconds
#    (or dies, or its setup fails), moves it to $PREFIX/.failed, puts .previous back and
#    starts the previous version again.
# The data directory is shared by both versions and never touched here: the database
# migrations of edge_min only add, so the previous version still opens it after a rollback.
# Exit codes: 0 updated; 1 not updated (refused, or rolled back: the previous version runs);
# 2 the rollback failed too (nothing runs: look at $PREFIX/.failed and the log).
set -eu
EDGE_SCRIPT=update.sh
HERE=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd -P)
. "$HERE/device_common.sh"

move_entries() {
    # $1 from, $2 to: every entry of the install (in $PREFIX: all but its state).
    mkdir -p "$2"
    for _path in "$1"/* "$1"/.[!.]*; do
        [ -e "$_path" ] || [ -L "$_path" ] || continue
        _entry=$(basename -- "$_path")
        if [ "$1" = "$PREFIX" ]; then
            case "$_entry" in install.env | .previous | .staging | .failed) continue ;; esac
        fi
        mv "$_path" "$2/$_entry"
    done
}

run_setup() {
    # Settings go through the environment so both versions' setup.sh agree on them.
    env PREFIX="$PREFIX" CONF_DIR="$CONF_DIR" DATA_DIR="$DATA_DIR" SYSTEMD_DIR="$SYSTEMD_DIR" \
        EDGE_START="$EDGE_START" EDGE_API_PORT="$EDGE_API_PORT" \
        EDGE_HEALTH_TIMEOUT="$EDGE_HEALTH_TIMEOUT" "$PREFIX/setup.sh"
}

main() {
    load_settings "$HERE"
    [ -f "$PREFIX/VERSION" ] || die "nothing is installed in $PREFIX; install with setup.sh"
    _package=${1:-/tmp/meta-agent-edge.tar.gz}
    [ -f "$_package" ] || die "no package at $_package; push one with edge_update.sh"
    _old=$(cat "$PREFIX/VERSION")

    rm -rf "$PREFIX/.staging"
    mkdir -p "$PREFIX/.staging"
    tar -xzf "$_package" -C "$PREFIX/.staging" || die "cannot unpack $_package"
    if ! verify_checksums "$PREFIX/.staging"; then
        rm -rf "$PREFIX/.staging"
        die "refusing to update: $_package fails its SHA256SUMS; nothing was changed"
    fi
    _new=$(cat "$PREFIX/.staging/VERSION")
    say "updating $_old -> $_new"

    stop_runtime
    rm -rf "$PREFIX/.previous" "$PREFIX/.failed"
    move_entries "$PREFIX" "$PREFIX/.previous"
    move_entries "$PREFIX/.staging" "$PREFIX"
    rmdir "$PREFIX/.staging"
    if run_setup; then
        say "updated to $_new (the previous version $_old is kept in $PREFIX/.previous)"
        return 0
    fi

    say "$_new failed to start; rolling back to $_old"
    stop_runtime
    move_entries "$PREFIX" "$PREFIX/.failed"
    move_entries "$PREFIX/.previous" "$PREFIX"
    rmdir "$PREFIX/.previous"
    if run_setup; then
        say "rolled back: $_old runs again; the failed $_new is in $PREFIX/.failed"
        return 1
    fi
    EDGE_DIE_CODE=2 die "the rollback to $_old failed too; see $DATA_DIR/logs/edge-min.out"
}

main "$@"
