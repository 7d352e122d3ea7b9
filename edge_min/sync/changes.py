"""The edge's sync state: push batches, acknowledgements, pulled records, conflicts, status.

``SyncState`` is what the sync manager (``manager.SyncManager``) calls; the push/pull exchange
whose cursors and acknowledgements it keeps is in ``docs/sync-protocol.md`` ("HTTP
endpoints"). The tables behind it (migration 4):

- ``sync_changes``: local changes not yet pushed, written by ``tracker.ChangeTracker`` in the
  transaction of each write; ``acknowledge`` prunes what central has answered.
- ``sync_rows``: per row, its version metadata as of its last sync point (push accepted, pull
  applied, conflict resolved): HLC, field HLCs, tombstone, the central version the local data
  is based on, and central's field HLCs at that version (``base_field_hlcs``, merge's base).
  A row's current metadata is that overlaid with its changes after the push cursor.
- ``sync_cursors``: per entity, the push cursor (a change seq), the pull cursor (a central
  version) and the health of the last attempts.
- ``sync_conflicts``: conflicts left to a person (``manual``); the row is held until resolved.

Every write here is one transaction that also writes a ``sync_log`` row, observes every HLC it
receives and persists the clock. A central record whose ``origin`` is this node is never a
conflict: it is this node's own earlier write (its answer lost to a cut link) and becomes the
new base.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edge_min.clock import Clock, iso
from edge_min.errors import NotFound
from edge_min.store.base import Gt, IsNull, Storage
from edge_min.store.tables import TABLES
from edge_min.sync.conflicts import (
    KEEP_EDGE,
    MANUAL,
    MERGED,
    TAKE_CENTRAL,
    Decision,
    EdgeState,
    check_policy,
    resolve,
    same_content,
)
from edge_min.sync.errors import ConflictError, SyncError
from edge_min.sync.hlc import HybridClock
from edge_min.sync.tracker import ENTITIES, SYNC_COLUMNS, ChangeTracker, data_columns

if TYPE_CHECKING:
    from edge_min.store.repos import Store

Change = Mapping[str, Any]
_SYNCED = "synced"
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode


@dataclass(frozen=True)
class OutBatch:
    """A push batch: items shaped as central's push items, and the change seqs it covers."""

    entity: str
    batch_id: str
    items: list[dict[str, Any]]
    upto_seq: int
    after_seq: int = 0  # the push cursor when the batch was cut


@dataclass
class AckReport:
    """What acknowledging a pushed batch did (``repush``: rows queued to push again)."""

    accepted: int = 0
    conflicts: int = 0
    repush: int = 0
    central_taken: int = 0
    manual: int = 0


@dataclass
class ApplyReport:
    """What applying a pulled batch did."""

    records: int = 0
    applied: int = 0
    skipped: int = 0
    conflicts: int = 0
    repush: int = 0
    central_taken: int = 0
    manual: int = 0


def _loads(text: Any) -> Any:
    return json.loads(text) if isinstance(text, str) else (text or {})


def _counts(report: AckReport | ApplyReport) -> dict[str, int]:
    return dict(report.__dict__)


