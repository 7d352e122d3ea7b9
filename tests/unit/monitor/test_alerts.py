"""Alert rules: the condition language, states on a virtual clock, and the actions."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_min.clock import VirtualClock
from edge_min.config.monitoring import AlertSpec
from edge_min.errors import ConfigError
from edge_min.monitor.alerts import OPS, AlertActions, Alerts, compile_rule, compile_rules
from edge_min.monitor.outbox import Outbox
from edge_min.monitor.persist import MemoryMonitorStore, MonitorStore
from edge_min.store.files import FileStore

MB = 1024 * 1024


def alerts(
    *specs: AlertSpec, store: MonitorStore | None = None, **actions: Any
) -> tuple[Alerts, VirtualClock]:
    clock = VirtualClock()
    rules = compile_rules(specs)
    return Alerts(rules, store or MemoryMonitorStore(), AlertActions(**actions), clock), clock


@pytest.mark.parametrize(
    ("text", "metric", "op", "value", "duration"),
    [
        ("cpu_usage > 90 for 5m", "cpu_usage", ">", 90.0, 300.0),
        ("free_storage < 100MB", "free_storage", "<", 100.0 * MB, 0.0),
        ("memory_usage >= 95% for 30s", "memory_usage", ">=", 95.0, 30.0),
        ("sync_failures != 0 for 1h", "sync_failures", "!=", 0.0, 3600.0),
        ("queue_depth == 7", "queue_depth", "==", 7.0, 0.0),
        ("battery_level <= 15.5", "battery_level", "<=", 15.5, 0.0),
    ],
)
def test_the_condition_language(
    text: str, metric: str, op: str, value: float, duration: float
) -> None:
    rule = compile_rule(AlertSpec("a", text, ("log",)))
    assert (rule.condition.metric, rule.condition.op) == (metric, op)
    assert (rule.condition.value, rule.condition.duration) == (value, duration)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cpu_usage >> 90", "expected METRIC OP VALUE"),
        ("cpu_usage > 90 for soon", "cannot read the duration 'soon'"),
        ("free_storage < 100QB", "cannot read the value '100QB'"),
        ("cpu_temperature > 80", "unknown metric 'cpu_temperature'"),
        ("free_storage < 10%", "free_storage is in bytes, not a percentage"),
        ("cpu_usage > 90MB", "cpu_usage is in percent, so 'MB' does not apply"),
    ],
)
def test_a_bad_condition_is_a_config_error_naming_the_alert(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        compile_rules([AlertSpec("disk_alarm", text, ("log",))])
    assert "alert 'disk_alarm'" in str(info.value) and message in str(info.value)
    assert info.value.path == "alerts.disk_alarm.condition" and info.value.value == text


def test_every_bad_rule_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        compile_rules([AlertSpec("one", "nope > 1", ()), AlertSpec("two", "cpu_usage ?", ())])
    assert "'one'" in str(info.value) and "'two'" in str(info.value)


@given(st.sampled_from(sorted(OPS)), st.integers(-50, 50), st.integers(-50, 50))
def test_operators_compare_like_python(op: str, value: int, threshold: int) -> None:
    rule = compile_rule(AlertSpec("a", f"queue_depth {op} {threshold}", ("log",)))
    expected = {
        ">": value > threshold,
        ">=": value >= threshold,
        "<": value < threshold,
        "<=": value <= threshold,
        "==": value == threshold,
        "!=": value != threshold,
    }[op]
    assert rule.holds({"queue_depth": float(value)}) is expected


def test_for_keeps_an_alert_pending_until_the_condition_has_held_that_long() -> None:
    al, clock = alerts(AlertSpec("high_cpu", "cpu_usage > 90 for 5m", ("log",)))
    hot, cool = {"cpu_usage": 95.0}, {"cpu_usage": 20.0}
    assert al.evaluate(hot) == [("high_cpu", "pending")]
    for _ in range(4):
        clock.advance(60)
        assert al.evaluate(hot) == []
    clock.advance(59)
    assert al.evaluate(hot) == [] and al.states["high_cpu"].state == "pending"
    clock.advance(1)
    assert al.evaluate(hot) == [("high_cpu", "firing")]  # held for 300 s
    clock.advance(60)
    assert al.evaluate(hot) == []
    assert al.evaluate(cool) == [("high_cpu", "resolved")]
    assert al.evaluate(hot) == [("high_cpu", "pending")]


def test_a_dip_restarts_the_for_period() -> None:
    al, clock = alerts(AlertSpec("high_cpu", "cpu_usage > 90 for 5m", ("log",)))
    al.evaluate({"cpu_usage": 95.0})
    clock.advance(240)
    assert al.evaluate({"cpu_usage": 50.0}) == [("high_cpu", "inactive")]
    clock.advance(60)
    al.evaluate({"cpu_usage": 95.0})
    clock.advance(240)
    assert al.evaluate({"cpu_usage": 95.0}) == []  # only 240 s since the dip
    clock.advance(60)
    assert al.evaluate({"cpu_usage": 95.0}) == [("high_cpu", "firing")]


def test_without_for_an_alert_fires_at_once_and_a_missing_metric_never_holds() -> None:
    al, _ = alerts(AlertSpec("low_battery", "battery_level < 20", ("log",)))
    assert al.evaluate({}) == []  # no battery: not "0 %"
    assert al.evaluate({"battery_level": 10.0}) == [("low_battery", "firing")]
    assert al.evaluate({}) == [("low_battery", "resolved")]


def test_log_action_says_what_fired_and_what_resolved(caplog: pytest.LogCaptureFixture) -> None:
    al, _ = alerts(AlertSpec("sync_failure", "sync_failures > 3", ("log",)))
    with caplog.at_level(logging.INFO, logger="edge_min.monitor"):
        al.evaluate({"sync_failures": 4.0})
        al.evaluate({"sync_failures": 0.0})
    assert "alert sync_failure firing: sync_failures=4" in caplog.text
    assert "alert sync_failure resolved: sync_failures=0" in caplog.text


def test_notify_central_is_queued_offline_and_sent_once(monitor_store: MonitorStore) -> None:
    online = {"up": False}
    got: list[dict[str, Any]] = []
    outbox = Outbox(monitor_store, got.append, is_online=lambda: online["up"])
    al, clock = alerts(
        AlertSpec("sync_failure", "sync_failures > 3", ("notify_central",)),
        store=monitor_store,
        outbox=outbox,
    )
    al.evaluate({"sync_failures": 5.0})
    al.evaluate({"sync_failures": 6.0})  # still firing: nothing new
    assert outbox.flush(clock.time()) == 0 and outbox.unsent == 1 and got == []
    online["up"] = True
    clock.advance(30)
    assert outbox.flush(clock.time()) == 1
    assert outbox.flush(clock.time()) == 0
    al.evaluate({"sync_failures": 0.0})
    assert outbox.flush(clock.time()) == 1
    assert [(n["alert"], n["state"], n["value"]) for n in got] == [
        ("sync_failure", "firing", 5.0),
        ("sync_failure", "resolved", 0.0),
    ]
    assert len({n["id"] for n in got}) == 2 and outbox.unsent == 0
    clock.advance(8 * 86400)
    assert outbox.prune(clock.time()) == 2  # delivered ones are forgotten after a week


def test_a_failed_send_keeps_the_order_and_counts_attempts() -> None:
    store = MemoryMonitorStore()
    fail = {"on": True}
    got: list[str] = []

    def send(n: dict[str, Any]) -> None:
        if fail["on"]:
            raise OSError("central unreachable")
        got.append(n["alert"])

    outbox = Outbox(store, send)
    for name in ("a", "b", "c"):
        outbox.enqueue("alert", {"alert": name}, 1000.0)
    assert outbox.flush(1001.0) == 0 and "central unreachable" in (outbox.last_error or "")
    assert [r["attempts"] for r in store.unsent_notifications(10)] == [1, 0, 0]
    fail["on"] = False
    assert outbox.flush(1002.0) == 3 and got == ["a", "b", "c"]


def test_cleanup_temp_removes_old_tmp_files_and_logs_the_bytes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = FileStore(tmp_path, 100 * MB)
    old = files.write("tmp", "old.bin", b"x" * 5000)
    fresh = files.write("tmp", "fresh.bin", b"y" * 100)
    al, clock = alerts(
        AlertSpec("low_storage", "free_storage < 100MB", ("log", "cleanup_temp")),
        cleanup_tmp=files.cleanup_tmp,
        tmp_max_age=3600,
    )
    os.utime(old, (clock.time() - 7200, clock.time() - 7200))
    os.utime(fresh, (clock.time() - 60, clock.time() - 60))
    with caplog.at_level(logging.WARNING, logger="edge_min.monitor"):
        assert al.evaluate({"free_storage": 50.0 * MB}) == [("low_storage", "firing")]
    assert not old.exists() and fresh.exists()
    assert "cleanup_temp freed 5000 bytes" in caplog.text


def test_restart_sync_runs_once_per_firing() -> None:
    restarts: list[int] = []
    al, _ = alerts(
        AlertSpec("sync_failure", "sync_failures > 3", ("restart_sync",)),
        restart_sync=lambda: restarts.append(1),
    )
    for n in (4, 5, 6, 0, 9):
        al.evaluate({"sync_failures": float(n)})
    assert len(restarts) == 2  # fired at 4 and again at 9, not on 5, 6 or the recovery


def test_a_failing_action_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> None:
        raise RuntimeError("sync manager gone")

    store = MemoryMonitorStore()
    al, _ = alerts(
        AlertSpec("s", "sync_failures > 3", ("restart_sync", "notify_central")),
        restart_sync=broken,
        outbox=Outbox(store, None),
    )
    al.evaluate({"sync_failures": 4.0})
    assert "action restart_sync failed: sync manager gone" in caplog.text
    assert store.count_unsent() == 1


def test_a_firing_alert_does_not_notify_again_after_a_restart(
    monitor_store: MonitorStore,
) -> None:
    spec = AlertSpec("sync_failure", "sync_failures > 3", ("notify_central",))
    first, _ = alerts(spec, store=monitor_store, outbox=Outbox(monitor_store, None))
    first.evaluate({"sync_failures": 5.0})
    again, _ = alerts(spec, store=monitor_store, outbox=Outbox(monitor_store, None))
    assert again.states["sync_failure"].state == "firing"
    assert again.evaluate({"sync_failures": 5.0}) == []
    assert monitor_store.count_unsent() == 1
    assert again.evaluate({"sync_failures": 1.0}) == [("sync_failure", "resolved")]
    assert monitor_store.load_alerts()["sync_failure"]["state"] == "resolved"
    view = again.views()[0]
    assert view["state"] == "resolved" and view["fired_at"] and view["resolved_at"]
