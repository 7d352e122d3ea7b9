"""Fixtures of the firmware tests: the built images, a copy per test, seeds and tokens."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli
from tests.firmware.guest import Guest, copy_image, have_qemu

IMAGES = Path(os.environ.get("EDGE_MIN_FIRMWARE_DIR", ROOT / "dist" / "firmware"))
ARCHES = [a for a in os.environ.get("EDGE_MIN_FIRMWARE_ARCHES", "x86_64 aarch64").split() if a]
#: Boot times measured by the tests, for docs/benchmarks.md (bench/bench_firmware.py).
TIMES = ROOT / ".cache" / "firmware" / "boot-times.jsonl"


def image_of(arch: str) -> Path:
    return IMAGES / f"edge-min-{arch}.img"


def needs_image(arch: str) -> pytest.MarkDecorator:
    why = have_qemu(arch)
    if why is None and not image_of(arch).is_file():
        why = f"no {image_of(arch)}: make firmware (make test-firmware builds and runs these)"
    return pytest.mark.skipif(why is not None, reason=why or "")


def record_time(what: str, arch: str, seconds: float) -> None:
    TIMES.parent.mkdir(parents=True, exist_ok=True)
    with TIMES.open("a") as f:
        f.write(json.dumps({"what": what, "arch": arch, "seconds": round(seconds, 2)}) + "\n")
    print(f"[firmware] {arch}: {what}: {seconds:.1f}s")


def make_seed(dir: Path, files: dict[str, str | bytes]) -> Path:
    """A seed drive (firmware/make_seed.sh) holding ``files``."""
    dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, body in files.items():
        path = dir / name
        path.write_bytes(body.encode() if isinstance(body, str) else body)
        paths.append(str(path))
    out = dir.with_suffix(".seed.img")
    done = subprocess.run(["bash", str(ROOT / "firmware" / "make_seed.sh"), str(out), *paths],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out


def api_token(tmp: Path) -> tuple[bytes, str]:
    """A token key for the device's seed and an admin token it signs."""
    data = tmp / "token-issuer"
    done = run_cli("--data-dir", str(data), "token", "issue", "--role", "admin", "--ttl", "6h")
    assert done.returncode == 0, done.stderr
    return (data / "keys" / "api-token.key").read_bytes(), done.stdout.strip()


EDGE_CONFIG = """\
runtime:
  offline_mode: always
security:
  attestation_enabled: false
update:
  commit_after: 5
  health_timeout: 180
"""
# No tamper lockdown on a test device whose configs the tests replace between boots.
SECURITY = "tamper_detection:\n  enabled: false\n"


@pytest.fixture
def device(tmp_path: Path) -> Iterator[Guest]:
    """A copy of the x86_64 image with a seed (device id, config, token key), not started."""
    guest = booted_copy(tmp_path, "x86_64", {"edge-config.yaml": EDGE_CONFIG,
                                             "edge-security.yaml": SECURITY})  # fmt: skip
    try:
        yield guest
    finally:
        guest.stop()


def booted_copy(
    tmp: Path,
    arch: str,
    configs: dict[str, str | bytes],
    image: Path | None = None,
    **meta: object,
) -> Guest:
    """A copy of ``arch``'s image (or ``image``) and a seed with ``configs`` (and ``meta``
    in seed.json)."""
    key, token = api_token(tmp)
    seed = make_seed(
        tmp / "seed",
        {"seed.json": json.dumps({"format": 1, "device_id": f"fw-{arch}", **meta}),
         "api-token.key": key, **configs},
    )  # fmt: skip
    source = image or image_of(arch)
    guest = Guest(copy_image(source, tmp / f"edge-min-{arch}.img"), arch, seed=seed)
    guest.token = token
    return guest
