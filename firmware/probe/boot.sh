#!/bin/bash
# Boot out/disk.img under QEMU (TCG, no KVM) with OVMF, wait for /health, report timings.
# Leaves QEMU running in the background (pid in out/qemu.pid) unless KILL_AFTER=1.
# Env: PORT (default 18000), CACHE (default none), RESET_VARS=1 (fresh OVMF vars),
#      WAIT_FOR (regex in serial log to wait for instead of /health), TIMEOUT (s, default 300)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd); cd "$HERE"
PORT=${PORT:-18000}
CACHE=${CACHE:-none}
TIMEOUT=${TIMEOUT:-300}
LOG=${LOG:-out/serial.log}
VARS=out/OVMF_VARS_4M.fd
if [ "${RESET_VARS:-0}" = 1 ] || [ ! -f $VARS ]; then cp /usr/share/OVMF/OVMF_VARS_4M.fd $VARS; fi
if [ -f out/qemu.pid ] && kill -0 "$(cat out/qemu.pid)" 2>/dev/null; then
  echo "qemu already running (pid $(cat out/qemu.pid))"; exit 1
fi
: > "$LOG"
T0=$(date +%s.%N)
nice -n 19 qemu-system-x86_64 -machine q35 -m 512 -smp 1 -nographic -monitor none \
  -drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
  -drive if=pflash,format=raw,unit=1,file=$VARS \
  -drive file=out/disk.img,if=virtio,format=raw,cache=$CACHE \
  -netdev user,id=n,hostfwd=tcp:127.0.0.1:$PORT-:8000 -device virtio-net-pci,netdev=n \
  -serial file:"$LOG" </dev/null >out/qemu.stdout 2>&1 &
QPID=$!
echo $QPID > out/qemu.pid
el() { echo "$(date +%s.%N) - $T0" | bc; }
T_INIT=; T_UP=
while :; do
  E=$(el)
  if [ -z "$T_INIT" ] && grep -q 'edge-init\[.*start' "$LOG" 2>/dev/null; then T_INIT=$E; echo "init reached at +${T_INIT}s (host wall clock since qemu start)"; fi
  if [ -n "${WAIT_FOR:-}" ]; then
    if grep -qE "$WAIT_FOR" "$LOG"; then T_UP=$E; echo "'$WAIT_FOR' seen at +${T_UP}s"; break; fi
  elif [ -n "$T_INIT" ] && curl -fsS --max-time ${CURL_MAX:-2} http://127.0.0.1:$PORT/health >out/health.txt 2>/dev/null; then
    T_UP=$(el); echo "/health answered at +${T_UP}s: $(cat out/health.txt)"; break
  fi
  kill -0 $QPID 2>/dev/null || { echo "qemu exited"; break; }
  if [ "$(echo "$E > $TIMEOUT" | bc)" = 1 ]; then echo "TIMEOUT after ${TIMEOUT}s"; break; fi
  sleep 0.5
done
grep -E 'edge-init|Mem|blessed' "$LOG" | tail -20 || true
if [ "${KILL_AFTER:-0}" = 1 ]; then kill $QPID; wait $QPID 2>/dev/null || true; rm -f out/qemu.pid; fi