class SyncState:
    """The edge's side of sync for one store: change batches, pulled records, conflicts."""

    def __init__(self, store: Store, node: str | None = None, clock: Clock | None = None) -> None:
        self.store = store
        self.db: Storage = store.backend
        if not isinstance(store.changes, ChangeTracker):
            raise SyncError(
                "this store logs no changes for sync; open it with "
                "open_store(..., changes=ChangeTracker) (Runtime.open_store does)"
            )
        self.tracker: ChangeTracker = store.changes
        if clock is not None:
            self.tracker.clock = clock
            self.tracker.hlc.clock = clock
        self.clock: Clock = clock or store.clock
        if node:
            self.tracker.use_node(node)
        self.hlc: HybridClock = self.tracker.hlc
        self.node: str = self.hlc.node
        self.tracker.refresh()

    # -- reads -----------------------------------------------------------------------------------

    def _now(self) -> str:
        return iso(self.clock.time())

    def _cursor(self, entity: str) -> dict[str, Any]:
        row = self.db.get("sync_cursors", {"entity": entity})
        return row or {"entity": entity, "push_seq": 0, "pull_version": 0, "failures": 0}

    def _set_cursor(self, entity: str, **changes: Any) -> None:
        self.db.upsert("sync_cursors", {"entity": entity, **changes}, key=("entity",))

    def _held(self, entity: str) -> set[str]:
        rows = self.db.select("sync_conflicts", {"entity": entity, "resolved_at": IsNull()})
        return {r["entity_id"] for r in rows}

    def _pending(self, entity: str, after: int) -> dict[str, list[dict[str, Any]]]:
        """The entity's changes after ``after`` by row, in seq order (one indexed scan)."""
        out: dict[str, list[dict[str, Any]]] = {}
        where = {"entity": entity, "seq": Gt(after)}
        for ch in self.db.select("sync_changes", where, ("seq",)):
            out.setdefault(ch["entity_id"], []).append(ch)
        return out

    def edge_state(
        self, entity: str, entity_id: str, changes: Sequence[Change] | None = None
    ) -> EdgeState:
        """The row's current data and metadata: ``sync_rows`` overlaid with pending changes."""
        if changes is None:
            after = int(self._cursor(entity)["push_seq"])
            changes = self._pending(entity, after).get(entity_id, [])
        sr = self.db.get("sync_rows", {"entity": entity, "entity_id": entity_id})
        hlc = str(sr["hlc"]) if sr else ""
        field_hlcs: dict[str, str] = _loads(sr["field_hlcs"]) if sr else {}
        deleted = bool(sr["deleted"]) if sr else False
        every = data_columns(entity)[1:]  # all but id
        for ch in changes:
            hlc = max(hlc, ch["hlc"])
            names = _loads(ch["fields"])
            for name in every if "*" in names else names:
                field_hlcs[name] = ch["hlc"]
            deleted = ch["op"] == "delete"
        row = self.db.get(entity, {"id": entity_id})
        if row is not None:
            for col in SYNC_COLUMNS:
                row.pop(col, None)
        return EdgeState(
            id=entity_id,
            row=None if deleted else row,
            hlc=hlc,
            field_hlcs=field_hlcs,
            deleted=deleted or (row is None and sr is not None),
            base_version=None if sr is None else sr["central_version"],
            base_field_hlcs=_loads(sr["base_field_hlcs"]) if sr else {},
        )

    # -- writes shared by push, pull and resolve ------------------------------------------------

    def _set_sync_row(
        self,
        entity: str,
        entity_id: str,
        meta: Decision | EdgeState,
        central_version: int | None,
        base_field_hlcs: Mapping[str, str] | None,
    ) -> None:
        base = None if base_field_hlcs is None else _ENCODE(dict(base_field_hlcs))
        row = {
            "entity": entity,
            "entity_id": entity_id,
            "hlc": meta.hlc or self.hlc.now(),
            "field_hlcs": _ENCODE(dict(meta.field_hlcs)),
            "deleted": int(meta.deleted),
            "central_version": central_version,
            "base_field_hlcs": base,
        }
        self.db.upsert("sync_rows", row, key=("entity", "entity_id"))

    def _fold(self, entity: str, state: EdgeState) -> None:
        """Keep the row's current metadata in sync_rows (its changes are about to be pruned)."""
        row = {
            "entity": entity,
            "entity_id": state.id,
            "hlc": state.hlc or self.hlc.now(),
            "field_hlcs": _ENCODE(state.field_hlcs),
            "deleted": int(state.deleted),
        }
        self.db.upsert("sync_rows", row, key=("entity", "entity_id"))

    def _write_local(
        self, entity: str, entity_id: str, row: Mapping[str, Any] | None, status: str
    ) -> None:
        """Write central's (or merged) data into the table itself; no change is logged."""
        if row is None:
            self.db.delete(entity, {"id": entity_id})
            return
        known = TABLES[entity].by_name
        data = {k: v for k, v in row.items() if k in known and k not in SYNC_COLUMNS}
        data["id"] = entity_id
        data["sync_status"] = status
        if status == _SYNCED:
            data["last_synced_at"] = self._now()
        self.db.upsert(entity, data)

    def _drop(self, changes: Sequence[Change]) -> None:
        seqs = [int(ch["seq"]) for ch in changes]
        for start in range(0, len(seqs), 500):  # under SQLite's parameter limit
            self.db.delete("sync_changes", {"seq": seqs[start : start + 500]})

    def _marker(self, entity: str, entity_id: str, hlc: str, deleted: bool) -> None:
        """A change with no fields: the row is pending again, its metadata unchanged."""
        _text, seq = self.hlc.stamp()
        row = {"seq": seq, "entity": entity, "entity_id": entity_id, "hlc": hlc}
        row.update(op="delete" if deleted else "upsert", fields="[]", at=self._now())
        self.db.insert("sync_changes", row)

    def _take_central(self, entity: str, rec: Mapping[str, Any], changes: Sequence[Change]) -> None:
        eid = str(rec["id"])
        decision = Decision(
            TAKE_CENTRAL,
            None if rec.get("deleted") else dict(rec.get("row") or {}),
            str(rec["hlc"]),
            dict(rec.get("field_hlcs") or {}),
            bool(rec.get("deleted")),
            push=False,
        )
        self._write_local(entity, eid, decision.row, _SYNCED)
        self._set_sync_row(entity, eid, decision, int(rec["version"]), decision.field_hlcs)
        self._drop(changes)

    def _open_conflict(self, entity: str, state: EdgeState, rec: Mapping[str, Any]) -> None:
        where = {"entity": entity, "entity_id": state.id, "resolved_at": IsNull()}
        central = {"central_row": _ENCODE(dict(rec)), "central_version": int(rec["version"])}
        found = self.db.select("sync_conflicts", where, limit=1)
        if found:  # central moved on while the row is held: keep its newest record
            self.db.update("sync_conflicts", {"id": found[0]["id"]}, central)
            return
        edge: dict[str, Any] = {"row": state.row, "hlc": state.hlc, "deleted": state.deleted}
        edge.update(field_hlcs=state.field_hlcs, base_version=state.base_version)
        self.db.insert(
            "sync_conflicts",
            {
                "id": str(uuid.uuid4()),
                "entity": entity,
                "entity_id": state.id,
                "edge_row": _ENCODE(edge),
                **central,
                "detected_at": self._now(),
            },
        )

    def _settle(
        self,
        entity: str,
        state: EdgeState,
        rec: Mapping[str, Any],
        policy: str,
        changes: Sequence[Change],
    ) -> str:
        """Resolve the local state against central's record by ``policy``; the action taken."""
        if rec.get("origin") == self.node:
            if same_content(state, rec):
                self._take_central(entity, rec, changes)
                return _SYNCED
            decision = Decision(
                KEEP_EDGE, state.row, state.hlc, state.field_hlcs, state.deleted, push=True
            )
        else:
            decision = resolve(state, rec, policy)
        if decision.action == TAKE_CENTRAL:
            self._take_central(entity, rec, changes)
            return TAKE_CENTRAL
        if decision.action == MANUAL:
            self._open_conflict(entity, state, rec)
            self._fold(entity, state)
            return MANUAL
        if decision.action == MERGED:
            self._write_local(
                entity, state.id, decision.row, "pending" if decision.push else _SYNCED
            )
        base = rec.get("field_hlcs") or {}
        self._set_sync_row(entity, state.id, decision, int(rec["version"]), base)
        self._drop(changes)
        if not decision.push:
            return _SYNCED
        self._marker(entity, state.id, decision.hlc, decision.deleted)
        return decision.action

    @staticmethod
    def _count(report: AckReport | ApplyReport, action: str) -> None:
        if action == TAKE_CENTRAL:
            report.central_taken += 1
        elif action == MANUAL:
            report.manual += 1
        elif action in (KEEP_EDGE, MERGED):
            report.repush += 1

    # -- push ------------------------------------------------------------------------------------

    def outgoing(self, entity: str, *, limit: int = 500, max_bytes: int = 1 << 20) -> OutBatch:
        """Local changes after the push cursor as one batch, coalesced per row (its latest
        state), cut by ``limit`` rows and ``max_bytes`` (approximate encoded size).

        Rows in a manual conflict are held back. The batch id is
        ``"{node}/{entity}/{first seq}-{last seq}"``: a resend of the same range reuses it.
        A range with nothing to push (only held rows) is skipped here, in a transaction, and
        an empty batch returned.
        """
        limit = max(1, int(limit))
        after = int(self._cursor(entity)["push_seq"])
        held = self._held(entity)
        pending = self._pending(entity, after)
        ordered = sorted((ch["seq"], eid) for eid, changes in pending.items() for ch in changes)
        items: list[dict[str, Any]] = []
        seen: set[str] = set()
        upto, size = after, 0
        for seq, eid in ordered:
            if eid not in seen and eid not in held:
                if len(items) >= limit:
                    break
                item = self._item(entity, eid, pending[eid])
                if item is not None:
                    item_size = len(_ENCODE(item)) + 16
                    if items and size + item_size > max_bytes:
                        break
                    size += item_size
                    items.append(item)
                seen.add(eid)
            upto = seq
        batch = OutBatch(entity, f"{self.node}/{entity}/{after + 1}-{upto}", items, upto, after)
        if not items and upto > after:
            self.acknowledge(batch, [], "manual")
        return batch

    def _item(
        self, entity: str, entity_id: str, changes: Sequence[Change]
    ) -> dict[str, Any] | None:
        state = self.edge_state(entity, entity_id, changes)
        if state.row is None and not state.deleted:
            return None  # a change of a row that does not exist (set_many on a missing id)
        return {
            "id": entity_id,
            "base_version": state.base_version,
            "hlc": state.hlc,
            "row": {} if state.deleted else dict(state.row or {}),
            "field_hlcs": state.field_hlcs,
            "deleted": state.deleted,
        }

    def acknowledge(
        self, batch: OutBatch, results: Sequence[Mapping[str, Any]], policy: str
    ) -> AckReport:
        """Apply central's answer to a pushed batch in one transaction; move the push cursor.

        Accepted rows get central's version (and ``sync_status='synced'`` unless changed again
        since the batch was cut); conflicts are resolved by ``policy`` against the result's
        ``current`` record. A second acknowledgement of the same batch does nothing.
        """
        check_policy(policy)
        report = AckReport()
        entity = batch.entity
        with self.db.atomic():
            self.tracker.refresh()
            after = int(self._cursor(entity)["push_seq"])
            if batch.upto_seq <= after:
                return report
            pending = self._pending(entity, after)
            by_id = {str(r.get("id")): r for r in results}
            now = self._now()
            handled: set[str] = set()
            for item in batch.items:
                eid = str(item["id"])
                handled.add(eid)
                changes = pending.get(eid, [])
                result = by_id.get(eid) or {}
                status, current = result.get("status"), result.get("current")
                if status == "accepted":
                    report.accepted += 1
                    # The item carried the row as it was when the batch was cut, so every
                    # change up to the item's HLC is in it, even past upto_seq: drop those,
                    # or the same write would be pushed again. Later edits stay pending.
                    covered = [ch for ch in changes if str(ch["hlc"]) <= str(item["hlc"])]
                    self._drop([ch for ch in covered if ch["seq"] > batch.upto_seq])
                    settled = len(covered) == len(changes)
                    self._accepted(entity, item, int(result["version"]), settled, now)
                    continue
                state = self.edge_state(entity, eid, changes)
                if status != "conflict" or not current:
                    # Unanswered, or central has no such row: push it again as it is.
                    report.repush += 1
                    self._fold(entity, state)
                    self._drop(changes)
                    self._marker(entity, eid, state.hlc, state.deleted)
                    continue
                report.conflicts += 1
                self.hlc.observe(str(current["hlc"]))
                self._count(report, self._settle(entity, state, current, policy, changes))
            self._finish_range(entity, batch.upto_seq, handled, pending)
            self._set_cursor(entity, push_seq=batch.upto_seq)
            details = {"items": len(batch.items), **_counts(report)}
            log_status = "conflict" if report.conflicts else "ok"
            self.store.sync_log.append("push", entity, batch.batch_id, log_status, details)
            self.tracker.persist()
        return report

    def _accepted(
        self, entity: str, item: Mapping[str, Any], version: int, settled: bool, now: str
    ) -> None:
        eid = str(item["id"])
        sr = self.db.get("sync_rows", {"entity": entity, "entity_id": eid})
        if sr is not None and sr["central_version"] is not None:
            version = max(version, int(sr["central_version"]))
        fh = dict(item.get("field_hlcs") or {})
        deleted = bool(item.get("deleted"))
        meta = Decision(KEEP_EDGE, None, str(item["hlc"]), fh, deleted, push=False)
        self._set_sync_row(entity, eid, meta, version, fh)
        if settled and not deleted:
            changes = {"sync_status": _SYNCED, "last_synced_at": now}
            self.db.update(entity, {"id": eid}, changes)

    def _finish_range(
        self, entity: str, upto: int, handled: set[str], pending: dict[str, list[dict[str, Any]]]
    ) -> None:
        """Fold held rows' metadata into sync_rows, then prune the changes up to ``upto``."""
        held = self._held(entity)
        done: list[Change] = []
        for eid, changes in pending.items():
            covered = [ch for ch in changes if ch["seq"] <= upto]
            if not covered:
                continue
            if eid not in handled and eid in held:
                self._fold(entity, self.edge_state(entity, eid, changes))
            done.extend(covered)
        # Changes of handled rows were dropped already when settled; dropping twice is harmless.
        self._drop(done)

    # -- pull ------------------------------------------------------------------------------------

    def pull_cursor(self, entity: str) -> int:
        """The last central version of ``entity`` applied here (0 if none)."""
        return int(self._cursor(entity)["pull_version"])

    def apply_pulled(
        self, entity: str, records: Sequence[Mapping[str, Any]], policy: str, upto_version: int
    ) -> ApplyReport:
        """Apply central's records in one transaction (conflicts by ``policy``); move the
        pull cursor to ``upto_version``. Idempotent: a record at or below the central version a
        row already has is skipped."""
        check_policy(policy)
        report = ApplyReport(records=len(records))
        with self.db.atomic():
            self.tracker.refresh()
            cursor = self._cursor(entity)
            pending = self._pending(entity, int(cursor["push_seq"]))
            held = self._held(entity)
            for rec in records:
                self.hlc.observe(str(rec["hlc"]))
                eid = str(rec["id"])
                sr = self.db.get("sync_rows", {"entity": entity, "entity_id": eid})
                base = None if sr is None else sr["central_version"]
                if base is not None and int(base) >= int(rec["version"]):
                    report.skipped += 1
                    continue
                changes = pending.pop(eid, [])
                if eid in held:
                    report.conflicts += 1
                    report.manual += 1
                    self._open_conflict(entity, self.edge_state(entity, eid, changes), rec)
                    pending[eid] = changes
                    continue
                if not changes:
                    report.applied += 1
                    self._take_central(entity, rec, changes)
                    continue
                report.conflicts += 1
                state = self.edge_state(entity, eid, changes)
                action = self._settle(entity, state, rec, policy, changes)
                self._count(report, action)
                if action == _SYNCED:
                    report.applied += 1
            start = int(cursor["pull_version"])
            pulled = max(start, int(upto_version))
            self._set_cursor(entity, pull_version=pulled)
            status = "conflict" if report.conflicts else "ok"
            self.store.sync_log.append(
                "pull", entity, f"{entity}:{start}-{pulled}", status, _counts(report)
            )
            self.tracker.persist()
        return report

    # -- conflicts and status --------------------------------------------------------------------

    def pending_count(self, entity: str) -> int:
        """Rows of ``entity`` with local changes central has not accepted (held ones too)."""
        after = int(self._cursor(entity)["push_seq"])
        return len(set(self._pending(entity, after)) | self._held(entity))

    def conflicts(self, entity: str | None = None) -> list[dict[str, Any]]:
        """Unresolved manual conflicts, oldest first, both sides decoded."""
        where: dict[str, Any] = {"resolved_at": IsNull()}
        if entity is not None:
            where["entity"] = entity
        out = []
        for row in self.db.select("sync_conflicts", where, ("detected_at", "id")):
            row["edge_row"] = _loads(row["edge_row"])
            row["central_row"] = _loads(row["central_row"])
            out.append(row)
        return out

    def resolve(self, conflict_id: str, take: str) -> dict[str, Any]:
        """Settle a manual conflict: ``take="central"`` applies central's record;
        ``take="edge"`` keeps the local row and pushes it on top of central's version."""
        if take not in ("edge", "central"):
            raise ConflictError(f"take must be 'edge' or 'central', not {take!r}")
        found = self.db.get("sync_conflicts", {"id": conflict_id})
        if found is None:
            raise NotFound(
                f"no sync conflict {conflict_id!r}; list them with `edge-min sync conflicts`"
            )
        entity, eid = str(found["entity"]), str(found["entity_id"])
        if found["resolved_at"] is not None:
            raise ConflictError(
                f"sync conflict {conflict_id!r} was already resolved ({found['resolution']})",
                entity=entity,
                entity_id=eid,
            )
        rec = _loads(found["central_row"])
        with self.db.atomic():
            self.tracker.refresh()
            self.hlc.observe(str(rec["hlc"]))
            after = int(self._cursor(entity)["push_seq"])
            changes = self._pending(entity, after).get(eid, [])
            if take == "central":
                self._take_central(entity, rec, changes)
            else:
                # Keeping the edge's row is a new decision: stamp it after everything seen.
                state = self.edge_state(entity, eid, changes)
                stamp = self.hlc.now()
                fh = {name: stamp for name in (state.row or {}) if name != "id"}
                meta = Decision(KEEP_EDGE, None, stamp, fh or state.field_hlcs, state.deleted, True)
                base = rec.get("field_hlcs") or {}
                self._set_sync_row(entity, eid, meta, int(rec["version"]), base)
                self._drop(changes)
                self._marker(entity, eid, stamp, state.deleted)
            done = {"resolved_at": self._now(), "resolution": take}
            self.db.update("sync_conflicts", {"id": conflict_id}, done)
            details = {"conflict": conflict_id, "take": take}
            self.store.sync_log.append("resolve", entity, eid, "ok", details)
            self.tracker.persist()
        found.update(done)
        return found

    def record_attempt(self, entity: str, ok: bool, error: str | None = None) -> None:
        """Note a sync attempt of ``entity`` (success, or its error) for ``status()``."""
        now = self._now()
        if ok:
            self._set_cursor(
                entity, last_attempt=now, last_success=now, last_error=None, failures=0
            )
            return
        failures = int(self._cursor(entity).get("failures") or 0) + 1
        self._set_cursor(entity, last_attempt=now, last_error=error, failures=failures)

    def status(self, entities: Iterable[str] = ENTITIES) -> dict[str, dict[str, Any]]:
        """Per entity: last attempt and success, pending rows, last error, failures, cursors."""
        out: dict[str, dict[str, Any]] = {}
        for entity in entities:
            cur = self._cursor(entity)
            out[entity] = {
                "last_attempt": cur.get("last_attempt"),
                "last_success": cur.get("last_success"),
                "pending": self.pending_count(entity),
                "last_error": cur.get("last_error"),
                "failures": int(cur.get("failures") or 0),
                "conflicts": len(self._held(entity)),
                "push_seq": int(cur["push_seq"]),
                "pull_version": int(cur["pull_version"]),
            }
        return out
