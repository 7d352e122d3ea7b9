"""``SqliteStore``: the storage port on SQLite, the default backend.

Threading model: a ``SqliteStore`` is one connection and belongs to the thread that opened
it (``check_same_thread`` stays on, so misuse fails loudly instead of corrupting state).
Code that works from several threads opens one store per thread; ``open_store`` is cheap
and SQLite's file locks, ``busy_timeout`` and our retry serialise the writers. This keeps
the core free of ``threading`` (see the dependency rule) and works the same under Pyodide.

Transactions are explicit: the connection runs with ``isolation_level=None`` (no implicit
BEGIN from the driver) and ``atomic()`` issues ``BEGIN IMMEDIATE``, which takes the write
lock up front, so a transaction never fails half-way on a lock upgrade; nested blocks are
SAVEPOINTs. A statement outside ``atomic()`` is its own transaction.

Lock errors ("database is locked"/busy) first wait inside SQLite for ``busy_timeout``, then are
retried here with jittered exponential backoff ``lock_retries`` times, then raise
``StorageError``. Nothing is lost: a failed statement or BEGIN changed nothing.
"""

from __future__ import annotations

import operator
import os
import random
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from edge_min.clock import Clock, now_iso
from edge_min.errors import ConfigError, SchemaError, StorageError
from edge_min.store.base import (
    Cmp,
    IsNull,
    NotNull,
    Row,
    Storage,
    Where,
    check_key,
    check_limit,
    check_order,
    check_upsert_key,
    check_where,
    prepare_row,
    split_keyed,
    table_of,
)
from edge_min.store.migrations import (
    MIGRATIONS,
    MIGRATIONS_TABLE_SQL,
    Migration,
    check_migrations,
    migration_sql,
)
from edge_min.store.tables import SPEC_TABLES, TABLES

T = TypeVar("T")

# The durability trade-off, in WAL mode:
#   FULL   - the WAL is fsynced at every commit: a committed transaction survives power loss.
#            Costs one fsync per commit (milliseconds on SD cards). The default: an edge device
#            loses power without warning, and a lost "completed" step would be re-run.
#   NORMAL - fsync only at checkpoints: the database stays consistent after power loss but the
#            last commits may be rolled back. Safe against an application crash.
#   OFF    - no fsync at all: fastest; power loss can corrupt the database. Tests/scratch only.
SYNCHRONOUS_MODES = ("FULL", "NORMAL", "OFF")
DEFAULT_BUSY_TIMEOUT_MS = 5000
DEFAULT_LOCK_RETRIES = 8
_BACKOFF_BASE_S = 0.01
_BACKOFF_CAP_S = 1.0
_BUSY_CODES = (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED (extended codes keep these in the low byte)


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int) and (code & 0xFF) in _BUSY_CODES:
        return True
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _q(name: str) -> str:
    # Only ever called with names already validated against tables.TABLES.
    return '"' + name + '"'


def _dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> Row:
    return {d[0]: v for d, v in zip(cursor.description, row, strict=True)}


def _code_only(sql: str) -> str:
    lines = (ln.split("--")[0] if ln.lstrip().startswith("--") else ln for ln in sql.splitlines())
    return "\n".join(lines).strip().strip(";").strip()


def split_statements(script: str) -> list[str]:
    """Split a SQL script into statements (``executescript`` would commit our transaction)."""
    out: list[str] = []
    pieces = script.split(";")
    buf = ""
    for piece in pieces[:-1]:
        buf += piece + ";"
        if sqlite3.complete_statement(buf):
            if _code_only(buf):
                out.append(buf.strip())
            buf = ""
    rest = _code_only(buf + pieces[-1])
    if rest:
        raise SchemaError(f"incomplete SQL statement at the end of a migration: {rest!r}")
    return out


