"""An update end to end: signed bundles, a real central's rollout, a supervised device.

Nothing here is a stand-in: keys and bundles are made by the ``edge-min update`` commands,
central is a real ``CentralServer`` on loopback, the device is ``edge-min update supervise``
starting real runtimes from its A/B slots; the runtime's rollout follower downloads the
bundle, ``install_bundle`` verifies it against the pinned root and installs it, the
supervisor starts the new slot on trial, and the runtime commits it after its health held.
A version whose health fails is tried 3 times, the device goes back, and the rollout halts.

The payloads are tiny from-source packages (a tar with ``edge-min`` and ``SHA256SUMS``)
whose ``edge-min`` runs this repository's code (``tests/integration/update_device.py``).
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_min.central.server import CentralServer
from edge_min.central.store import open_central_store
from tests.integration.central.conftest import Client
from tests.integration.update_device import (
    MONITORING,
    REPO,
    Device,
    bad_health_payload,
    env,
    payload,
    stop,
    wait_for,
)

pytestmark = pytest.mark.slow

DEVICE_CONFIG = """\
runtime:
  offline_mode: never
sync:
  central_url: {url}
  sync_interval: 1
security:
  attestation_enabled: false
api:
  port: 0
update:
  commit_after: 1
  health_timeout: 40
includes:
  monitoring: edge-monitoring.yaml
"""


def package(script: Path, out: Path) -> Path:
    """A from-source package: the ``edge-min`` launcher and its SHA256SUMS, in a tar."""
    data = script.read_bytes()
    sums = f"{hashlib.sha256(data).hexdigest()}  edge-min\n".encode()
    with tarfile.open(out, "w") as tar:
        for name, body, mode in (("edge-min", data, 0o755), ("SHA256SUMS", sums, 0o644)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(body), mode
            tar.addfile(info, io.BytesIO(body))
    return out


@pytest.fixture
def central(tmp_path: Path) -> Iterator[CentralServer]:
    store = open_central_store(str(tmp_path / "central.db"))
    server = CentralServer(store, "127.0.0.1", 0).start()
    yield server
    server.stop()


def make(dev: Device, central: CentralServer) -> None:
    dev.config.parent.mkdir(parents=True)
    (dev.config.parent / "edge-monitoring.yaml").write_text(MONITORING.format(extra=""))
    dev.config.write_text(DEVICE_CONFIG.format(url=central.url))
    bad = dev.config.parent / "bad"  # bad_health_payload's runtime: a check that fails
    bad.mkdir()
    failing = '  - {name: broken_driver, interval: 1, command: "false", timeout: 1}\n'
    (bad / "edge-monitoring.yaml").write_text(MONITORING.format(extra=failing))
    (bad / "edge-config.yaml").write_text(DEVICE_CONFIG.format(url=central.url))
    # Another config *is* tampering (filesystem_integrity measures the config files): the
    # bad version's runtime must fail its health, not lock the device down for the next.
    (bad / "edge-security.yaml").write_text("tamper_detection:\n  enabled: false\n")


def cli(dev: Device, *args: str) -> subprocess.CompletedProcess[str]:
    """``edge-min`` with the device's config and data (no ``--root``: not a slot command)."""
    argv = [sys.executable, "-m", "edge_min.cli", "--config", str(dev.config)]
    argv += ["--data-dir", str(dev.data), *args]
    return subprocess.run(argv, capture_output=True, text=True, env=env(), cwd=REPO, timeout=120)


