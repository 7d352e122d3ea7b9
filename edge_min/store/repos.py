"""Repositories for the spec's tables (and our two), written once on the storage port.

Every ``create``/``update`` stamps ``updated_at`` (tables that have it) and sets
``sync_status='pending'`` (tables that have it), so the sync client finds every local change.
The four synced repositories also log each write (create, update, set, add, their batch forms,
delete) through the store's ``ChangeRecorder``, in the same transaction as the write: one
``sync_changes`` row per row written, one insert_many per batch. The recorder is injected
(``Store(backend, clock, changes=factory)``; the device's is ``edge_min.sync.tracker
.ChangeTracker``, wired by ``edge_min.runtime.Runtime.open_store``), so the store knows
nothing of sync. ``mark_synced`` and
``apply_remote`` are sync's own writes and are not logged.
With ``Store(..., cipher=factory)`` the payload columns are sealed at rest below the
repositories (``store.sealed.SealedStorage``), so every writer of the backend is covered.
Timestamps come from the injected ``Clock`` as ``clock.iso`` text (sortable UTC).

JSON columns are stored as compact JSON text and given/returned as Python values:
``workflows.definition``, ``agents.config``, ``input``/``output`` of both execution tables,
``agent_executions.metrics`` and ``sync_log.details``. ``None`` is stored as SQL NULL. A stored
value that is not valid JSON (written by other tooling) is returned as its text.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar, Protocol

from edge_min.clock import Clock, SystemClock, iso
from edge_min.errors import NotFound, StorageError
from edge_min.store.base import Le, Lt, Row, Storage, Where
from edge_min.store.sealed import FieldCipher, FieldCipherFactory, SealedStorage
from edge_min.store.tables import TABLES


class ChangeRecorder(Protocol):
    """Logs writes of the synced tables inside the write's own transaction."""

    def transaction(self) -> AbstractContextManager[None]:
        """The write's transaction (a savepoint when the caller already holds one)."""
        ...

    def record(self, entity: str, op: str, ids: Sequence[str], fields: str | Sequence[str]) -> None:
        """Log ``op`` (``upsert``) of rows ``ids`` of ``entity`` with the changed ``fields``."""
        ...

    def record_delete(self, entity: str, entity_id: str) -> None:
        """Log the deletion of one row (a tombstone)."""
        ...


#: Makes a store's recorder from its backend and clock (``ChangeTracker`` is one).
ChangeRecorderFactory = Callable[[Storage, Clock], ChangeRecorder]

# Set only by the repositories themselves, never through update(**changes).
_MANAGED = frozenset({"id", "created_at", "updated_at", "sync_status", "last_synced_at"})


# One encoder for every JSON column: json.dumps with options builds a new one per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
# JSONEncoder.encode builds a C encoder on every call; one built once (without the circular
# reference check, which needs fresh state per call) does the same work at a third of the
# cost. Where the C accelerator is missing, or a value is circular (RecursionError here),
# the full encoder runs and gives its own result or error.
_C_MAKE_ENCODER = getattr(json.encoder, "c_make_encoder", None)
_FAST_ENCODE = (
    None
    if _C_MAKE_ENCODER is None
    else _C_MAKE_ENCODER(
        None,
        _ENCODER.default,
        json.encoder.encode_basestring,
        None,
        _ENCODER.key_separator,
        _ENCODER.item_separator,
        False,  # sort_keys
        False,  # skipkeys
        True,  # allow_nan
    )
)


def _dumps(value: Any) -> str:
    """``value`` as compact JSON text, exactly as ``_ENCODER.encode`` writes it."""
    if _FAST_ENCODE is not None:
        try:
            return "".join(_FAST_ENCODE(value, 0))
        except RecursionError:
            pass
    return _ENCODER.encode(value)


def new_id() -> str:
    """A fresh random row id (UUID4 text)."""
    return str(uuid.uuid4())


