"""A fleet of 20 supervised devices on the real A/B install path, following one central.

``test_rollout_fleet`` runs 20 runtimes with a test installer; here every device is a real
``edge-min update supervise`` (its own data directory, install root and configs) starting
real runtimes from its A/B slots, its first version installed from a signed bundle with
``edge-min update install``. One central (``python -m edge_min.central serve``) on loopback
rolls out a good version through phases [10, 50, 100] to all 20: each runtime's follower
downloads the bundle, ``install_bundle`` verifies and installs it, the supervisor starts the
new slot on trial, the runtime commits it after its health held. Then a version whose
health fails: the two devices of its first phase try it 3 times each, go back to the good
version and report ``rolled_back``; the rollout halts in phase 1, and no other device ever
installs it.

The payloads are those of ``test_update_e2e`` (``update_device.payload``), one bundle for
the whole fleet: so the bad version finds its failing config next to the config the
supervisor gives it (``<conf>/bad/edge-config.yaml``), not at a path of one device.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port
from tests.integration.central.conftest import Client, wait_health
from tests.integration.test_update_e2e import package
from tests.integration.update_device import REPO, Device, env, payload, stop

pytestmark = pytest.mark.slow

DEVICES = 20
PHASES = [10, 50, 100]  # 2, then 8 more, then the last 10

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
  health_timeout: 60
includes:
  monitoring: edge-monitoring.yaml
"""

# Light: metrics seldom; the database check every second (what the commit waits on).
MONITORING = """\
metrics:
  collection_interval: 30
health_checks:
  - name: database_check
    interval: 1
    command: "builtin:database"
    timeout: 1
{extra}alerts: []
"""

FAILING = '  - {name: broken_driver, interval: 1, command: "false", timeout: 1}\n'


def make(dev: Device, url: str) -> None:
    """A device's configs: its own, and the failing ones the bad version runs with."""
    conf = dev.config.parent
    conf.mkdir(parents=True)
    (conf / "edge-monitoring.yaml").write_text(MONITORING.format(extra=""))
    dev.config.write_text(DEVICE_CONFIG.format(url=url))
    bad = conf / "bad"
    bad.mkdir()
    (bad / "edge-monitoring.yaml").write_text(MONITORING.format(extra=FAILING))
    (bad / "edge-config.yaml").write_text(DEVICE_CONFIG.format(url=url))
    # Another config *is* tampering (filesystem_integrity measures the config files): the
    # bad version's runtime must fail its health, not lock the device down.
    (bad / "edge-security.yaml").write_text("tamper_detection:\n  enabled: false\n")


def fleet_bad_payload(dir: Path, version: str) -> Path:
    """A payload whose runtime fails its health: it runs with ``<its --config dir>/bad``."""
    path = payload(dir, version, "bad_health")
    swap = (
        'if [ "$1" = --config ]; then conf=$(dirname "$2"); shift 2; else conf=.; fi\n'
        'set -- --config "$conf/bad/edge-config.yaml" "$@"\n'
    )
    text = path.read_text()
    start = text.index('[ "$1" = --config ]')
    end = text.index("PYTHONPATH=")
    path.write_text(text[:start] + swap + text[end:])
    return path


def cli(dev: Device, *args: str) -> subprocess.CompletedProcess[str]:
    """``edge-min`` with the device's config and data (``--root`` added for slot commands)."""
    argv = [sys.executable, "-m", "edge_min.cli", "--config", str(dev.config)]
    argv += ["--data-dir", str(dev.data), *args]
    if args[:2] == ("update", "install"):
        argv += ["--root", str(dev.root)]
    done = subprocess.run(argv, capture_output=True, text=True, env=env(), cwd=REPO, timeout=180)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done


def prepare(dev: Device, keys: Path, first: Path) -> str:
    """Pin the root, install the first version from its bundle; the device's node id."""
    cli(dev, "update", "trust", str(keys / "root.json"))
    cli(dev, "update", "install", str(first))
    return str(json.loads(cli(dev, "sync", "status").stdout)["node"])


def upload(op: Client, bundle: Path, version: str) -> str:
    data = bundle.read_bytes()
    status, _, raw = op.request("POST", "/api/bundles", data, "application/octet-stream")
    assert status == 201, raw
    uploaded = json.loads(raw)
    assert uploaded["version"] == version
    return str(uploaded["id"])


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def running(dev: Device) -> tuple[str, bool]:
    """The active slot's version, and whether nothing is on trial (from the state file)."""
    st = dev.state()
    if st["active"] is None:  # the first version still on trial
        return "", False
    return str(st["slots"][st["active"]]["version"]), st["trying"] is None


