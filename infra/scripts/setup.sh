#!/bin/sh
# setup.sh - install meta-agent-edge from this unpacked package, then start it.
#
#   mkdir -p /opt/meta-agent && tar -xzf meta-agent-edge.tar.gz -C /opt/meta-agent
#   cd /opt/meta-agent && ./setup.sh            # as the spec's edge_deploy.sh does
#   PREFIX=/srv/edge DATA_DIR=/srv/edge-data EDGE_START=background ./setup.sh
#   ./setup.sh --no-start                       # install, print how to start
#   ./setup.sh --print-unit                     # the systemd unit as it would be installed
#   EDGE_SLOTS=1 ./setup.sh                     # A/B slots and the supervisor (below)
#
# 1. verifies every file against SHA256SUMS (and refuses to install on a mismatch);
# 2. copies the package into $PREFIX unless it was unpacked there; a from-source package's
#    wheels are unpacked into $PREFIX/lib/python for the interpreter found (>= 3.11);
# 3. installs the default configs into $CONF_DIR, never overwriting one an operator
#    changed (the package's version is written beside it as NAME.yaml.dist), and checks them;
# 4. with systemd (and root): creates the meta-agent user, installs and enables the unit,
#    restarts it; without systemd: starts `edge-min run` in the background (pid in
#    $DATA_DIR/edge-min.pid) or, with EDGE_START=none / --no-start, prints how to start it;
# 5. waits for GET /health to answer.
# With EDGE_SLOTS=1 (A/B slots, docs/updates.md "Over SSH"), step 3 is followed by
# `edge-min update install-payload PACKAGE --commit --root $PREFIX/update`: the package goes
# into slot a, committed (a first install has nothing to fall back to; an install that
# already has slots keeps them), and the service (unit or background) runs
# `edge-min update supervise --root $PREFIX/update` instead of `edge-min run`: the
# supervisor starts the active slot's `edge-min run`, and tries a new version installed by
# update.sh, falling back by itself. $PREFIX keeps the package setup.sh installed (its
# scripts, and the edge-min that runs the supervisor and the update commands); the unit's
# user owns $PREFIX/update. The default is EDGE_SLOTS=0: an install keeps the layout it was
# made with, and update.sh must never take one for the other.
# Settings (PREFIX, CONF_DIR, DATA_DIR, EDGE_START, EDGE_API_PORT, EDGE_SLOTS, ...): see
# device_common.sh; they are saved in $PREFIX/install.env for update.sh and decommission.sh.
# Exit codes: 0 installed (and healthy when started), 1 failed.
set -eu
EDGE_SCRIPT=setup.sh
PKG_DIR=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd -P)
. "$PKG_DIR/device_common.sh"

