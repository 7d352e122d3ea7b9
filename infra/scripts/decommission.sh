#!/bin/sh
# decommission.sh - retire this device: stop meta-agent-edge and remove it with its secrets.
#
#   cd /opt/meta-agent && ./decommission.sh            # as manage_edge_device.sh does
#   EDGE_KEEP_DATA=1 ./decommission.sh                 # keep $DATA_DIR (database, backups)
#
# Stops and disables the unit (or the background runtime; with A/B slots the supervisor and
# the runtime it runs, whose slots under $PREFIX/update go with $PREFIX), then crypto-erases
# the device with the runtime's own `edge-min decommission --yes` (keys/storage.key first,
# fsync'd, then the data directory, then central is told when it answers: it retires the
# device and revokes its certificate; docs/updates.md), then removes the unit file, the
# /usr/local/bin/edge-min link and the system user setup.sh made, $CONF_DIR (configs,
# certificates) and $PREFIX. With EDGE_KEEP_DATA=1 the runtime's erase is skipped and
# $DATA_DIR stays, without its keys (overwritten with shred where it exists, then removed),
# so what stays is unreadable. EDGE_DECOMMISSION_OFFLINE=1 does not tell central (a device
# without a link to central; manage_edge_device.sh tells it with DELETE /api/devices/ID).
# Exit codes: 0 removed; 1 failed.
set -eu
EDGE_SCRIPT=decommission.sh
HERE=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd -P)
. "$HERE/device_common.sh"

wipe_secrets() {
    # Key material: the data directory's keys/ and the config folder's certs/.
    for _dir in "$DATA_DIR/keys" "$CONF_DIR/certs"; do
        [ -d "$_dir" ] || continue
        if have shred; then
            find "$_dir" -type f -exec shred -u -z {} + 2>/dev/null || true
        fi
        rm -rf "$_dir"
    done
}

crypto_erase() {
    # The runtime's erase: master key first, then data, then central (if it answers).
    [ "$EDGE_KEEP_DATA" = 1 ] && return 0
    [ -x "$PREFIX/edge-min" ] || return 0
    _offline=""
    [ "${EDGE_DECOMMISSION_OFFLINE:-0}" = 1 ] && _offline="--offline"
    # shellcheck disable=SC2086  # _offline is one flag or nothing
    if edge_min_cmd decommission --yes $_offline; then
        say "crypto-erased $DATA_DIR (master key first)"
    else
        say "edge-min decommission failed; wiping the keys and data by hand"
    fi
}

refuse_system_dirs() {
    # A typo in install.env must not cost the device its root filesystem.
    for _dir in "$PREFIX" "$CONF_DIR" "$DATA_DIR"; do
        case "$_dir" in
        "" | / | /bin | /boot | /dev | /etc | /home | /lib | /opt | /proc | /root | /run | /sbin | \
            /srv | /sys | /tmp | /usr | /usr/local | /var)
            die "refusing to remove '$_dir'; fix $HERE/install.env"
            ;;
        esac
    done
}

main() {
    load_settings "$HERE"
    refuse_system_dirs
    EDGE_KEEP_DATA=${EDGE_KEEP_DATA:-0}
    _mode=$(start_mode)
    stop_runtime
    crypto_erase
    if [ "$_mode" = systemd ]; then
        systemctl disable "$UNIT" >/dev/null 2>&1 || true
        rm -f "$SYSTEMD_DIR/$UNIT.service"
        systemctl daemon-reload || true
        say "removed the systemd unit $UNIT"
    fi
    if [ -n "${LINKED_BIN:-}" ] && [ -L "$LINKED_BIN" ]; then
        rm -f "$LINKED_BIN"
    fi
    wipe_secrets
    rm -rf "$CONF_DIR"
    say "removed $CONF_DIR"
    if [ "$EDGE_KEEP_DATA" = 1 ]; then
        say "kept $DATA_DIR (EDGE_KEEP_DATA=1), without its keys"
    else
        rm -rf "$DATA_DIR"
        say "removed $DATA_DIR"
    fi
    if [ "${CREATED_USER:-}" = 1 ] && id "$SERVICE_USER" >/dev/null 2>&1; then
        userdel "$SERVICE_USER" || say "could not remove the user $SERVICE_USER"
    fi
    # Last: this script and its library live in $PREFIX (already read into memory).
    cd /
    rm -rf "$PREFIX"
    say "removed $PREFIX; meta-agent-edge is decommissioned"
}

main "$@"
