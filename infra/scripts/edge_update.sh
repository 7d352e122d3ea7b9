#!/bin/bash
# edge_update.sh - Update edge deployment
#
#   ./edge_update.sh TARGET_IP TARGET_USER
#   EDGE_SKIP_BUILD=1 EDGE_PACKAGE=meta-agent-edge-0.2.0.tar.gz ./edge_update.sh 10.0.0.7 admin
#   EDGE_SKIP_BUILD=1 EDGE_PACKAGE=edge-min-0.2.0.emub ./edge_update.sh 10.0.0.7 admin
#
# EDGE_PACKAGE may be a signed bundle (edge-min update bundle): the device verifies it
# against its pinned update root (edge-min update trust ROOT.json) before anything changes,
# and refuses one that is altered, signed by other keys, expired, older than the installed
# version or for another machine. A plain package is checked against its SHA256SUMS only,
# which proves it arrived whole, not who made it.
#
# Builds the package (unless EDGE_SKIP_BUILD=1), copies it to the device's /tmp and runs the
# installed update.sh with it: the new version replaces the old one, and when it does not
# answer GET /health within EDGE_HEALTH_TIMEOUT seconds (default 60) the previous version is
# put back and started again. On a device installed with A/B slots (EDGE_SLOTS=1 at
# edge_deploy.sh) update.sh writes the new version into the inactive slot instead, on trial,
# and reports the supervisor's verdict: committed after update.commit_after seconds of
# health, or given up after 3 failed tries (with the reason), the old slot running again;
# a verdict not reached within EDGE_HEALTH_TIMEOUT + update.commit_after gives the trial up.
# Environment: see edge_common.sh. Exit codes (update.sh's): 0 updated; 1 not updated (the
# package was refused, or the new version failed and the previous one runs again); 2 the
# rollback failed too.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/edge_common.sh"

TARGET_IP=${1:-}
TARGET_USER=${2:-}
if [ -z "$TARGET_IP" ] || [ -z "$TARGET_USER" ]; then
    echo "Usage: ./edge_update.sh [target_ip] [target_user]"
    echo "Example: ./edge_update.sh 192.168.1.100 admin"
    exit 1
fi

echo "Preparing edge package..."
edge_build_package

echo "Sending the update to $TARGET_IP..."
REMOTE_PACKAGE="$EDGE_REMOTE_TMP/$EDGE_PACKAGE_NAME"
edge_scp "$EDGE_PACKAGE" "$TARGET_USER" "$TARGET_IP" "$REMOTE_PACKAGE"

echo "Updating..."
SUDO="$(edge_sudo "$TARGET_USER")"
status=0
# Only the health timeout travels: the device keeps its own settings in install.env.
remote_env="env"
[ -n "${EDGE_HEALTH_TIMEOUT:-}" ] && remote_env+=" EDGE_HEALTH_TIMEOUT=$(shq "$EDGE_HEALTH_TIMEOUT")"
edge_ssh "$TARGET_USER" "$TARGET_IP" \
    "cd $(shq "$EDGE_PREFIX") && $SUDO $remote_env ./update.sh $(shq "$REMOTE_PACKAGE"); \
rc=\$?; $SUDO rm -f $(shq "$REMOTE_PACKAGE"); exit \$rc" || status=$?
case $status in
0) echo "Edge update complete!" ;;
1) echo "Edge update NOT applied: the previous version runs (see above)" >&2 ;;
255) echo "Edge update FAILED: ssh to $TARGET_USER@$TARGET_IP failed (see above)" >&2 ;;
*) echo "Edge update FAILED and the rollback failed too: the device needs attention" >&2 ;;
esac
exit "$status"