def _where_sql(where: Row) -> tuple[str, list[Any]]:
    parts: list[str] = []
    params: list[Any] = []
    for name, cond in where.items():
        col = _q(name)
        if isinstance(cond, IsNull) or cond is None:
            parts.append(f"{col} IS NULL")
        elif isinstance(cond, NotNull):
            parts.append(f"{col} IS NOT NULL")
        elif isinstance(cond, Cmp):
            parts.append(f"{col} {cond.op} ?")
            params.append(cond.param())
        elif isinstance(cond, list):
            if not cond:
                parts.append("0")
            else:
                parts.append(f"{col} IN ({', '.join('?' * len(cond))})")
                params.extend(cond)
        else:
            parts.append(f"{col} = ?")
            params.append(cond)
    return (" WHERE " + " AND ".join(parts)) if parts else "", params


# SQL text built once per statement shape: besides saving the string building, the same
# string lets sqlite3's statement cache (keyed by the text) skip re-preparing it. Names are
# validated before they get here; the cap only guards against every subset of columns.
_PLAIN = frozenset({str, int, float, bytes})  # equality conditions whose SQL is "col = ?"
_fetchall: Callable[[sqlite3.Cursor], list[Row]] = sqlite3.Cursor.fetchall
_rowcount: Callable[[sqlite3.Cursor], int] = operator.attrgetter("rowcount")


@lru_cache(maxsize=512)
def _insert_sql(table: str) -> str:
    """INSERT of every column in table order (``prepare_row`` fills them all)."""
    cols = TABLES[table].column_names
    names, marks = ", ".join(_q(c) for c in cols), ", ".join("?" * len(cols))
    return f"INSERT INTO {_q(table)} ({names}) VALUES ({marks})"


def _update_sql(table: str, new: Row, where: Row) -> tuple[str, list[Any]]:
    """The UPDATE setting ``new``'s columns on rows matching a validated ``where``."""
    for cond in where.values():
        if type(cond) not in _PLAIN:  # NULL, IN, comparisons: built each time
            where_sql, params = _where_sql(where)
            sets = ", ".join(f"{_q(c)} = ?" for c in new)
            return f"UPDATE {_q(table)} SET {sets}{where_sql}", [*new.values(), *params]
    return _update_eq_sql(table, tuple(new), tuple(where)), [*new.values(), *where.values()]


@lru_cache(maxsize=512)
def _update_eq_sql(table: str, columns: tuple[str, ...], where: tuple[str, ...]) -> str:
    """``UPDATE table SET c = ?, ... WHERE w = ? AND ...`` for validated names."""
    sets = ", ".join(f"{_q(c)} = ?" for c in columns)
    return f"UPDATE {_q(table)} SET {sets} WHERE {' AND '.join(f'{_q(c)} = ?' for c in where)}"


