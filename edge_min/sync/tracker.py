"""The change log hook: every write to a synced table is logged in the same transaction.

The repositories of ``workflows``, ``workflow_executions``, ``agents`` and
``agent_executions`` call ``ChangeTracker.record`` (or ``record_delete``) inside the
transaction of the write (they open one when the caller has none). Each written row gets one
``sync_changes`` row: ``op`` (``upsert`` | ``delete``), the JSON list of changed columns
(``["*"]`` for a whole new row), a fresh HLC, and ``seq``, that HLC as an integer: a per-node
sequence number that never repeats, even after the database is reset. The clock's last value
is persisted in ``meta`` (``sync.hlc``) in the same transaction, and read back before each
batch is stamped, so the clock never goes back across restarts, NTP steps or processes.

Cost per batch of rows (the engine writes in batches): one ``meta`` read, one
``insert_many`` into ``sync_changes`` and one ``meta`` update; nothing per row beyond its log
row. ``sync_rows`` is written at sync points only (``changes.SyncState``), except a
tombstone mark on delete.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from edge_min.clock import Clock, iso
from edge_min.store.base import Storage
from edge_min.store.tables import TABLES
from edge_min.sync.hlc import HybridClock

ENTITIES = ("workflows", "workflow_executions", "agents", "agent_executions")
HLC_KEY = "sync.hlc"
DEVICE_KEY = "device.id"
SYNC_COLUMNS = ("sync_status", "last_synced_at")
ALL_FIELDS = '["*"]'  # the change log's "every column" (a new row), short on the hot path


def in_transaction(db: Storage) -> bool:
    """Whether ``db`` is inside ``atomic()`` (SqliteStore/RecordingStorage depth, memory undo).

    Unknown backends answer False, so the caller opens a transaction (always correct; only
    a savepoint's cost is saved when the answer is True).
    """
    depth = getattr(db, "_depth", None)
    if isinstance(depth, int):
        return depth > 0
    return bool(getattr(db, "_undo", None))


def data_columns(entity: str) -> tuple[str, ...]:
    """The columns of a synced table that travel (all but sync_status/last_synced_at)."""
    return tuple(c for c in TABLES[entity].column_names if c not in SYNC_COLUMNS)


class ChangeTracker:
    """Records local writes of the synced tables in ``sync_changes`` (the repositories' hook)."""

    def __init__(self, db: Storage, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        self._hlc: HybridClock | None = None
        self._node: str | None = None

    @property
    def hlc(self) -> HybridClock:
        """This node's hybrid logical clock (its node id read or made on first use)."""
        if self._hlc is None:
            self._hlc = HybridClock(self.clock, self._node or self.device_id())
        return self._hlc

    def device_id(self) -> str:
        """The node id: meta ``device.id``, made (``edge-`` + 16 hex digits) on first use."""
        row = self.db.get("meta", {"key": DEVICE_KEY})
        if row is not None:
            return str(row["value"])
        node = f"edge-{uuid.uuid4().hex[:16]}"
        self.db.insert("meta", {"key": DEVICE_KEY, "value": node})
        return node

    def use_node(self, node: str) -> None:
        """Stamp with ``node`` from now on (a configured device id overrides meta's)."""
        self._node = node
        if self._hlc is not None:
            self._hlc.node = node

    def transaction(self) -> AbstractContextManager[None]:
        """A transaction unless the caller is already in one (a savepoint costs statements)."""
        return nullcontext() if in_transaction(self.db) else self.db.atomic()

    def refresh(self) -> HybridClock:
        """The clock, raised to the persisted value (another process may have stamped)."""
        clock = self.hlc
        row = self.db.get("meta", {"key": HLC_KEY})
        if row is not None:
            clock.restore(str(row["value"]))
        return clock

    def persist(self) -> None:
        """Write the clock's last value to meta (inside the transaction that used it)."""
        value = self.hlc.last
        # update-then-insert rather than upsert: the engine benchmark replays plain statements.
        if not self.db.update("meta", {"key": HLC_KEY}, {"value": value}):
            self.db.insert("meta", {"key": HLC_KEY, "value": value})

    def record(self, entity: str, op: str, ids: Sequence[str], fields: str | Sequence[str]) -> None:
        """Log ``op`` on rows ``ids``; ``fields`` is one JSON list for all rows, or one per row."""
        if not ids:
            return
        clock = self.refresh()
        at = iso(self.clock.time())
        shared = fields if isinstance(fields, str) else None
        stamp = clock.stamp
        rows: list[dict[str, Any]] = []
        for i, entity_id in enumerate(ids):
            text, seq = stamp()
            rows.append(
                {
                    "seq": seq,
                    "entity": entity,
                    "entity_id": entity_id,
                    "op": op,
                    "hlc": text,
                    "fields": shared if shared is not None else fields[i],
                    "at": at,
                }
            )
        self.db.insert_many("sync_changes", rows)
        self.persist()

    def record_delete(self, entity: str, entity_id: str) -> None:
        """Log a deletion and mark the row's tombstone in ``sync_rows``."""
        self.record(entity, "delete", [entity_id], "[]")
        key = {"entity": entity, "entity_id": entity_id}
        mark = {"deleted": 1, "hlc": self.hlc.last}
        if not self.db.update("sync_rows", key, mark):
            self.db.insert("sync_rows", {**key, **mark, "field_hlcs": "{}"})
