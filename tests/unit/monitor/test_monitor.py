"""The Monitor driven by the real scheduler on a virtual clock, as the runtime drives it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import parser

from edge_min.clock import VirtualClock
from edge_min.config.monitoring import (
    AlertSpec,
    HealthCheckSpec,
    MetricsPolicy,
    MonitoringConfig,
    default_alerts,
)
from edge_min.config.runtime import MonitoringSettings
from edge_min.errors import ConfigError
from edge_min.monitor import Monitor, SqlMonitorStore, database_check
from edge_min.scheduler import Scheduler, StepRunner
from edge_min.store import MemoryStore
from edge_min.store.migrations import Migration
from tests.fixtures.resources import FakeResources

from .conftest import open_monitor_sqlite

MB = 1024 * 1024


class Central:
    def __init__(self) -> None:
        self.up = True
        self.metrics: list[dict[str, Any]] = []
        self.notes: list[dict[str, Any]] = []

    def send_metrics(self, payload: dict[str, Any]) -> None:
        if not self.up:
            raise OSError("no route to central")
        self.metrics.append(payload)

    def send_note(self, payload: dict[str, Any]) -> None:
        if not self.up:
            raise OSError("no route to central")
        self.notes.append(payload)

    def samples(self) -> int:
        return sum(len(p["samples"]) for p in self.metrics)


CONFIG = MonitoringConfig(
    metrics=MetricsPolicy(collection_interval=60, buffer_size=10, upload_interval=3600,
                          upload_threshold=8),
    health_checks=(
        HealthCheckSpec("database", 300, "builtin:database", 5),
        HealthCheckSpec("shell", 120, "test -d /", 5),
    ),
    alerts=default_alerts(),
)  # fmt: skip


def build(
    config: MonitoringConfig = CONFIG,
    settings: MonitoringSettings | None = None,
    store: Any = None,
) -> tuple[Monitor, StepRunner, FakeResources, Central, dict[str, float]]:
    clock = VirtualClock()
    # The host's readings, which the tests change (the port a target implements).
    host = FakeResources({"cpu_usage": 10.0, "free_storage": 500.0 * MB})
    central = Central()
    runtime = {"queue_depth": 0.0, "sync_failures": 0.0, "runs_running": 1.0}
    restarts: list[int] = []
    monitor = Monitor(
        config,
        clock,
        settings=settings,
        store=store,
        resources=host,
        runtime_metrics=lambda: runtime,
        builtins={"database": database_check(MemoryStore())},
        send_metrics=central.send_metrics,
        send_notification=central.send_note,
        is_online=lambda: central.up,
        restart_sync=lambda: restarts.append(1),
    )
    scheduler = Scheduler(clock)
    for job in monitor.jobs():
        scheduler.add_interval(job.name, job.every, job.fn, first=job.first)
    return monitor, StepRunner(scheduler), host, central, runtime


def test_jobs_follow_the_configured_intervals() -> None:
    monitor, *_ = build()
    assert [(j.name, j.every, j.first) for j in monitor.jobs()] == [
        ("monitor.collect", 60, 0),
        ("monitor.health_checks", 120, 0),
        ("monitor.upload", 3600, 3600),
    ]


def test_samples_are_uploaded_once_the_threshold_waits() -> None:
    monitor, runner, _, central, _ = build()
    runner.advance_by(6 * 60)  # samples at 0, 60, ... 360: seven
    assert central.samples() == 0 and len(monitor.buffer) == 7
    runner.advance_by(60)
    assert central.samples() == 8 and len(monitor.buffer) == 0  # threshold of 8 reached
    runner.advance_by(3 * 60)
    assert central.samples() == 8 and len(monitor.buffer) == 3
    assert monitor.status()["metrics"]["uploaded"] == 8


def test_samples_are_uploaded_every_upload_interval() -> None:
    policy = MetricsPolicy(collection_interval=600, buffer_size=10, upload_interval=3600,
                           upload_threshold=10)  # fmt: skip
    monitor, runner, _, central, _ = build(MonitoringConfig(metrics=policy, alerts=()))
    runner.advance_by(3599)
    assert central.samples() == 0 and len(monitor.buffer) == 6
    runner.advance_by(1)  # the hourly upload job (and the seventh sample) at 3600 s
    assert central.samples() + len(monitor.buffer) == 7 and central.samples() >= 6
    runner.advance_by(3600)
    assert central.samples() == 13 and len(monitor.buffer) == 0


def test_offline_the_buffer_keeps_the_newest_and_counts_the_dropped() -> None:
    monitor, runner, _, central, _ = build()
    central.up = False
    runner.advance_by(14 * 60)  # fifteen samples into a buffer of ten
    assert len(monitor.buffer) == 10 and monitor.buffer.dropped == 5
    assert monitor.uploader.failures == 0  # the link is known down: not even tried
    central.up = True
    runner.advance_by(60)  # the next collect sees 10 waiting, past the threshold
    assert central.samples() == 10
    assert central.metrics[0]["dropped"] == 6
    assert len(monitor.buffer) == 0


def test_alerts_fire_act_and_resolve_on_the_schedule() -> None:
    monitor, runner, host, central, runtime = build()
    runner.advance_by(60)
    assert monitor.overall() == "healthy"
    host.values["cpu_usage"] = 97.0
    runner.advance_by(5 * 60)  # hot from 120 s to 360 s: held 240 s of the 5m
    assert {a["name"]: a["state"] for a in monitor.alerts_view()}["high_cpu"] == "pending"
    runner.advance_by(60)
    assert {a["name"]: a["state"] for a in monitor.alerts_view()}["high_cpu"] == "firing"
    assert monitor.overall() == "degraded"
    assert [(n["alert"], n["state"]) for n in central.notes] == [("high_cpu", "firing")]
    runtime["sync_failures"] = 4.0
    central.up = False
    runner.advance_by(60)
    assert monitor.status()["alerts_firing"] == ["high_cpu", "sync_failure"]
    assert monitor.status()["notifications"]["pending"] == 1  # queued while offline
    central.up = True
    host.values["cpu_usage"] = 5.0
    runtime["sync_failures"] = 0.0
    runner.advance_by(60)
    assert [(n["alert"], n["state"]) for n in central.notes] == [
        ("high_cpu", "firing"),
        ("sync_failure", "firing"),
        ("high_cpu", "resolved"),
        ("sync_failure", "resolved"),
    ]
    assert monitor.overall() == "healthy"


def test_status_and_prometheus_show_checks_alerts_and_the_buffer() -> None:
    monitor, runner, host, _, _ = build()
    assert monitor.overall() == "starting"
    host.values["free_storage"] = 50.0 * MB
    runner.advance_by(60)
    status = monitor.status()
    json.dumps(status)  # JSON-ready
    assert status["status"] == "degraded"  # low_storage fires; checks pass
    assert [(c["name"], c["status"]) for c in status["checks"]] == [
        ("database", "pass"),
        ("shell", "pass"),
    ]
    fams = {f.name: f for f in parser.text_string_to_metric_families(monitor.prometheus())}
    up = {s.labels["check"]: s.value for s in fams["edge_min_health_check_up"].samples}
    assert up == {"database": 1.0, "shell": 1.0}
    firing = {s.labels["alert"]: s.value for s in fams["edge_min_alert_firing"].samples}
    assert firing == {"high_cpu": 0.0, "low_storage": 1.0, "sync_failure": 0.0}
    assert fams["edge_min_free_storage_bytes"].samples[0].value == 50.0 * MB
    assert fams["edge_min_metrics_buffered"].samples[0].value == 2.0  # at 0 s and 60 s
    assert fams["edge_min_metrics_dropped"].type == "counter"
    assert fams["edge_min_workflow_runs"].samples[0].labels == {"status": "running"}


def test_a_failing_check_makes_the_device_unhealthy() -> None:
    config = MonitoringConfig(health_checks=(HealthCheckSpec("disk", 60, "exit 1", 5),), alerts=())
    monitor, runner, *_ = build(config)
    runner.advance_by(60)
    assert monitor.status()["status"] == "unhealthy"
    assert monitor.status()["checks"][0]["consecutive_failures"] == 2  # at 0 s and 60 s


def test_with_collection_off_resources_are_checked_but_nothing_is_buffered() -> None:
    settings = MonitoringSettings(metrics_collection=False, resource_check_interval=300)
    monitor, runner, host, central, _ = build(settings=settings)
    assert [j.name for j in monitor.jobs()] == ["monitor.collect", "monitor.health_checks"]
    assert monitor.jobs()[0].every == 300
    host.values["free_storage"] = 1.0 * MB
    runner.advance_by(300)
    assert len(monitor.buffer) == 0 and central.metrics == []
    assert "low_storage" in monitor.status()["alerts_firing"]


def test_a_bad_alert_stops_the_monitor_from_starting() -> None:
    config = MonitoringConfig(alerts=(AlertSpec("hot", "gpu_usage > 90", ("log",)),))
    with pytest.raises(ConfigError, match=r"alert 'hot'.*unknown metric 'gpu_usage'"):
        Monitor(config, VirtualClock())


def test_buffer_and_alert_states_survive_a_restart_on_sqlite(
    tmp_path: Path, monitor_tables: list[Migration]
) -> None:
    db = open_monitor_sqlite(tmp_path / "edge.db", monitor_tables)
    _, runner, host, central, _ = build(store=SqlMonitorStore(db))
    central.up = False
    host.values["free_storage"] = 1.0 * MB
    runner.advance_by(5 * 60)
    db.close()
    db = open_monitor_sqlite(tmp_path / "edge.db", monitor_tables)
    again, runner, host, central, _ = build(store=SqlMonitorStore(db))
    assert len(again.buffer) == 6  # at 0, 60, ... 300 s
    assert again.status()["notifications"]["pending"] == 1
    assert {a["name"]: a["state"] for a in again.alerts_view()}["low_storage"] == "firing"
    host.values["free_storage"] = 1.0 * MB
    runner.advance_by(60)
    # Still firing: the one queued notification goes out, no second one is raised.
    assert [(n["alert"], n["state"]) for n in central.notes] == [("low_storage", "firing")]
    db.close()


def test_health_reports_a_stalled_loop() -> None:
    monitor, runner, *_ = build()
    runner.advance_by(60)
    assert monitor.status()["loop_stalled"] is False
    clock = monitor.clock
    assert isinstance(clock, VirtualClock)
    clock.advance(180)  # three turns missed exactly: not yet
    assert monitor.overall() == "healthy"
    clock.advance(1)  # nothing ran: the loop is stuck
    assert monitor.status()["loop_stalled"] is True and monitor.overall() == "unhealthy"
    runner.advance_by(0)
    assert monitor.overall() == "healthy"
