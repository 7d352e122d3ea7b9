"""The database open_store makes is the spec's schema, plus our migrations, recorded once."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from edge_min.clock import VirtualClock, iso
from edge_min.errors import SchemaError
from edge_min.store import open_store
from edge_min.store.migrations import MIGRATIONS
from edge_min.store.tables import SPEC_TABLES, TABLES

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "edge_min" / "store" / "schema.sql"
SPEC = Path("/work/shared/spec/edge-schema.sql")


VERSIONS = [m[0] for m in MIGRATIONS]  # the versions this release ships
NEXT = VERSIONS[-1] + 1  # a version no shipped migration uses


def _describe(path: Path, table: str) -> dict[str, Any]:
    conn = sqlite3.connect(path)
    try:
        columns = conn.execute(f"PRAGMA table_info({table})").fetchall()
        indexes = {}
        for _seq, name, unique, origin, partial in conn.execute(f"PRAGMA index_list({table})"):
            cols = [r[2] for r in conn.execute(f"PRAGMA index_info({name})")]
            indexes[name] = (unique, origin, partial, cols)
        fks = sorted(r[2:] for r in conn.execute(f"PRAGMA foreign_key_list({table})"))
        return {"columns": columns, "indexes": indexes, "foreign_keys": fks}
    finally:
        conn.close()


@pytest.fixture
def reference_db(tmp_path: Path) -> Path:
    """A database made by executing the spec's schema directly."""
    sql = SPEC.read_text() if SPEC.exists() else SHIPPED.read_text()
    path = tmp_path / "reference.db"
    conn = sqlite3.connect(path)
    conn.executescript(sql)
    conn.close()
    return path


def test_the_shipped_schema_is_the_spec_verbatim() -> None:
    if not SPEC.exists():
        pytest.skip("the spec folder is not available here")
    assert SHIPPED.read_bytes() == SPEC.read_bytes()


@pytest.mark.parametrize("table", SPEC_TABLES)
def test_open_store_makes_the_spec_tables_exactly(
    tmp_path: Path, reference_db: Path, table: str
) -> None:
    path = tmp_path / "edge.db"
    open_store(path).close()
    ours, spec = _describe(path, table), _describe(reference_db, table)
    assert ours == spec
    assert ours["columns"]  # the comparison saw something


def test_the_index_and_fk_comparison_sees_the_spec_details(reference_db: Path) -> None:
    d = _describe(reference_db, "agent_executions")
    assert d["indexes"]["idx_agent_executions_sync_status"] == (0, "c", 0, ["sync_status"])
    assert ("agents", "agent_id", "id", "NO ACTION", "NO ACTION", "NONE") in d["foreign_keys"]
    assert any(c[1] == "sync_status" and c[4] == "'pending'" for c in d["columns"])


def test_the_table_descriptions_match_the_database(tmp_path: Path) -> None:
    path = tmp_path / "edge.db"
    open_store(path).close()
    for table in TABLES.values():
        info = _describe(path, table.name)["columns"]
        assert [(c[1], c[2], bool(c[3]), c[4], c[5]) for c in info] == [
            (
                c.name,
                c.type,
                c.not_null,
                c.default_sql,
                table.primary_key.index(c.name) + 1 if c.name in table.primary_key else 0,
            )
            for c in table.columns
        ]


def _migrations(path: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT * FROM schema_migrations ORDER BY version").fetchall()
    finally:
        conn.close()


def _schema_objects(path: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
    finally:
        conn.close()


def test_migrations_are_recorded_once_and_reopen_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "edge.db"
    clock = VirtualClock()
    s = open_store(path, clock=clock)
    s.meta.set("device_id", "dev-1")
    s.close()
    recorded = _migrations(path)
    assert [(v, n) for v, n, _ in recorded] == [(m[0], m[1]) for m in MIGRATIONS]
    assert all(at == iso(clock.time()) for _, _, at in recorded)
    objects = _schema_objects(path)
    clock.advance(60)
    for _ in range(3):
        s = open_store(path, clock=clock)
        assert s.meta.get("device_id") == "dev-1"
        s.close()
    assert _migrations(path) == recorded
    assert _schema_objects(path) == objects


def test_a_failing_migration_leaves_no_partial_state(tmp_path: Path) -> None:
    path = tmp_path / "edge.db"
    open_store(path).close()
    bad = [
        *MIGRATIONS,
        (NEXT, "half done", "CREATE TABLE half (x TEXT);\nINSERT INTO no_such_table VALUES (1);"),
    ]
    with pytest.raises(SchemaError, match=rf"migration {NEXT} \(half done\) failed.*no_such_table"):
        open_store(path, migrations=bad)
    assert "half" not in [o[1] for o in _schema_objects(path)]
    assert [r[0] for r in _migrations(path)] == VERSIONS
    # On a fresh file the very first migration fails as a whole too.
    fresh = tmp_path / "fresh.db"
    with pytest.raises(SchemaError, match="migration 1"):
        open_store(
            fresh, migrations=[(1, "broken", "CREATE TABLE a (x TEXT); CREATE TABLE a (y);")]
        )
    assert [o[1] for o in _schema_objects(fresh)] == ["schema_migrations"]
    assert _migrations(fresh) == []
    # The good migrations still apply afterwards.
    open_store(fresh).close()
    assert [r[0] for r in _migrations(fresh)] == VERSIONS


def test_a_new_migration_applies_on_reopen(tmp_path: Path) -> None:
    path = tmp_path / "edge.db"
    open_store(path).close()
    more = [*MIGRATIONS, (NEXT, "extra index", "CREATE INDEX idx_meta_value ON meta(value);")]
    open_store(path, migrations=more).close()
    assert [r[:2] for r in _migrations(path)][-1] == (NEXT, "extra index")
    assert "idx_meta_value" in [o[1] for o in _schema_objects(path)]


def test_a_database_made_from_the_spec_sql_is_adopted(reference_db: Path) -> None:
    s = open_store(reference_db)
    s.workflows.create("wf", {}, "1")
    s.close()
    recorded = _migrations(reference_db)
    assert recorded[0][0] == 1 and "adopted" in recorded[0][1]
    assert [r[0] for r in recorded] == VERSIONS


def test_a_newer_or_altered_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "edge.db"
    open_store(path).close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO schema_migrations VALUES (99, 'future', 'x')")
    conn.commit()
    with pytest.raises(SchemaError, match="schema version 99 but this edge_min knows versions up"):
        open_store(path)
    conn.execute("DELETE FROM schema_migrations WHERE version = 99")
    conn.execute("ALTER TABLE workflows ADD COLUMN colour TEXT")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaError, match=r"table 'workflows' .* not the schema edge_min expects"):
        open_store(path)
