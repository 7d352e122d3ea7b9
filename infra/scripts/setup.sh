#!/bin/sh
# setup.sh - install meta-agent-edge from this unpacked package, then start it.
#
#   mkdir -p /opt/meta-agent && tar -xzf meta-agent-edge.tar.gz -C /opt/meta-agent
#   cd /opt/meta-agent && ./setup.sh            # as the spec's edge_deploy.sh does
#   PREFIX=/srv/edge DATA_DIR=/srv/edge-data EDGE_START=background ./setup.sh
#   ./setup.sh --no-start                       # install, print how to start
#   ./setup.sh --print-unit                     # the systemd unit as it would be installed
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
# Settings (PREFIX, CONF_DIR, DATA_DIR, EDGE_START, EDGE_API_PORT, ...): see device_common.sh;
# they are saved in $PREFIX/install.env for update.sh and decommission.sh.
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
        fi
}

install_unit() {
    if ! id "$SERVICE_USER" >/dev/null 2>&1; then
        useradd --system --no-create-home --home-dir "$DATA_DIR" \
            --shell /usr/sbin/nologin "$SERVICE_USER"
        CREATED_USER=1
        say "created the system user $SERVICE_USER"
    fi
    chown -R "$SERVICE_USER:$SERVICE_USER" "$DATA_DIR"
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
        for _name in PREFIX CONF_DIR DATA_DIR SYSTEMD_DIR EDGE_START EDGE_API_PORT \
            EDGE_HEALTH_TIMEOUT EDGE_MIN_PYTHON CREATED_USER LINKED_BIN; do
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
        say "meta-agent-edge is up: $(health_url) answers"
    else
        [ -f "$DATA_DIR/logs/edge-min.out" ] && tail -n 20 "$DATA_DIR/logs/edge-min.out" >&2
        [ "$_mode" = systemd ] && journalctl -u "$UNIT" -n 20 --no-pager >&2 2>/dev/null
        die "meta-agent-edge did not become healthy; see the log above"
    fi
}

main "$@"
