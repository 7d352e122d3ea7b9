"""The firmware images under QEMU: size, time from power on to a healthy API, idle memory.

Run ``python bench/bench_firmware.py`` (``make bench-firmware``, after ``make firmware``;
``--no-write`` leaves docs/benchmarks.md alone, ``--arch x86_64`` measures one image,
``--boots N`` sets the later boots per image, default 2, ``--images DIR`` reads the images
from DIR instead of dist/firmware). For each image in dist/firmware/:

- **size**: the image's allocated bytes (it is sparse: what ``bmaptool`` writes) and the slot's
  squashfs, against the gateway binary inside it (the runtime's share);
- **boot**: a sparse copy booted with a seed under ``firmware/qemu.sh`` (software emulation:
  no KVM here), timed from QEMU's start to ``GET /health`` answering ``healthy`` through the
  port forward, first boot (provisioning, factory slots adopted) and later boots; the
  baseline is the same boot's kernel time to the initramfs's ``/init`` (the guest's uptime
  there, printed by the initramfs), so the runtime's share is the difference;
- **memory**: 60 s after the runtime starts, ``firmware boot`` prints the guest's used
  memory (MemTotal - MemAvailable) and the runtime's resident size with its workers.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import Row, machine, row, table, write_section  # noqa: E402

DOC = ROOT / "docs" / "benchmarks.md"
MEMORY = re.compile(r"memory: guest used ([\d.]+) MB of (\d+) MB, runtime ([\d.]+) MB")
MB = 1024 * 1024


def _kernel(console: str) -> float | None:
    m = re.search(r"edge-init\[([\d.]+)\]: initramfs start", console)
    return float(m.group(1)) if m else None


def measure(image: Path, arch: str, boots: int) -> tuple[list[Row], str]:
    from tests.firmware.conftest import EDGE_CONFIG, SECURITY, booted_copy

    built = json.loads(image.with_suffix(".json").read_text())
    rows = [
        row(f"{arch} image: allocated bytes (sparse; what is written) vs the gateway binary in "
            f"it (kernel {built['kernel']}, vmlinuz {built['vmlinuz_bytes'] / MB:.1f} MB, "
            f"initrd {built['initrd_bytes'] / MB:.1f} MB, slot squashfs "
            f"{built['rootfs_bytes'] / MB:.1f} MB)",
            f"{built['image_allocated'] / MB:.1f} MB",
            f"{built['binary_bytes'] / MB:.1f} MB",
            built["binary_bytes"] / built["image_allocated"]),
    ]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-firmware-") as tmp:
        guest = booted_copy(Path(tmp), arch, {"edge-config.yaml": EDGE_CONFIG,
                                              "edge-security.yaml": SECURITY}, image)  # fmt: skip
        timeout = 900 if arch == "aarch64" else 300
        times, kernels, memory = [], [], None
        try:
            for n in range(1 + boots):
                guest.start()
                times.append(guest.wait_healthy(timeout=timeout))
                kernels.append(_kernel(guest.console()) or float("nan"))
                if n == 0:
                    guest.wait_console("memory: guest used", timeout=timeout)
                    memory = MEMORY.search(guest.console())
                guest.cut()
        finally:
            guest.stop()
    later = times[1:] or times
    rows.append(row(
        f"{arch}: QEMU start to healthy /health, first boot (seed applied) vs the kernel's "
        "time to /init in the same boot (guest uptime)",
        f"{times[0]:.1f} s", f"{kernels[0]:.1f} s", times[0] / kernels[0]))  # fmt: skip
    rows.append(row(
        f"{arch}: QEMU start to healthy /health, later boots (median of {len(later)}) vs the "
        "kernel's time to /init",
        f"{statistics.median(later):.1f} s", f"{statistics.median(kernels[1:] or kernels):.1f} s",
        statistics.median(later) / statistics.median(kernels[1:] or kernels)))  # fmt: skip
    if memory is not None:
        used, total, runtime = (float(g) for g in memory.groups())
        rows.append(row(f"{arch}: idle memory, the whole guest (used of {total:.0f} MB) vs the "
                        "runtime with its workers (RSS)",
                        f"{used:.1f} MB", f"{runtime:.1f} MB", used / runtime))  # fmt: skip
    return rows, f"{arch}: boots {', '.join(f'{t:.1f}' for t in times)} s"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    arches = ["x86_64", "aarch64"]
    if "--arch" in args:
        arches = [args[args.index("--arch") + 1]]
    boots = int(args[args.index("--boots") + 1]) if "--boots" in args else 2
    images = Path(args[args.index("--images") + 1]) if "--images" in args else None
    images = images or ROOT / "dist" / "firmware"
    missing = [images / f"edge-min-{a}.img" for a in arches]
    missing = [m for m in missing if not m.is_file()]
    if missing:
        print(f"no {missing[0]}: make firmware first", file=sys.stderr)
        return 2
    rows: list[Row] = []
    notes = []
    for arch in arches:
        started = time.monotonic()
        got, note = measure(images / f"edge-min-{arch}.img", arch, boots)
        rows += got
        notes.append(f"{note} ({time.monotonic() - started:.0f} s in all)")
    m = machine()
    where = f"{m['date']}; {m['processor']}, {m['cpus']} CPUs, {m['os']}, load {m['load']}"
    text = table(rows) + "\n\n" + "\n".join(f"- {n}" for n in notes)
    print(where)
    print(text)
    if "--no-write" not in args:
        write_section(
            DOC,
            "firmware",
            "## Firmware images (`make bench-firmware`)\n\n"
            "The images of `make firmware` booted under QEMU's software emulation (TCG: no KVM "
            "on this machine, so every time here is many times a real board's); see "
            "`bench/bench_firmware.py` for what each row measures. The ratio of a boot row is "
            "the whole boot over the kernel's part of it.\n\n"
            f"Measured {where}.\n\n" + text,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
