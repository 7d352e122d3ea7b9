"""Payload columns sealed at rest: a ``Storage`` that encrypts them on write, opens them on read.

``SealedStorage`` wraps a backend and hands every payload column (``PAYLOAD_COLUMNS``: the
spec's JSON columns and our tables' payloads) to an injected ``FieldCipher`` on the way in
and out, so every writer of these tables (repositories, the sync tracker and state, the
monitor's buffer and outbox, the engine's batches) is covered without knowing it. The
cipher is injected like the change recorder (``Store(backend, cipher=factory)``); store/
imports no crypto, so it still works where no AES library exists (encryption off there).

A sealed value is TEXT (the spec's columns stay TEXT): ``enc1:<key id>:<base64url(nonce |
ciphertext | tag)>``; the cipher binds it to (table, column, row id), so a value copied to
another row or column does not open. A value without the prefix is plaintext (written
before encryption was switched on, or with it off) and is returned as is; the key ring's
background job seals those. JSON text never starts with ``e``, so the two cannot be confused.

Rows are addressed by primary key: a write that changes a payload column of rows matched by
something else (rare) is done row by row, so each value is bound to its own row id.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from edge_min.errors import StorageError
from edge_min.store.base import IsNull, NotNull, Prefix, Row, Storage, Where
from edge_min.store.tables import TABLES

#: The columns that hold payloads, by table; every one of them is sealed when encryption is on.
PAYLOAD_COLUMNS: dict[str, tuple[str, ...]] = {
    "workflows": ("definition",),
    "agents": ("config",),
    "workflow_executions": ("input", "output"),
    "agent_executions": ("input", "output", "metrics"),
    "sync_log": ("details",),
    "metrics_buffer": ("metrics",),
    "monitor_outbox": ("payload",),
    "sync_conflicts": ("edge_row", "central_row"),
}
#: What every sealed value starts with (the format's version is the digit).
SEALED_PREFIX = "enc1:"

_PAYLOAD_SETS = {t: frozenset(cols) for t, cols in PAYLOAD_COLUMNS.items()}
_PLAIN_KEYS = (str, int)


class FieldCipher(Protocol):
    """Seals and opens one column value, bound to its table, column and row id."""

    def seal(self, table: str, column: str, row_id: str, plain: str) -> str:
        """``plain`` as sealed text (``enc1:...``)."""
        ...

    def open(self, table: str, column: str, row_id: str, sealed: str) -> str:
        """The plaintext of ``sealed``; ``ValueRejected`` naming the three if it fails."""
        ...


#: Makes a connection's cipher from its (unsealed) backend: the key ring is read through it.
FieldCipherFactory = Callable[[Storage], FieldCipher]


_SINGLE_PK = {
    t: TABLES[t].primary_key[0] for t in PAYLOAD_COLUMNS if len(TABLES[t].primary_key) == 1
}


def row_id_of(table: str, row: Mapping[str, Any]) -> str:
    """The row id a sealed value of ``table`` is bound to (its primary key as text)."""
    name = _SINGLE_PK.get(table)
    if name is not None:  # every payload table today: one lookup, no list
        value = row.get(name)
        if type(value) is str:
            return value
        if value is not None:
            return str(value)
    pk = TABLES[table].primary_key
    values = [row.get(k) for k in pk]
    if any(v is None for v in values):
        raise StorageError(
            f"{table}: a sealed column needs the row's {'/'.join(pk)} to bind to, and it is "
            "missing; give it explicitly"
        )
    return "/".join(str(v) for v in values)


class SealedStorage(Storage):
    """``inner`` with the payload columns sealed by ``cipher``; other calls pass through."""

    def __init__(self, inner: Storage, cipher: FieldCipher) -> None:
        self.inner = inner
        self.cipher = cipher

    def __getattr__(self, name: str) -> Any:
        # Backend specifics (path, backup_to, the transaction depth) are the inner one's.
        return getattr(self.inner, name)

    # -- sealing -------------------------------------------------------------------------

    def _seal_row(self, table: str, row: Mapping[str, Any], row_id: str | None = None) -> Row:
        out = dict(row)
        seal = self.cipher.seal
        for col in PAYLOAD_COLUMNS[table]:
            value = out.get(col)
            if type(value) is str:
                if row_id is None:
                    row_id = row_id_of(table, out)
                out[col] = seal(table, col, row_id, value)
        return out

    def _open_row(self, table: str, cols: tuple[str, ...], row: Row) -> Row:
        for col in cols:
            value = row.get(col)
            if type(value) is str and value.startswith(SEALED_PREFIX):
                row[col] = self.cipher.open(table, col, row_id_of(table, row), value)
        return row

    def _pk_key(self, table: str, key: Where) -> str | None:
        """The row id when ``key`` is exactly one row's primary key, else None."""
        pk = TABLES[table].primary_key
        if len(key) != len(pk):
            return None
        values = []
        for k in pk:
            v = key.get(k)
            if type(v) not in _PLAIN_KEYS:
                return None
            values.append(str(v))
        return "/".join(values)

    # -- the port --------------------------------------------------------------------------

    def atomic(self) -> AbstractContextManager[None]:
        """The inner backend's transaction."""
        return self.inner.atomic()

    def insert(self, table: str, row: Mapping[str, Any]) -> None:
        """Insert one row, its payload columns sealed."""
        if table in PAYLOAD_COLUMNS:
            row = self._seal_row(table, row)
        self.inner.insert(table, row)

    def upsert(self, table: str, row: Mapping[str, Any], key: Sequence[str] = ("id",)) -> None:
        """Insert or update one row, its payload columns sealed."""
        if table in PAYLOAD_COLUMNS:
            row = self._seal_row(table, row)
        self.inner.upsert(table, row, key)

    def update(self, table: str, key: Where, changes: Mapping[str, Any]) -> int:
        """Update the matching rows, payload columns sealed for each row's own id."""
        cols = _PAYLOAD_SETS.get(table)
        if cols is None or cols.isdisjoint(changes):
            return self.inner.update(table, key, changes)
        row_id = self._pk_key(table, key)
        if row_id is not None:
            return self.inner.update(table, key, self._seal_row(table, changes, row_id))
        # Matched by something else: one update per row, each sealed for its own id.
        pk = TABLES[table].primary_key
        n = 0
        with self.inner.atomic():
            for found in self.inner.select(table, key):
                own = {k: found[k] for k in pk}
                n += self.inner.update(
                    table, own, self._seal_row(table, changes, row_id_of(table, own))
                )
        return n

    def insert_many(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert the rows, payload columns sealed."""
        if table in PAYLOAD_COLUMNS:
            rows = [self._seal_row(table, r) for r in rows]
        self.inner.insert_many(table, rows)

    def update_many(self, table: str, key_column: str, rows: Sequence[Mapping[str, Any]]) -> int:
        """Per row, update by ``key_column``; payload columns sealed for each row's id."""
        cols = _PAYLOAD_SETS.get(table)
        if cols is None or all(cols.isdisjoint(r) for r in rows):
            return self.inner.update_many(table, key_column, rows)
        if TABLES[table].primary_key == (key_column,):
            sealed = []
            for r in rows:
                key = r.get(key_column)
                sealed.append(self._seal_row(table, r, None if key is None else str(key)))
            return self.inner.update_many(table, key_column, sealed)
        with self.inner.atomic():  # keyed by another column: row by row, each its own id
            return sum(
                self.update(
                    table,
                    {key_column: r[key_column]},
                    {k: v for k, v in r.items() if k != key_column},
                )
                for r in rows
            )

    def get(self, table: str, key: Mapping[str, Any]) -> Row | None:
        """The row, payload columns opened."""
        row = self.inner.get(table, key)
        cols = PAYLOAD_COLUMNS.get(table)
        return row if row is None or cols is None else self._open_row(table, cols, row)

    def select(
        self,
        table: str,
        where: Where | None = None,
        order_by: Sequence[str] = (),
        limit: int | None = None,
    ) -> list[Row]:
        """Matching rows, payload columns opened (filter those only on NULL or a prefix)."""
        cols = PAYLOAD_COLUMNS.get(table)
        if cols is None:
            return self.inner.select(table, where, order_by, limit)
        if where:
            for name in _PAYLOAD_SETS[table].intersection(where):
                if (
                    not isinstance(where[name], IsNull | NotNull | Prefix)
                    and where[name] is not None
                ):
                    raise StorageError(
                        f"{table}.{name} is encrypted at rest: it can be matched only on NULL "
                        "or a prefix of its stored text, not on its value"
                    )
        rows = self.inner.select(table, where, order_by, limit)
        return [self._open_row(table, cols, r) for r in rows]

    def count(self, table: str, where: Where | None = None) -> int:
        """How many rows match."""
        return self.inner.count(table, where)

    def delete(self, table: str, key: Where) -> int:
        """Delete the matching rows."""
        return self.inner.delete(table, key)

    def size_bytes(self) -> int:
        """The inner backend's size on disk."""
        return self.inner.size_bytes()

    def close(self) -> None:
        """Close the inner backend."""
        self.inner.close()
