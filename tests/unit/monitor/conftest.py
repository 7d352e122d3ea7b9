"""Fixtures for the monitor: its persistence port on every implementation.

Until ``store/tables.py`` and ``store/migrations.py`` carry the monitor's tables, the SQL
fixtures register ``MONITOR_TABLES`` for the test and apply ``MIGRATION_SQL`` as one extra
migration; once they do, the fixtures check that both descriptions agree.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_min.monitor.persist import (
    MIGRATION_NAME,
    MIGRATION_SQL,
    MONITOR_TABLES,
    MemoryMonitorStore,
    MonitorStore,
    SqlMonitorStore,
)
from edge_min.store import MemoryStore, open_sqlite
from edge_min.store.base import Storage
from edge_min.store.migrations import MIGRATIONS, Migration
from edge_min.store.tables import TABLES


@pytest.fixture
def monitor_tables(monkeypatch: pytest.MonkeyPatch) -> list[Migration]:
    """Make the monitor's tables known to the store; the migrations to open SQLite with."""
    if all(t.name in TABLES for t in MONITOR_TABLES):
        for t in MONITOR_TABLES:
            assert TABLES[t.name] == t, f"tables.py and MONITOR_TABLES disagree on {t.name}"
        return list(MIGRATIONS)
    for t in MONITOR_TABLES:
        monkeypatch.setitem(TABLES, t.name, t)
    version = max(m[0] for m in MIGRATIONS) + 1
    return [*MIGRATIONS, (version, MIGRATION_NAME, MIGRATION_SQL)]


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
