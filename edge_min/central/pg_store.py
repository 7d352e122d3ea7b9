"""``PgCentralStore``: the central store on PostgreSQL (psycopg 3), shared by many processes.

Several ``edge-min central serve`` processes may point at one database. What keeps them
correct (see ``edge_min.central.store`` for why pullers need it):

- a push transaction runs at READ COMMITTED and first takes
  ``pg_advisory_xact_lock(LOCK_CLASS, crc32(entity))``: pushes of one entity commit one at a
  time, across processes, and the lock is released only after the commit is visible;
- versions come from the sequence ``central_version`` with ``CACHE 1`` (a per-session cache
  would hand out numbers out of commit order across processes) and are drawn under that lock,
  so each commit's versions exceed every version committed before it in that entity;
- because the lock is taken before ``applied_batches`` is read, a batch replayed to another
  process while the first attempt is still running waits and then finds the stored result.

Reads (pull, device lookups) run in autocommit: one statement, one snapshot, no lock.
A connection lost mid-push is retried: the push is idempotent by batch id, so a commit that
did happen is found and answered, not applied twice. One connection per server thread.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from edge_min.central.attestation_store import PG_SCHEMA
from edge_min.central.enrollment_store import PG_SCHEMA as ENROLLMENT_SCHEMA
from edge_min.central.rollout_store import PG_SCHEMA as ROLLOUT_PG_SCHEMA
from edge_min.central.store import SCHEMA_VERSION, SqlCentralStore, Tx
from edge_min.clock import Clock
from edge_min.errors import MissingDependency, SchemaError, StorageError

T = TypeVar("T")
log = logging.getLogger("edge_min.central.pg")

LOCK_CLASS = 0x45444745  # "EDGE": the advisory-lock namespace of edge_min central
SCHEMA_LOCK = 0
RETRIES = 6

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS central_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)""",
    # CACHE 1 is load-bearing: see the module docstring.
    """CREATE SEQUENCE IF NOT EXISTS central_version AS BIGINT CACHE 1""",
    """CREATE TABLE IF NOT EXISTS records (
        entity TEXT NOT NULL, id TEXT NOT NULL, version BIGINT NOT NULL, hlc TEXT NOT NULL,
        origin TEXT NOT NULL, "row" JSONB NOT NULL, field_hlcs JSONB NOT NULL,
        deleted BOOLEAN NOT NULL DEFAULT false, updated_at TEXT NOT NULL,
        PRIMARY KEY (entity, id))""",
    """CREATE UNIQUE INDEX IF NOT EXISTS records_by_version ON records (entity, version)""",
    """CREATE TABLE IF NOT EXISTS applied_batches (
        batch_id TEXT PRIMARY KEY, node TEXT NOT NULL, entity TEXT NOT NULL,
        result JSONB NOT NULL, applied_at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS devices (
        id TEXT PRIMARY KEY, status TEXT NOT NULL, ip_address TEXT, ssh_user TEXT,
        last_seen TEXT, sync_key TEXT, created_at TEXT NOT NULL, provisioned_at TEXT,
        last_action TEXT, last_action_at TEXT, details JSONB)""",
    """CREATE TABLE IF NOT EXISTS device_events (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, device_id TEXT NOT NULL,
        action TEXT NOT NULL, details JSONB NOT NULL, at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS alerts (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, node TEXT NOT NULL,
        name TEXT NOT NULL, severity TEXT NOT NULL, message TEXT, at TEXT NOT NULL,
        received_at TEXT NOT NULL, details JSONB NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS alerts_by_node ON alerts (node, seq)""",
    """CREATE TABLE IF NOT EXISTS metrics (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, node TEXT NOT NULL,
        name TEXT NOT NULL, value DOUBLE PRECISION NOT NULL, at TEXT NOT NULL,
        labels JSONB NOT NULL, received_at TEXT NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS metrics_by_node ON metrics (node, seq)""",
    *PG_SCHEMA,
    *ROLLOUT_PG_SCHEMA,
    *ENROLLMENT_SCHEMA,
]


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:
        raise MissingDependency("psycopg", "postgres", "the central server on PostgreSQL") from exc
    return psycopg


def entity_lock_key(entity: str) -> int:
    """The advisory-lock key of an entity: a stable signed 32-bit hash."""
    return zlib.crc32(entity.encode()) - 2**31


