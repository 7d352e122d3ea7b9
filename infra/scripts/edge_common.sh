# shellcheck shell=bash
# edge_common.sh - shared by the operator-side scripts (edge_deploy.sh, edge_update.sh,
# edge_sync.sh, edge_monitor.sh, manage_edge_device.sh). Sourced, never run; bash.
#
# Environment (all optional):
#   EDGE_PACKAGE        the package to build and push (default <repo>/dist/meta-agent-edge.tar.gz)
#   EDGE_SKIP_BUILD=1   push EDGE_PACKAGE as it is instead of building it first
#   EDGE_BUILD_ARGS     extra arguments for build_edge_package.sh (e.g. --from-source)
#   EDGE_SSH_PORT       the device's SSH port (ssh -p / scp -P)
#   EDGE_SSH_OPTS       more ssh/scp options, shell-quoted (e.g. "-i ~/.ssh/edge -o ...")
#   EDGE_SUDO           prefix for the device-side commands (default: "sudo" unless the
#                       user is root; set it empty when the user may write the install)
#   EDGE_REMOTE_TMP     where the package is copied on the device (default /tmp)
#   EDGE_PREFIX         the install on the device (default /opt/meta-agent)
#   EDGE_CONF_DIR, EDGE_DATA_DIR, EDGE_START, EDGE_API_PORT, EDGE_HEALTH_TIMEOUT,
#   EDGE_MIN_PYTHON, EDGE_SLOTS
#                       passed to the device's setup.sh as CONF_DIR, DATA_DIR, ... (see
#                       device_common.sh; EDGE_SLOTS=1: A/B slots and the supervisor); the
#                       device remembers them in install.env

EDGE_SCRIPTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
EDGE_REPO_ROOT="$(cd "$EDGE_SCRIPTS_DIR/../.." && pwd -P)"
EDGE_PACKAGE="${EDGE_PACKAGE:-$EDGE_REPO_ROOT/dist/meta-agent-edge.tar.gz}"
# shellcheck disable=SC2034  # used by the scripts that source this file
EDGE_PACKAGE_NAME="meta-agent-edge.tar.gz"
EDGE_REMOTE_TMP="${EDGE_REMOTE_TMP:-/tmp}"
EDGE_PREFIX="${EDGE_PREFIX:-/opt/meta-agent}"

die() {
    echo "$(basename "$0"): error: $*" >&2
    exit 1
}

# ssh and scp options: BatchMode (a prompt would hang a script), the port, EDGE_SSH_OPTS.
_edge_opts() {
    local -n _out=$1
    local port_flag=$2
    _out=(-o BatchMode=yes -o ConnectTimeout="${EDGE_SSH_CONNECT_TIMEOUT:-10}")
    [ -n "${EDGE_SSH_PORT:-}" ] && _out+=("$port_flag" "$EDGE_SSH_PORT")
    if [ -n "${EDGE_SSH_OPTS:-}" ]; then
        local extra
        eval "extra=($EDGE_SSH_OPTS)"
        _out+=("${extra[@]}")
    fi
}

# edge_ssh USER HOST COMMAND...: run COMMAND on the device (stdin passes through).
edge_ssh() {
    local user=$1 host=$2 opts
    shift 2
    _edge_opts opts -p
    # shellcheck disable=SC2029  # the command is meant to expand here, quoted by the callers
    ssh "${opts[@]}" "$user@$host" "$@"
}

# edge_scp FILE USER HOST DEST: copy FILE to DEST on the device.
edge_scp() {
    local file=$1 user=$2 host=$3 dest=$4 opts
    _edge_opts opts -P
    scp -q "${opts[@]}" "$file" "$user@$host:$dest"
}

# A value quoted for the device's POSIX shell.
shq() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }

# The privilege prefix for the device-side commands of TARGET_USER ($1).
edge_sudo() {
    if [ -n "${EDGE_SUDO+x}" ]; then
        echo "$EDGE_SUDO"
    elif [ "$1" = root ]; then
        echo ""
    else
        echo "sudo -n"
    fi
}

# "env NAME='value' ..." for the settings the operator set, to prefix a device-side script.
edge_remote_env() {
    local out="env" name var
    for name in PREFIX:EDGE_PREFIX CONF_DIR:EDGE_CONF_DIR DATA_DIR:EDGE_DATA_DIR \
        EDGE_START:EDGE_START EDGE_API_PORT:EDGE_API_PORT \
        EDGE_HEALTH_TIMEOUT:EDGE_HEALTH_TIMEOUT EDGE_MIN_PYTHON:EDGE_MIN_PYTHON \
        EDGE_SLOTS:EDGE_SLOTS EDGE_KEEP_DATA:EDGE_KEEP_DATA; do
        var=${name#*:}
        if [ -n "${!var+x}" ]; then
            out+=" ${name%%:*}=$(shq "${!var}")"
        fi
    done
    echo "$out"
}

# Build EDGE_PACKAGE, unless EDGE_SKIP_BUILD=1 and it exists.
edge_build_package() {
    if [ "${EDGE_SKIP_BUILD:-0}" = 1 ]; then
        [ -f "$EDGE_PACKAGE" ] || die "EDGE_SKIP_BUILD=1 but there is no package at $EDGE_PACKAGE"
        echo "Using the existing package $EDGE_PACKAGE"
        return 0
    fi
    local args
    eval "args=(${EDGE_BUILD_ARGS:-})"
    "$EDGE_SCRIPTS_DIR/build_edge_package.sh" "${args[@]}" --output "$EDGE_PACKAGE"
}

# json_field FIELD < JSON: the top-level field as text ("" for null/absent), with jq or python3.
json_field() {
    if command -v jq >/dev/null 2>&1; then
        jq -r --arg f "$1" '.[$f] // empty'
    else
        python3 -c 'import json, sys
v = json.load(sys.stdin).get(sys.argv[1])
print("" if v is None else v)' "$1"
    fi
}