def bundle(dev: Device, keys: Path, pkg: Path, version: str) -> Path:
    out = dev.base / f"edge-min-{version}.emub"
    done = cli(dev, "update", "bundle", str(pkg), "--version", version, "--keys", str(keys),
               "-o", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out


def operator(central: CentralServer) -> Client:
    return Client(central.url, None)


def roll(central: CentralServer, bundle_file: Path, version: str, device: str) -> str:
    op = operator(central)
    status, _, raw = op.request(
        "POST", "/api/bundles", bundle_file.read_bytes(), "application/octet-stream"
    )
    assert status == 201, raw
    uploaded = json.loads(raw)
    assert uploaded["version"] == version  # read from the bundle's own header
    body = {
        "version": version,
        "bundle": uploaded["id"],
        "devices": {"ids": [device]},
        "phases": [100],
        "max_failure_percent": 0,
        "min_devices": 1,
    }
    return str(op.json("POST", "/api/rollouts", body)["id"])


def rollout(central: CentralServer, rid: str) -> dict[str, Any]:
    return dict(operator(central).json("GET", f"/api/rollouts/{rid}"))


def test_a_rollout_installs_commits_and_a_bad_version_falls_back_and_halts(
    central: CentralServer, tmp_path: Path
) -> None:
    dev = Device(tmp_path / "device")
    make(dev, central)
    keys = tmp_path / "keys"
    done = cli(dev, "update", "keys", "init", str(keys))
    assert done.returncode == 0, done.stderr
    pinned = cli(dev, "update", "trust", str(keys / "root.json"))
    assert pinned.returncode == 0, pinned.stderr
    pkgs = tmp_path / "pkgs"
    v1 = package(payload(pkgs / "1", "1.0.0"), tmp_path / "v1.tar")
    v2 = package(payload(pkgs / "2", "2.0.0"), tmp_path / "v2.tar")
    v3 = package(bad_health_payload(dev, pkgs / "3", "3.0.0"), tmp_path / "v3.tar")

    # The first version from a USB stick: verified, installed, on trial, committed.
    installed = dev.cli("update", "install", str(bundle(dev, keys, v1, "1.0.0")), check=False)
    assert installed.returncode == 0, installed.stderr
    proc = dev.supervise()
    try:
        first = wait_for(lambda: dev.state()["trying"] is None and dev.state()["active"], 60)
        assert dev.state()["slots"][first]["version"] == "1.0.0"
        trust_state = dev.data / "update" / "trust" / "state.json"
        # Recorded right after the commit (a moment after the state file says so).
        wait_for(lambda: json.loads(trust_state.read_text())["installed"]["version"], 30)
        assert json.loads(trust_state.read_text())["installed"]["version"] == "1.0.0"

        # Central learns the device at its first sync; a rollout of 2.0.0 reaches it.
        devices = wait_for(lambda: operator(central).json("GET", "/api/devices")["devices"], 30)
        node = devices[0]["id"]
        good = roll(central, bundle(dev, keys, v2, "2.0.0"), "2.0.0", node)
        wait_for(lambda: rollout(central, good)["status"] == "completed", 120)
        state = dev.state()
        assert state["slots"][state["active"]]["version"] == "2.0.0"
        assert state["active"] != first  # the other slot; 1.0.0 stays for a rollback
        assert state["slots"][first]["version"] == "1.0.0"
        # The device reports the slot it runs and that slot's version to the inventory.
        listed = wait_for(
            lambda: [
                d
                for d in operator(central).json("GET", "/api/devices")["devices"]
                if d["version"] == "2.0.0"
            ],
            30,
        )
        assert listed[0]["slot"] == state["active"], listed
        assert listed[0]["rollout"]["state"] == "committed", listed

        # 3.0.0 fails its health: tried 3 times, back on 2.0.0, and the rollout halts.
        bad = roll(central, bundle(dev, keys, v3, "3.0.0"), "3.0.0", node)
        halted = wait_for(
            lambda: (r := rollout(central, bad))["status"] == "halted" and r, 240, every=0.5
        )
        (entry,) = halted["device_states"]
        assert entry["state"] == "rolled_back", entry
        assert "health failed" in (entry["reason"] or ""), entry
        assert entry["running_version"] == "2.0.0", entry
        state = dev.state()
        assert state["slots"][state["active"]]["version"] == "2.0.0"
        assert state["trying"] is None
    finally:
        stop(proc)
    # After 2.0.0 committed: the old 1.0.0 bundle is a replay of older metadata, and 1.0.0
    # signed anew is older than what is installed. Both refused before any slot is written.
    before = dev.state()
    replay = cli(dev, "update", "install", str(dev.base / "edge-min-1.0.0.emub"), "--root",
                 str(dev.root))  # fmt: skip
    assert replay.returncode != 0 and "a replay of old metadata" in replay.stderr, replay.stderr
    older = cli(dev, "update", "install", str(bundle(dev, keys, v1, "1.0.0")), "--root",
                str(dev.root))  # fmt: skip
    assert older.returncode != 0 and "2.0.0" in older.stderr, older.stderr
    assert dev.state() == before


def test_manage_edge_device_update_rolls_a_bundle_out_through_central(
    central: CentralServer, tmp_path: Path
) -> None:
    """infra/scripts/manage_edge_device.sh update with EDGE_BUNDLE: no SSH, central's rollout."""
    dev = Device(tmp_path / "device")
    make(dev, central)
    keys = tmp_path / "keys"
    assert cli(dev, "update", "keys", "init", str(keys)).returncode == 0
    assert cli(dev, "update", "trust", str(keys / "root.json")).returncode == 0
    pkgs = tmp_path / "pkgs"
    v1 = package(payload(pkgs / "1", "1.0.0"), tmp_path / "v1.tar")
    v2 = package(payload(pkgs / "2", "2.0.0"), tmp_path / "v2.tar")
    v3 = package(bad_health_payload(dev, pkgs / "3", "3.0.0"), tmp_path / "v3.tar")
    first = cli(dev, "update", "install", str(bundle(dev, keys, v1, "1.0.0")), "--root",
                str(dev.root))  # fmt: skip
    assert first.returncode == 0, first.stderr
    proc = dev.supervise()
    try:
        wait_for(lambda: dev.state()["trying"] is None and dev.state()["active"], 60)
        devices = wait_for(lambda: operator(central).json("GET", "/api/devices")["devices"], 30)
        node = devices[0]["id"]

        def manage(bundle_file: Path) -> subprocess.CompletedProcess[str]:
            script = REPO / "infra" / "scripts" / "manage_edge_device.sh"
            environ = {**env(), "CENTRAL_URL": central.url, "EDGE_BUNDLE": str(bundle_file)}
            environ["EDGE_UPDATE_TIMEOUT"] = "240"
            return subprocess.run([str(script), "update", node], capture_output=True,
                                  text=True, env=environ, timeout=300)  # fmt: skip

        good = manage(bundle(dev, keys, v2, "2.0.0"))
        assert good.returncode == 0, good.stdout + good.stderr
        assert f"Device {node} runs 2.0.0 (committed)" in good.stdout
        state = dev.state()
        assert state["slots"][state["active"]]["version"] == "2.0.0"

        bad = manage(bundle(dev, keys, v3, "3.0.0"))
        assert bad.returncode == 1, bad.stdout + bad.stderr
        assert "3.0.0 was NOT applied" in bad.stderr
        assert f"device {node}: rolled_back" in bad.stderr and "it runs 2.0.0" in bad.stderr
        state = dev.state()
        assert state["slots"][state["active"]]["version"] == "2.0.0"
    finally:
        stop(proc)