copy_package() {
    # The files SHA256SUMS names (and SHA256SUMS itself), from the package into $PREFIX.
    mkdir -p "$PREFIX"
    cp -p "$PKG_DIR/SHA256SUMS" "$PREFIX/SHA256SUMS"
    while read -r _sum _file; do
        _file=${_file#\*}
        mkdir -p "$PREFIX/$(dirname -- "$_file")"
        cp -p "$PKG_DIR/$_file" "$PREFIX/$_file"
    done <"$PKG_DIR/SHA256SUMS"
}

find_python() {
    for _py in ${EDGE_MIN_PYTHON:-} python3 python3.13 python3.12 python3.11; do
        have "$_py" || continue
        if "$_py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$_py"
            return 0
        fi
    done
    return 1
}

install_wheels() {
    # A from-source package: the edge_min wheel and its dependencies' wheels, unpacked
    # (a wheel is a zip), so the device needs neither pip nor network.
    _py=$(find_python) || die "this package runs on Python >= 3.11 and none was found \
(tried ${EDGE_MIN_PYTHON:-} python3 python3.13 python3.12 python3.11); install python3 \
(apt-get install python3) or set EDGE_MIN_PYTHON=/path/to/python3.11"
    rm -rf "$PREFIX/lib/python"
    mkdir -p "$PREFIX/lib/python"
    # Only the wheels this package lists: a redeploy over an older install leaves its files.
    _wheels=$(sed -n 's#^[0-9a-f]*  *\**\(lib/wheels/.*\.whl\)$#\1#p' "$PREFIX/SHA256SUMS")
    [ -n "$_wheels" ] || die "a from-source package without lib/wheels/*.whl in SHA256SUMS"
    # One interpreter start unpacks them all and proves the result imports.
    # shellcheck disable=SC2086  # the wheel names hold no spaces
    (cd "$PREFIX" && "$_py" - "$PREFIX/lib/python" $_wheels) <<'EOF' ||
import sys, zipfile
for wheel in sys.argv[2:]:
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(sys.argv[1])
sys.path.insert(0, sys.argv[1])
import cbor2, edge_min.cli, yaml  # fails here, not later in the service
# Bytecode now: under the unit, $PREFIX is read-only (ProtectSystem=strict).
import compileall
compileall.compile_dir(sys.argv[1], quiet=1)
EOF
        die "$_py cannot import edge_min from $PREFIX/lib/python; see the error above"
    echo "$_py" >"$PREFIX/lib/python.path"
    case "$_py" in
    /root/* | /home/*)
        [ "$(start_mode)" = systemd ] &&
            say "warning: $_py is under /root or /home, which the unit hides (ProtectHome=yes)"
        ;;
    esac
    say "from-source install: $_py with $PREFIX/lib/python"
}

install_configs() {
    mkdir -p "$CONF_DIR"
    for _src in "$PREFIX"/config/*; do
        [ -f "$_src" ] || continue
        _dst="$CONF_DIR/$(basename -- "$_src")"
        if [ ! -e "$_dst" ]; then
            cp "$_src" "$_dst"
            say "installed $_dst"
        elif ! cmp -s "$_src" "$_dst"; then
            # The operator's file wins; the new default goes beside it for comparison.
            cp "$_src" "$_dst.dist"
            say "kept $_dst (changed locally); the package's version is $_dst.dist"
        fi
    done
    # An operator's mistake stops the install here, not the service in a restart loop.
    edge_min_cmd config check "$CONF_DIR"/*.yaml >/dev/null ||
        die "the configs in $CONF_DIR do not validate; run: $PREFIX/edge-min config check $CONF_DIR/*.yaml"
}

render_unit() {
    # The unit names the spec's paths; rewrite them for this install.
    sed -e "s#/opt/meta-agent/#$PREFIX/#g" \
        -e "s#--config /etc/meta-agent/#--config $CONF_DIR/#" \
        -e "s#--data-dir /data #--data-dir $DATA_DIR #" \
        -e "s#^ReadWritePaths=/data\$#ReadWritePaths=$DATA_DIR#" \
        "$1/meta-agent-edge.service" |
        if [ "$(build_kind "$1")" = source ]; then
            # The launcher of a from-source package sends no sd_notify READY/WATCHDOG (the
            # gateway shim is in the binary only): a notify unit would time out.
            sed -e 's/^Type=notify$/Type=exec/' -e '/^WatchdogSec=/d'
        else
            cat
        fi |
        if slots_mode; then
            # The service is the supervisor: it starts the right slot's `edge-min run` and
            # writes the install root (the try count, before each start). It sends no
            # sd_notify (its runtime is not the main PID), so no notify and no watchdog.
            sed -e "s#^\(ExecStart=.*\) run\$#\1 update supervise --root $UPDATE_ROOT#" \
                -e "s#^ReadWritePaths=\(.*\)\$#ReadWritePaths=\1 $UPDATE_ROOT#" \
                -e 's/^Type=notify$/Type=exec/' -e '/^WatchdogSec=/d' -e '/^NotifyAccess=/d' \
                -e '/^# READY=1 once/d' -e '/^# The launcher execs/d'
        else
            cat
        fi
}

install_slot() {
    # The package into slot a, committed. Slots already there are kept: update.sh installs
    # new versions (into the other slot, on trial), so a re-run never replaces a version.
    _active=$(active_slot)
    if [ -n "$_active" ]; then
        say "slot $_active of $UPDATE_ROOT holds $(slot_version "$_active") (committed); \
kept it (update.sh installs new versions)"
        return 0
    fi
    _version=$(cat "$PKG_DIR/VERSION")
    _payload="$PREFIX/.slot-payload.tar"
    # The files SHA256SUMS names, as a package tar: the installer checks them again in the slot.
    _files=$(sed -n 's#^[0-9a-f][0-9a-f]*  *\**##p' "$PKG_DIR/SHA256SUMS")
    # shellcheck disable=SC2086  # the package's file names hold no spaces
    (cd "$PKG_DIR" && tar -cf "$_payload" SHA256SUMS $_files) ||
        die "cannot pack $PKG_DIR into $_payload for slot a"
    if ! edge_min_cmd update install-payload "$_payload" --version "$_version" --kind package \
        --commit --root "$UPDATE_ROOT" >/dev/null; then
        rm -f "$_payload"
        die "installing $_version into slot a of $UPDATE_ROOT failed (above)"
    fi
    rm -f "$_payload"
    say "installed $_version into slot a of $UPDATE_ROOT (committed)"
}

install_unit() {
    if ! id "$SERVICE_USER" >/dev/null 2>&1; then
        useradd --system --no-create-home --home-dir "$DATA_DIR" \
            --shell /usr/sbin/nologin "$SERVICE_USER"
        CREATED_USER=1
        say "created the system user $SERVICE_USER"
    fi
    chown -R "$SERVICE_USER:$SERVICE_USER" "$DATA_DIR"
    # The supervisor and its runtime write the state file, locks and (central's rollouts)
    # the slots; the scripts and the edge-min in $PREFIX stay root's.
    slots_mode && chown -R "$SERVICE_USER:$SERVICE_USER" "$UPDATE_ROOT"
    chgrp -R "$SERVICE_USER" "$CONF_DIR"
    chmod -R g+rX,o-rwx "$CONF_DIR"
    render_unit "$PREFIX" >"$SYSTEMD_DIR/$UNIT.service.tmp"
    mv "$SYSTEMD_DIR/$UNIT.service.tmp" "$SYSTEMD_DIR/$UNIT.service"
    say "installed $SYSTEMD_DIR/$UNIT.service"
    if [ "$PREFIX" = /opt/meta-agent ] && [ -d /usr/local/bin ] &&
        [ ! -e /usr/local/bin/edge-min ]; then
        ln -s "$PREFIX/edge-min" /usr/local/bin/edge-min
        LINKED_BIN=/usr/local/bin/edge-min
    fi
}

build_kind() { sed -n 's/^kind=//p' "${1:-$PREFIX}/BUILD_INFO" 2>/dev/null || echo binary; }

save_settings() {
    {
        echo "# written by setup.sh; read by update.sh, decommission.sh, edgectl.sh"
        for _name in $SETTINGS; do
            _value=""
            eval "_value=\${$_name:-}"
            echo "$_name=$(shquote "$_value")"
        done
    } >"$PREFIX/install.env"
}

main() {
    _start=1
    _print_unit=0
    for _arg in "$@"; do
        case "$_arg" in
        --no-start) _start=0 ;;
        --print-unit) _print_unit=1 ;;
        -h | --help)
            sed -n '2,/^set -eu/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
            return 0
            ;;
        *) die "unknown option $_arg (use --no-start, --print-unit or --help)" ;;
        esac
    done
    if [ -z "${PREFIX:-}" ] && [ -f "$PKG_DIR/install.env" ]; then
        load_settings "$PKG_DIR" # re-run inside an install (update.sh, an operator)
    else
        load_settings "${PREFIX:-/opt/meta-agent}"
    fi
    if [ "$_print_unit" = 1 ]; then
        render_unit "$PKG_DIR"
        return 0
    fi
    CREATED_USER=${CREATED_USER:-}
    LINKED_BIN=${LINKED_BIN:-}
    if ! slots_mode && [ -f "$UPDATE_ROOT/update-state.json" ]; then
        die "$PREFIX runs from A/B slots ($UPDATE_ROOT): with EDGE_SLOTS=0 the service would \
start the copy in $PREFIX instead; keep EDGE_SLOTS=1 (install.env), or decommission.sh first"
    fi
    verify_checksums "$PKG_DIR" ||
        die "refusing to install: the package in $PKG_DIR fails its SHA256SUMS; fetch it again"
    say "checksums OK ($(wc -l <"$PKG_DIR/SHA256SUMS") files)"
    # The running version goes first: its files are about to be replaced.
    stop_runtime
    if [ "$PKG_DIR" != "$(mkdir -p "$PREFIX" && CDPATH='' cd -- "$PREFIX" && pwd -P)" ]; then
        copy_package
        say "copied the package into $PREFIX"
    fi
    chmod 0755 "$PREFIX/edge-min" "$PREFIX"/*.sh
    [ "$(build_kind)" = source ] && install_wheels
    mkdir -p "$DATA_DIR"
    chmod 0750 "$DATA_DIR"
    install_configs
    slots_mode && install_slot
    _mode=$(start_mode)
    if [ "$_mode" = systemd ]; then
        [ "$(id -u)" -eq 0 ] || die "installing the systemd unit needs root (or EDGE_START=background)"
        systemd_running || die "EDGE_START=systemd but systemd is not running here"
        install_unit
    fi
    save_settings
    say "installed meta-agent-edge $(cat "$PREFIX/VERSION") ($(build_kind)) in $PREFIX"
    if [ "$_start" -eq 0 ]; then
        EDGE_START=none start_runtime
        return 0
    fi
    [ "$_mode" = background ] && ! systemd_running &&
        say "no systemd here: running edge-min in the background (not restarted at boot)"
    start_runtime
    [ "$_mode" = none ] && return 0
    if wait_healthy; then
        _on=""
        slots_mode && _on=" (slot $(active_slot), $(installed_version), under the supervisor)"
        say "meta-agent-edge is up$_on: $(health_url) answers"
    else
        [ -f "$DATA_DIR/logs/edge-min.out" ] && tail -n 20 "$DATA_DIR/logs/edge-min.out" >&2
        [ "$_mode" = systemd ] && journalctl -u "$UNIT" -n 20 --no-pager >&2 2>/dev/null
        die "meta-agent-edge did not become healthy; see the log above"
    fi
}

main "$@"