def versions(dev: Device) -> set[str]:
    """The versions in the device's slots."""
    return {str(s["version"]) for s in dev.state()["slots"].values() if s}


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[Any]]]:
    """Every process the test starts (each its own group); all killed at the end."""
    started: list[subprocess.Popen[Any]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            stop(proc, signal.SIGKILL)
        else:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # a supervisor gone leaves no child behind


def test_20_supervised_devices_roll_a_good_version_out_and_halt_a_bad_one(
    tmp_path: Path, procs: list[subprocess.Popen[Any]]
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "central.log"
    central = subprocess.Popen(
        [sys.executable, "-m", "edge_min.central", "serve", "--db",
         f"sqlite:///{tmp_path / 'central.db'}", "--port", str(port)],
        stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd=REPO,
        env={**env(), "PYTHONUNBUFFERED": "1"}, start_new_session=True,
    )  # fmt: skip
    procs.append(central)
    wait_health(url, central, log)
    op = Client(url, None)

    devices = [Device(tmp_path / f"device-{i:02d}") for i in range(DEVICES)]
    for dev in devices:
        make(dev, url)
    keys = tmp_path / "keys"
    cli(devices[0], "update", "keys", "init", str(keys))
    pkgs = tmp_path / "pkgs"
    made = {}
    for version, script in (
        ("1.0.0", payload(pkgs / "1", "1.0.0")),
        ("2.0.0", payload(pkgs / "2", "2.0.0")),
        ("3.0.0", fleet_bad_payload(pkgs / "3", "3.0.0")),
    ):
        tar = package(script, tmp_path / f"v{version}.tar")
        out = tmp_path / f"edge-min-{version}.emub"
        cli(devices[0], "update", "bundle", str(tar), "--version", version, "--keys",
            str(keys), "-o", str(out))  # fmt: skip
        made[version] = out

    with ThreadPoolExecutor(4) as pool:
        nodes = list(pool.map(lambda d: prepare(d, keys, made["1.0.0"]), devices))
    by_node = dict(zip(nodes, devices, strict=True))
    assert len(by_node) == DEVICES

    for dev in devices:
        procs.append(dev.supervise())
    wait_for(
        "every device on 1.0.0, committed",
        lambda: all(running(d) == ("1.0.0", True) for d in devices),
        120,
    )
    wait_for(
        "every device to register with central",
        lambda: all(op.request("GET", f"/api/devices/{n}")[0] == 200 for n in nodes),
        60,
    )

    def finished(rid: str) -> Callable[[], dict[str, Any] | None]:
        def check() -> dict[str, Any] | None:
            doc: dict[str, Any] = op.json("GET", f"/api/rollouts/{rid}")
            return doc if doc["status"] in ("completed", "halted") else None

        return check

    # The good version: through 10%, 50%, 100%, each device installing into its other slot.
    good = op.json(
        "POST",
        "/api/rollouts",
        {
            "version": "2.0.0",
            "bundle": upload(op, made["2.0.0"], "2.0.0"),
            "devices": {"ids": nodes},
            "phases": PHASES,
            "max_failure_percent": 0,
            "min_devices": 1,
        },
    )
    assert [p["devices"] for p in good["progress"]] == [2, 8, 10]
    doc = wait_for("the good rollout", finished(good["id"]), 180)
    assert doc["status"] == "completed", doc
    assert {d["state"] for d in doc["device_states"]} == {"committed"}, doc
    assert {d["running_version"] for d in doc["device_states"]} == {"2.0.0"}
    for dev in devices:
        assert running(dev) == ("2.0.0", True), dev.state()
        assert versions(dev) == {"1.0.0", "2.0.0"}  # the old one kept for a rollback

    # The bad version: its first phase's 2 devices try it, fall back, and it halts there.
    # min_devices 2 (the whole first phase): the halt waits for both, so both have tried.
    bad = op.json(
        "POST",
        "/api/rollouts",
        {
            "version": "3.0.0",
            "bundle": upload(op, made["3.0.0"], "3.0.0"),
            "devices": {"ids": nodes},
            "phases": PHASES,
            "max_failure_percent": 0,
            "min_devices": 2,
        },
    )
    doc = wait_for("the bad rollout to halt", finished(bad["id"]), 240)
    assert doc["status"] == "halted" and doc["phase"] == 1, doc
    first = [d for d in doc["device_states"] if d["phase"] == 1]
    assert len(first) == 2
    for d in first:
        assert d["state"] == "rolled_back", d
        assert "health failed" in (d["reason"] or ""), d
        assert d["running_version"] == "2.0.0", d
        dev = by_node[d["id"]]
        assert running(dev) == ("2.0.0", True), dev.state()
        assert "3.0.0" in versions(dev)  # it was installed and tried, then left
    rest = [d for d in doc["device_states"] if d["phase"] > 1]
    assert len(rest) == 18 and {d["state"] for d in rest} == {"pending"}, rest
    time.sleep(3)  # a few more turns of every device: nothing moves
    again = op.json("GET", f"/api/rollouts/{bad['id']}")
    assert again["device_states"] == doc["device_states"]
    for d in rest:
        dev = by_node[d["id"]]
        assert running(dev) == ("2.0.0", True), dev.state()
        assert versions(dev) == {"1.0.0", "2.0.0"}  # never installed 3.0.0