class SqliteStore(Storage):
    """The storage port on one SQLite connection; applies migrations and checks the schema."""

    def __init__(
        self,
        path: str | os.PathLike[str] = ":memory:",
        *,
        synchronous: str = "FULL",
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
        lock_retries: int = DEFAULT_LOCK_RETRIES,
        migrations: Sequence[Migration] | None = None,
        clock: Clock | None = None,
        sleep: Callable[[float], None] = time.sleep,
        secure_delete: bool = False,
    ) -> None:
        mode = str(synchronous).upper()
        if mode not in SYNCHRONOUS_MODES:
            raise ConfigError(
                f"must be one of {', '.join(SYNCHRONOUS_MODES)}, got {synchronous!r} "
                "(FULL survives power loss; NORMAL may lose the last commits; OFF may corrupt)",
                path="storage.synchronous",
                value=synchronous,
            )
        self.path = str(path)
        self.in_memory = self.path in ("", ":memory:")
        self.synchronous = mode
        self.busy_timeout_ms = int(busy_timeout_ms)
        self.lock_retries = int(lock_retries)
        self._clock = clock
        self._sleep = sleep
        self._depth = 0
        self.secure_delete = bool(secure_delete)
        self._conn: sqlite3.Connection | None = None
        try:
            if not self.in_memory:
                create_private(self.path)
            self._conn = sqlite3.connect(
                self.path, isolation_level=None, timeout=self.busy_timeout_ms / 1000
            )
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"cannot open database {self.path}: {exc}") from exc
        self._conn.row_factory = _dict_row
        try:
            self._configure()
            self._migrate(check_migrations(MIGRATIONS if migrations is None else migrations))
            self._verify_schema()
        except BaseException:
            self._conn.close()
            self._conn = None
            raise

    # -- setup ---------------------------------------------------------------------------

    def _configure(self) -> None:
        # busy_timeout: wait inside SQLite (explicitly, not the driver's implicit 5 s) for
        # another connection's lock before reporting busy; our retry loop is the second layer.
        self._execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms}")
        # journal_mode=WAL: readers never block the writer and vice versa (the API can read
        # while the engine writes), and a commit is one append, which survives a crash.
        self.journal_mode = str(self._execute("PRAGMA journal_mode = WAL")[0]["journal_mode"])
        # synchronous: the durability trade-off documented at SYNCHRONOUS_MODES.
        self._execute(f"PRAGMA synchronous = {self.synchronous}")
        # foreign_keys: off by default in SQLite; without it the spec's REFERENCES are decoration
        # and an execution could point at a workflow that does not exist.
        self._execute("PRAGMA foreign_keys = ON")
        # secure_delete: with payloads encrypted at rest, the plaintext a sealing rewrite
        # frees must not linger in free pages or free blocks; SQLite zeroes it.
        if self.secure_delete:
            self._execute("PRAGMA secure_delete = ON")

    def _migrate(self, migrations: list[Migration]) -> None:
        self._execute(MIGRATIONS_TABLE_SQL)
        known = max((m[0] for m in migrations), default=0)
        applied = {r["version"] for r in self._execute("SELECT version FROM schema_migrations")}
        if applied and max(applied) > known:
            raise SchemaError(
                f"database {self.path} is at schema version {max(applied)} but this edge_min "
                f"knows versions up to {known}; upgrade edge_min or restore an older backup"
            )
        for version, name, sql in migrations:
            if version in applied:
                continue
            with self.atomic():
                # Re-check inside the write lock: another process may have just applied it.
                if self._execute("SELECT 1 FROM schema_migrations WHERE version = ?", [version]):
                    continue
                if version == 1 and self._adopt_spec_schema():
                    name += " (adopted existing tables)"
                else:
                    try:
                        for statement in split_statements(migration_sql((version, name, sql))):
                            self._execute(statement)
                    except StorageError as exc:
                        raise SchemaError(
                            f"migration {version} ({name}) failed on {self.path}: {exc.message}; "
                            "it was rolled back and the database is unchanged"
                        ) from exc
                self._execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    [version, name, now_iso(self._clock)],
                )

    def _adopt_spec_schema(self) -> bool:
        # A database made by running edge-schema.sql directly (e.g. by the platform's tooling)
        # already has the spec tables; record migration 1 instead of failing on CREATE TABLE.
        found = {
            r["name"] for r in self._execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        return all(t in found for t in SPEC_TABLES)

    def _verify_schema(self) -> None:
        for table in TABLES.values():
            info = self._execute(f"PRAGMA table_info({_q(table.name)})")
            if not info:
                raise SchemaError(f"database {self.path} has no table {table.name!r}")
            found = [
                (r["name"], r["type"].upper(), bool(r["notnull"]), r["dflt_value"], r["pk"])
                for r in info
            ]
            expected = [
                (
                    c.name,
                    c.type,
                    c.not_null,
                    c.default_sql,
                    table.primary_key.index(c.name) + 1 if c.name in table.primary_key else 0,
                )
                for c in table.columns
            ]
            if found != expected:
                diff = [f"{e} != {f}" for e, f in zip(expected, found, strict=False) if e != f]
                raise SchemaError(
                    f"table {table.name!r} in {self.path} is not the schema edge_min expects "
                    f"(expected (name, type, notnull, default, pk) vs found): "
                    f"{'; '.join(diff) or f'{len(expected)} vs {len(found)} columns'}"
                )

    # -- plumbing ------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StorageError(f"database {self.path} is closed")
        return self._conn

    def _backoff(self, what: str, exc: sqlite3.Error, attempt: int, waited: float) -> float:
        """The delay before retrying after ``exc``; raises ``StorageError`` if not to retry."""
        if isinstance(exc, sqlite3.IntegrityError):
            raise StorageError(f"{what}: {exc}") from exc
        if not _is_busy(exc):
            raise StorageError(f"{what} on {self.path}: {exc}") from exc
        if attempt == self.lock_retries:
            raise StorageError(
                f"{what}: database {self.path} stayed locked by another connection "
                f"({exc}); gave up after {attempt + 1} attempts and {waited:.2f}s of "
                f"backoff on top of busy_timeout={self.busy_timeout_ms}ms; "
                "nothing was written, retry later or look for a stuck writer"
            ) from exc
        delay = min(_BACKOFF_CAP_S, _BACKOFF_BASE_S * 2**attempt)
        return delay * random.uniform(0.5, 1.5)

    def _retry(self, what: str, fn: Callable[[], T], attempt: int = 0, waited: float = 0.0) -> T:
        """Run ``fn``; on a lock error back off with jitter and retry a bounded number of times.

        ``attempt`` and ``waited`` continue a count begun by a caller's own first attempt.
        """
        while True:
            try:
                return fn()
            except sqlite3.Error as exc:
                delay = self._backoff(what, exc, attempt, waited)
            waited += delay
            self._sleep(delay)
            attempt += 1

    # Statements run once directly (no closure, no loop) and only go to _retry after a
    # first failure, with that attempt already counted: this is every row write's path.

    def _run(self, sql: str, params: Any, what: str | None, out: Callable[[Any], T]) -> T:
        conn = self._conn
        if conn is None:
            raise StorageError(f"database {self.path} is closed")
        try:
            return out(conn.execute(sql, params))
        except sqlite3.Error as exc:
            what = what or sql.split("(")[0][:60]
            delay = self._backoff(what, exc, 0, 0.0)
        self._sleep(delay)
        return self._retry(what, lambda: out(conn.execute(sql, params)), 1, delay)

    def _execute(self, sql: str, params: Sequence[Any] = (), what: str | None = None) -> list[Row]:
        return self._run(sql, params, what, _fetchall)

    def _execute_count(self, sql: str, params: Sequence[Any], what: str) -> int:
        return self._run(sql, params, what, _rowcount)

    def _batch(self) -> AbstractContextManager[None]:
        """A transaction for a batch method, unless the caller's ``atomic()`` is one already."""
        return nullcontext() if self._depth else self.atomic()

    def _execute_many(self, sql: str, params: list[list[Any]], what: str) -> int:
        """``executemany`` inside a transaction (the batch methods open one); rows changed."""
        conn = self._connection()
        return self._retry(what, lambda: conn.executemany(sql, params).rowcount)

    # -- the port ------------------------------------------------------------------------

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rollback on error); nested blocks are SAVEPOINTs."""
        self._connection()
        if self._depth:
            name = f"sp{self._depth}"
            self._execute(f"SAVEPOINT {name}")
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth -= 1
                self._execute(f"ROLLBACK TO {name}")
                self._execute(f"RELEASE {name}")
                raise
            self._depth -= 1
            self._execute(f"RELEASE {name}")
            return
        self._execute("BEGIN IMMEDIATE", what="begin transaction")
        self._depth = 1
        try:
            yield
            self._execute("COMMIT", what="commit")
        except BaseException:
            self._depth = 0
            if self._conn is not None and self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        self._depth = 0

    def insert(self, table: str, row: Mapping[str, Any]) -> None:
        """Insert one row; a duplicate primary key raises ``StorageError``."""
        full = prepare_row(table, row, fill_defaults=True)
        self._execute_count(_insert_sql(table), list(full.values()), f"insert into {table}")

    def upsert(self, table: str, row: Mapping[str, Any], key: Sequence[str] = ("id",)) -> None:
        """Insert the row, or update the given columns of the row with the same key."""
        keys = check_upsert_key(table, key)
        full = prepare_row(table, row, fill_defaults=True)
        cols = ", ".join(_q(c) for c in full)
        marks = ", ".join("?" * len(full))
        sets = [f"{_q(c)} = excluded.{_q(c)}" for c in row if c not in keys]
        action = f"DO UPDATE SET {', '.join(sets)}" if sets else "DO NOTHING"
        self._execute(
            f"INSERT INTO {_q(table)} ({cols}) VALUES ({marks}) "
            f"ON CONFLICT ({', '.join(_q(k) for k in keys)}) {action}",
            list(full.values()),
            what=f"upsert into {table}",
        )

    def update(self, table: str, key: Where, changes: Mapping[str, Any]) -> int:
        """Set ``changes`` on the rows matching ``key``; return how many."""
        where = check_where(table, key, required=True)
        new = prepare_row(table, changes, fill_defaults=False)
        if not new:
            return self.count(table, key)
        sql, params = _update_sql(table, new, where)
        return self._execute_count(sql, params, f"update {table}")

    def insert_many(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert the rows in order with one ``executemany``, all or nothing."""
        table_of(table)
        params = [list(prepare_row(table, row, fill_defaults=True).values()) for row in rows]
        if not params:
            return
        with self._batch():
            self._execute_many(_insert_sql(table), params, f"insert into {table}")

    def update_many(self, table: str, key_column: str, rows: Sequence[Mapping[str, Any]]) -> int:
        """Per row, update the rows whose ``key_column`` matches; one ``executemany`` per shape."""
        plan = split_keyed(table, key_column, rows)
        if not plan:
            return 0
        total = 0
        # Rows with the same changed columns share one statement. Different keys touch
        # different rows (the key column is never changed here), so grouping may reorder
        # them; a key seen again flushes first, so the same row's updates keep their order.
        groups: dict[tuple[str, ...], list[list[Any]]] = {}
        seen: set[Any] = set()

        def flush() -> int:
            n = 0
            for cols, params in groups.items():
                sql = _update_eq_sql(table, cols, (key_column,))
                n += self._execute_many(sql, params, f"update {table}")
            groups.clear()
            seen.clear()
            return n

        with self._batch():
            for key, new in plan:
                if not new or type(key) not in _PLAIN:  # IS NULL, IN, a count: one at a time
                    total += flush() + self.update(table, {key_column: key}, new)
                    continue
                if key in seen:
                    total += flush()
                seen.add(key)
                groups.setdefault(tuple(new), []).append([*new.values(), key])
            total += flush()
        return total

    def get(self, table: str, key: Mapping[str, Any]) -> Row | None:
        """The row with this primary key, or None."""
        rows = self.select(table, check_key(table, key), limit=1)
        return rows[0] if rows else None

    def select(
        self,
        table: str,
        where: Where | None = None,
        order_by: Sequence[str] = (),
        limit: int | None = None,
    ) -> list[Row]:
        """Rows matching ``where``, ordered (NULLs first ascending), at most ``limit``."""
        table_of(table)
        where_sql, params = _where_sql(check_where(table, where))
        order = check_order(table, order_by)
        sql = f"SELECT * FROM {_q(table)}{where_sql}"
        if order:
            sql += " ORDER BY " + ", ".join(f"{_q(c)} {'DESC' if d else 'ASC'}" for c, d in order)
        if check_limit(limit) is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return self._execute(sql, params, what=f"select from {table}")

    def count(self, table: str, where: Where | None = None) -> int:
        """How many rows match ``where``."""
        table_of(table)
        where_sql, params = _where_sql(check_where(table, where))
        rows = self._execute(
            f"SELECT COUNT(*) AS n FROM {_q(table)}{where_sql}", params, what=f"count {table}"
        )
        return int(rows[0]["n"])

    def delete(self, table: str, key: Where) -> int:
        """Delete the rows matching ``key``; return how many."""
        where_sql, params = _where_sql(check_where(table, key, required=True))
        return self._execute_count(
            f"DELETE FROM {_q(table)}{where_sql}", params, f"delete from {table}"
        )

    def size_bytes(self) -> int:
        """Bytes of the database, its WAL and its shared-memory file; 0 in memory."""
        if self.in_memory:
            return 0
        total = 0
        for suffix in ("", "-wal", "-shm"):
            with suppress(OSError):  # a -wal/-shm that is not there takes no space
                total += os.path.getsize(self.path + suffix)
        return total

    def close(self) -> None:
        """Roll back any open transaction and close the connection."""
        if self._conn is not None:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            self._conn.close()
            self._conn = None

    # -- beyond the port -------------------------------------------------------------------

    def checkpoint_truncate(self) -> None:
        """Copy the WAL into the database and truncate it to zero bytes (drops old frames)."""
        if self._depth:
            raise StorageError("cannot checkpoint from inside atomic(): commit first")
        self._execute("PRAGMA wal_checkpoint(TRUNCATE)", what="checkpoint")

    def backup_to(self, dest: str | os.PathLike[str]) -> None:
        """Copy a consistent snapshot of the database into ``dest`` with the backup API."""
        if self._depth:
            raise StorageError("cannot back up from inside atomic(): commit first")
        conn = self._connection()
        _backup_connection(conn, Path(dest), lambda f: self._retry("backup", f))


