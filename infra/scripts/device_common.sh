# device_common.sh - shared by the device-side scripts of meta-agent-edge.tar.gz
# (setup.sh, update.sh, decommission.sh, edgectl.sh). Sourced, never run; POSIX sh, because a
# gateway may have busybox and no bash.
#
# Settings, each from the environment, else from $PREFIX/install.env (written by setup.sh,
# so `cd /opt/meta-agent && ./update.sh` needs no environment), else the default:
#   PREFIX=/opt/meta-agent        the install (the package's files, unpacked)
#   CONF_DIR=/etc/meta-agent      the five config files
#   DATA_DIR=/data                the runtime's data directory (database, keys, backups)
#   SYSTEMD_DIR=/etc/systemd/system
#   EDGE_START=auto               auto: systemd when it runs (and we are root), else background;
#                                 systemd | background | none (install only)
#   EDGE_API_PORT=                the API port of a background runtime (0: any free port;
#                                 empty: api.port of edge-config.yaml)
#   EDGE_HEALTH_TIMEOUT=60        seconds to wait for GET /health after a start
#   EDGE_MIN_PYTHON=              the interpreter of a from-source package (default: python3)
#   EDGE_SLOTS=0                  1: A/B slots (docs/updates.md): the program runs from
#                                 $PREFIX/update/slots/<a|b>, started by the supervisor
#                                 (`edge-min update supervise`), which tries a new version
#                                 and falls back by itself; 0: the program runs from $PREFIX
#                                 and update.sh rolls back with .previous/.failed

UNIT=meta-agent-edge
# What install.env holds (setup.sh writes it, load_settings reads it back).
SETTINGS="PREFIX CONF_DIR DATA_DIR SYSTEMD_DIR EDGE_START EDGE_API_PORT EDGE_HEALTH_TIMEOUT \
EDGE_MIN_PYTHON EDGE_SLOTS CREATED_USER LINKED_BIN"
# shellcheck disable=SC2034  # used by setup.sh and decommission.sh
SERVICE_USER=meta-agent

say() { printf '%s: %s\n' "${EDGE_SCRIPT:-meta-agent}" "$*"; }
die() {
    printf '%s: error: %s\n' "${EDGE_SCRIPT:-meta-agent}" "$*" >&2
    exit "${EDGE_DIE_CODE:-1}"
}
have() { command -v "$1" >/dev/null 2>&1; }

# The install directory of the script that sourced us (the unpacked package).
script_dir() { CDPATH='' cd -- "$(dirname -- "$1")" && pwd -P; }

load_settings() {
    # $1: the folder holding install.env (the install); explicit environment wins over it.
    _env_file="$1/install.env"
    if [ -f "$_env_file" ]; then
        # Keep what the caller set: install.env only fills the gaps.
        for _name in $SETTINGS; do
            eval "_set=\${$_name+x}"
            if [ -z "$_set" ]; then
                _line=$(grep "^$_name=" "$_env_file" | tail -n 1) || true
                [ -n "$_line" ] && eval "$_line"
            fi
        done
    fi
    PREFIX=${PREFIX:-/opt/meta-agent}
    CONF_DIR=${CONF_DIR:-/etc/meta-agent}
    DATA_DIR=${DATA_DIR:-/data}
    SYSTEMD_DIR=${SYSTEMD_DIR:-/etc/systemd/system}
    EDGE_START=${EDGE_START:-auto}
    EDGE_API_PORT=${EDGE_API_PORT:-}
    EDGE_HEALTH_TIMEOUT=${EDGE_HEALTH_TIMEOUT:-60}
    # An install.env without EDGE_SLOTS was written before slots existed: its own layout.
    EDGE_SLOTS=${EDGE_SLOTS:-0}
    case "$EDGE_START" in
    auto | systemd | background | none) ;;
    *) die "EDGE_START=$EDGE_START is not one of auto, systemd, background, none" ;;
    esac
    case "$EDGE_SLOTS" in
    0 | 1) ;;
    *) die "EDGE_SLOTS=$EDGE_SLOTS is not 0 or 1" ;;
    esac
    # The slots' install root (edge-min update ... --root): a folder of its own, which the
    # service user may write (the supervisor counts tries there), unlike $PREFIX's scripts.
    UPDATE_ROOT="$PREFIX/update"
}

slots_mode() { [ "$EDGE_SLOTS" = 1 ]; }

# The slot the device boots (committed), from update-state.json; empty before the first.
# The file is only written by edge_min.update.slots (json, indent 1, sorted keys).
active_slot() {
    [ -f "$UPDATE_ROOT/update-state.json" ] || return 0
    sed -n 's/^ "active": "\([ab]\)",\{0,1\}$/\1/p' "$UPDATE_ROOT/update-state.json" 2>/dev/null
}

