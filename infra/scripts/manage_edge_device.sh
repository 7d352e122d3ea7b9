#!/bin/bash
# manage_edge_device.sh - Manage edge device lifecycle
#
#   ./manage_edge_device.sh ACTION DEVICE_ID
#   ./manage_edge_device.sh provision gw-42
#   CENTRAL_URL=http://127.0.0.1:8765 ./manage_edge_device.sh update gw-42
#   DEVICE_IP=10.0.0.7 DEVICE_USER=admin ./manage_edge_device.sh provision gw-43
#
# Actions, as the spec's script: the device's address comes from the central's registry
# (GET $CENTRAL_URL/api/devices/ID: ip_address, ssh_user), then
#   provision     edge_deploy.sh to it, then POST /api/devices/ID/provision
#   update        edge_update.sh to it (update.sh, with rollback), then POST .../update
#   restart       edgectl.sh restart on it (systemctl restart meta-agent-edge under
#                 systemd), then POST .../restart
#   decommission  decommission.sh on it, then DELETE /api/devices/ID
# The central is told only after the device-side step succeeded.
# Environment:
#   CENTRAL_URL          the central platform (default https://central.meta-agent.example.com)
#   CENTRAL_TOKEN        a bearer token for the central's API, if it asks for one
#   CENTRAL_CURL_OPTS    more curl options, shell-quoted (e.g. "--cacert ca.crt")
#   DEVICE_IP, DEVICE_USER  the device's address when the central does not know it yet
#                        (first provisioning); sent to the central with the provision call
#   and those of edge_common.sh (EDGE_SSH_PORT, EDGE_SSH_OPTS, EDGE_PREFIX, ...).
# jq reads the central's answers when installed, else python3.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/edge_common.sh"

ACTION=${1:-}
DEVICE_ID=${2:-}
if [ -z "$ACTION" ] || [ -z "$DEVICE_ID" ]; then
    echo "Usage: ./manage_edge_device.sh [action] [device_id]"
    echo "Actions: provision, update, restart, decommission"
    exit 1
fi
case "$ACTION" in
provision | update | restart | decommission) ;;
*)
    echo "Unknown action: $ACTION"
    exit 1
    ;;
esac

command -v curl >/dev/null 2>&1 ||
    die "curl is not installed; it carries every call to central (Debian: apt-get install curl)"

CENTRAL_URL="${CENTRAL_URL:-https://central.meta-agent.example.com}"
CENTRAL_URL="${CENTRAL_URL%/}"
DEVICE_URL="$CENTRAL_URL/api/devices/$DEVICE_ID"

# central METHOD URL [JSON]: the answer's body; fails (with the central's error) on non-2xx.
central() {
    local method=$1 url=$2 body=${3:-} opts=() out status
    [ -n "${CENTRAL_CURL_OPTS:-}" ] && eval "opts=($CENTRAL_CURL_OPTS)"
    [ -n "${CENTRAL_TOKEN:-}" ] && opts+=(-H "Authorization: Bearer $CENTRAL_TOKEN")
    [ -n "$body" ] && opts+=(-H "Content-Type: application/json" --data "$body")
    out="$(curl -sS --max-time 30 -X "$method" -w '\n%{http_code}' "${opts[@]}" "$url")" ||
        die "$method $url failed (is CENTRAL_URL=$CENTRAL_URL right?)"
    status="${out##*$'\n'}"
    out="${out%$'\n'*}"
    if [ "${status:0:1}" != 2 ]; then
        die "$method $url answered $status: $out"
    fi
    printf '%s\n' "$out"
}

# A JSON string, quoted.
json_str() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"; }

if [ "$ACTION" = provision ] && [ -n "${DEVICE_IP:-}" ] && [ -n "${DEVICE_USER:-}" ]; then
    : # first provisioning: the operator names the address
else
    DEVICE_INFO="$(central GET "$DEVICE_URL")"
    DEVICE_IP="${DEVICE_IP:-$(echo "$DEVICE_INFO" | json_field ip_address)}"
    DEVICE_USER="${DEVICE_USER:-$(echo "$DEVICE_INFO" | json_field ssh_user)}"
    if [ -z "$DEVICE_IP" ] || [ -z "$DEVICE_USER" ]; then
        die "the central has no ip_address/ssh_user for $DEVICE_ID; set DEVICE_IP and DEVICE_USER"
    fi
fi
SUDO="$(edge_sudo "$DEVICE_USER")"
PREFIX_Q="$(shq "$EDGE_PREFIX")"

case $ACTION in
provision)
    echo "Provisioning device $DEVICE_ID..."
    "$EDGE_SCRIPTS_DIR/edge_deploy.sh" "$DEVICE_IP" "$DEVICE_USER"
    central POST "$DEVICE_URL/provision" \
        "{\"ip_address\": $(json_str "$DEVICE_IP"), \"ssh_user\": $(json_str "$DEVICE_USER"), \
\"details\": {\"version\": $(json_str "$(edge_ssh "$DEVICE_USER" "$DEVICE_IP" "cat $PREFIX_Q/VERSION")")}}" >/dev/null
    ;;
update)
    echo "Updating device $DEVICE_ID..."
    "$EDGE_SCRIPTS_DIR/edge_update.sh" "$DEVICE_IP" "$DEVICE_USER"
    central POST "$DEVICE_URL/update" \
        "{\"version\": $(json_str "$(edge_ssh "$DEVICE_USER" "$DEVICE_IP" "cat $PREFIX_Q/VERSION")")}" >/dev/null
    ;;
restart)
    echo "Restarting device $DEVICE_ID..."
    edge_ssh "$DEVICE_USER" "$DEVICE_IP" "cd $PREFIX_Q && $SUDO ./edgectl.sh restart"
    central POST "$DEVICE_URL/restart" >/dev/null
    ;;
decommission)
    echo "Decommissioning device $DEVICE_ID..."
    edge_ssh "$DEVICE_USER" "$DEVICE_IP" \
        "cd $PREFIX_Q && $SUDO $(edge_remote_env) ./decommission.sh"
    central DELETE "$DEVICE_URL" >/dev/null
    ;;
esac
echo "Action $ACTION completed for device $DEVICE_ID"
