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
from edge_min.subsystem import ApiContext, ApiRoute, CheckFn, Job, Subsystem


class Link:
    """A platform whose only job here is to answer the link probe (it shows no host)."""

    name = "test-link"
    up = False

    def can_reach(self, host: str, port: int, timeout: float) -> bool:
        self.asked = (host, port)
        return self.up

    def resources(self, data_path: str) -> NoResources:
        return NoResources()

    def hardware_facts(self) -> dict[str, str]:
        return {"machine_id": "test-link"}


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


# -- the subsystem contract and the one error policy ------------------------------------------


class Flaky(Subsystem):
    """A subsystem as a newcomer writes one: a job that fails, a route, a metric, a check."""

    name = "flaky"
    needs = ("storage",)

    def open(self) -> None:
        self.calls = 0
        self.fail_until = 3

    def jobs(self) -> list[Job]:
        return [Job("flaky.job", 60.0, self.job)]

    def job(self) -> None:
        self.calls += 1
        if self.calls <= self.fail_until:
            raise ZeroDivisionError("not an EdgeError: a plain bug")

    def routes(self, api: ApiContext) -> list[ApiRoute]:
        return [ApiRoute("GET", "/flaky", "read", lambda _: {"calls": self.calls})]

    def metrics(self) -> dict[str, float]:
        return {"flaky_calls": float(self.calls)}

    def health_checks(self) -> dict[str, CheckFn]:
        return {"flaky": lambda: (True, f"{self.calls} calls")}


def test_a_subsystem_is_one_class_and_one_line_and_a_failing_job_never_stops_the_loop(
    tmp_path: Path,
) -> None:
    from edge_min.api.routes import build_router
    from edge_min.config import load_config
    from edge_min.routing import Request
    from edge_min.subsystems import SUBSYSTEMS

    *before, monitor = SUBSYSTEMS
    clock = VirtualClock()
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "edge-config.yaml").write_text("runtime: {offline_mode: never}\n")
    (conf / "edge-monitoring.yaml").write_text(
        "health_checks:\n"
        "  - {name: flaky_check, interval: 30, command: 'builtin:flaky', timeout: 5}\n"
    )
    config = load_config(conf)
    rt = Runtime(
        config,
        Paths.resolve(config, tmp_path / "data"),
        clock=clock,
        subsystems=(*before, Flaky, monitor),  # the one line
        without=("sync",),
    ).open()
    try:
        rt.engine.add_workflow("name: w\nversion: '1'\nsteps: [{id: s, agent: noop}]\n")
        flaky = rt.get(Flaky)
        # Due at 60 s; fails three times, retried after 1, 2 and 4 s, then succeeds.
        run_for(rt, clock, 60 + 8, step=0.5)
        assert flaky.calls == 4
        assert rt.job_errors == {"flaky.job": 3}
        # The loop went on: a run submitted now still finishes.
        run_id = rt.engine.submit("w", None)
        run_for(rt, clock, 3, step=0.5)
        assert rt.store.executions.get(run_id)["status"] == "succeeded"
        router = build_router(rt)
        assert router.dispatch(Request("GET", "/flaky")).body == {"calls": 4}
        text = router.dispatch(Request("GET", "/metrics")).body
        assert 'edge_min_job_errors_total{job="flaky.job"} 3' in text
        # The monitor gathered the subsystem's built-in check: the config's check ran it.
        (check,) = [c for c in rt.monitor.status()["checks"] if c["name"] == "flaky_check"]
        assert check["status"] == "pass" and check["last"]["output"].endswith(" calls"), check
        assert rt.runtime_metrics()["flaky_calls"] == 4.0
        assert rt.runtime_metrics()["job_errors"] == 3.0
    finally:
        rt.close()


def test_a_subsystem_whose_needs_come_later_is_refused_with_the_fix(tmp_path: Path) -> None:
    from edge_min.errors import ConfigError
    from edge_min.subsystems import SUBSYSTEMS

    config = parse_config({"runtime": {"offline_mode": "never"}}, source="test")
    with pytest.raises(ConfigError, match=r"'flaky' needs storage, which must come before it"):
        Runtime(
            config, Paths.resolve(config, tmp_path / "d"), subsystems=(Flaky, *SUBSYSTEMS)
        ).open()


class NeedsSync(Subsystem):
    """A subsystem that cannot work without sync."""

    name = "needs_sync"
    needs = ("storage", "sync")


def test_leaving_a_subsystem_out_leaves_out_what_needs_it(tmp_path: Path) -> None:
    from edge_min.store.subsystem import Storage
    from edge_min.subsystems import SUBSYSTEMS
    from edge_min.sync.subsystem import Sync

    config = parse_config({"runtime": {"offline_mode": "never"}}, source="test")
    kinds = (*SUBSYSTEMS[:-1], NeedsSync, SUBSYSTEMS[-1])
    rt = Runtime(
        config, Paths.resolve(config, tmp_path / "d"), subsystems=kinds, without=("sync",)
    ).open()
    try:
        opened = {type(sub) for sub in rt.subsystems()}
        assert Storage in opened and SUBSYSTEMS[-1] in opened
        assert Sync not in opened and NeedsSync not in opened
        assert rt.sync is None
    finally:
        rt.close()