# The version recorded for slot $1 in update-state.json (empty for an empty slot).
slot_version() {
    [ -f "$UPDATE_ROOT/update-state.json" ] || return 0
    awk -v slot="$1" '
        $0 == "  \"" slot "\": {" { inside = 1; next }
        inside && /^  [}]/ { exit }
        inside && /^   "version": "/ {
            sub(/^   "version": "/, ""); sub(/",?$/, ""); print; exit
        }' "$UPDATE_ROOT/update-state.json" 2>/dev/null
}

# The version this install runs: the active slot's, else the package's in $PREFIX.
installed_version() {
    if slots_mode && [ -n "$(active_slot)" ]; then
        slot_version "$(active_slot)"
    else
        cat "$PREFIX/VERSION" 2>/dev/null || echo unknown
    fi
}

# A value quoted for sh, so install.env can be sourced back whatever it holds.
shquote() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }

systemd_running() { [ -d /run/systemd/system ] && have systemctl; }

# How this install starts the runtime: systemd, background or none.
start_mode() {
    case "$EDGE_START" in
    auto)
        if systemd_running && [ "$(id -u)" -eq 0 ]; then echo systemd; else echo background; fi
        ;;
    *) echo "$EDGE_START" ;;
    esac
}

# sha256 of a file, with whichever tool the device has.
sha256_of() {
    if have sha256sum; then
        sha256sum "$1" | cut -d' ' -f1
    elif have shasum; then
        shasum -a 256 "$1" | cut -d' ' -f1
    elif have openssl; then
        openssl dgst -sha256 -r "$1" | cut -d' ' -f1
    else
        die "no sha256sum, shasum or openssl to verify checksums with; install coreutils"
    fi
}

# Check every file SHA256SUMS in $1 names; prints each mismatch, returns 1 on any.
verify_checksums() {
    [ -f "$1/SHA256SUMS" ] || {
        say "no SHA256SUMS in $1: not a meta-agent-edge package"
        return 1
    }
    _bad=0
    while read -r _sum _file; do
        _file=${_file#\*}
        [ -n "$_file" ] || continue
        if [ ! -f "$1/$_file" ]; then
            say "checksum: $_file is missing"
            _bad=1
        elif [ "$(sha256_of "$1/$_file")" != "$_sum" ]; then
            say "checksum: $_file does not match SHA256SUMS (corrupt or altered)"
            _bad=1
        fi
    done <"$1/SHA256SUMS"
    return "$_bad"
}

edge_min_cmd() {
    # The installed edge-min with this install's config and data directory.
    "$PREFIX/edge-min" --config "$CONF_DIR/edge-config.yaml" --data-dir "$DATA_DIR" "$@"
}

pid_file() { echo "$DATA_DIR/edge-min.pid"; }

# Whether pid $1 runs and is an edge-min (a recycled pid is not ours).
is_edge_min() {
    [ -n "$1" ] && kill -0 "$1" 2>/dev/null || return 1
    if [ -r "/proc/$1/cmdline" ]; then
        tr '\0' ' ' <"/proc/$1/cmdline" | grep -q 'edge[-_]min' || return 1
    fi
}

# The pid of a background runtime (or supervisor) started by this install, if it still runs.
background_pid() {
    [ -f "$(pid_file)" ] || return 1
    _pid=$(cat "$(pid_file)" 2>/dev/null) || return 1
    is_edge_min "$_pid" || return 1
    echo "$_pid"
}

# The runtime the supervisor runs now (slot, pid), from its supervisor.json: "SLOT PID".
supervised_child() {
    _doc=$(cat "$UPDATE_ROOT/supervisor.json" 2>/dev/null) || return 1
    _cpid=$(echo "$_doc" | sed -n 's/.*"child_pid": *\([0-9][0-9]*\).*/\1/p')
    _cslot=$(echo "$_doc" | sed -n 's/.*"slot": *"\([ab]\)".*/\1/p')
    is_edge_min "$_cpid" || return 1
    echo "$_cslot $_cpid"
}

is_running() {
    if [ "$(start_mode)" = systemd ]; then
        # "activating": a notify unit before READY=1 (the health wait covers that time).
        case "$(systemctl is-active "$UNIT" 2>/dev/null)" in
        active | activating | reloading) return 0 ;;
        *) return 1 ;;
        esac
    else
        background_pid >/dev/null
    fi
}

# Where the running runtime answers: runtime.json (written by `edge-min run`), else api.port.
health_url() {
    _url=""
    if [ -r "$DATA_DIR/runtime.json" ]; then
        _url=$(sed -n 's/.*"url": *"\([^"]*\)".*/\1/p' "$DATA_DIR/runtime.json")
    fi
    echo "${_url:-http://127.0.0.1:${EDGE_API_PORT:-8000}}/health"
}

