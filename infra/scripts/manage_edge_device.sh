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
#   provision     edge_deploy.sh to it, then POST /api/devices/ID/provision; where central
#                 enrolls devices (it answers POST /api/enroll/tokens), the device then
#                 enrolls itself over its link to central: a one-time token bound to ID,
#                 `edge-min enroll --central CENTRAL_URL --token T --ca-sha256 PIN` on it
#                 (its key made there, its certificate, CA and sync key from central), and
#                 its runtime restarted. A central without enrollment (501) keeps the SSH
#                 path alone: certificates and keys are the operator's to place.
#   update        with EDGE_BUNDLE (a signed bundle, `edge-min update bundle`): through
#                 central, for a device with a link to it running under the A/B supervisor:
#                 the bundle is uploaded (POST /api/bundles), a rollout of it to this one
#                 device is made (POST /api/rollouts, one phase), and the script waits
#                 (EDGE_UPDATE_TIMEOUT seconds, default 900) until the device committed it
#                 (exit 0) or the rollout halted (the device went back: exit 1, its reason);
#                 no SSH. Without EDGE_BUNDLE: edge_update.sh to it (update.sh, with
#                 rollback; on a device installed with EDGE_SLOTS=1, into the inactive A/B
#                 slot, tried by the supervisor), then POST .../update with the version
#                 it runs (edgectl.sh version)
#   restart       edgectl.sh restart on it (systemctl restart meta-agent-edge under
#                 systemd), then POST .../restart
#   decommission  decommission.sh on it (the runtime crypto-erases itself and tells central,
#                 which revokes its certificate), then DELETE /api/devices/ID (revokes it
#                 for a device that could not reach central)
# The central is told only after the device-side step succeeded.
# Environment:
#   CENTRAL_URL          the central platform (default https://central.meta-agent.example.com)
#   CENTRAL_TOKEN        a bearer token for the central's API, if it asks for one
#   CENTRAL_CURL_OPTS    more curl options, shell-quoted (e.g. "--cacert ca.crt")
#   EDGE_BUNDLE          update: a signed bundle to roll out through central (see above)
#   EDGE_UPDATE_TIMEOUT  update through central: how long to wait for the device (900 s)
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

# central_try METHOD URL [JSON]: "STATUS BODY" whatever the status (dies only if unreachable).
central_try() {
    local method=$1 url=$2 body=${3:-} opts=() out
    [ -n "${CENTRAL_CURL_OPTS:-}" ] && eval "opts=($CENTRAL_CURL_OPTS)"
    [ -n "${CENTRAL_TOKEN:-}" ] && opts+=(-H "Authorization: Bearer $CENTRAL_TOKEN")
    [ -n "$body" ] && opts+=(-H "Content-Type: application/json" --data "$body")
    out="$(curl -sS --max-time 30 -X "$method" -w '\n%{http_code}' "${opts[@]}" "$url")" ||
        die "$method $url failed (is CENTRAL_URL=$CENTRAL_URL right?)"
    printf '%s %s\n' "${out##*$'\n'}" "${out%$'\n'*}"
}

