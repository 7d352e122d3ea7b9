#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the central server's tests; prints its DSN on stdout.
#
#   export EDGE_MIN_TEST_PG="$(scripts/postgres.sh)"     # install if missing, init, start
#   scripts/postgres.sh stop                             # stop it (the data stays cached)
#   scripts/postgres.sh destroy                          # stop it and delete its data
#
# Idempotent: a second call finds the running cluster and prints the same DSN.
# The cluster lives in $EDGE_MIN_PG_DIR, by default where its owner can reach it whatever the
# clone's own modes are (a clone in a 0700 folder such as `mktemp -d` or /root is not
# reachable by another user): as root, in the postgres user's home
# (/var/lib/postgresql/edge-min-test/<hash of this clone's path>); as anyone else, in
# <repo>/.cache/postgres. It listens on
# 127.0.0.1 only (port $EDGE_MIN_PG_PORT, else a free one chosen at first start and kept)
# with trust authentication, and has fsync off: it holds test data only, never anything real.
# PostgreSQL refuses to run as root, so under root the server runs as the "postgres" user
# (created by Debian's package); as any other user it runs as that user.
# Everything but the DSN goes to stderr, so the command substitution above stays clean.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DB_USER="edge"
DB_NAME="edge_min_test"
ACTION="${1:-start}"

say() { echo "postgres.sh: $*" >&2; }

find_bin() {
    local found
    found="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    if [ -n "$found" ] && [ -x "$found/initdb" ]; then
        echo "$found"
    fi
}

BIN="$(find_bin)"
if [ -z "$BIN" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        say "PostgreSQL server binaries are missing; install them with: sudo apt-get install -y postgresql"
        exit 1
    fi
    say "installing PostgreSQL (Debian package postgresql)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
    BIN="$(find_bin)"
    [ -n "$BIN" ] || { say "apt-get installed postgresql but no initdb was found"; exit 1; }
fi

# as_owner CMD...: run CMD as the user that owns the cluster.
if [ "$(id -u)" -eq 0 ]; then
    OWNER="postgres"
    id "$OWNER" >/dev/null 2>&1 || { say "running as root but there is no 'postgres' user"; exit 1; }
    # From /: the caller's working directory (inside a private clone) may be closed to it.
    as_owner() { (cd / && runuser -u "$OWNER" -- "$@"); }
else
    OWNER="$(id -un)"
    as_owner() { "$@"; }
fi

if [ -n "${EDGE_MIN_PG_DIR:-}" ]; then
    DIR="$EDGE_MIN_PG_DIR"
elif [ "$OWNER" = postgres ]; then
    home="$(getent passwd postgres | cut -d: -f6)"
    DIR="${home:-/var/lib/postgresql}/edge-min-test/$(printf '%s' "$ROOT" | sha256sum | cut -c1-12)"
else
    DIR="$ROOT/.cache/postgres"
fi
DATA="$DIR/data"
PORT_FILE="$DIR/port"

running() { [ -f "$DATA/postmaster.pid" ] && as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }

case "$ACTION" in
    stop)
        if running; then as_owner "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >&2; fi
        exit 0 ;;
    destroy)
        if running; then as_owner "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >&2; fi
        rm -rf "$DIR"
        exit 0 ;;
    start) ;;
    *) say "unknown action '$ACTION'; use start, stop or destroy"; exit 2 ;;
esac

mkdir -p "$DIR"
if [ "$(id -u)" -eq 0 ]; then chown "$OWNER" "$DIR"; fi
# initdb's own "Permission denied" names a path deep inside; say which folder is the problem.
if ! as_owner test -w "$DIR" -a -x "$DIR"; then
    say "the cluster folder $DIR is not writable by the '$OWNER' user (a parent folder is" \
        "private to another user?); set EDGE_MIN_PG_DIR to a folder '$OWNER' can reach"
    exit 1
fi

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

if [ ! -f "$DATA/PG_VERSION" ]; then
    say "initialising a test cluster in $DATA"
    rm -rf "$DATA"
    as_owner "$BIN/initdb" -D "$DATA" -U "$DB_USER" --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
    cat >>"$DATA/postgresql.conf" <<'EOF'
# edge_min test cluster: loopback only, sized for the 200-device concurrency test.
listen_addresses = '127.0.0.1'
max_connections = 300
shared_buffers = 64MB
# Test data only: durability is not worth the fsyncs here.
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
fi

if [ -n "${EDGE_MIN_PG_PORT:-}" ]; then
    echo "$EDGE_MIN_PG_PORT" >"$PORT_FILE"
elif [ ! -f "$PORT_FILE" ]; then
    free_port >"$PORT_FILE"
fi
PORT="$(cat "$PORT_FILE")"

if ! running; then
    # The socket directory is the cluster's own, so no write access to /var/run is needed.
    as_owner "$BIN/pg_ctl" -D "$DATA" -l "$DIR/server.log" -w -t 60 \
        -o "-p $PORT -k $DATA" start >&2 || {
        say "the server did not start; its log:"; tail -n 30 "$DIR/server.log" >&2; exit 1; }
fi

if ! as_owner "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U "$DB_USER" -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'" | grep -q 1; then
    as_owner "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U "$DB_USER" "$DB_NAME"
fi

echo "postgresql://$DB_USER@127.0.0.1:$PORT/$DB_NAME"
