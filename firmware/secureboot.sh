#!/bin/bash
# UEFI Secure Boot for the firmware images: our own keys, signing, and enrolled variables.
#
#   firmware/secureboot.sh keys DIR                  PK, KEK and db (RSA 2048, what UEFI
#                                                    verifies) made once in DIR (keys 0600)
#   firmware/secureboot.sh sign DIR IN OUT           IN's signatures removed, signed with db
#   firmware/secureboot.sh vars DIR TEMPLATE OUT     TEMPLATE (a firmware variable store)
#                                                    with its PK/KEK/db replaced by ours and
#                                                    Secure Boot on from the first boot
#   firmware/secureboot.sh verify DIR FILE           sbverify FILE against DIR's db
#
# The development keys of make firmware live in .cache/firmware/secureboot-keys; a product
# line keeps its own offline and points FIRMWARE_SB_KEYS at them. No Microsoft keys are
# enrolled: only what DIR's db signed boots. virt-fw-vars is PyPI's virt-firmware
# ($VIRT_FW_VARS, else on $PATH).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
VIRT_FW_VARS=${VIRT_FW_VARS:-$(command -v virt-fw-vars || echo "$REPO/.venv/bin/virt-fw-vars")}
CMD=${1:?usage: firmware/secureboot.sh keys|sign|vars|verify DIR ...}
DIR=${2:?the keys folder}
log() { echo "firmware/secureboot.sh: $*" >&2; }
case $CMD in
  keys)
    mkdir -p "$DIR"; chmod 700 "$DIR"
    [ -f "$DIR/guid.txt" ] || cat /proc/sys/kernel/random/uuid > "$DIR/guid.txt"
    for k in PK KEK db; do
      [ -f "$DIR/$k.key" ] && [ -f "$DIR/$k.crt" ] && continue
      openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 7300 -subj "/CN=edge_min $k/" \
        -keyout "$DIR/$k.key" -out "$DIR/$k.crt" 2>/dev/null
      chmod 600 "$DIR/$k.key"
      log "made $DIR/$k.crt"
    done ;;
  sign)
    IN=${3:?IN} OUT=${4:?OUT}
    tmp=$(mktemp); cp "$IN" "$tmp"
    # sbsign adds a signature beside any there is (Debian's, on its kernel): strip them all
    while sbverify --list "$tmp" 2>/dev/null | grep -q '^signature [0-9]'; do
      sbattach --remove "$tmp" >/dev/null 2>&1
    done
    sbsign --key "$DIR/db.key" --cert "$DIR/db.crt" --output "$OUT" "$tmp" 2>/dev/null
    rm -f "$tmp"
    sbverify --cert "$DIR/db.crt" "$OUT" >/dev/null 2>&1 || { log "$OUT does not verify"; exit 1; } ;;
  vars)
    TEMPLATE=${3:?TEMPLATE} OUT=${4:?OUT}
    G=$(cat "$DIR/guid.txt")
    # -d: a template may hold other keys already (AAVMF's only formatted store is its .ms
    # one: the plain AAVMF_VARS.fd is blank flash); only ours stay
    "$VIRT_FW_VARS" --input "$TEMPLATE" --output "$OUT" -d PK -d KEK -d db --no-microsoft \
      --set-pk "$G" "$DIR/PK.crt" --add-kek "$G" "$DIR/KEK.crt" --add-db "$G" "$DIR/db.crt" \
      --secure-boot >/dev/null 2>&1 \
      || { log "virt-fw-vars failed (pip install virt-firmware; make firmware does)"; exit 1; } ;;
  verify)
    sbverify --cert "$DIR/db.crt" "${3:?FILE}" ;;
  *) log "unknown command $CMD"; exit 2 ;;
esac
