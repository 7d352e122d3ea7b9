#!/bin/bash
# edge_sync.sh - Manually trigger synchronization
#
#   ./edge_sync.sh TARGET_IP TARGET_USER     # on a device, over ssh
#   ./edge_sync.sh                           # on this machine (the install in EDGE_PREFIX,
#                                            # else the edge-min on PATH)
#
# Runs `edge-min sync --now` with the install's config and data directory (edgectl.sh sync),
# so every entity is pushed and pulled now instead of at its next interval.
# Environment: see edge_common.sh. Exit codes: edge-min's (0 synced).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/edge_common.sh"

TARGET_IP=${1:-}
TARGET_USER=${2:-}
if [ -n "$TARGET_IP" ] && [ -z "$TARGET_USER" ]; then
    echo "Usage: ./edge_sync.sh [target_ip target_user]"
    echo "Example: ./edge_sync.sh 192.168.1.100 admin"
    exit 1
fi

if [ -z "$TARGET_IP" ]; then
    echo "Synchronizing this machine..."
    if [ -x "$EDGE_PREFIX/edgectl.sh" ]; then
        exec "$EDGE_PREFIX/edgectl.sh" sync
    fi
    command -v edge-min >/dev/null || die "no install in $EDGE_PREFIX and no edge-min on PATH"
    exec edge-min sync --now
fi

echo "Synchronizing edge device at $TARGET_IP..."
SUDO="$(edge_sudo "$TARGET_USER")"
edge_ssh "$TARGET_USER" "$TARGET_IP" "cd $(shq "$EDGE_PREFIX") && $SUDO ./edgectl.sh sync"
echo "Synchronization complete!"
