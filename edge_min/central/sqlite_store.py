"""``SqliteCentralStore``: the central store on one SQLite file (the embedded default).

One connection per thread (the HTTP server has a fixed pool of worker threads, each keeps its
own). Every write is ``BEGIN IMMEDIATE``: SQLite has one writer per file, so the push lock of
``edge_min.central.store`` is the write lock itself, taken before anything is read. Readers
use WAL snapshots and never block the writer. Lock errors wait ``busy_timeout`` inside SQLite,
then are retried here with jittered backoff.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from edge_min.central.attestation_store import SQLITE_SCHEMA
from edge_min.central.enrollment_store import SQLITE_SCHEMA as ENROLLMENT_SCHEMA
from edge_min.central.rollout_store import SQLITE_SCHEMA as ROLLOUT_SQLITE_SCHEMA
from edge_min.central.store import SCHEMA_VERSION, SqlCentralStore, Tx
from edge_min.clock import Clock
from edge_min.errors import SchemaError, StorageError

T = TypeVar("T")

BUSY_TIMEOUT_MS = 10_000
LOCK_RETRIES = 8

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS central_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)""",
    # The global version counter: one row, bumped under the write lock.
    """CREATE TABLE IF NOT EXISTS version_seq (
        one INTEGER PRIMARY KEY CHECK (one = 1), value INTEGER NOT NULL)""",
    """INSERT OR IGNORE INTO version_seq (one, value) VALUES (1, 0)""",
    """CREATE TABLE IF NOT EXISTS records (
        entity TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL, hlc TEXT NOT NULL,
        origin TEXT NOT NULL, "row" TEXT NOT NULL, field_hlcs TEXT NOT NULL,
        deleted INTEGER NOT NULL DEFAULT 0, updated_at TEXT NOT NULL,
        PRIMARY KEY (entity, id))""",
    """CREATE UNIQUE INDEX IF NOT EXISTS records_by_version ON records (entity, version)""",
    """CREATE TABLE IF NOT EXISTS applied_batches (
        batch_id TEXT PRIMARY KEY, node TEXT NOT NULL, entity TEXT NOT NULL,
        result TEXT NOT NULL, applied_at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS devices (
        id TEXT PRIMARY KEY, status TEXT NOT NULL, ip_address TEXT, ssh_user TEXT,
        last_seen TEXT, sync_key TEXT, created_at TEXT NOT NULL, provisioned_at TEXT,
        last_action TEXT, last_action_at TEXT, details TEXT)""",
    """CREATE TABLE IF NOT EXISTS device_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, device_id TEXT NOT NULL, action TEXT NOT NULL,
        details TEXT NOT NULL, at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS alerts (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, node TEXT NOT NULL, name TEXT NOT NULL,
        severity TEXT NOT NULL, message TEXT, at TEXT NOT NULL, received_at TEXT NOT NULL,
        details TEXT NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS alerts_by_node ON alerts (node, seq)""",
    """CREATE TABLE IF NOT EXISTS metrics (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, node TEXT NOT NULL, name TEXT NOT NULL,
        value REAL NOT NULL, at TEXT NOT NULL, labels TEXT NOT NULL, received_at TEXT NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS metrics_by_node ON metrics (node, seq)""",
    *SQLITE_SCHEMA,
    *ROLLOUT_SQLITE_SCHEMA,
    *ENROLLMENT_SCHEMA,
]


def _is_busy(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _set_wal(conn: sqlite3.Connection, attempts: int = 50) -> None:
    """``journal_mode = WAL``, retried: while another process opens the same new file (two
    central processes starting together), SQLite can answer 'database is locked' at once,
    without waiting on the busy timeout."""
    for attempt in range(attempts):
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.05 + random.random() * 0.05)


class _SqliteTx:
    """``Tx`` over one sqlite3 connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a statement and return all its rows."""
        return list(self.conn.execute(sql, params).fetchall())

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement and return its row count."""
        return int(self.conn.execute(sql, params).rowcount)


class SqliteCentralStore(SqlCentralStore):
    """The central store on a SQLite file."""

    kind = "sqlite"

    def __init__(self, path: str | Path, clock: Clock | None = None) -> None:
        super().__init__(clock)
        self.path = Path(path)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._run(self._create_schema, write=True, retry_ambiguous=True)

    def _create_schema(self, tx: Tx) -> None:
        for statement in SCHEMA:
            tx.execute(statement)
        rows = tx.query("SELECT value FROM central_meta WHERE key = 'schema_version'")
        if rows and int(rows[0][0]) > SCHEMA_VERSION:
            raise SchemaError(
                f"{self.path} has central schema version {rows[0][0]}, newer than this "
                f"edge_min ({SCHEMA_VERSION}); upgrade edge_min"
            )
        tx.execute(
            "INSERT OR REPLACE INTO central_meta (key, value) VALUES ('schema_version', ?)",
            [str(SCHEMA_VERSION)],
        )

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                # check_same_thread off only so close() may close every thread's connection;
                # each connection is still used by the one thread that opened it.
                conn = sqlite3.connect(
                    self.path,
                    isolation_level=None,
                    timeout=BUSY_TIMEOUT_MS / 1e3,
                    check_same_thread=False,
                )
            except sqlite3.Error as exc:
                raise StorageError(f"cannot open the central database {self.path}: {exc}") from exc
            # WAL: pulls read a snapshot while a push writes. synchronous FULL: an edge moves
            # its push cursor once we answer, so an answered commit must survive power loss.
            _set_wal(conn)
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return conn

    def _run(self, work: Callable[[Tx], T], *, write: bool, retry_ambiguous: bool) -> T:
        conn = self._conn()
        tx = _SqliteTx(conn)
        for attempt in range(LOCK_RETRIES + 1):
            try:
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            except sqlite3.Error as exc:
                if _is_busy(exc) and attempt < LOCK_RETRIES:
                    time.sleep(random.uniform(0, min(1.0, 0.01 * 2**attempt)))
                    continue
                raise StorageError(f"cannot begin a transaction on {self.path}: {exc}") from exc
            try:
                result = work(tx)
                conn.execute("COMMIT")
                return result
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if _is_busy(exc) and attempt < LOCK_RETRIES:
                    time.sleep(random.uniform(0, min(1.0, 0.01 * 2**attempt)))
                    continue
                raise StorageError(f"central database {self.path}: {exc}") from exc
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        raise StorageError(f"central database {self.path} stayed locked")  # pragma: no cover

    def _lock_entity(self, tx: Tx, entity: str) -> None:
        """BEGIN IMMEDIATE already holds the one write lock of the file."""

    def _allocate_versions(self, tx: Tx, n: int) -> list[int]:
        if n == 0:
            return []
        top = int(tx.query("UPDATE version_seq SET value = value + ? RETURNING value", [n])[0][0])
        return list(range(top - n + 1, top + 1))

    def close(self) -> None:
        """Close every thread's connection."""
        with self._all_lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()
        self._local = threading.local()
