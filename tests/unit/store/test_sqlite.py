"""SQLite backend specifics: PRAGMAs, lock contention and retry, threading, bad files."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

import edge_min.store
from edge_min.errors import ConfigError, StorageError
from edge_min.store import open_store
from edge_min.store.sqlite import SqliteStore, split_statements


def _pragma(store: SqliteStore, name: str) -> object:
    return next(iter(store._execute(f"PRAGMA {name}")[0].values()))


def test_pragmas_are_set(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "e.db", busy_timeout_ms=1234)
    assert _pragma(s, "journal_mode") == "wal"
    assert _pragma(s, "synchronous") == 2  # FULL
    assert _pragma(s, "foreign_keys") == 1
    assert _pragma(s, "busy_timeout") == 1234
    s.close()
    for mode, number in (("normal", 1), ("OFF", 0)):
        s = SqliteStore(tmp_path / "e.db", synchronous=mode)
        assert _pragma(s, "synchronous") == number
        s.close()


def test_a_bad_synchronous_mode_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"storage.synchronous: must be one of FULL, NORMAL, OFF"):
        SqliteStore(":memory:", synchronous="EXTRA")


def test_foreign_keys_are_enforced(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "e.db")
    row = {"id": "x1", "workflow_id": "missing", "status": "running", "started_at": "t"}
    with pytest.raises(StorageError, match="FOREIGN KEY"):
        s.insert("workflow_executions", row)
    s.close()


def _holder(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO meta (key, value) VALUES ('holder', '1')")
    return conn


def test_a_write_blocked_by_a_lock_succeeds_after_retry(tmp_path: Path) -> None:
    path = tmp_path / "e.db"
    SqliteStore(path).close()
    holder = _holder(path)
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:  # the other writer finishes while we back off
            holder.execute("COMMIT")

    s = SqliteStore(path, busy_timeout_ms=10, lock_retries=5, sleep=sleep)
    s.insert("meta", {"key": "writer", "value": "2"})
    assert len(sleeps) == 2 and all(0 < d <= 1.0 for d in sleeps)
    assert [r["key"] for r in s.select("meta", order_by=("key",))] == ["holder", "writer"]
    # atomic() takes the write lock up front, so BEGIN IMMEDIATE is what gets retried.
    holder.execute("BEGIN IMMEDIATE")
    sleeps.clear()
    with s.atomic():
        s.insert("meta", {"key": "in-tx", "value": "3"})
    assert len(sleeps) == 2 and s.count("meta") == 3
    s.close()
    holder.close()


def test_a_lock_held_too_long_is_a_storage_error_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "e.db"
    SqliteStore(path).close()
    holder = _holder(path)
    sleeps: list[float] = []
    s = SqliteStore(path, busy_timeout_ms=5, lock_retries=3, sleep=sleeps.append)
    with pytest.raises(StorageError, match=r"stayed locked .* gave up after 4 attempts"):
        s.insert("meta", {"key": "writer", "value": "2"})
    with pytest.raises(StorageError, match="locked"), s.atomic():
        pytest.fail("the block must not run without the write lock")
    assert len(sleeps) == 6
    # Backoff grows (with jitter inside 0.5x..1.5x of 10ms * 2**attempt).
    assert sleeps[0] <= 0.015 < 0.02 <= sleeps[2]
    holder.execute("ROLLBACK")
    assert s.select("meta") == []
    s.close()
    holder.close()


def test_two_threads_contend_and_both_writes_land(tmp_path: Path) -> None:
    path = tmp_path / "e.db"
    SqliteStore(path).close()
    locked = threading.Event()

    def hold_briefly() -> None:
        conn = _holder(path)
        locked.set()
        time.sleep(0.3)
        conn.execute("COMMIT")
        conn.close()

    t = threading.Thread(target=hold_briefly)
    t.start()
    assert locked.wait(5)
    s = SqliteStore(path, busy_timeout_ms=20, lock_retries=20)
    started = time.monotonic()
    s.insert("meta", {"key": "writer", "value": "2"})
    assert time.monotonic() - started >= 0.2  # it really waited for the holder
    t.join()
    assert s.count("meta") == 2
    s.close()


def test_a_store_belongs_to_its_thread(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "e.db")
    errors: list[Exception] = []

    def use() -> None:
        try:
            s.select("meta")
        except Exception as exc:
            errors.append(exc)

    t = threading.Thread(target=use)
    t.start()
    t.join()
    assert len(errors) == 1 and isinstance(errors[0], StorageError)
    assert "thread" in str(errors[0])
    s.close()


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "e.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StorageError, match="not a database"):
        SqliteStore(bad)


def test_open_store_creates_the_folder_and_memory_takes_no_disk(tmp_path: Path) -> None:
    s = open_store(tmp_path / "deep" / "dir" / "edge.db")
    assert (tmp_path / "deep" / "dir" / "edge.db").is_file()
    s.close()
    m = open_store(":memory:")
    m.workflows.create("w", {}, "1")
    assert m.size_bytes() == 0
    m.close()


def test_importing_the_store_package_does_not_import_sqlite3() -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['sqlite3'] = None\n"
        "import edge_min.store as s\n"
        "st = s.Store(s.MemoryStore()); st.workflows.create('w', {}, '1')\n"
        "try:\n    s.open_store(':memory:')\nexcept ImportError:\n    print('lazy')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "lazy"
    assert edge_min.store.open_store is not None


def test_split_statements_keeps_semicolons_in_strings_and_drops_comments() -> None:
    script = (
        "-- c\nCREATE TABLE a (x TEXT DEFAULT ';');\n"
        "-- trailing comment\nINSERT INTO a VALUES ('b;c');\n-- end\n"
    )
    assert split_statements(script) == [
        "-- c\nCREATE TABLE a (x TEXT DEFAULT ';');",
        "-- trailing comment\nINSERT INTO a VALUES ('b;c');",
    ]


def test_split_statements_refuses_an_unfinished_statement() -> None:
    from edge_min.errors import SchemaError

    with pytest.raises(SchemaError, match="incomplete SQL statement"):
        split_statements("CREATE TABLE a (x TEXT);\nCREATE TABLE b (y")
