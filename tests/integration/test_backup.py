"""Backups: online copy, rotation, verified atomic restore; refusing damaged or foreign files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from edge_min.clock import VirtualClock
from edge_min.errors import IntegrityCheckFailed, SchemaError, StorageError
from edge_min.store import MemoryStore, Store, open_store
from edge_min.store.backup import (
    backup_name,
    backup_time,
    create_backup,
    integrity_check,
    latest_backup_at,
    list_backups,
    restore,
    rotate,
)


def _names(db: Path) -> list[str]:
    s = open_store(db)
    try:
        return sorted(w["name"] for w in s.workflows.list())
    finally:
        s.close()


def _filled(db: Path, clock: VirtualClock, n: int = 50) -> Store:
    s = open_store(db, clock=clock)
    with s.atomic():
        for i in range(n):
            w = s.workflows.create(f"wf{i:03}", {"pad": "x" * 300}, "1")
            s.executions.create(w["id"], {"i": i})
    return s


def test_backup_and_restore_round_trip(tmp_path: Path) -> None:
    clock = VirtualClock()
    db = tmp_path / "data" / "edge.db"
    s = _filled(db, clock, n=3)
    backup = create_backup(s, tmp_path / "data", clock.time())
    assert backup.parent == tmp_path / "data" / "backups"
    assert backup.name == "edge-20260101T000000.000000Z.db"
    assert integrity_check(backup) == []
    s.workflows.create("after-backup", {}, "1")
    s.close()
    assert "after-backup" in _names(db)
    restore(backup, db)
    assert _names(db) == ["wf000", "wf001", "wf002"]


def test_backup_while_another_connection_writes_sees_committed_wal_rows(tmp_path: Path) -> None:
    clock = VirtualClock()
    db = tmp_path / "edge.db"
    s = _filled(db, clock, n=5)  # still open: the rows may live only in the -wal file
    assert Path(str(db) + "-wal").stat().st_size > 0
    backup = create_backup(db, tmp_path, clock.time())  # by path, from a second connection
    s.workflows.create("during", {}, "1")
    s.close()
    restored = tmp_path / "restored.db"
    restore(backup, restored)
    assert _names(restored) == [f"wf{i:03}" for i in range(5)]


def _corrupt_copy(src: Path, dst: Path) -> Path:
    raw = bytearray(src.read_bytes())
    for i in range(4096, min(len(raw), 4096 * 3)):
        raw[i] = 0xFF
    dst.write_bytes(bytes(raw))
    return dst


def test_restore_refuses_a_corrupted_backup_and_leaves_the_db_alone(tmp_path: Path) -> None:
    clock = VirtualClock()
    db = tmp_path / "edge.db"
    s = _filled(db, clock)
    backup = create_backup(s, tmp_path, clock.time())
    s.close()
    bad = _corrupt_copy(backup, tmp_path / "bad.db")
    assert integrity_check(bad) != []
    before = db.read_bytes()
    with pytest.raises(IntegrityCheckFailed, match=r"refusing to restore .*bad\.db: integrity"):
        restore(bad, db)
    assert db.read_bytes() == before
    assert len(_names(db)) == 50


def test_restore_refuses_files_that_are_not_edge_min_databases(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    open_store(db).close()
    text = tmp_path / "notes.txt"
    text.write_text("hello, not a database\n" * 200)
    with pytest.raises(IntegrityCheckFailed, match=r"notes\.txt.*not a database"):
        restore(text, db)
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    with pytest.raises(SchemaError, match=r"not an edge_min database \(missing tables: schema"):
        restore(other, db)
    with pytest.raises(IntegrityCheckFailed, match="no such file"):
        restore(tmp_path / "missing.db", db)
    assert _names(db) == []


def test_restore_removes_a_stale_wal(tmp_path: Path) -> None:
    clock = VirtualClock()
    db = tmp_path / "edge.db"
    wal, shm = Path(f"{db}-wal"), Path(f"{db}-shm")
    s = _filled(db, clock, n=2)
    backup = create_backup(s, tmp_path, clock.time())
    s.workflows.create("only-in-wal", {}, "1")
    stale_wal, stale_shm = wal.read_bytes(), shm.read_bytes()
    s.close()
    # A WAL left beside the database (a crash before checkpoint) must not be replayed
    # into the restored file: its frames belong to the old database.
    wal.write_bytes(stale_wal)
    shm.write_bytes(stale_shm)
    restore(backup, db)
    assert not wal.exists() and not shm.exists()
    assert _names(db) == ["wf000", "wf001"]
    assert integrity_check(db) == []
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_rotation_keeps_the_newest(tmp_path: Path) -> None:
    clock = VirtualClock()
    s = _filled(tmp_path / "edge.db", clock, n=1)
    made = []
    for _ in range(10):
        made.append(create_backup(s, tmp_path, clock.time(), keep=3))
        clock.advance(86400)
    s.close()
    assert list_backups(tmp_path) == made[-3:]
    assert latest_backup_at(tmp_path) == clock.time() - 86400
    assert [p.name for p in (tmp_path / "backups").iterdir() if p.name.startswith(".")] == []
    assert rotate(tmp_path, keep=1) == made[-3:-1]
    with pytest.raises(StorageError, match="keep at least 1"):
        rotate(tmp_path, keep=0)


def test_backup_names_sort_by_time() -> None:
    times = [1_767_225_600.0, 1_767_225_600.5, 1_767_225_601.0, 1_800_000_000.25]
    names = [backup_name(t) for t in times]
    assert sorted(names) == names
    assert [backup_time(n) for n in names] == times
    assert backup_time("edge.db") is None


def test_backup_needs_a_sqlite_file(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="only SQLite databases"):
        create_backup(Store(MemoryStore()), tmp_path, 0.0)
    mem = open_store(":memory:")
    with pytest.raises(StorageError, match="in-memory database has no file"):
        create_backup(mem, tmp_path, 0.0)
    mem.close()
    with pytest.raises(StorageError, match="no such database file"):
        create_backup(tmp_path / "missing.db", tmp_path, 0.0)
    assert list_backups(tmp_path) == []
