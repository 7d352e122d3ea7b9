"""``MemoryStore``: the storage port on plain dicts, for tests and simulation.

It keeps the contract's semantics (defaults, NOT NULL, primary keys, where/order rules,
``atomic()`` rollback including nested blocks) so code tested against it behaves the same on
SQLite. Foreign keys are not enforced. Not thread-safe: one user at a time, like a connection.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from edge_min.errors import StorageError
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
from edge_min.store.tables import TABLES

_Key = tuple[Any, ...]


def _matches(row: Row, where: Row) -> bool:
    for name, cond in where.items():
        value = row.get(name)
        if isinstance(cond, IsNull):
            ok = value is None
        elif isinstance(cond, NotNull):
            ok = value is not None
        elif isinstance(cond, Cmp):
            ok = cond.test(value)
        elif isinstance(cond, list):
            ok = value is not None and value in cond
        elif cond is None:
            ok = value is None
        else:
            ok = value is not None and value == cond
        if not ok:
            return False
    return True


def _plain(cond: Any) -> bool:
    """An equality condition on a value (not NULL, a list or a comparison)."""
    return cond is not None and not isinstance(cond, Cmp | IsNull | NotNull | list)


def _sort_key(name: str) -> Callable[[Row], tuple[Any, ...]]:
    # NULL sorts before every value, as in SQLite.
    return lambda row: (0,) if row[name] is None else (1, row[name])


class MemoryStore(Storage):
    """The storage port in memory: a dict of primary key -> row per table."""

    def __init__(self) -> None:
        self._tables: dict[str, dict[_Key, Row]] = {name: {} for name in TABLES}
        # One undo log per open atomic() level: (table, key, row before or None if absent).
        # Rolling back replays it backwards; far cheaper than snapshotting every table.
        self._undo: list[list[tuple[str, _Key, Row | None]]] = []
        self._closed = False

    def _rows(self, table: str) -> dict[_Key, Row]:
        if self._closed:
            raise StorageError("the memory store is closed")
        table_of(table)
        return self._tables[table]

    @staticmethod
    def _pk(table: str, row: Mapping[str, Any]) -> _Key:
        return tuple(row[c] for c in TABLES[table].primary_key)

    def _remember(self, table: str, pk: _Key) -> None:
        if self._undo:
            old = self._tables[table].get(pk)
            self._undo[-1].append((table, pk, None if old is None else dict(old)))

    def _hits(self, table: str, rows: dict[_Key, Row], where: Row) -> list[_Key]:
        pk_cols = TABLES[table].primary_key
        if len(where) == len(pk_cols) and all(c in where and _plain(where[c]) for c in pk_cols):
            pk = tuple(where[c] for c in pk_cols)  # a primary-key lookup, not a scan
            return [pk] if pk in rows else []
        return [pk for pk, r in rows.items() if _matches(r, where)]

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """A transaction: on an error, every change made inside it is undone."""
        if self._closed:
            raise StorageError("the memory store is closed")
        self._undo.append([])
        try:
            yield
        except BaseException:
            for table, pk, old in reversed(self._undo.pop()):
                if old is None:
                    self._tables[table].pop(pk, None)
                else:
                    self._tables[table][pk] = old
            raise
        done = self._undo.pop()
        if self._undo:
            self._undo[-1].extend(done)  # an outer block may still roll these back

    def insert(self, table: str, row: Mapping[str, Any]) -> None:
        """Insert one row; a duplicate primary key raises ``StorageError``."""
        rows = self._rows(table)
        full = prepare_row(table, row, fill_defaults=True)
        pk = self._pk(table, full)
        if pk in rows:
            raise StorageError(f"insert into {table}: a row with key {pk!r} already exists")
        self._remember(table, pk)
        rows[pk] = full

    def upsert(self, table: str, row: Mapping[str, Any], key: Sequence[str] = ("id",)) -> None:
        """Insert the row, or update the given columns of the row with the same key."""
        rows = self._rows(table)
        check_upsert_key(table, key)
        full = prepare_row(table, row, fill_defaults=True)
        pk = self._pk(table, full)
        self._remember(table, pk)
        if pk in rows:
            rows[pk] = {**rows[pk], **prepare_row(table, row, fill_defaults=False)}
        else:
            rows[pk] = full

    def update(self, table: str, key: Where, changes: Mapping[str, Any]) -> int:
        """Set ``changes`` on the rows matching ``key``; return how many."""
        rows = self._rows(table)
        where = check_where(table, key, required=True)
        new = prepare_row(table, changes, fill_defaults=False)
        hits = self._hits(table, rows, where)
        if not new:
            return len(hits)
        for pk in hits:
            updated = {**rows[pk], **new}
            new_pk = self._pk(table, updated)
            if new_pk != pk and new_pk in rows:
                raise StorageError(f"update {table}: a row with key {new_pk!r} already exists")
            self._remember(table, pk)
            if new_pk != pk:
                self._remember(table, new_pk)
            del rows[pk]
            rows[new_pk] = updated
        return len(hits)

    def _batch(self) -> AbstractContextManager[None]:
        # As on SQLite: a batch is its own transaction, or part of the caller's open one.
        return nullcontext() if self._undo else self.atomic()

    def insert_many(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert the rows in order, all or nothing."""
        rows_by_pk = self._rows(table)
        full = [prepare_row(table, row, fill_defaults=True) for row in rows]
        with self._batch():
            for row in full:
                pk = self._pk(table, row)
                if pk in rows_by_pk:
                    raise StorageError(f"insert into {table}: a row with key {pk!r} already exists")
                self._remember(table, pk)
                rows_by_pk[pk] = row

    def update_many(self, table: str, key_column: str, rows: Sequence[Mapping[str, Any]]) -> int:
        """Per row, update the rows whose ``key_column`` matches; all or nothing."""
        self._rows(table)
        plan = split_keyed(table, key_column, rows)
        with self._batch():
            return sum(self.update(table, {key_column: key}, new) for key, new in plan)

    def get(self, table: str, key: Mapping[str, Any]) -> Row | None:
        """The row with this primary key, or None."""
        rows = self._rows(table)
        k = check_key(table, key)
        row = rows.get(tuple(k[c] for c in TABLES[table].primary_key))
        return dict(row) if row is not None else None

    def select(
        self,
        table: str,
        where: Where | None = None,
        order_by: Sequence[str] = (),
        limit: int | None = None,
    ) -> list[Row]:
        """Rows matching ``where``, ordered (NULLs first ascending), at most ``limit``."""
        rows = self._rows(table)
        cond = check_where(table, where)
        order = check_order(table, order_by)
        check_limit(limit)
        out = [dict(rows[pk]) for pk in self._hits(table, rows, cond)]
        # Stable sorts applied from the last key to the first give a multi-key order.
        for name, desc in reversed(order):
            out.sort(key=_sort_key(name), reverse=desc)
        return out if limit is None else out[:limit]

    def count(self, table: str, where: Where | None = None) -> int:
        """How many rows match ``where``."""
        rows = self._rows(table)
        cond = check_where(table, where)
        return len(self._hits(table, rows, cond))

    def delete(self, table: str, key: Where) -> int:
        """Delete the rows matching ``key``; return how many."""
        rows = self._rows(table)
        where = check_where(table, key, required=True)
        hits = self._hits(table, rows, where)
        for pk in hits:
            self._remember(table, pk)
            del rows[pk]
        return len(hits)

    def size_bytes(self) -> int:
        """Nothing on disk."""
        return 0

    def close(self) -> None:
        """Drop the data; later calls raise ``StorageError``."""
        self._closed = True
