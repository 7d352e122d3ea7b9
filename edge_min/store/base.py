"""The storage port: a small table-level contract that every backend implements.

Repositories (``repos.py``) are written once on top of ``Storage``; ``SqliteStore`` is the
default backend and ``MemoryStore`` the one for tests and simulation. One contract test suite
(``tests/unit/store/test_contract.py``) runs against both, so they cannot drift apart.

Semantics every backend keeps:

- ``where`` maps a column to a value (equality; ``None`` means IS NULL), a list or tuple
  (IN; an empty one matches nothing) or a comparison object (``Gt(5)``, ``Ne("x")``,
  ``IsNull()``, ``Prefix("enc1:")``...). Comparisons follow SQL: a NULL column matches only
  ``IsNull``.
- ``order_by`` entries are ``"col"`` or ``"-col"`` (descending); NULLs sort first ascending.
- Values are ``str``, ``int``, ``float``, ``bytes`` or ``None`` and must suit the column's type
  (TEXT takes ``str``; INTEGER ``int``; REAL ``int`` or ``float``); defaults are filled in on
  insert, NOT NULL and primary key columns are checked before anything is written.
- Unknown tables and columns raise ``StorageError`` naming them; names are validated against
  ``tables.TABLES`` before any SQL is built, so no unchecked name is ever interpolated.
- ``atomic()`` is a transaction: commit on exit, rollback on an exception; nesting is allowed
  (an inner block that fails rolls back only its own changes).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar

from edge_min.errors import StorageError
from edge_min.store.tables import TABLES, Column, Table

Row = dict[str, Any]


@dataclass(frozen=True)
class Cmp:
    """A comparison against a value; subclasses name the SQL operator."""

    value: Any
    op: ClassVar[str] = "="

    def test(self, actual: Any) -> bool:
        """Whether a stored value satisfies the comparison (NULL never does)."""
        if actual is None:
            return False
        if self.op == ">":
            return bool(actual > self.value)
        if self.op == "<":
            return bool(actual < self.value)
        if self.op == ">=":
            return bool(actual >= self.value)
        if self.op == "<=":
            return bool(actual <= self.value)
        if self.op == "!=":
            return bool(actual != self.value)
        return bool(actual == self.value)

    def param(self) -> Any:
        """The value bound to the SQL statement's ``?``."""
        return self.value


class Gt(Cmp):
    """column > value."""

    op = ">"


class Lt(Cmp):
    """column < value."""

    op = "<"


class Ge(Cmp):
    """column >= value."""

    op = ">="


class Le(Cmp):
    """column <= value."""

    op = "<="


class Ne(Cmp):
    """column != value (a NULL column does not match, as in SQL)."""

    op = "!="


class Prefix(Cmp):
    """TEXT column starts with value (case-sensitive; the at-rest key ring counts its rows)."""

    op = "GLOB"

    def test(self, actual: Any) -> bool:
        """Whether a stored text starts with the prefix (NULL never does)."""
        return isinstance(actual, str) and actual.startswith(self.value)

    def param(self) -> Any:
        """The prefix as a GLOB pattern, its wildcard characters matched literally."""
        return "".join(f"[{c}]" if c in "*?[" else c for c in str(self.value)) + "*"


class NotPrefix(Prefix):
    """TEXT column does not start with value (a NULL column does not match, as in SQL)."""

    op = "NOT GLOB"

    def test(self, actual: Any) -> bool:
        """Whether a stored text does not start with the prefix (NULL never matches)."""
        return isinstance(actual, str) and not actual.startswith(self.value)


@dataclass(frozen=True)
class IsNull:
    """column IS NULL."""


@dataclass(frozen=True)
class NotNull:
    """column IS NOT NULL."""


Where = Mapping[str, Any]


