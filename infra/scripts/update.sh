#!/bin/sh
# update.sh - replace this install with a newer package; roll back if it does not come up.
#
#   cd /opt/meta-agent && ./update.sh [/tmp/meta-agent-edge.tar.gz | BUNDLE.emub]
#
# An install without slots (EDGE_SLOTS=0 in install.env, the default):
# 0. a signed bundle (edge-min update bundle) is verified first against the device's
#    pinned update root (edge-min update trust ROOT.json): signatures, versions (not older
#    than the installed one), expiry, architecture, length and hash; only its verified
#    payload goes on, and once the new version is up the bundle is recorded as installed;
# 1. unpacks the new package into $PREFIX/.staging and verifies its SHA256SUMS (a bad
#    package changes nothing);
# 2. stops the runtime, moves the current install into $PREFIX/.previous and the new one
#    into $PREFIX, and runs the new setup.sh (configs an operator changed are kept);
# 3. when the new version does not answer GET /health within EDGE_HEALTH_TIMEOUT seconds
#    (or dies, or its setup fails), moves it to $PREFIX/.failed, puts .previous back and
#    starts the previous version again.
# The data directory is shared by both versions and never touched here: the database
# migrations of edge_min only add, so the previous version still opens it after a rollback.
#
# An install with A/B slots (setup.sh with EDGE_SLOTS=1; docs/updates.md "Over SSH"):
# 0. a signed bundle goes to `edge-min update install BUNDLE --root $PREFIX/update`, which
#    verifies it as above before it writes anything, then writes the inactive slot and puts
#    it on trial; a plain package is checked against its SHA256SUMS (which proves it whole,
#    not who made it) and goes to `update install-payload` without --commit: on trial too;
# 1. the supervisor, which keeps running, stops the old runtime and starts the new slot,
#    counting its tries; the new runtime commits itself after update.commit_after seconds
#    of health; 3 failed tries (exits, failed health, no commit within
#    update.health_timeout) and the supervisor goes back to the old slot by itself;
# 2. `edge-min update wait` reports the verdict: committed, or given up with the reason the
#    supervisor recorded ("3 failed starts; the last: ..."); one not reached within
#    EDGE_HEALTH_TIMEOUT + update.commit_after seconds is given up here. The old version
#    stays in the other slot (`edge-min update rollback --root $PREFIX/update` goes back).
#    The supervisor, the scripts and the edge-min in $PREFIX stay those setup.sh installed.
# Exit codes: 0 updated; 1 not updated (refused, or rolled back: the previous version runs);
# 2 the rollback failed too (nothing runs: look at $PREFIX/.failed, or `edge-min update
# status --root $PREFIX/update`, and the log $DATA_DIR/logs/edge-min.out).
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

is_bundle() {
    # A signed bundle starts with its magic (edge_min.update.bundle), whatever its name.
    [ "$(head -c 7 "$1")" = EMUPDT1 ]
}

check_trust() {
    _trust="$DATA_DIR/update/trust/root.json"
    [ -f "$_trust" ] || die "refusing the bundle: no trusted update root at $_trust; pin \
the signing keys' root first: $PREFIX/edge-min --data-dir $DATA_DIR update trust ROOT.json"
}

unpack_verified() {
    # $1 a package (.tar.gz, or a bundle payload's .tar) into $PREFIX/.staging, checked
    # against its SHA256SUMS; a bad one is removed and nothing else changed. $2 (a bundle's
    # extracted payload) is removed once unpacked.
    rm -rf "$PREFIX/.staging"
    mkdir -p "$PREFIX/.staging"
    _z=z
    [ "$(head -c 2 "$1" | od -An -tx1 | tr -d ' \n')" = 1f8b ] || _z=
    tar "-x${_z}f" "$1" -C "$PREFIX/.staging" || die "cannot unpack $1"
    [ -z "${2:-}" ] || rm -f "$2"
    if ! verify_checksums "$PREFIX/.staging"; then
        rm -rf "$PREFIX/.staging"
        die "refusing to update: $1 fails its SHA256SUMS; nothing was changed"
    fi
}

own_update_root() {
    # Under systemd the supervisor runs as the service user: what root wrote is handed over.
    if [ "$(start_mode)" = systemd ] && id "$SERVICE_USER" >/dev/null 2>&1; then
        chown -R "$SERVICE_USER:$SERVICE_USER" "$UPDATE_ROOT" "$DATA_DIR/update" 2>/dev/null ||
            true
    fi
}

