"""Devices following central's rollouts: one follower against a real central, then a fleet.

The device side is ``edge_min.update.follow``; the installer here is a small real one of the
test's own (``TestInstaller``): it keeps the bundle as its "slot", records the version it
runs in a file, and for a version named ``bad...`` does what the A/B supervisor does when
the new version's health fails: stays on the old version and keeps the reason for central.

The fleet (``@pytest.mark.slow``): 20 real runtimes (this file run as a program: storage,
sync and the follower, no threads), each its own data directory, against one real central
process on loopback. A good version rolls out through its phases to all; a bad one halts
within its first phase, and every device of that phase reports back on the old version.
The same fleet on the real A/B install path (signed bundles, supervisors, slots) is
``test_rollout_fleet_slots.py``; this one isolates the follower and central's rollouts.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_min.central.server import CentralServer
from edge_min.central.store import open_central_store
from edge_min.clock import SystemClock
from edge_min.sync.transport import HttpTransport
from edge_min.update.follow import DOWNLOADS, Follower
from tests.conftest import free_port
from tests.integration.central.conftest import Client, start_process, wait_health

ROOT = Path(__file__).resolve().parents[2]
OLD = "1.0"


def make_bundle(version: str, size: int = 200_000) -> bytes:
    """A test bundle: a header naming the version, then payload bytes."""
    payload = hashlib.sha256(version.encode()).digest() * (size // 32)
    return f"TEST-BUNDLE version={version}\n".encode() + payload


class TestInstaller:
    """Installs a test bundle into <data>/test-slot and records the version it runs."""

    __test__ = False  # not a test class

    def __init__(self, root: Path) -> None:
        self.root = root
        self.version_file = root / "test-version"
        self.report_file = root / "test-fallback.json"

    def install(self, bundle: Path) -> None:
        data = bundle.read_bytes()
        head, _, _ = data.partition(b"\n")
        if not head.startswith(b"TEST-BUNDLE version="):
            raise ValueError(f"{bundle.name} is not a test bundle")
        version = head.split(b"=", 1)[1].decode()
        (self.root / "test-slot").write_bytes(data)
        if version.startswith("bad"):
            # What the supervisor does after 3 failed starts: back on the old version, and why.
            was = self.committed_version()
            reason = f"version {version} failed its health check 3 times; back on {was}"
            self.report_file.write_text(json.dumps({"state": "rolled_back", "reason": reason}))
            return
        self.version_file.write_text(version)

    def committed_version(self) -> str:
        try:
            return self.version_file.read_text()
        except FileNotFoundError:
            return OLD

    def pending_report(self) -> Any:
        try:
            return json.loads(self.report_file.read_text())
        except FileNotFoundError:
            return None


# --- one follower, in this process, against a real central --------------------------------


@pytest.fixture
def central(tmp_path: Path) -> Iterator[CentralServer]:
    server = CentralServer(open_central_store(str(tmp_path / "central.db")), "127.0.0.1", 0).start()
    yield server
    server.stop()


def follower_at(root: Path, url: str, node: str, installer: TestInstaller) -> Follower:
    transport = HttpTransport(url, node=node)
    follower = Follower(
        root,
        lambda: transport,
        SystemClock(),
        install=installer.install,
        committed_version=installer.committed_version,
        pending_report=installer.pending_report,
    )
    follower.transport = transport  # type: ignore[attr-defined]  # for the byte counts
    return follower


def rollout(url: str, bundle: bytes, version: str, **fields: Any) -> dict[str, Any]:
    op = Client(url, None)
    status, _, raw = op.request(
        "POST", f"/api/bundles?version={version}", bundle, "application/octet-stream"
    )
    assert status == 201, raw
    body = {"version": version, "bundle": json.loads(raw)["id"], "devices": "all", **fields}
    return dict(op.json("POST", "/api/rollouts", body))


def test_a_partial_download_resumes_after_a_restart(central: CentralServer, tmp_path: Path) -> None:
    root = tmp_path / "dev"
    installer = TestInstaller(root.parent / "dev-slot")
    installer.root.mkdir()
    Client(central.url, "dev-1").request("GET", "/api/updates/assigned")  # registers it
    bundle = make_bundle("2.0", size=3 * 1024 * 1024)
    doc = rollout(central.url, bundle, "2.0")
    # A first follower got as far as 2.5 MB before the process died: its .part file stays.
    first = follower_at(root, central.url, "dev-1", installer)
    first.stopping = True  # stops after its first range, as a kill between ranges would
    first.follow_once()
    part = root / DOWNLOADS / f"{doc['id']}-{hashlib.sha256(bundle).hexdigest()[:16]}.part"
    assert part.stat().st_size == 1024 * 1024
    with part.open("ab") as f:
        f.write(bundle[1024 * 1024 : 2_500_000])
    # A new process (a new follower on the same data directory) goes on from there.
    again = follower_at(root, central.url, "dev-1", installer)
    assert again.status()["current"]["state"] == "downloading"
    again.follow_once()
    received = again.transport.stats.bytes_received  # type: ignore[attr-defined]
    assert received < len(bundle) - 2_000_000  # only the rest came over the link
    assert installer.committed_version() == "2.0"
    assert (installer.root / "test-slot").read_bytes() == bundle
    assert not part.exists() and not list((root / DOWNLOADS).iterdir())
    states = Client(central.url, None).json("GET", f"/api/rollouts/{doc['id']}")
    assert states["status"] == "completed"
    assert states["device_states"][0]["state"] == "committed"
    assert states["device_states"][0]["running_version"] == "2.0"


def test_a_failed_install_a_fallback_and_a_halt_are_reported(
    central: CentralServer, tmp_path: Path
) -> None:
    nodes = ["dev-a", "dev-b", "dev-c"]
    for node in nodes:
        Client(central.url, node).request("GET", "/api/updates/assigned")
    installers = {n: TestInstaller(tmp_path / f"{n}-slot") for n in nodes}
    for inst in installers.values():
        inst.root.mkdir()
    followers = {n: follower_at(tmp_path / n, central.url, n, installers[n]) for n in nodes}
    # Not a bundle the installer takes: failed, with the installer's message.
    doc = rollout(central.url, b"garbage" * 1000, "2.0", devices={"ids": ["dev-a"]})
    followers["dev-a"].follow_once()
    got = Client(central.url, None).json("GET", f"/api/rollouts/{doc['id']}")
    assert got["device_states"][0]["state"] == "failed"
    assert "is not a test bundle" in got["device_states"][0]["reason"]
    assert got["status"] == "halted"
    followers["dev-a"].follow_once()  # failed here: not tried again
    assert installers["dev-a"].committed_version() == OLD
    # A bad version: installed, then the fallback's reason, reported once.
    doc = rollout(central.url, make_bundle("bad-2.1"), "bad-2.1", devices={"ids": ["dev-b"]})
    followers["dev-b"].follow_once()
    got = Client(central.url, None).json("GET", f"/api/rollouts/{doc['id']}")
    [dev_b] = got["device_states"]
    assert dev_b["state"] == "rolled_back" and dev_b["running_version"] == OLD
    assert "failed its health check 3 times" in dev_b["reason"]
    followers["dev-b"].follow_once()
    assert followers["dev-b"].status()["unreported"] == 0
    # A rollout halted while a device is mid-download: the download is dropped.
    big = make_bundle("2.2", size=3 * 1024 * 1024)
    doc = rollout(central.url, big, "2.2", devices={"ids": ["dev-c"]})
    followers["dev-c"].stopping = True
    followers["dev-c"].follow_once()
    assert list((tmp_path / "dev-c" / DOWNLOADS).iterdir())
    Client(central.url, None).json("POST", f"/api/rollouts/{doc['id']}/cancel")
    followers["dev-c"].stopping = False
    followers["dev-c"].follow_once()
    assert not list((tmp_path / "dev-c" / DOWNLOADS).iterdir())
    assert followers["dev-c"].status()["current"] is None
    assert installers["dev-c"].committed_version() == OLD


def test_reports_wait_out_a_dead_link(central: CentralServer, tmp_path: Path) -> None:
    Client(central.url, "dev-1").request("GET", "/api/updates/assigned")
    installer = TestInstaller(tmp_path / "slot")
    installer.root.mkdir()
    doc = rollout(central.url, make_bundle("2.0"), "2.0")
    dead = follower_at(tmp_path / "dev", f"http://127.0.0.1:{free_port()}", "dev-1", installer)
    dead.state["current"] = {  # as if assigned, downloaded and installed before the link died
        "rollout": doc["id"],
        "version": "2.0",
        "bundle_url": "-",
        "sha256": "0" * 64,
        "length": 1,
        "state": "installing",
    }
    installer.version_file.write_text("2.0")  # and the new version committed
    dead.follow_once()
    # Nothing could be sent: the commit report waits in follow.json...
    assert dead.status()["unreported"] == 1 and "refused" in dead.status()["last"]["error"]
    # ...and goes out once central answers again.
    live = follower_at(tmp_path / "dev", central.url, "dev-1", installer)
    assert live.status()["unreported"] == 1
    live.follow_once()
    assert live.status()["unreported"] == 0
    got = Client(central.url, None).json("GET", f"/api/rollouts/{doc['id']}")
    assert got["device_states"][0]["state"] == "committed"


# --- the fleet ----------------------------------------------------------------------------


def device_main(data: str, url: str, bandwidth: float = 0.0) -> int:
    """One device: storage, sync and the follower with the test installer, until SIGTERM;
    ``bandwidth`` (bytes/s) paces its link to central (0: as fast as loopback goes)."""
    import logging

    from edge_min.config import parse_config
    from edge_min.runtime import Paths, Runtime
    from edge_min.store.subsystem import Storage
    from edge_min.sync.subsystem import Sync
    from edge_min.update.follow import RolloutFollower

    root = Path(data)
    installer = TestInstaller(root)
    follower = RolloutFollower.using(
        installer.install, installer.committed_version, installer.pending_report
    )
    config = parse_config(
        {
            "runtime": {"offline_mode": "never"},
            "sync": {"central_url": url, "sync_interval": 1},
            "security": {"encryption_enabled": False, "attestation_enabled": False},
        },
        source="fleet-test",
    )
    stop: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: stop.append(signum))

    def transport(config: Any, node: str) -> HttpTransport:
        from edge_min.sync.bandwidth import TokenBucket

        bucket = TokenBucket(bandwidth) if bandwidth else None
        return HttpTransport(config.sync.central_url, node=node, bucket=bucket)

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    runtime = Runtime(
        config,
        Paths.resolve(config, root),
        subsystems=(Storage, Sync, follower),
        transport=transport,
    )
    runtime.open()
    print(json.dumps({"node": runtime.get(follower).node}), flush=True)
    try:
        while not stop:
            time.sleep(min(runtime.tick(), 0.25))
    finally:
        runtime.close()
    return 0


class Fleet:
    """Device processes, each with its data directory, and the central they follow."""

    def __init__(self, tmp: Path, url: str) -> None:
        self.tmp = tmp
        self.url = url
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.roots: dict[str, Path] = {}

    def start(self, n: int) -> None:
        starting = []
        for i in range(n):
            root = self.tmp / f"device-{i:02d}"
            root.mkdir()
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.integration.test_rollout_fleet", str(root), self.url],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=(root / "stderr.log").open("w"),
                text=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            starting.append((proc, root))
        for proc, root in starting:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line, (root / "stderr.log").read_text()
            node = json.loads(line)["node"]
            self.procs[node] = proc
            self.roots[node] = root

    def version_of(self, node: str) -> str:
        return TestInstaller(self.roots[node]).committed_version()

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.kill()  # SIGKILL: a device's power cut; nothing depends on a clean stop
        for proc in self.procs.values():
            proc.wait()


def wait_for(what: str, check: Callable[[], Any], timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_a_fleet_of_20_follows_a_good_rollout_and_halts_a_bad_one(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "central.log"
    proc = start_process(f"sqlite:///{tmp_path / 'central.db'}", port, log)
    fleet = Fleet(tmp_path, f"http://127.0.0.1:{port}")
    try:
        wait_health(fleet.url, proc, log)
        op = Client(fleet.url, None)
        fleet.start(20)

        def registered() -> bool:
            return all(op.request("GET", f"/api/devices/{node}")[0] == 200 for node in fleet.procs)

        wait_for("every device to register", registered)

        # A good version: through 10%, 50%, 100% to every device.
        good = rollout(fleet.url, make_bundle("2.0"), "2.0", phases=[10, 50, 100])
        assert [p["devices"] for p in good["progress"]] == [2, 8, 10]

        def finished(rid: str) -> Callable[[], dict[str, Any] | None]:
            def check() -> dict[str, Any] | None:
                doc: dict[str, Any] = op.json("GET", f"/api/rollouts/{rid}")
                return doc if doc["status"] in ("completed", "halted") else None

            return check

        doc = wait_for("the good rollout", finished(good["id"]))
        assert doc["status"] == "completed", doc
        assert {d["state"] for d in doc["device_states"]} == {"committed"}
        assert {d["running_version"] for d in doc["device_states"]} == {"2.0"}
        assert {fleet.version_of(n) for n in fleet.procs} == {"2.0"}

        # A bad version: its first phase's devices fall back, and it halts there.
        bad = rollout(
            fleet.url,
            make_bundle("bad-3.0"),
            "bad-3.0",
            phases=[10, 50, 100],
            max_failure_percent=20,
            min_devices=2,
        )
        doc = wait_for("the bad rollout", finished(bad["id"]))
        assert doc["status"] == "halted" and doc["phase"] == 1, doc
        first = [d for d in doc["device_states"] if d["phase"] == 1]
        assert len(first) == 2
        for d in first:
            assert d["state"] == "rolled_back", d
            assert d["running_version"] == "2.0" and "failed its health check" in d["reason"]
            assert fleet.version_of(d["id"]) == "2.0"
        rest = [d for d in doc["device_states"] if d["phase"] > 1]
        assert {d["state"] for d in rest} == {"pending"}  # never assigned
        time.sleep(3)  # a few more turns of every device: nothing moves
        again = op.json("GET", f"/api/rollouts/{bad['id']}")
        assert again["device_states"] == doc["device_states"]
        assert {fleet.version_of(n) for n in fleet.procs} == {"2.0"}
    finally:
        fleet.stop()
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_a_device_killed_mid_download_resumes_where_its_file_ends(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "central.log"
    proc = start_process(f"sqlite:///{tmp_path / 'central.db'}", port, log)
    url = f"http://127.0.0.1:{port}"
    root = tmp_path / "device"
    root.mkdir()

    def device() -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.integration.test_rollout_fleet", str(root), url, "2e6"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=(root / "stderr.log").open("a"),
            text=True,
        )

    dev = device()
    try:
        wait_health(url, proc, log)
        assert dev.stdout is not None
        node = json.loads(dev.stdout.readline())["node"]
        op = Client(url, None)
        wait_for(
            "the device to register", lambda: op.request("GET", f"/api/devices/{node}")[0] == 200
        )
        bundle = make_bundle("2.0", size=6 * 1024 * 1024)
        doc = rollout(url, bundle, "2.0")
        part = root / DOWNLOADS / f"{doc['id']}-{hashlib.sha256(bundle).hexdigest()[:16]}.part"
        wait_for("a part of the download", lambda: part.exists() and part.stat().st_size >= 2 << 20)
        dev.kill()  # SIGKILL mid-download
        dev.wait()
        kept = part.stat().st_size
        assert 0 < kept < len(bundle)
        dev = device()
        wait_for(
            "the rollout",
            lambda: op.json("GET", f"/api/rollouts/{doc['id']}")["status"] == "completed",
        )
        assert (
            f"resuming the download of /api/bundles/{doc['bundle']} at byte {kept} "
            in (root / "stderr.log").read_text()
        )
        assert TestInstaller(root).committed_version() == "2.0"
        assert (root / "test-slot").read_bytes() == bundle
    finally:
        dev.kill()
        dev.wait()
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    sys.exit(
        device_main(sys.argv[1], sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 0.0)
    )