class Storage(ABC):
    """The table-level contract: transactions and CRUD on the tables in ``tables.TABLES``."""

    @abstractmethod
    def atomic(self) -> AbstractContextManager[None]:
        """A transaction: commit on exit, rollback on error; nested blocks are savepoints."""

    @abstractmethod
    def insert(self, table: str, row: Mapping[str, Any]) -> None:
        """Insert one row; a duplicate primary key raises ``StorageError``."""

    @abstractmethod
    def upsert(self, table: str, row: Mapping[str, Any], key: Sequence[str] = ("id",)) -> None:
        """Insert the row, or update the given columns of the row with the same ``key``."""

    @abstractmethod
    def update(self, table: str, key: Where, changes: Mapping[str, Any]) -> int:
        """Set ``changes`` on the rows matching ``key`` (a non-empty where); return how many."""

    # The batch methods: every row is validated before any is written; outside ``atomic()``
    # the batch is one transaction, inside it the batch is part of that transaction (no
    # savepoint of its own: on SQLite a savepoint costs more than a small batch saves).
    # These defaults loop over the single-row methods; the backends run one statement per
    # batch (per shape of row), which is what makes them worth calling.

    def insert_many(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert the rows in order, as ``insert`` each; one transaction unless in one."""
        table_of(table)
        rows = list(rows)
        for row in rows:
            prepare_row(table, row, fill_defaults=True)
        with self.atomic():
            for row in rows:
                self.insert(table, row)

    def update_many(self, table: str, key_column: str, rows: Sequence[Mapping[str, Any]]) -> int:
        """Per row, ``update(table, {key_column: its key}, its other columns)``; how many matched.

        Updates of the same key keep their order (the last one wins, as with ``update``);
        updates of different keys may be reordered, since the key column is never changed.
        """
        plan = split_keyed(table, key_column, rows)
        with self.atomic():
            return sum(self.update(table, {key_column: key}, new) for key, new in plan)

    @abstractmethod
    def get(self, table: str, key: Mapping[str, Any]) -> Row | None:
        """The row with this primary key, or None."""

    @abstractmethod
    def select(
        self,
        table: str,
        where: Where | None = None,
        order_by: Sequence[str] = (),
        limit: int | None = None,
    ) -> list[Row]:
        """Rows matching ``where``, ordered, at most ``limit``."""

    @abstractmethod
    def count(self, table: str, where: Where | None = None) -> int:
        """How many rows match ``where``."""

    @abstractmethod
    def delete(self, table: str, key: Where) -> int:
        """Delete the rows matching ``key`` (a non-empty where); return how many."""

    @abstractmethod
    def size_bytes(self) -> int:
        """Bytes the store takes on disk (database, WAL and shared memory files); 0 in memory."""

    @abstractmethod
    def close(self) -> None:
        """Release the store; later calls raise ``StorageError``."""

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# Validation shared by the backends, so both reject the same input with the same message.


def table_of(name: str) -> Table:
    """The ``Table`` called ``name``; ``StorageError`` naming it and the known ones if none."""
    table = TABLES.get(name)
    if table is None:
        raise StorageError(f"unknown table {name!r}; known tables: {', '.join(sorted(TABLES))}")
    return table


def column_of(table: Table, name: str) -> Column:
    """The column ``name`` of ``table``; ``StorageError`` naming both if there is none."""
    col = table.column(name) if isinstance(name, str) else None
    if col is None:
        raise StorageError(
            f"unknown column {name!r} in table {table.name!r}; "
            f"columns: {', '.join(table.column_names)}"
        )
    return col


def check_value(table: Table, col: Column, value: Any) -> Any:
    """``value`` if it suits the column's type (bools become ints); ``StorageError`` if not."""
    if value is None:
        return None
    ok: bool
    if col.type == "TEXT":
        ok = isinstance(value, str)
    elif col.type == "INTEGER":
        ok = isinstance(value, int)
        value = int(value) if ok else value
    elif col.type == "REAL":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    else:
        ok = isinstance(value, str | int | float | bytes)
    if not ok:
        raise StorageError(
            f"{table.name}.{col.name} is {col.type} but got {type(value).__name__} {value!r}; "
            "encode it first (the repositories store JSON columns as text)"
        )
    return value


def prepare_row(table_name: str, row: Mapping[str, Any], *, fill_defaults: bool) -> Row:
    """Validated copy of ``row``; with ``fill_defaults`` also defaults and NOT NULL checks."""
    # The hot path of every write: a value whose type the column takes as is skips
    # check_value; anything else (unknown column, bool, wrong type) takes the full check.
    table = TABLES.get(table_name) or table_of(table_name)
    exact = table.exact_types
    required = table.required
    out: Row = {}
    for name, value in row.items():
        types = exact.get(name)
        if types is None or type(value) not in types:
            value = check_value(table, column_of(table, name), value)
        if value is None and not fill_defaults and name in required:
            raise StorageError(f"{table.name}.{name} is required (NOT NULL) but was None")
        out[name] = value
    if fill_defaults:
        full = table.blank_row.copy()  # in column order, as SQLite returns rows
        full.update(out)
        for name in required:
            if full[name] is None:
                raise StorageError(
                    f"{table.name}.{name} is required (NOT NULL) but was "
                    f"{'None' if name in row else 'missing'}"
                )
        return full
    return out


def split_keyed(
    table_name: str, key_column: str, rows: Sequence[Mapping[str, Any]]
) -> list[tuple[Any, Row]]:
    """``update_many``'s rows validated, as (key value, validated changes) pairs."""
    table = TABLES.get(table_name) or table_of(table_name)
    column_of(table, key_column)
    out: list[tuple[Any, Row]] = []
    for i, row in enumerate(rows):
        if key_column not in row:
            raise StorageError(
                f"update_many on {table.name}: row {i} has no {key_column!r}, the key column "
                f"that picks the rows to change; got columns {tuple(row)}"
            )
        key = check_where(table_name, {key_column: row[key_column]})[key_column]
        changes = {k: v for k, v in row.items() if k != key_column}
        out.append((key, prepare_row(table_name, changes, fill_defaults=False)))
    return out


def check_upsert_key(table_name: str, key: Sequence[str]) -> tuple[str, ...]:
    """``key`` validated as the table's primary key (the only unique key our tables have)."""
    table = table_of(table_name)
    if isinstance(key, str):
        key = (key,)
    if set(key) != set(table.primary_key):
        raise StorageError(
            f"upsert key for {table.name} must be its primary key {table.primary_key}, "
            f"got {tuple(key)}"
        )
    return tuple(key)


def check_key(table_name: str, key: Mapping[str, Any]) -> Row:
    """``key`` validated as exactly the table's primary key."""
    table = table_of(table_name)
    if set(key) != set(table.primary_key):
        raise StorageError(
            f"key for {table.name} must be its primary key {table.primary_key}, got {tuple(key)}"
        )
    return {name: check_value(table, column_of(table, name), v) for name, v in key.items()}


def check_where(table_name: str, where: Where | None, *, required: bool = False) -> Row:
    """``where`` validated: known columns, values of the column type, known conditions."""
    table = TABLES.get(table_name) or table_of(table_name)
    if not where:
        if required:
            raise StorageError(
                f"update/delete on {table.name} needs a non-empty where; "
                "refusing to touch every row"
            )
        return {}
    exact = table.exact_types
    out: Row = {}
    for name, cond in where.items():
        types = exact.get(name)
        if types is not None and type(cond) in types:  # plain equality (or None: IS NULL)
            out[name] = cond
            continue
        col = column_of(table, name)
        if isinstance(cond, IsNull | NotNull):
            out[name] = cond
        elif isinstance(cond, Cmp):
            if cond.value is None:
                raise StorageError(
                    f"{table.name}.{name}: compare with None is never true; use IsNull()"
                )
            out[name] = type(cond)(check_value(table, col, cond.value))
        elif isinstance(cond, list | tuple | set | frozenset):
            out[name] = [check_value(table, col, v) for v in cond]
        else:
            out[name] = check_value(table, col, cond)
    return out


def check_order(table_name: str, order_by: Sequence[str]) -> list[tuple[str, bool]]:
    """``order_by`` as (column, descending) pairs, columns validated."""
    if isinstance(order_by, str):
        order_by = (order_by,)
    table = table_of(table_name)
    out = []
    for entry in order_by:
        desc = entry.startswith("-")
        name = entry[1:] if desc else entry
        column_of(table, name)
        out.append((name, desc))
    return out


def check_limit(limit: int | None) -> int | None:
    """``limit`` if None or a non-negative int."""
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        raise StorageError(f"limit must be a non-negative integer or None, got {limit!r}")
    return limit
