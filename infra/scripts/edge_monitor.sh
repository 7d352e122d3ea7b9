#!/bin/bash
# edge_monitor.sh - Check edge device health
#
#   ./edge_monitor.sh TARGET_IP TARGET_USER [--json]    # a device, over ssh
#   ./edge_monitor.sh [--json]                          # the install on this machine
#
# Prints whether meta-agent-edge runs (systemd unit or background runtime) and its health:
# each check of `edge-min health` (or, with --json, the GET /health document).
# Environment: see edge_common.sh. Exit codes: 0 healthy (or degraded); 1 unhealthy or no
# answer; 3 not running; 255 ssh failed.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/edge_common.sh"

JSON=""
args=()
for arg in "$@"; do
    case "$arg" in
    --json) JSON="--json" ;;
    *) args+=("$arg") ;;
    esac
done
TARGET_IP=${args[0]:-}
TARGET_USER=${args[1]:-}
if [ -n "$TARGET_IP" ] && [ -z "$TARGET_USER" ]; then
    echo "Usage: ./edge_monitor.sh [target_ip target_user] [--json]"
    echo "Example: ./edge_monitor.sh 192.168.1.100 admin"
    exit 1
fi

if [ -z "$TARGET_IP" ]; then
    [ -x "$EDGE_PREFIX/edgectl.sh" ] || die "no install in $EDGE_PREFIX (set EDGE_PREFIX)"
    if [ -z "$JSON" ]; then "$EDGE_PREFIX/edgectl.sh" status; fi
    exec "$EDGE_PREFIX/edgectl.sh" health ${JSON:+"$JSON"}
fi

SUDO="$(edge_sudo "$TARGET_USER")"
if [ -z "$JSON" ]; then
    edge_ssh "$TARGET_USER" "$TARGET_IP" \
        "cd $(shq "$EDGE_PREFIX") && $SUDO ./edgectl.sh status && $SUDO ./edgectl.sh health"
else
    edge_ssh "$TARGET_USER" "$TARGET_IP" "cd $(shq "$EDGE_PREFIX") && $SUDO ./edgectl.sh health --json"
fi