# enroll_device: a token bound to DEVICE_ID, then `edge-min enroll` on the device. Returns 1
# (nothing done) when central does not enroll devices.
enroll_device() {
    local answer status token pin
    answer="$(central_try POST "$CENTRAL_URL/api/enroll/tokens" \
        "{\"device_id\": $(json_str "$DEVICE_ID"), \"ttl\": \"15m\"}")"
    status="${answer%% *}"
    [ "$status" = 501 ] && return 1
    [ "${status:0:1}" = 2 ] || die "POST /api/enroll/tokens answered $status: ${answer#* }"
    token="$(echo "${answer#* }" | json_field token)"
    pin="$(echo "${answer#* }" | json_field ca_sha256)"
    echo "Enrolling device $DEVICE_ID with central..."
    edge_ssh "$DEVICE_USER" "$DEVICE_IP" "cd $PREFIX_Q && $SUDO ./edgectl.sh enroll \
--central $(shq "$CENTRAL_URL") --token $(shq "$token") --ca-sha256 $(shq "$pin") \
--device-id $(shq "$DEVICE_ID") --force"
}

# A JSON string, quoted.
json_str() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"; }

# update_via_central: the signed bundle $EDGE_BUNDLE rolled out to this device alone.
update_via_central() {
    local opts=() out status bundle version rollout deadline doc state
    [ -f "$EDGE_BUNDLE" ] || die "EDGE_BUNDLE=$EDGE_BUNDLE: no such file"
    [ -n "${CENTRAL_CURL_OPTS:-}" ] && eval "opts=($CENTRAL_CURL_OPTS)"
    [ -n "${CENTRAL_TOKEN:-}" ] && opts+=(-H "Authorization: Bearer $CENTRAL_TOKEN")
    out="$(curl -sS --max-time 300 -X POST -w '\n%{http_code}' "${opts[@]}" \
        -H "Content-Type: application/octet-stream" --data-binary "@$EDGE_BUNDLE" \
        "$CENTRAL_URL/api/bundles")" || die "POST $CENTRAL_URL/api/bundles failed"
    status="${out##*$'\n'}"
    out="${out%$'\n'*}"
    [ "${status:0:1}" = 2 ] || die "POST /api/bundles answered $status: $out"
    bundle="$(echo "$out" | json_field id)"
    version="$(echo "$out" | json_field version)"
    [ -n "$version" ] || die "$EDGE_BUNDLE is not a signed bundle central can read a version from"
    rollout="$(central POST "$CENTRAL_URL/api/rollouts" \
        "{\"version\": $(json_str "$version"), \"bundle\": $(json_str "$bundle"), \
\"devices\": {\"ids\": [$(json_str "$DEVICE_ID")]}, \"phases\": [100], \
\"max_failure_percent\": 0, \"min_devices\": 1}" | json_field id)"
    echo "Rolling $version out to $DEVICE_ID through central (rollout $rollout)..."
    deadline=$(($(date +%s) + ${EDGE_UPDATE_TIMEOUT:-900}))
    while :; do
        doc="$(central GET "$CENTRAL_URL/api/rollouts/$rollout")"
        state="$(echo "$doc" | json_field status)"
        case "$state" in
        completed)
            echo "Device $DEVICE_ID runs $version (committed)"
            return 0
            ;;
        halted | cancelled)
            echo "$doc" | python3 -c 'import json, sys
d = json.load(sys.stdin)["device_states"][0]
print("device %s: %s (%s); it runs %s" % (d["id"], d["state"], d.get("reason"), d.get("running_version")))' >&2
            die "rollout $rollout $state: $version was NOT applied"
            ;;
        esac
        [ "$(date +%s)" -lt "$deadline" ] ||
            die "rollout $rollout still $state after ${EDGE_UPDATE_TIMEOUT:-900}s; see GET /api/rollouts/$rollout"
        sleep 2
    done
}

if [ "$ACTION" = update ] && [ -n "${EDGE_BUNDLE:-}" ]; then
    update_via_central
    echo "Action $ACTION completed for device $DEVICE_ID"
    exit 0
fi

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
\"details\": {\"version\": $(json_str "$(edge_ssh "$DEVICE_USER" "$DEVICE_IP" "cd $PREFIX_Q && ./edgectl.sh version")")}}" >/dev/null
    enroll_device || echo "central does not enroll devices; kept the SSH-provisioned identity"
    ;;
update)
    echo "Updating device $DEVICE_ID..."
    "$EDGE_SCRIPTS_DIR/edge_update.sh" "$DEVICE_IP" "$DEVICE_USER"
    central POST "$DEVICE_URL/update" \
        "{\"version\": $(json_str "$(edge_ssh "$DEVICE_USER" "$DEVICE_IP" "cd $PREFIX_Q && ./edgectl.sh version")")}" >/dev/null
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
