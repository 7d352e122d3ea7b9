"""The firmware images booted under QEMU (software emulation): the [firmware] issue's tests.

Each test boots a sparse copy of ``dist/firmware/edge-min-<arch>.img`` (make firmware) with a
seed drive (firmware/make_seed.sh) and talks to the runtime's API through QEMU's port
forward. A power cut is a SIGKILL of QEMU. Nothing in the guest is mocked: UEFI firmware,
systemd-boot's boot counting, the kernel, the initramfs, the gateway binary and SQLite on
ext4 are the real ones; central is a real CentralServer on the host (10.0.2.2 in the guest).
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, run_cli
from tests.firmware.conftest import (
    ARCHES,
    EDGE_CONFIG,
    SECURITY,
    booted_copy,
    needs_image,
    record_time,
)
from tests.firmware.guest import Guest, extract_data, partition, read_data
from tests.integration.test_update_e2e import central, roll, rollout  # noqa: F401

pytestmark = [pytest.mark.firmware, pytest.mark.slow]

WORKFLOW = {"name": "w", "version": "1", "steps": [{"id": "s1", "agent": "noop"}]}
CUTS = int(os.environ.get("EDGE_MIN_FIRMWARE_CUTS", "20"))
X86 = needs_image("x86_64")


def _kernel_share(console: str) -> float | None:
    """The guest's uptime when the initramfs started: the kernel's own boot time."""
    for line in console.splitlines():
        if "initramfs start" in line and "edge-init[" in line:
            return float(line.split("edge-init[", 1)[1].split("]", 1)[0])
    return None


@pytest.mark.parametrize("arch", [pytest.param(a, marks=needs_image(a)) for a in ARCHES])
def test_the_image_boots_provisions_from_its_seed_and_serves_health(
    tmp_path: Path, arch: str
) -> None:
    guest = booted_copy(tmp_path, arch, {"edge-config.yaml": EDGE_CONFIG,
                                         "edge-security.yaml": SECURITY})  # fmt: skip
    try:
        guest.start()
        first = guest.wait_healthy(timeout=900 if arch == "aarch64" else 300)
        record_time("power on to healthy /health, first boot", arch, first)
        kernel = _kernel_share(guest.console())
        if kernel is not None:
            record_time("kernel start to initramfs (guest uptime)", arch, kernel)
        console = guest.console()
        assert "seed " in console and " applied from /run/seed" in console, console[-3000:]
        if guest.secure_boot:  # booted with our keys enrolled: the stub says so
            assert "UEFI Secure Boot is enabled" in console, console[-3000:]
        st = guest.status()
        assert st["update"]["supervised"] is True and st["update"]["slot"] == "a", st["update"]
        assert st["update"]["trial"] is False
        # the seed's config is the one running: offline_mode always
        # a second boot: the unpacked runtime is not kept (tmpfs), the seed is not re-applied
        guest.cut()
        guest.start()
        second = guest.wait_healthy(timeout=900 if arch == "aarch64" else 300)
        record_time("power on to healthy /health, later boot", arch, second)
        assert "already applied" not in guest.console()  # quiet: nothing to do
        assert " applied from " not in guest.console()
        _, metrics = guest.request("GET", "/metrics?format=json")
        if isinstance(metrics, dict):
            (ROOT / ".cache" / "firmware").mkdir(parents=True, exist_ok=True)
            (ROOT / ".cache" / "firmware" / f"metrics-{arch}.json").write_text(json.dumps(metrics))
    finally:
        guest.stop()


def _submitter(guest: Guest, committed: list[str], stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            status, body = guest.request("POST", "/workflows/w/run", {"n": 1}, timeout=5)
        except (OSError, ValueError):
            continue
        if status == 202 and isinstance(body, dict):
            committed.append(str(body["execution_id"]))


@X86
def test_power_cuts_while_workflows_run_lose_nothing_the_api_committed(
    device: Guest, tmp_path: Path
) -> None:
    rng = random.Random(int(os.environ.get("EDGE_MIN_FIRMWARE_SEED", "20261203")))
    device.start()
    device.wait_healthy()
    status, body = device.request("POST", "/workflows", WORKFLOW)
    assert status == 201, body
    committed: list[str] = []
    boots = []
    for _cut in range(CUTS):
        stop = threading.Event()
        worker = threading.Thread(target=_submitter, args=(device, committed, stop))
        worker.start()
        time.sleep(rng.uniform(0.2, 4.0))
        device.cut()  # mid-request: whatever was not answered 202 was never promised
        stop.set()
        worker.join()
        device.start()
        boots.append(device.wait_healthy())
    record_time(f"power on to healthy /health after a cut (mean of {CUTS})", "x86_64",
                sum(boots) / len(boots))  # fmt: skip
    assert len(committed) > CUTS, f"only {len(committed)} runs were accepted in {CUTS} rounds"
    print(f"[firmware] {len(committed)} runs accepted (202) across {CUTS} power cuts")
    missing = []
    for run_id in committed:
        status, view = device.request("GET", f"/executions/{run_id}")
        if status != 200:
            missing.append((run_id, status, view))
    assert not missing, f"{len(missing)} of {len(committed)} committed runs lost: {missing[:3]}"
    # every run finishes on the device after the cuts (the engine resumes the cut ones)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        _, running = device.request("GET", "/executions?status=running&limit=1000")
        _, pending = device.request("GET", "/executions?status=pending&limit=1000")
        if not running and not pending:
            break
        time.sleep(1)
    assert not running and not pending, (running, pending)
    # and the database on the data partition is whole: a last cut, read off the disk
    device.cut()
    part = extract_data(device.image, tmp_path / "data.ext4")
    db_dir = tmp_path / "db"
    db_dir.mkdir()
    for suffix in ("", "-wal"):
        data = read_data(part, f"/edge/meta-agent-edge.db{suffix}")
        if data is not None:
            (db_dir / f"meta-agent-edge.db{suffix}").write_bytes(data)
    conn = sqlite3.connect(db_dir / "meta-agent-edge.db")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        ids = {r[0] for r in conn.execute("SELECT id FROM workflow_executions")}
    finally:
        conn.close()
    assert set(committed) <= ids
    device.start()
    device.wait_healthy()


@X86
def test_quick_power_cycles_of_a_healthy_image_never_flip_slots(device: Guest) -> None:
    rng = random.Random(7)
    device.start()
    device.wait_healthy()
    for _ in range(10):
        device.cut()
        device.start()
        time.sleep(rng.uniform(1.0, 30.0))  # in the firmware, loader, kernel, init or runtime
    device.cut()
    device.start()
    device.wait_healthy()
    st = device.status()["update"]
    assert (st["slot"], st["active"], st["trial"]) == ("a", "a", False), st
    assert "FALLBACK" not in device.consoles()


BAD_CONFIG = "runtime:\n  max_concurrent_workflows: lots\n"


@X86
def test_a_bad_seed_is_refused_on_the_console_and_the_disk_and_the_api_answers(
    tmp_path: Path,
) -> None:
    guest = booted_copy(tmp_path, "x86_64", {"edge-config.yaml": BAD_CONFIG})
    try:
        guest.start()
        guest.wait_console("SEED REFUSED", timeout=300)
        assert "runtime.max_concurrent_workflows: expected an integer, got string 'lots'" in (
            guest.console()
        )
        guest.wait_healthy()  # on the built-in defaults: reachable for a fix
        guest.cut()
        part = extract_data(guest.image, tmp_path / "data.ext4")
        error = read_data(part, "/logs/seed-error.txt")
        assert error is not None and b"max_concurrent_workflows" in error, error
        record = json.loads(read_data(part, "/provision.json") or b"{}")
        assert record["state"] == "refused", record
    finally:
        guest.stop()


# -- A/B updates through a real central's rollout ---------------------------------------------

DEVICE_CONFIG = """\
runtime:
  offline_mode: never
