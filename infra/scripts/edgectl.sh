#!/bin/sh
# edgectl.sh - control an installed meta-agent-edge, with or without systemd.
#
#   cd /opt/meta-agent && ./edgectl.sh status     # running? version, pid or unit state
#   ./edgectl.sh health [--json]                  # GET /health of the running runtime
#   ./edgectl.sh start | stop | restart
#   ./edgectl.sh sync                             # edge-min sync --now
#   ./edgectl.sh slots [--json]                   # A/B slots: edge-min update status
#   ./edgectl.sh enroll --central URL --token T --ca-sha256 PIN
#                                                 # stop, edge-min enroll, start again
#
# Uses systemctl when the install runs under systemd (see install.env), else the background
# runtime whose pid is in $DATA_DIR/edge-min.pid. With slots (EDGE_SLOTS=1) that is the
# supervisor: stop stops it and the runtime it runs; status and version name the active
# slot's version. The remote half of edge_monitor.sh, edge_sync.sh and manage_edge_device.sh
# restart.
# Exit codes: 0 ok; 1 unhealthy or the command failed; 3 not running.
set -eu
EDGE_SCRIPT=edgectl.sh
HERE=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd -P)
. "$HERE/device_common.sh"

status() {
    _mode=$(start_mode)
    _version=$(installed_version)
    _slot=""
    if slots_mode; then
        _child=$(supervised_child) || _child="- none"
        _slot=", slot ${_child%% *} (runtime pid ${_child#* }) under the supervisor"
    fi
    if is_running; then
        if [ "$_mode" = systemd ]; then
            say "meta-agent-edge $_version: active (systemd unit $UNIT$_slot)"
            # The spec's verification step: `systemctl status meta-agent-edge`.
            systemctl status --no-pager --lines=5 "$UNIT" || true
        else
            say "meta-agent-edge $_version: running (pid $(background_pid), background$_slot)"
        fi
        return 0
    fi
    say "meta-agent-edge $_version: not running ($_mode)"
    return 3
}

health() {
    is_running || {
        say "meta-agent-edge is not running; start it with: $PREFIX/edgectl.sh start"
        return 3
    }
    _url=$(health_url)
    if [ "${1:-}" = --json ]; then
        http_get "$_url" || {
            say "GET $_url failed (unhealthy answers 503)"
            return 1
        }
        echo
        return 0
    fi
    # `edge-min health` prints the checks one per line; it needs to read the data directory.
    if [ -w "$DATA_DIR" ]; then
        edge_min_cmd health
        return
    fi
    http_get "$_url" && echo
}

sync_now() {
    is_running || say "note: the runtime is not running; syncing from this process"
    # `edge-min sync --now` arrives with the sync CLI; say so plainly until then.
    if ! edge_min_cmd sync --help >/dev/null 2>&1; then
        say "this edge-min ($(cat "$PREFIX/VERSION")) has no \`sync\` command yet; update it"
        return 1
    fi
    edge_min_cmd sync --now "$@"
}

main() {
    load_settings "$HERE"
    _action=${1:-}
    [ $# -gt 0 ] && shift
    case "$_action" in
    status) status ;;
    health) health "$@" ;;
    start)
        start_runtime
        wait_healthy
        ;;
    stop)
        stop_runtime
        say "stopped"
        ;;
    restart)
        stop_runtime
        start_runtime
        wait_healthy
        say "restarted: $(health_url) answers"
        ;;
    sync) sync_now "$@" ;;
    enroll)
        # Enrollment changes who the device is: never under a running runtime.
        stop_runtime
        edge_min_cmd enroll "$@"
        start_runtime
        wait_healthy
        say "enrolled; the runtime syncs with its new certificate"
        ;;
    version) installed_version ;;
    slots)
        slots_mode || {
            say "this install has no A/B slots (EDGE_SLOTS=0); its version: $(installed_version)"
            return 1
        }
        edge_min_cmd update status --root "$UPDATE_ROOT" "$@"
        ;;
    *)
        echo "usage: $0 status|health [--json]|start|stop|restart|sync|enroll ARGS|version|slots [--json]" >&2
        return 2
        ;;
    esac
}

main "$@"
