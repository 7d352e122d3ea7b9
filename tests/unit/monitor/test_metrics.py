"""The metrics buffer and uploader on every persistence implementation, on a virtual clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edge_min.clock import VirtualClock, from_iso
from edge_min.monitor.metrics import MetricsBuffer, Uploader, collect_sample
from edge_min.monitor.persist import MonitorStore, SqlMonitorStore
from edge_min.store.migrations import Migration

from .conftest import open_monitor_sqlite


class Central:
    """A stand-in for central's POST /api/metrics: records payloads, can be unreachable."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []
        self.up = True

    def __call__(self, payload: dict[str, Any]) -> None:
        if not self.up:
            raise OSError("connection refused")
        self.payloads.append(payload)

    def values(self) -> list[float]:
        return [s["metrics"]["x"] for p in self.payloads for s in p["samples"]]


def test_a_full_buffer_drops_the_oldest_and_counts_them(monitor_store: MonitorStore) -> None:
    buf = MetricsBuffer(monitor_store, buffer_size=3, retention=3600)
    dropped = [buf.add(1000.0 + i, {"x": float(i)}) for i in range(5)]
    assert dropped == [0, 0, 0, 1, 1]
    assert len(buf) == 3 and buf.dropped == 2
    assert [s["metrics"]["x"] for s in buf.oldest(10)] == [2.0, 3.0, 4.0]
    assert [s["collected_at"] for s in buf.oldest(10)] == [1002.0, 1003.0, 1004.0]
    # The counter and the buffer survive a restart.
    again = MetricsBuffer(monitor_store, buffer_size=3, retention=3600)
    assert (len(again), again.dropped) == (3, 2)
    again.add(2000.0, {"x": 9.0})
    assert [s["metrics"]["x"] for s in again.oldest(10)] == [3.0, 4.0, 9.0]


def test_samples_older_than_the_retention_are_pruned(monitor_store: MonitorStore) -> None:
    buf = MetricsBuffer(monitor_store, buffer_size=100, retention=600)
    for t in (0, 300, 600, 601, 900):
        buf.add(10_000.0 + t, {"x": float(t)})
    # At t=1200 the cutoff is t=600: older samples go, the one at exactly 600 s stays.
    assert buf.prune(10_000.0 + 1200) == 2
    assert [s["metrics"]["x"] for s in buf.oldest(10)] == [600.0, 601.0, 900.0]
    assert len(buf) == 3


def test_upload_waits_for_the_interval_or_the_threshold(monitor_store: MonitorStore) -> None:
    clock = VirtualClock()
    central = Central()
    buf = MetricsBuffer(monitor_store, buffer_size=10, retention=86400)
    up = Uploader(buf, central, upload_interval=3600, upload_threshold=4, started=clock.time())
    for i in range(3):
        clock.advance(60)
        buf.add(clock.time(), {"x": float(i)})
        assert up.upload(clock.time()) == 0  # neither 4 samples nor an hour yet
    clock.advance(60)
    buf.add(clock.time(), {"x": 3.0})
    assert up.upload(clock.time()) == 4  # threshold reached
    assert central.values() == [0.0, 1.0, 2.0, 3.0] and len(buf) == 0
    sample = central.payloads[0]["samples"][0]
    assert from_iso(sample["collected_at"]) == pytest.approx(clock.time() - 180)
    buf.add(clock.time(), {"x": 4.0})
    clock.advance(3599)
    assert up.upload(clock.time()) == 0
    clock.advance(1)
    assert up.upload(clock.time()) == 1  # an hour since the last upload
    assert up.upload(clock.time(), force=True) == 0  # nothing left to send


def test_samples_are_kept_while_offline_and_sent_once_back_online(
    monitor_store: MonitorStore,
) -> None:
    clock = VirtualClock()
    central = Central()
    online = {"link": True}
    buf = MetricsBuffer(monitor_store, buffer_size=5, retention=86400)
    up = Uploader(buf, central, 3600, 2, is_online=lambda: online["link"], started=clock.time())
    central.up = False  # link claims up but central refuses
    for i in range(3):
        buf.add(clock.time() + i, {"x": float(i)})
    assert up.upload(clock.time()) == 0
    assert len(buf) == 3 and up.failures == 1 and "connection refused" in (up.last_error or "")
    online["link"] = False  # known offline: not even tried
    assert up.upload(clock.time()) == 0 and up.failures == 1
    online["link"] = True
    central.up = True
    assert up.upload(clock.time()) == 3
    assert up.upload(clock.time(), force=True) == 0
    assert central.values() == [0.0, 1.0, 2.0]  # each sample sent exactly once
    assert up.last_error is None


def test_the_sql_buffer_survives_reopening_the_database(
    tmp_path: Path, monitor_tables: list[Migration]
) -> None:
    db = open_monitor_sqlite(tmp_path / "edge.db", monitor_tables)
    buf = MetricsBuffer(SqlMonitorStore(db), buffer_size=2, retention=3600)
    for i in range(3):
        buf.add(100.0 + i, {"x": float(i), "y": 0.5})
    db.close()
    db = open_monitor_sqlite(tmp_path / "edge.db", monitor_tables)
    again = MetricsBuffer(SqlMonitorStore(db), buffer_size=2, retention=3600)
    assert again.dropped == 1
    assert [s["metrics"] for s in again.oldest(5)] == [{"x": 1.0, "y": 0.5}, {"x": 2.0, "y": 0.5}]
    db.close()


class Broken:
    def read(self, now: float) -> dict[str, float]:
        raise OSError("no /proc here")


def test_a_failing_source_is_skipped_and_absent_values_stay_absent() -> None:
    def runtime() -> dict[str, Any]:
        return {"queue_depth": 3, "battery_level": None, "sync_failures": True}

    assert collect_sample(Broken(), runtime, 0.0) == {"queue_depth": 3.0, "sync_failures": 1.0}
