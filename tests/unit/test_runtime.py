"""The runtime on a virtual clock: timed backups, workflow triggers, catch-up, link probe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edge_min.clock import VirtualClock
from edge_min.config import parse_config
from edge_min.platform import NoResources
from edge_min.runtime import Paths, Runtime
from edge_min.store.backup import list_backups


class Link:
    """A platform whose only job here is to answer the link probe (it shows no host)."""

    name = "test-link"
    up = False

    def can_reach(self, host: str, port: int, timeout: float) -> bool:
        self.asked = (host, port)
        return self.up

    def resources(self, data_path: str) -> NoResources:
        return NoResources()


def make_runtime(tmp_path: Path, clock: VirtualClock, **sections: Any) -> Runtime:
    config = parse_config(sections or {}, source="test")
    return Runtime(
        config,
        Paths.resolve(config, tmp_path / "data"),
        clock=clock,
        platform=sections.pop("_platform", None),
    )


def run_for(rt: Runtime, clock: VirtualClock, seconds: float, step: float = 1.0) -> None:
    end = clock.monotonic() + seconds
    while clock.monotonic() < end:
        rt.tick()
        clock.advance(step)


def test_backups_follow_backup_interval_and_rotate(tmp_path: Path) -> None:
    clock = VirtualClock()
    rt = make_runtime(
        tmp_path,
        clock,
        storage={"backup_interval": 3600, "backup_keep": 3},
        runtime={"offline_mode": "never"},
    ).open()
    run_for(rt, clock, 5 * 3600 + 10, step=60)
    backups = list_backups(rt.paths.root)
    assert len(backups) == 3  # five taken, the oldest two rotated away
    rt.close()


def test_interval_and_cron_triggers_queue_runs(tmp_path: Path) -> None:
    clock = VirtualClock()
    rt = make_runtime(tmp_path, clock, runtime={"offline_mode": "never"}).open()
    rt.engine.add_workflow(
        "name: tick\nversion: '1'\ninput_schema: {device: string}\n"
        "trigger: {type: interval, every: 60s, input: {device: pump-1}}\n"
        "steps: [{id: s, agent: noop}]\n"
    )
    rt.engine.add_workflow(
        "name: five\nversion: '1'\ntrigger: {type: cron, cron: '*/5 * * * *'}\n"
        "steps: [{id: s, agent: echo}]\n"
    )
    rt.refresh_triggers()
    run_for(rt, clock, 601, step=1.0)  # ticks at 0..600 s inclusive
    by_name: dict[str, int] = {}
    names = {w["id"]: w["name"] for w in rt.store.workflows.list()}
    for e in rt.store.executions.list():
        assert e["status"] == "succeeded"
        if names[e["workflow_id"]] == "tick":
            assert e["input"] == {"device": "pump-1"}  # the trigger's input
        by_name[names[e["workflow_id"]]] = by_name.get(names[e["workflow_id"]], 0) + 1
    assert by_name == {"tick": 10, "five": 2}
    rt.close()


def test_a_trigger_missed_while_powered_off_runs_once_after_restart(tmp_path: Path) -> None:
    clock = VirtualClock()
    rt = make_runtime(tmp_path, clock, runtime={"offline_mode": "never"}).open()
    rt.engine.add_workflow(
        "name: hourly\nversion: '1'\ntrigger: {type: interval, every: 1h}\n"
        "steps: [{id: s, agent: noop}]\n"
    )
    rt.refresh_triggers()
    run_for(rt, clock, 3600 + 5, step=5)
    assert rt.store.backend.count("workflow_executions") == 1
    rt.close()
    # Ten hours off: monotonic time starts again, only wall time carries over.
    clock2 = VirtualClock(start=clock.time() + 10 * 3600)
    rt2 = make_runtime(tmp_path, clock2, runtime={"offline_mode": "never"}).open()
    run_for(rt2, clock2, 10, step=1)
    assert rt2.store.backend.count("workflow_executions") == 2  # once, not ten times
    rt2.close()


@pytest.mark.parametrize("up", [False, True])
def test_offline_auto_probes_central(tmp_path: Path, up: bool) -> None:
    clock = VirtualClock()
    link = Link()
    link.up = up
    config = parse_config(
        {"runtime": {"offline_mode": "auto"}, "sync": {"central_url": "http://10.9.8.7:9999"}},
        source="t",
    )
    rt = Runtime(
        config,
        Paths.resolve(config, tmp_path / "d"),
        clock=clock,
        platform=link,
        without=("sync",),  # the probe is under test; plain http to a non-loopback host is refused
    ).open()
    assert link.asked == ("10.9.8.7", 9999)  # asked the platform; no packet sent from here
    assert rt.online is up
    link.up = not up
    run_for(rt, clock, 31, step=1)
    assert rt.online is (not up)
    rt.close()