main_slots() {
    # $1 the package or bundle. Install into the inactive slot, on trial; the supervisor
    # tries it; `update wait` says how it ended.
    [ -n "$(active_slot)" ] ||
        die "no committed slot in $UPDATE_ROOT; install with EDGE_SLOTS=1 ./setup.sh first"
    _old_slot=$(active_slot)
    _old=$(slot_version "$_old_slot")
    if is_bundle "$1"; then
        check_trust
        # Verification comes first and refuses before any slot is written.
        if ! _out=$(edge_min_cmd update install "$1" --root "$UPDATE_ROOT" 2>&1); then
            printf '%s\n' "$_out" >&2
            die "refusing to update: $1 failed its verification; nothing was changed"
        fi
        say "verified $1 (signed, newer than $_old, for this machine)"
        say "$_out"
    else
        unpack_verified "$1"
        _new=$(cat "$PREFIX/.staging/VERSION")
        rm -rf "$PREFIX/.staging"
        say "$1 matches its SHA256SUMS (a plain package: not signed; it is tried all the same)"
        _out=$(edge_min_cmd update install-payload "$1" --version "$_new" --kind package \
            --root "$UPDATE_ROOT" 2>&1) || {
            printf '%s\n' "$_out" >&2
            die "installing $_new into a slot failed; the device still runs $_old"
        }
        say "$_out"
    fi
    own_update_root
    _slot=$(other_slot "$_old_slot")
    _new=$(slot_version "$_slot")
    say "updating $_old -> $_new (slot $_slot, on trial; the supervisor starts it)"
    if [ "$(start_mode)" = none ]; then
        say "the supervisor is not started here (EDGE_START=none): $_new is tried at its next start"
        return 0
    fi
    if ! is_running; then
        say "the supervisor was not running; starting it"
        start_runtime
    fi
    # The verdict: the supervisor's (commit, or 3 failed tries), else ours at the timeout.
    _rc=0
    _verdict=$(edge_min_cmd update wait --root "$UPDATE_ROOT" --slot "$_slot" \
        --timeout "$EDGE_HEALTH_TIMEOUT" --give-up 2>&1) || _rc=$?
    own_update_root
    case "$_rc" in
    0)
        say "updated to $_new: $_verdict"
        return 0
        ;;
    1) say "$_new was NOT applied: $_verdict" ;;
    *) EDGE_DIE_CODE=2 die "waiting for the trial of $_new failed: $_verdict" ;;
    esac
    if wait_slot_healthy "$_old_slot"; then
        say "rolled back: $_old runs again (slot $_old_slot); $_new stays in slot $_slot, marked bad"
        return 1
    fi
    EDGE_DIE_CODE=2 die "$_old does not come back either; see \
$DATA_DIR/logs/edge-min.out and $PREFIX/edge-min update status --root $UPDATE_ROOT"
}

other_slot() { if [ "$1" = a ]; then echo b; else echo a; fi; }

wait_slot_healthy() {
    # The supervisor runs slot $1 again (not the runtime it is stopping), and it answers.
    _deadline=$(($(date +%s) + EDGE_HEALTH_TIMEOUT))
    until _running=$(supervised_child) && [ "${_running%% *}" = "$1" ]; do
        is_running || {
            say "the supervisor is not running"
            return 1
        }
        [ "$(date +%s)" -lt "$_deadline" ] || {
            say "the supervisor did not start slot $1 again within ${EDGE_HEALTH_TIMEOUT}s"
            return 1
        }
        sleep 0.5
    done
    wait_healthy
}

main() {
    load_settings "$HERE"
    [ -f "$PREFIX/VERSION" ] || die "nothing is installed in $PREFIX; install with setup.sh"
    _package=${1:-/tmp/meta-agent-edge.tar.gz}
    [ -f "$_package" ] || die "no package at $_package; push one with edge_update.sh"
    if slots_mode; then
        main_slots "$_package"
        return
    fi
    [ -f "$UPDATE_ROOT/update-state.json" ] &&
        die "$PREFIX runs from A/B slots but install.env says EDGE_SLOTS=0; set EDGE_SLOTS=1"
    _old=$(cat "$PREFIX/VERSION")
    _bundle=
    case "$(head -c 7 "$_package")" in
    EMUPDT1)
        _bundle=$_package
        check_trust
        _package="$PREFIX/.bundle-payload.tar"
        rm -f "$_package"
        if ! edge_min_cmd update verify "$_bundle" --installed-version "$_old" \
            --extract "$_package" >&2; then
            rm -f "$_package"
            die "refusing to update: $_bundle failed its verification; nothing was changed"
        fi
        say "verified $_bundle (signed, newer than $_old, for this machine)"
        ;;
    esac

    # A bundle's payload is the package's uncompressed tar; a package file is a .tar.gz.
    _payload=
    [ -z "$_bundle" ] || _payload=$_package
    unpack_verified "$_package" "$_payload"
    _new=$(cat "$PREFIX/.staging/VERSION")
    say "updating $_old -> $_new"

    stop_runtime
    rm -rf "$PREFIX/.previous" "$PREFIX/.failed"
    move_entries "$PREFIX" "$PREFIX/.previous"
    move_entries "$PREFIX/.staging" "$PREFIX"
    rmdir "$PREFIX/.staging"
    if run_setup; then
        if [ -n "$_bundle" ]; then  # up and healthy: older bundles are refused from now on
            edge_min_cmd update verify "$_bundle" --installed-version "$_old" --record \
                >/dev/null || say "warning: could not record $_bundle as installed"
        fi
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
