#!/bin/sh
# edgectl.sh - control an installed meta-agent-edge, with or without systemd.
#
#   cd /opt/meta-agent && ./edgectl.sh status     # running? version, pid or unit state
#   ./edgectl.sh health [--json]                  # GET /health of the running runtime
#   ./edgectl.sh start | stop | restart
#   ./edgectl.sh sync                             # edge-min sync --now
#
# Uses systemctl when the install runs under systemd (see install.env), else the background
# runtime whose pid is in $DATA_DIR/edge-min.pid. The remote half of edge_monitor.sh,
# edge_sync.sh and manage_edge_device.sh restart.
# Exit codes: 0 ok; 1 unhealthy or the command failed; 3 not running.
set -eu
EDGE_SCRIPT=edgectl.sh
HERE=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd -P)
. "$HERE/device_common.sh"

status() {
    _mode=$(start_mode)
    _version=$(cat "$PREFIX/VERSION" 2>/dev/null || echo unknown)
    if is_running; then
        if [ "$_mode" = systemd ]; then
            say "meta-agent-edge $_version: active (systemd unit $UNIT)"
            # The spec's verification step: `systemctl status meta-agent-edge`.
            systemctl status --no-pager --lines=5 "$UNIT" || true
        else
            say "meta-agent-edge $_version: running (pid $(background_pid), background)"
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
    version) cat "$PREFIX/VERSION" ;;
    *)
        echo "usage: $0 status|health [--json]|start|stop|restart|sync|version" >&2
        return 2
        ;;
    esac
}

main "$@"
