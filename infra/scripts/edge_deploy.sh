#!/bin/bash
# edge_deploy.sh - Deploy to edge device
#
#   ./edge_deploy.sh TARGET_IP TARGET_USER
#   ./edge_deploy.sh 192.168.1.100 admin
#   EDGE_SKIP_BUILD=1 EDGE_PACKAGE=out/meta-agent-edge.tar.gz ./edge_deploy.sh 10.0.0.7 root
#   EDGE_BUILD_ARGS=--from-source EDGE_SSH_PORT=2222 ./edge_deploy.sh gw-42.local admin
#
# As the spec's script: build the package, scp it to the device's /tmp, unpack it into
# /opt/meta-agent, run setup.sh there (which verifies the checksums and enables and starts
# the meta-agent-edge unit, or without systemd starts the runtime in the background), then
# verify that the runtime runs and answers GET /health.
# Environment: see edge_common.sh (EDGE_SSH_PORT, EDGE_SSH_OPTS, EDGE_SUDO, EDGE_PREFIX,
# EDGE_DATA_DIR, EDGE_START, ...). Exit codes: 0 deployed and healthy; 1 failed.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/edge_common.sh"

TARGET_IP=${1:-}
TARGET_USER=${2:-}
if [ -z "$TARGET_IP" ] || [ -z "$TARGET_USER" ]; then
    echo "Usage: ./edge_deploy.sh [target_ip] [target_user]"
    echo "Example: ./edge_deploy.sh 192.168.1.100 admin"
    exit 1
fi

echo "Preparing edge package..."
edge_build_package

echo "Deploying to edge device at $TARGET_IP..."
REMOTE_PACKAGE="$EDGE_REMOTE_TMP/$EDGE_PACKAGE_NAME"
edge_scp "$EDGE_PACKAGE" "$TARGET_USER" "$TARGET_IP" "$REMOTE_PACKAGE"

echo "Installing on edge device..."
SUDO="$(edge_sudo "$TARGET_USER")"
PREFIX_Q="$(shq "$EDGE_PREFIX")"
# setup.sh enables and starts the unit itself when systemd runs (the spec's two systemctl
# calls), and otherwise starts the runtime in the background.
edge_ssh "$TARGET_USER" "$TARGET_IP" sh -s <<EOF
set -e
$SUDO mkdir -p $PREFIX_Q
$SUDO tar -xzf $(shq "$REMOTE_PACKAGE") -C $PREFIX_Q
cd $PREFIX_Q
$SUDO $(edge_remote_env) ./setup.sh
$SUDO rm -f $(shq "$REMOTE_PACKAGE")
EOF

echo "Verifying deployment..."
edge_ssh "$TARGET_USER" "$TARGET_IP" \
    "cd $PREFIX_Q && $SUDO ./edgectl.sh status && $SUDO ./edgectl.sh health --json >/dev/null"
echo "Edge deployment complete!"
