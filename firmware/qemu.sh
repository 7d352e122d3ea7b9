#!/bin/bash
# Boot an edge_min firmware image under QEMU (software emulation when there is no KVM).
#
#   firmware/qemu.sh IMAGE [--arch x86_64|aarch64] [--api-port PORT] [--seed SEED.img]
#                          [--serial FILE] [--vars FILE] [--memory MB] [--secure-boot]
#                          [--print]
#
# The guest's API (port 8000) is forwarded to 127.0.0.1:PORT (default 8000); the serial
# console goes to FILE (default: this terminal). The UEFI variables live in --vars (default
# IMAGE.vars, made from the firmware's template at the first boot), so they persist across
# boots as a device's NVRAM does. --secure-boot starts them from the image's enrolled store
# (IMAGE's .secboot-vars.fd, written by make firmware: our keys, Secure Boot on) and, on
# x86_64, runs OVMF's Secure Boot build with SMM, which keeps the variables out of the OS's
# reach. --print prints the qemu command line instead of running
# it. QEMU runs in the foreground (exec): kill it to cut the power.
set -euo pipefail
IMAGE=${1:?usage: firmware/qemu.sh IMAGE [--arch A] [--api-port P] [--seed S] [--serial F]}
shift
ARCH= PORT=8000 SEED= SERIAL= VARS= MEM=512 PRINT=0 SB=0
while [ $# -gt 0 ]; do
  case $1 in
    --arch) ARCH=$2; shift 2 ;;
    --api-port) PORT=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    --serial) SERIAL=$2; shift 2 ;;
    --vars) VARS=$2; shift 2 ;;
    --memory) MEM=$2; shift 2 ;;
    --print) PRINT=1; shift ;;
    --secure-boot) SB=1; shift ;;
    *) echo "firmware/qemu.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[ -f "$IMAGE" ] || { echo "firmware/qemu.sh: no image at $IMAGE (make firmware)" >&2; exit 2; }
if [ -z "$ARCH" ]; then
  case $IMAGE in *aarch64*) ARCH=aarch64 ;; *) ARCH=x86_64 ;; esac
fi
VARS=${VARS:-$IMAGE.vars}
case $ARCH in
  x86_64)
    CODE=/usr/share/OVMF/OVMF_CODE_4M.fd TEMPLATE=/usr/share/OVMF/OVMF_VARS_4M.fd
    Q=(qemu-system-x86_64 -machine q35 -cpu max)
    if [ $SB = 1 ]; then
      CODE=/usr/share/OVMF/OVMF_CODE_4M.secboot.fd
      Q=(qemu-system-x86_64 -machine q35,smm=on -cpu max
         -global driver=cfi.pflash01,property=secure,value=on)
    fi ;;
  aarch64)
    CODE=/usr/share/AAVMF/AAVMF_CODE.fd TEMPLATE=/usr/share/AAVMF/AAVMF_VARS.fd
    Q=(qemu-system-aarch64 -machine virt -cpu cortex-a57) ;;
  *) echo "firmware/qemu.sh: --arch must be x86_64 or aarch64, not '$ARCH'" >&2; exit 2 ;;
esac
if [ $SB = 1 ]; then
  TEMPLATE=${IMAGE%.img}.secboot-vars.fd
  [ -f "$TEMPLATE" ] || { echo "firmware/qemu.sh: no $TEMPLATE: make firmware writes it beside the image" >&2; exit 2; }
fi
[ -f "$VARS" ] || cp "$TEMPLATE" "$VARS"
Q+=(-m "$MEM" -smp 1 -nographic -monitor none
    -drive "if=pflash,format=raw,unit=0,readonly=on,file=$CODE"
    -drive "if=pflash,format=raw,unit=1,file=$VARS"
    # cache=none: the guest's flushes reach the disk (docs/firmware.md, "Durability")
    -drive "file=$IMAGE,if=none,id=disk,format=raw,cache=none" -device virtio-blk-pci,drive=disk
    -netdev "user,id=net,hostfwd=tcp:127.0.0.1:$PORT-:8000" -device virtio-net-pci,netdev=net)
if [ -n "$SEED" ]; then
  Q+=(-drive "file=$SEED,if=none,id=seed,format=raw,readonly=on" -device virtio-blk-pci,drive=seed)
fi
if [ -n "$SERIAL" ]; then Q+=(-serial "file:$SERIAL"); else Q+=(-serial mon:stdio); fi
if [ $PRINT = 1 ]; then printf '%q ' "${Q[@]}"; echo; exit 0; fi
exec "${Q[@]}" </dev/null
