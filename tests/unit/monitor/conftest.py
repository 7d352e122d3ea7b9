"""Fixtures for the monitor: its persistence port on every implementation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_min.monitor.persist import (
    MONITOR_TABLE_NAMES,
    MemoryMonitorStore,
    MonitorStore,
    SqlMonitorStore,
)
from edge_min.store import MemoryStore, open_sqlite
from edge_min.store.base import Storage
from edge_min.store.migrations import MIGRATIONS, Migration
from edge_min.store.tables import TABLES


@pytest.fixture
def monitor_tables() -> list[Migration]:
    """The shipped migrations, which carry the monitor's tables."""
    assert all(name in TABLES for name in MONITOR_TABLE_NAMES)
    return list(MIGRATIONS)


def open_monitor_sqlite(path: Path, migrations: list[Migration]) -> Storage:
    """A SQLite backend at ``path`` with the monitor's tables."""
    return open_sqlite(path, synchronous="NORMAL", migrations=migrations)


@pytest.fixture(params=["memory-port", "sql-on-memory", "sql-on-sqlite"])
def monitor_store(
    request: pytest.FixtureRequest, tmp_path: Path, monitor_tables: list[Migration]
) -> Iterator[MonitorStore]:
    """The persistence port on each implementation."""
    if request.param == "memory-port":
        yield MemoryMonitorStore()
        return
    backend: Storage
    if request.param == "sql-on-memory":
        backend = MemoryStore()
    else:
        backend = open_monitor_sqlite(tmp_path / "edge.db", monitor_tables)
    yield SqlMonitorStore(backend)
    backend.close()
