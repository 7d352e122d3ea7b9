"""Helpers for the sync data-layer tests: full push/pull rounds against a central store."""

from __future__ import annotations

from typing import Any

from edge_min.central.model import parse_push
from edge_min.central.store import CentralStore
from edge_min.sync.changes import SyncState


def push_all(
    state: SyncState, central: CentralStore, entity: str, policy: str, limit: int = 50
) -> int:
    """Push until nothing is pending for ``entity``; how many batches were sent."""
    for sent in range(1000):
        batch = state.outgoing(entity, limit=limit)
        if not batch.items:
            return sent
        header = {"kind": "push", "entity": entity, "batch": batch.batch_id, "node": state.node}
        results = central.push(parse_push(header, batch.items, state.node))
        state.acknowledge(batch, results, policy)
    raise AssertionError("push never ran dry")


def pull_all(
    state: SyncState, central: CentralStore, entity: str, policy: str, limit: int = 50
) -> int:
    """Pull until central has nothing newer; how many records were applied."""
    seen = 0
    for _ in range(1000):
        records = central.pull(entity, state.pull_cursor(entity), limit)
        if not records:
            return seen
        state.apply_pulled(entity, records, policy, records[-1]["version"])
        seen += len(records)
    raise AssertionError("pull never ran dry")


def sync(state: SyncState, central: CentralStore, entity: str, policy: str) -> None:
    """One device's sync: push, then pull (as the manager does)."""
    push_all(state, central, entity, policy)
    pull_all(state, central, entity, policy)


def rows(state: SyncState, entity: str) -> dict[str, dict[str, Any]]:
    """The entity's rows without the local sync bookkeeping columns."""
    out = {}
    for row in state.db.select(entity):
        out[row["id"]] = {
            k: v for k, v in row.items() if k not in ("sync_status", "last_synced_at")
        }
    return out


def central_rows(central: CentralStore, entity: str) -> dict[str, dict[str, Any]]:
    """Central's live (not deleted) rows of ``entity``."""
    out = {}
    for rec in central.pull(entity, 0, 10_000):
        if not rec["deleted"]:
            out[rec["id"]] = rec["row"]
    return out