_SQL_CACHE: dict[str, str] = {}


def _pg_sql(sql: str) -> str:
    # The shared SQL uses "?" placeholders and never a literal "?" or "%".
    out = _SQL_CACHE.get(sql)
    if out is None:
        out = _SQL_CACHE[sql] = sql.replace("?", "%s")
    return out


class _PgTx:
    """``Tx`` over one psycopg connection."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a statement and return all its rows."""
        cur = self.conn.execute(_pg_sql(sql), list(params))
        return list(cur.fetchall()) if cur.description is not None else []

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement and return its row count."""
        return int(self.conn.execute(_pg_sql(sql), list(params)).rowcount)


class PgCentralStore(SqlCentralStore):
    """The central store on a PostgreSQL database."""

    kind = "postgresql"

    def __init__(self, url: str, clock: Clock | None = None) -> None:
        super().__init__(clock)
        self._psycopg = _psycopg()
        self.url = url
        self._local = threading.local()
        self._all: list[Any] = []
        self._all_lock = threading.Lock()
        self._run(self._create_schema, write=True, retry_ambiguous=True)

    def _create_schema(self, tx: Tx) -> None:
        # Central processes starting together would race on CREATE ... IF NOT EXISTS.
        tx.query("SELECT pg_advisory_xact_lock(?, ?)", [LOCK_CLASS, SCHEMA_LOCK])
        for statement in SCHEMA:
            tx.execute(statement)
        rows = tx.query("SELECT value FROM central_meta WHERE key = 'schema_version'")
        if rows and int(rows[0][0]) > SCHEMA_VERSION:
            raise SchemaError(
                f"the central database has schema version {rows[0][0]}, newer than this "
                f"edge_min ({SCHEMA_VERSION}); upgrade edge_min"
            )
        tx.execute(
            "INSERT INTO central_meta (key, value) VALUES ('schema_version', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [str(SCHEMA_VERSION)],
        )

    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is not None and not conn.closed:
            return conn
        try:
            conn = self._psycopg.connect(
                self.url, autocommit=True, application_name="edge-min-central", connect_timeout=10
            )
        except self._psycopg.Error as exc:
            raise StorageError(
                f"cannot connect to the central database {_redact(self.url)}: {exc}".strip()
            ) from exc
        self._local.conn = conn
        with self._all_lock:
            self._all.append(conn)
        return conn

    def _run(self, work: Callable[[Tx], T], *, write: bool, retry_ambiguous: bool) -> T:
        errors = self._psycopg.errors
        transient = (errors.SerializationFailure, errors.DeadlockDetected)
        for attempt in range(RETRIES + 1):
            conn = self._conn()
            try:
                if not write:
                    return work(_PgTx(conn))
                with conn.transaction():
                    return work(_PgTx(conn))
            except transient as exc:
                if attempt == RETRIES:
                    raise StorageError(f"central database: gave up after retries: {exc}") from exc
            except self._psycopg.OperationalError as exc:
                if not conn.closed:
                    raise StorageError(f"central database: {exc}") from exc
                self._local.conn = None
                if not retry_ambiguous or attempt == RETRIES:
                    raise StorageError(f"central database connection lost: {exc}") from exc
                log.warning("central database connection lost (%s); retrying", exc)
            except self._psycopg.Error as exc:
                raise StorageError(f"central database: {exc}") from exc
            time.sleep(random.uniform(0, min(1.0, 0.01 * 2**attempt)))
        raise StorageError("central database: retries exhausted")  # pragma: no cover

    def _lock_entity(self, tx: Tx, entity: str) -> None:
        tx.query("SELECT pg_advisory_xact_lock(?, ?)", [LOCK_CLASS, entity_lock_key(entity)])

    def _allocate_versions(self, tx: Tx, n: int) -> list[int]:
        if n == 0:
            return []
        rows = tx.query("SELECT nextval('central_version') FROM generate_series(1, ?)", [n])
        return sorted(int(r[0]) for r in rows)

    def close(self) -> None:
        """Close every thread's connection."""
        with self._all_lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()
        self._local = threading.local()


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    cred, host = rest.rsplit("@", 1)
    return f"{scheme}://{cred.split(':', 1)[0]}@{host}"