sync:
  central_url: http://10.0.2.2:{port}
  sync_interval: 2
security:
  attestation_enabled: false
update:
  commit_after: 5
  health_timeout: 120
"""


def _rootfs(tmp: Path, version: str, *, broken: bool = False) -> Path:
    """A slot image of another version (firmware/build.sh rootfs), for a bundle."""
    out = tmp / f"rootfs-{version}.img"
    env = {**os.environ, "VERSION": version, "BROKEN_RUNTIME": "1" if broken else "0"}
    binary = ROOT / "dist" / "edge-min-linux-x86_64"
    argv = ["bash", str(ROOT / "firmware" / "build.sh"), "rootfs", "x86_64", str(binary), str(out)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return out


def _bundle(tmp: Path, keys: Path, rootfs: Path, version: str) -> Path:
    out = tmp / f"edge-min-{version}.emub"
    done = run_cli("update", "bundle", str(rootfs), "--version", version, "--keys", str(keys),
                   "--arch", "x86_64", "-o", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out


def _wait(what: Any, timeout: float, guest: Guest, every: float = 2.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got = what()
        except (OSError, ValueError, KeyError, AssertionError):
            got = None
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s\n{guest.consoles()}")


@X86
def test_an_update_installs_into_the_other_partition_commits_and_a_broken_one_falls_back(
    tmp_path: Path,
    central: Any,  # noqa: F811 - the fixture of test_update_e2e
) -> None:
    keys = tmp_path / "keys"
    done = run_cli("update", "keys", "init", str(keys))
    assert done.returncode == 0, done.stderr
    port = central.address[1]
    guest = booted_copy(tmp_path, "x86_64", {
        "edge-config.yaml": DEVICE_CONFIG.format(port=port), "edge-security.yaml": SECURITY,
        "update-root.json": (keys / "root.json").read_bytes()},
        allow_insecure_http=True)  # central is plain http on the host: 10.0.2.2  # fmt: skip
    good = _bundle(tmp_path, keys, _rootfs(tmp_path, "0.2.0"), "0.2.0")
    broken = _bundle(tmp_path, keys, _rootfs(tmp_path, "0.3.0", broken=True), "0.3.0")
    try:
        guest.start()
        guest.wait_healthy()
        from tests.integration.central.conftest import Client

        op = Client(central.url, None)
        devices = _wait(lambda: op.json("GET", "/api/devices")["devices"], 120, guest)
        node = devices[0]["id"]
        rid = roll(central, good, "0.2.0", node)
        _wait(lambda: rollout(central, rid)["status"] == "completed", 600, guest)
        st = guest.status()["update"]
        assert (st["slot"], st["version"], st["active"]) == ("b", "0.2.0", "b"), st
        assert "slot b committed: its loader entry is blessed" in guest.consoles()
        # a version whose runtime cannot start: 3 counted boots, then back on slot b
        rid = roll(central, broken, "0.3.0", node)
        report = _wait(lambda: (r := rollout(central, rid))["status"] == "halted" and r, 900,
                       guest)  # fmt: skip
        assert "FALLBACK to slot b" in guest.consoles()
        st = guest.status()["update"]
        assert (st["slot"], st["version"]) == ("b", "0.2.0"), st
        reasons = json.dumps(report)
        assert "failed 3 boots" in reasons and "exited with status 3" in reasons, reasons
    finally:
        guest.stop()


# -- Secure Boot ------------------------------------------------------------------------------


def _esp_file(image: Path, path: str, out: Path) -> None:
    start, _ = partition(image, "esp")
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    subprocess.run(["mcopy", "-o", "-i", f"{image}@@{start}", f"::{path}", str(out)],
                   check=True, env=env)  # fmt: skip


def _esp_put(image: Path, path: str, src: Path) -> None:
    start, _ = partition(image, "esp")
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    subprocess.run(["mcopy", "-o", "-i", f"{image}@@{start}", str(src), f"::{path}"],
                   check=True, env=env)  # fmt: skip


@pytest.mark.parametrize("arch", [pytest.param(a, marks=needs_image(a)) for a in ARCHES])
@pytest.mark.parametrize("how", ["altered", "unsigned"])
def test_secure_boot_refuses_an_altered_or_unsigned_kernel_image(
    tmp_path: Path, how: str, arch: str
) -> None:
    guest = booted_copy(tmp_path, arch, {"edge-config.yaml": EDGE_CONFIG})
    assert guest.secure_boot, "make firmware writes the enrolled variables beside the image"
    uki = tmp_path / "slot-a.efi"
    _esp_file(guest.image, "/EFI/edge/slot-a.efi", uki)
    if how == "altered":  # one byte of the kernel inside the signed image
        data = bytearray(uki.read_bytes())
        data[len(data) // 2] ^= 0x01
        uki.write_bytes(bytes(data))
    else:  # the same image without its signature
        done = subprocess.run(["sbattach", "--remove", str(uki)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    _esp_put(guest.image, "/EFI/edge/slot-a.efi", uki)
    try:
        guest.start()
        guest.wait_console("Access Denied", timeout=240)
        time.sleep(5)
        console = guest.console()
        assert "initramfs start" not in console and guest.health() is None, console[-3000:]
    finally:
        guest.stop()
