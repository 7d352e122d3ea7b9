"""A/B install with real processes: the supervisor, real runtimes, real payloads.

Each device has 1.0.0 committed in slot a and runs ``edge-min update supervise``; a new
payload is installed with ``edge-min update install-payload`` while it runs. A healthy one is
committed by its own runtime after ``update.commit_after``; one that exits at once or fails
its health checks is tried three times, then the device is back on 1.0.0 with the reason
kept for central. ``update rollback`` goes back by hand; twenty power cuts (SIGKILL of the
supervisor and its runtime together) of a healthy device never change its slot.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.integration.update_device import (
    Device,
    bad_health_payload,
    health,
    make_device,
    payload,
    stop,
    wait_for,
)


@pytest.fixture
def device(tmp_path: Path) -> Device:
    dev = make_device(tmp_path)
    dev.cli("update", "install-payload", str(payload(tmp_path / "p", "1.0.0")), "--version",
            "1.0.0", "--commit")  # fmt: skip
    return dev


def _settled(dev: Device) -> dict[str, Any] | None:
    """The state once no trial is under way and the runtime of the active slot answers."""
    st = dev.state()
    running = _running(dev)
    if not (st["trying"] is None and running and running["slot"] == st["active"]):
        return None
    if st["slots"][running["slot"]]["state"] != "good" or health(dev) is None:
        return None
    return st


def _running(dev: Device) -> dict[str, Any] | None:
    try:
        return dict(json.loads((dev.root / "supervisor.json").read_text()))
    except (OSError, ValueError):
        return None


def _log(dev: Device) -> str:
    return (dev.base / "supervisor.log").read_text()


def test_a_healthy_payload_is_committed_and_the_data_stays(device: Device) -> None:
    sup = device.supervise()
    try:
        wait_for(lambda: _settled(device))
        keys = sorted(p.name for p in (device.data / "keys").iterdir())
        out = device.cli("update", "install-payload", str(payload(device.base / "p", "2.0.0")),
                         "--version", "2.0.0").stdout  # fmt: skip
        assert "slot b, on trial" in out
        st = wait_for(lambda: (s := _settled(device)) and s["active"] == "b" and s)
        assert st["slots"]["b"]["state"] == "good" and st["slots"]["a"]["state"] == "good"
        assert st["report"] is None
        assert _running(device)["slot"] == "b"
        wait_for(lambda: "slot b committed" in _log(device))  # the supervisor saw it too
        assert "started try 1 of slot b" in _log(device)
        # The data directory is the same for both versions: keys and database kept.
        assert sorted(p.name for p in (device.data / "keys").iterdir()) == keys
        view = json.loads(device.cli("update", "status", "--json").stdout)
        assert view["active"] == "b" and view["running"]["slot"] == "b"
    finally:
        stop(sup)


@pytest.mark.parametrize("kind", ["bad_exit", "bad_health", "bad_hang"])
def test_a_bad_payload_is_tried_three_times_then_the_old_version_runs(
    tmp_path: Path, kind: str
) -> None:
    # update.health_timeout is what ends a try that neither exits nor reports unhealthy.
    device = make_device(tmp_path, health_timeout=4.0)
    device.cli("update", "install-payload", str(payload(tmp_path / "p", "1.0.0")), "--version",
               "1.0.0", "--commit")  # fmt: skip
    sup = device.supervise()
    try:
        wait_for(lambda: _settled(device))
        if kind == "bad_health":
            bad = bad_health_payload(device, device.base / "p", "2.0.0")
        else:
            bad = payload(device.base / "p", "2.0.0", kind)
        device.cli("update", "install-payload", str(bad), "--version", "2.0.0")
        st = wait_for(lambda: (s := _settled(device)) and s["report"] and s, timeout=90)
        assert st["active"] == "a" and _running(device)["slot"] == "a"
        assert st["slots"]["b"]["state"] == "bad"
        report = st["report"]
        assert report["kind"] == "fallback" and report["version"] == "2.0.0"
        assert report["to_version"] == "1.0.0" and report["reported"] is False
        why = {
            "bad_exit": "exited with status 3",
            "bad_health": "health failed: broken_driver",
            "bad_hang": "not healthy within update.health_timeout (4s)",
        }[kind]
        assert "3 failed starts" in report["reason"] and why in report["reason"]
        log = _log(device)
        assert all(f"started try {n} of slot b" in log for n in (1, 2, 3))
        assert "started try 4" not in log
        text = device.cli("update", "status").stdout
        assert "last fallback: 2.0.0" in text and "not yet sent to central" in text
    finally:
        stop(sup)


def test_update_rollback_goes_back_to_the_previous_version(device: Device) -> None:
    sup = device.supervise()
    try:
        wait_for(lambda: _settled(device))
        device.cli("update", "install-payload", str(payload(device.base / "p", "2.0.0")),
                   "--version", "2.0.0")  # fmt: skip
        wait_for(lambda: (s := _settled(device)) and s["active"] == "b")
        out = device.cli("update", "rollback", "--reason", "sensor regression").stdout
        assert "slot a (1.0.0) is active" in out
        st = wait_for(lambda: (s := _settled(device)) and s["active"] == "a" and s)
        assert _running(device)["slot"] == "a"
        assert st["report"]["kind"] == "rollback" and st["report"]["reason"] == "sensor regression"
        assert st["slots"]["b"]["state"] == "good"  # 2.0.0 is kept: rolling forward is one more
        again = device.cli("update", "rollback", check=False)
        assert again.returncode == 0 and "slot b (2.0.0)" in again.stdout
    finally:
        stop(sup)


def test_a_rollback_with_nothing_to_go_back_to_is_refused(device: Device) -> None:
    result = device.cli("update", "rollback", check=False)
    assert result.returncode == 2
    assert "no previous version to roll back to" in result.stderr
    assert device.state()["active"] == "a"


@pytest.mark.slow
def test_twenty_power_cuts_of_a_healthy_device_never_flip_slots(device: Device) -> None:
    device.cli("update", "install-payload", str(payload(device.base / "p", "2.0.0")),
               "--version", "2.0.0", "--commit")  # fmt: skip
    first = None
    for _ in range(20):
        sup = device.supervise()
        try:
            st = wait_for(lambda: _settled(device))
            first = first or st
            assert st == first  # the state file is the same after every power cut
            assert _running(device)["slot"] == "b"
        finally:
            stop(sup, signal.SIGKILL)
    assert first is not None and first["active"] == "b"