def create_private(path: str | os.PathLike[str]) -> None:
    """Create the file at ``path`` empty with mode 0600 unless it exists (SQLite gives its
    -wal and -shm files the database file's mode, so they are 0600 too)."""
    try:
        fd = os.open(os.fspath(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def _backup_connection(
    source: sqlite3.Connection, dest: Path, retry: Callable[[Callable[[], None]], None]
) -> None:
    create_private(dest)
    target = sqlite3.connect(str(dest), isolation_level=None)
    try:
        retry(lambda: source.backup(target))
        # The copy is one self-contained file: no -wal beside it that could be lost.
        target.execute("PRAGMA journal_mode = DELETE")
    finally:
        target.close()


def online_backup(source_path: str | os.PathLike[str], dest: str | os.PathLike[str]) -> None:
    """Copy the database at ``source_path`` into ``dest`` while others may be using it."""
    src = Path(source_path)
    if not src.is_file():
        raise StorageError(f"cannot back up {src}: no such database file")
    conn = sqlite3.connect(str(src), isolation_level=None, timeout=DEFAULT_BUSY_TIMEOUT_MS / 1000)
    try:

        def once(fn: Callable[[], None]) -> None:
            try:
                fn()
            except sqlite3.Error as exc:
                raise StorageError(f"backup of {src} failed: {exc}") from exc

        _backup_connection(conn, Path(dest), once)
    finally:
        conn.close()


def integrity_check(path: str | os.PathLike[str]) -> list[str]:
    """The problems ``PRAGMA integrity_check`` finds in the file at ``path`` ([] if it is sound)."""
    p = Path(path)
    if not p.is_file():
        return [f"{p}: no such file"]
    try:
        conn = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
        try:
            rows = [str(r[0]) for r in conn.execute("PRAGMA integrity_check").fetchall()]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return [str(exc)]
    return [] if rows == ["ok"] else rows


def missing_edge_tables(path: str | os.PathLike[str]) -> list[str]:
    """Tables an edge_min database must have that the file at ``path`` lacks."""
    conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
    try:
        found = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.Error as exc:
        raise StorageError(f"cannot read {path}: {exc}") from exc
    finally:
        conn.close()
    return [t for t in ("schema_migrations", *SPEC_TABLES) if t not in found]


def read_table(path: str | os.PathLike[str], table: str) -> list[Row] | None:
    """Every row of ``table`` in the file at ``path``, opened read-only; None if no such table.

    For looking into a backup before it is restored, without changing a byte of it.
    """
    table_of(table)
    conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
    conn.row_factory = _dict_row
    try:
        found = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", [table]
        ).fetchall()
        return conn.execute(f"SELECT * FROM {_q(table)}").fetchall() if found else None
    except sqlite3.Error as exc:
        raise StorageError(f"cannot read {path}: {exc}") from exc
    finally:
        conn.close()


def applied_schema_version(path: str | os.PathLike[str]) -> int | None:
    """The highest migration recorded in the database file at ``path``, opened read-only;
    None if there is no such file or it has no ``schema_migrations`` (updates compare it
    with what a version can read)."""
    p = Path(path)
    if not p.is_file():
        return None
    conn = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True)
    try:
        found = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
        ).fetchall()
        if not found:
            return None
        row = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
        return int(row[0]) if row and row[0] is not None else 0
    except sqlite3.Error as exc:
        raise StorageError(f"cannot read {path}: {exc}") from exc
    finally:
        conn.close()