def _loads(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


class Repo:
    """Shared CRUD for one table with an ``id`` primary key; subclasses add named methods."""

    table: ClassVar[str]
    json_columns: ClassVar[tuple[str, ...]] = ()

    def __init__(self, db: Storage, clock: Clock, changes: ChangeRecorder | None = None) -> None:
        self.db = db
        self.clock = clock
        cols = TABLES[self.table].column_names
        self._stamps_updated = "updated_at" in cols
        self._tracks_sync = "sync_status" in cols
        # The change log hook (None: this table is not synced, or tracking is off).
        self.changes = changes if self._tracks_sync else None
        self._all_fields = '["*"]'  # a new row: every column changed (tracker.ALL_FIELDS)
        self._fields_cache: dict[tuple[str, ...], str] = {}

    def _fields(self, changes: Mapping[str, Any]) -> str:
        """The JSON list of columns an update changes (``updated_at`` included), cached."""
        key = tuple(changes)
        text = self._fields_cache.get(key)
        if text is None:
            names = list(key)
            if self._stamps_updated and "updated_at" not in names:
                names.append("updated_at")
            text = self._fields_cache[key] = _dumps(names)
        return text

    def _now(self, at: float | None = None) -> str:
        return iso(self.clock.time() if at is None else at)

    def _encode(self, row: Mapping[str, Any]) -> Row:
        out = dict(row)
        for col in self.json_columns:
            value = out.get(col)
            if value is not None:
                try:
                    out[col] = _dumps(value)
                except (TypeError, ValueError) as exc:
                    raise StorageError(
                        f"{self.table}.{col} must be JSON-serialisable: {exc}"
                    ) from exc
        return out

    def _decode(self, row: Row) -> Row:
        for col in self.json_columns:
            row[col] = _loads(row.get(col))
        return row

    def _stamp(self, row: Row) -> Row:
        if self._stamps_updated:
            row["updated_at"] = self._now()
        if self._tracks_sync:
            row["sync_status"] = "pending"
        return row

    def _insert(self, row: Row) -> Row:
        if "id" not in row:
            row["id"] = new_id()
        if self._stamps_updated:
            row.setdefault("created_at", self._now())
        self._insert_logged(self._stamp(self._encode(row)))
        return self.require(row["id"])

    def _insert_logged(self, data: Row) -> None:
        tracker = self.changes
        if tracker is None:
            self.db.insert(self.table, data)
            return
        with tracker.transaction():
            self.db.insert(self.table, data)
            tracker.record(self.table, "upsert", [data["id"]], self._all_fields)

    def _update_logged(self, id: str, changes: Mapping[str, Any]) -> int:
        data = self._stamp(self._encode(changes))
        tracker = self.changes
        if tracker is None:
            return self.db.update(self.table, {"id": id}, data)
        with tracker.transaction():
            n = self.db.update(self.table, {"id": id}, data)
            if n:
                tracker.record(self.table, "upsert", [id], self._fields(changes))
        return n

    def _select(
        self, where: Where | None = None, order_by: tuple[str, ...] = (), limit: int | None = None
    ) -> list[Row]:
        where = {k: v for k, v in (where or {}).items() if v is not None}
        return [self._decode(r) for r in self.db.select(self.table, where, order_by, limit)]

    def get(self, id: str) -> Row | None:
        """The row with this id (JSON columns decoded), or None."""
        row = self.db.get(self.table, {"id": id})
        return None if row is None else self._decode(row)

    def require(self, id: str) -> Row:
        """The row with this id; ``NotFound`` naming table and id if there is none."""
        row = self.get(id)
        if row is None:
            raise NotFound(f"no {self.table} row with id {id!r}")
        return row

    def _refuse_managed(self, changes: Mapping[str, Any]) -> None:
        if not _MANAGED.isdisjoint(changes):
            managed = sorted(_MANAGED.intersection(changes))
            raise StorageError(
                f"{self.table}: {', '.join(managed)} are set by the store itself and cannot be "
                "updated directly (use mark_synced / apply_remote for sync state)"
            )

    def update(self, id: str, /, **changes: Any) -> Row:
        """Change columns of one row, stamp it pending; the updated row (``NotFound`` if none)."""
        self._refuse_managed(changes)
        if not self._update_logged(id, changes):
            raise NotFound(f"no {self.table} row with id {id!r}")
        return self.require(id)

    def set(self, id: str, /, **changes: Any) -> bool:
        """``update`` without reading the row back (the engine's hot path); whether it existed."""
        self._refuse_managed(changes)
        return bool(self._update_logged(id, changes))

    def add(self, row: Mapping[str, Any]) -> None:
        """Insert a full row without reading it back (the engine's hot path)."""
        row = dict(row)
        if "id" not in row:
            row["id"] = new_id()
        if self._stamps_updated:
            row.setdefault("created_at", self._now())
        self._insert_logged(self._stamp(self._encode(row)))

    def set_many(self, changes: Iterable[tuple[str, Mapping[str, Any]]]) -> int:
        """``set`` for many (id, changes) pairs in one batch, in order; how many rows existed.

        All are stamped with one ``updated_at`` (they are one write) and written all or nothing.
        """
        rows: list[Row] = []
        stamp: dict[str, Any] = {}
        if self._stamps_updated:
            stamp["updated_at"] = self._now()
        if self._tracks_sync:
            stamp["sync_status"] = "pending"
        tracker = self.changes
        fields: list[str] = []
        for id, change in changes:
            self._refuse_managed(change)
            if tracker is not None:
                fields.append(self._fields(change))
            row = self._encode(change)
            row.update(stamp)
            row["id"] = id
            rows.append(row)
        if not rows:
            return 0
        if tracker is None:
            return self.db.update_many(self.table, "id", rows)
        # An id that matches no row logs a change too (update_many counts, it does not say
        # which); the sync side skips changes of rows that do not exist.
        with tracker.transaction():
            n = self.db.update_many(self.table, "id", rows)
            tracker.record(self.table, "upsert", [r["id"] for r in rows], fields)
        return n

    def add_many(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """``add`` for many rows in one batch, all or nothing; they share one timestamp."""
        now = self._now() if self._stamps_updated else ""
        out: list[Row] = []
        for given in rows:
            row = self._encode(given)
            if "id" not in row:
                row["id"] = new_id()
            if self._stamps_updated:
                row.setdefault("created_at", now)
                row["updated_at"] = now
            if self._tracks_sync:
                row["sync_status"] = "pending"
            out.append(row)
        if not out:
            return
        tracker = self.changes
        if tracker is None:
            self.db.insert_many(self.table, out)
            return
        with tracker.transaction():
            self.db.insert_many(self.table, out)
            tracker.record(self.table, "upsert", [r["id"] for r in out], self._all_fields)

    def delete(self, id: str) -> bool:
        """Delete one row (a synced table keeps a tombstone for sync); whether it existed."""
        tracker = self.changes
        if tracker is None:
            return self.db.delete(self.table, {"id": id}) > 0
        with tracker.transaction():
            if not self.db.delete(self.table, {"id": id}):
                return False
            tracker.record_delete(self.table, id)
        return True

    def pending(self, limit: int | None = None) -> list[Row]:
        """Rows changed locally and not yet synced, oldest change first."""
        order = ("updated_at", "id") if self._stamps_updated else ("id",)
        return self._select({"sync_status": "pending"}, order, limit)

    def mark_synced(
        self, id: str, at: float | None = None, *, if_updated_at: str | None = None
    ) -> bool:
        """Record that the row reached central at ``at``; does not stamp it pending.

        With ``if_updated_at`` (the ``updated_at`` that was pushed) a row changed since the
        push stays pending, so a concurrent local edit is not lost. Returns whether it marked.
        """
        where: dict[str, Any] = {"id": id}
        if if_updated_at is not None:
            where["updated_at"] = if_updated_at
        changes = {"sync_status": "synced", "last_synced_at": self._now(at)}
        return self.db.update(self.table, where, changes) > 0

    def apply_remote(self, row: Mapping[str, Any], at: float | None = None) -> Row:
        """Write a row received from central as is (insert or replace), marked synced."""
        data = self._encode(row)
        if self._tracks_sync:
            data["sync_status"] = "synced"
            data["last_synced_at"] = self._now(at)
        self.db.upsert(self.table, data)
        return self.require(data["id"])


class WorkflowRepo(Repo):
    """``workflows``: definitions (JSON) by id, name and version."""

    table = "workflows"
    json_columns = ("definition",)

    def create(self, name: str, definition: Any, version: str, id: str | None = None) -> Row:
        """Store a new workflow; the stored row."""
        row: Row = {"name": name, "definition": definition, "version": version}
        return self._insert({**row, "id": id} if id else row)

    def get_by_name(self, name: str) -> Row | None:
        """The most recently updated workflow with this name, or None."""
        rows = self._select({"name": name}, ("-updated_at",), 1)
        return rows[0] if rows else None

    def list(self, sync_status: str | None = None, limit: int | None = None) -> list[Row]:
        """Workflows by name."""
        return self._select({"sync_status": sync_status}, ("name", "created_at"), limit)


class AgentRepo(Repo):
    """``agents``: agent configs (JSON) by id, name, type and version."""

    table = "agents"
    json_columns = ("config",)

    def create(self, name: str, type: str, config: Any, version: str, id: str | None = None) -> Row:
        """Store a new agent; the stored row."""
        row: Row = {"name": name, "type": type, "config": config, "version": version}
        return self._insert({**row, "id": id} if id else row)

    def get_by_name(self, name: str) -> Row | None:
        """The most recently updated agent with this name, or None."""
        rows = self._select({"name": name}, ("-updated_at",), 1)
        return rows[0] if rows else None

    def list(self, type: str | None = None, limit: int | None = None) -> list[Row]:
        """Agents by name, optionally of one type."""
        return self._select({"type": type}, ("name", "created_at"), limit)


class ExecutionRepo(Repo):
    """``workflow_executions``: one row per run of a workflow."""

    table = "workflow_executions"
    json_columns = ("input", "output")

    def create(
        self,
        workflow_id: str,
        input: Any = None,
        status: str = "pending",
        id: str | None = None,
        started_at: float | None = None,
    ) -> Row:
        """Record a new execution; the stored row."""
        row: Row = {
            "id": id or new_id(),
            "workflow_id": workflow_id,
            "status": status,
            "input": input,
            "started_at": self._now(started_at),
        }
        return self._insert(row)

    def oldest(self, status: str, limit: int | None = None) -> list[Row]:
        """Executions of one status, oldest first: the order queued runs are admitted in."""
        return self._select({"status": status}, ("started_at", "id"), limit)

    def list(
        self, workflow_id: str | None = None, status: str | None = None, limit: int | None = None
    ) -> list[Row]:
        """Executions, newest first."""
        where = {"workflow_id": workflow_id, "status": status}
        return self._select(where, ("-started_at", "id"), limit)


class AgentExecutionRepo(Repo):
    """``agent_executions``: one row per agent step; the engine writes them in batches.

    No ``create``/``finish`` of its own: the workflow engine writes step rows through
    ``add_many``/``set_many`` only, so that one commit carries every step change of a poll.
    """

    table = "agent_executions"
    json_columns = ("input", "output", "metrics")

    def list(
        self,
        workflow_execution_id: str | None = None,
        agent_id: str | None = None,
        status: str | None = None,
        limit: int | None = None,
    ) -> list[Row]:
        """Agent executions in the order they started."""
        where = {
            "workflow_execution_id": workflow_execution_id,
            "agent_id": agent_id,
            "status": status,
        }
        return self._select(where, ("started_at", "id"), limit)


class SyncLogRepo(Repo):
    """``sync_log``: an append-only record of sync operations (no sync state of its own)."""

    table = "sync_log"
    json_columns = ("details",)

    def append(
        self,
        operation: str,
        entity_type: str,
        entity_id: str,
        status: str,
        details: Any = None,
        id: str | None = None,
    ) -> Row:
        """Add an entry stamped with the clock's time; the stored row."""
        row: Row = {
            "id": id or new_id(),
            "operation": operation,
            "entity_type": entity_type,
            "entity_id": entity_id,
            "status": status,
            "timestamp": self._now(),
            "details": details,
        }
        return self._insert(row)

    def list(
        self,
        entity_type: str | None = None,
        entity_id: str | None = None,
        status: str | None = None,
        limit: int | None = None,
    ) -> list[Row]:
        """Entries, oldest first."""
        where = {"entity_type": entity_type, "entity_id": entity_id, "status": status}
        return self._select(where, ("timestamp", "id"), limit)

    def prune(self, older_than: float) -> int:
        """Delete entries stamped before ``older_than`` (epoch seconds); how many."""
        return self.db.delete(self.table, {"timestamp": Lt(iso(older_than))})


class MetaRepo:
    """``meta``: small settings such as the device id, as text by key."""

    def __init__(self, db: Storage) -> None:
        self.db = db

    def get(self, key: str, default: str | None = None) -> str | None:
        """The value for ``key``, or ``default``."""
        row = self.db.get("meta", {"key": key})
        return default if row is None else str(row["value"])

    def set(self, key: str, value: str) -> None:
        """Set ``key`` to ``value``."""
        self.db.upsert("meta", {"key": key, "value": value}, key=("key",))

    def delete(self, key: str) -> bool:
        """Remove ``key``; whether it existed."""
        return self.db.delete("meta", {"key": key}) > 0


class ScheduleStateRepo:
    """``schedule_state``: when each scheduled job last ran and is next due (epoch seconds)."""

    def __init__(self, db: Storage) -> None:
        self.db = db

    def get(self, job_id: str) -> Row | None:
        """The job's state, or None if it never ran."""
        return self.db.get("schedule_state", {"job_id": job_id})

    def save(self, job_id: str, last_run_at: float | None, next_run_at: float | None) -> None:
        """Record the job's last and next run times."""
        row = {"job_id": job_id, "last_run_at": last_run_at, "next_run_at": next_run_at}
        self.db.upsert("schedule_state", row, key=("job_id",))

    def all(self) -> list[Row]:
        """Every job's state by id."""
        return self.db.select("schedule_state", order_by=("job_id",))

    def due(self, now: float) -> list[Row]:
        """Jobs whose ``next_run_at`` is at or before ``now``."""
        return self.db.select("schedule_state", {"next_run_at": Le(now)}, ("next_run_at",))

    def delete(self, job_id: str) -> bool:
        """Forget a job; whether it was known."""
        return self.db.delete("schedule_state", {"job_id": job_id}) > 0


class Store:
    """The store facade: one backend, the repositories on it and the clock they stamp with."""

    def __init__(
        self,
        backend: Storage,
        clock: Clock | None = None,
        changes: ChangeRecorderFactory | None = None,
        cipher: FieldCipherFactory | None = None,
    ) -> None:
        #: The backend as opened, without sealing (backups, the key ring's own work).
        self.raw = backend
        #: This connection's at-rest cipher (None: payload columns are stored as plaintext).
        self.cipher: FieldCipher | None = None
        if cipher is not None:
            self.cipher = cipher(backend)
            backend = SealedStorage(backend, self.cipher)
        self.backend = backend
        self.clock: Clock = clock or SystemClock()
        #: The change log hook of the synced tables (None: writes are not logged for sync).
        self.changes: ChangeRecorder | None = (
            changes(backend, self.clock) if changes is not None else None
        )
        self.workflows = WorkflowRepo(backend, self.clock, self.changes)
        self.executions = ExecutionRepo(backend, self.clock, self.changes)
        self.agents = AgentRepo(backend, self.clock, self.changes)
        self.agent_executions = AgentExecutionRepo(backend, self.clock, self.changes)
        self.sync_log = SyncLogRepo(backend, self.clock)
        self.meta = MetaRepo(backend)
        self.schedule = ScheduleStateRepo(backend)

    def atomic(self) -> AbstractContextManager[None]:
        """A transaction over every repository (commit on exit, rollback on error)."""
        return self.backend.atomic()

    def size_bytes(self) -> int:
        """Bytes the database takes on disk."""
        return self.backend.size_bytes()

    def close(self) -> None:
        """Close the backend."""
        self.backend.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def synced_repos(self) -> tuple[Repo, ...]:
        """The repositories with sync state, parents before children (the order to push)."""
        return (self.workflows, self.agents, self.executions, self.agent_executions)