# GET $1 and print the body; returns 0 only on a 2xx answer.
http_get() {
    if have curl; then
        curl -fsS --max-time 10 "$1"
    elif have wget; then
        wget -q -T 10 -O - "$1"
    elif have python3; then
        python3 -c 'import sys, urllib.request as u
sys.stdout.write(u.urlopen(sys.argv[1], timeout=10).read().decode())' "$1"
    else
        die "no curl, wget or python3 to query $1 with; install curl"
    fi
}

# Wait until GET /health answers 2xx; fails fast when the runtime dies first.
wait_healthy() {
    _deadline=$(($(date +%s) + EDGE_HEALTH_TIMEOUT))
    while [ "$(date +%s)" -lt "$_deadline" ]; do
        if ! is_running; then
            say "$UNIT is not running (it exited during start)"
            return 1
        fi
        if http_get "$(health_url)" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.5
    done
    say "GET $(health_url) did not answer within ${EDGE_HEALTH_TIMEOUT}s"
    return 1
}

start_runtime() {
    case "$(start_mode)" in
    systemd)
        systemctl daemon-reload
        systemctl enable "$UNIT" >/dev/null 2>&1 || systemctl enable "$UNIT"
        systemctl restart "$UNIT"
        ;;
    background)
        stop_runtime
        mkdir -p "$DATA_DIR/logs"
        # A stale runtime.json (left by kill -9) would point the health check at a dead port.
        rm -f "$DATA_DIR/runtime.json"
        set -- run
        # Slots: the supervisor starts the right slot's `edge-min run` (same options).
        slots_mode && set -- update supervise --root "$UPDATE_ROOT"
        [ -n "$EDGE_API_PORT" ] && set -- "$@" --port "$EDGE_API_PORT"
        # setsid + nohup + no terminal fds: the runtime outlives the ssh session that started it.
        # The child writes its own pid before exec'ing edge-min: setsid may fork (when the
        # caller leads its process group), and then $! would name a parent that has exited.
        _setsid=""
        have setsid && _setsid=setsid
        _pidf=$(pid_file)
        rm -f "$_pidf"
        # shellcheck disable=SC2016 # expanded by the child shell, on purpose
        $_setsid nohup sh -c 'echo $$ >"$1"; shift; exec "$@"' edge-min-start "$_pidf" \
            "$PREFIX/edge-min" --config "$CONF_DIR/edge-config.yaml" \
            --data-dir "$DATA_DIR" "$@" </dev/null >>"$DATA_DIR/logs/edge-min.out" 2>&1 &
        _i=0
        while [ ! -s "$_pidf" ] && [ "$_i" -lt 50 ]; do
            sleep 0.1
            _i=$((_i + 1))
        done
        _what=edge-min
        slots_mode && _what="the slots' supervisor (edge-min update supervise)"
        say "started $_what in the background (pid $(cat "$_pidf" 2>/dev/null), log $DATA_DIR/logs/edge-min.out)"
        ;;
    none)
        _cmd=run
        slots_mode && _cmd="update supervise --root $UPDATE_ROOT"
        say "not started (EDGE_START=none); start it with:"
        say "  $PREFIX/edge-min --config $CONF_DIR/edge-config.yaml --data-dir $DATA_DIR $_cmd"
        ;;
    esac
}

stop_runtime() {
    case "$(start_mode)" in
    systemd)
        systemctl stop "$UNIT" 2>/dev/null || true
        ;;
    *)
        # Slots: the supervisor's runtime, read before the supervisor removes its record.
        _child=""
        slots_mode && _child=$(supervised_child) && _child=${_child#* }
        _pid=$(background_pid) || {
            rm -f "$(pid_file)"
            [ -n "$_child" ] && stop_pid "$_child" 300 # a supervisor killed -9 left it
            return 0
        }
        # edge-min finishes its current step and closes the database on SIGTERM; the
        # supervisor gives its runtime 30s of that, so it gets 45s.
        _grace=300
        slots_mode && _grace=450
        stop_pid "$_pid" "$_grace"
        [ -n "$_child" ] && stop_pid "$_child" 100
        rm -f "$(pid_file)" "$DATA_DIR/runtime.json"
        ;;
    esac
}

# SIGTERM to pid $1, SIGKILL after $2 tenths of a second.
stop_pid() {
    is_edge_min "$1" || return 0
    kill -TERM "$1" 2>/dev/null || true
    _i=0
    while kill -0 "$1" 2>/dev/null && [ "$_i" -lt "$2" ]; do
        sleep 0.1
        _i=$((_i + 1))
    done
    if kill -0 "$1" 2>/dev/null; then
        say "edge-min (pid $1) ignored SIGTERM for $(($2 / 10))s; killing it"
        kill -KILL "$1" 2>/dev/null || true
    fi
}
