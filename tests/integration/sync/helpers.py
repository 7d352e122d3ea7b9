"""Shared pieces of the sync integration tests: a real central, real edges, comparisons."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_min.central.server import CentralServer
from edge_min.central.store import open_central_store
from edge_min.clock import Clock
from edge_min.config.sync import NetworkPolicy, RetryPolicy, SyncConfig, default_entities
from edge_min.store import Store, open_store
from edge_min.sync.changes import SyncState
from edge_min.sync.manager import SyncManager
from edge_min.sync.tracker import ChangeTracker
from edge_min.sync.transport import HttpTransport

ENTITIES = ("workflows", "workflow_executions", "agents", "agent_executions")
SYNC_COLUMNS = ("sync_status", "last_synced_at")

# A per-row version history on central, kept by triggers: every write of a record leaves a
# row here, so "applied twice" shows up as the same edge change (id, hlc) written twice.
HISTORY_DDL = (
    "CREATE TABLE IF NOT EXISTS record_history (entity TEXT, id TEXT, version INTEGER, "
    "hlc TEXT, origin TEXT)",
    "CREATE TRIGGER IF NOT EXISTS history_ins AFTER INSERT ON records BEGIN "
    "INSERT INTO record_history VALUES (new.entity, new.id, new.version, new.hlc, new.origin); "
    "END",
    "CREATE TRIGGER IF NOT EXISTS history_upd AFTER UPDATE ON records BEGIN "
    "INSERT INTO record_history VALUES (new.entity, new.id, new.version, new.hlc, new.origin); "
    "END",
)


def start_central(
    db: Path, key: bytes | None = None, workers: int = 16, ssl_context: Any = None
) -> CentralServer:
    """A real central on 127.0.0.1 over SQLite, with the history triggers installed."""
    store = open_central_store(str(db))
    store.ping()
    with sqlite3.connect(db) as con:
        for ddl in HISTORY_DDL:
            con.execute(ddl)
    return CentralServer(
        store, "127.0.0.1", 0, shared_key=key, workers=workers, ssl_context=ssl_context
    ).start()


@dataclass
class Edge:
    """One edge device: its store, sync state and manager."""

    name: str
    store: Store
    state: SyncState
    manager: SyncManager

    def close(self) -> None:
        self.manager.transport.close()
        self.store.close()


def make_edge(
    tmp: Path,
    name: str,
    url: str,
    *,
    key: bytes | None = None,
    compression: bool = True,
    policies: dict[str, str] | None = None,
    batch_size: int | None = None,
    timeout: float = 10.0,
    clock: Clock | None = None,
) -> Edge:
    """An edge on a fresh SQLite file syncing with ``url``."""
    store = open_store(tmp / f"{name}.db", clock=clock, changes=ChangeTracker)
    state = SyncState(store, name, clock)
    entities = default_entities()
    for e, p in entities.items():
        entities[e] = type(p)(
            p.priority,
            (policies or {}).get(e, p.conflict_resolution),
            batch_size or p.batch_size,
        )
    cfg = SyncConfig(
        entities=entities,
        retry=RetryPolicy(max_attempts=1000, initial_delay=0.0, max_delay=1.0),
        network=NetworkPolicy(max_bandwidth=0, compression=compression, encryption=bool(key)),
    )
    transport = HttpTransport(
        url, node=name, timeout=timeout, accept=None if compression else "none"
    )
    mgr = SyncManager(
        state,
        transport,
        node=name,
        sync_config=cfg,
        key=key,
        offline_mode="never",
        clock=clock,
    )
    return Edge(name, store, state, mgr)


def seed(store: Store, tag: str, n_exec: int, n_agent_exec: int) -> dict[str, list[str]]:
    """Rows in all four tables (parents first); returns the ids made per entity."""
    ids: dict[str, list[str]] = {e: [] for e in ENTITIES}
    with store.atomic():
        wf = store.workflows.create(f"wf-{tag}", {"steps": [{"id": "a"}]}, "1")["id"]
        ag = store.agents.create(f"agent-{tag}", "python", {"entry": "x:y"}, "1")["id"]
        ids["workflows"].append(wf)
        ids["agents"].append(ag)
        for i in range(n_exec):
            ids["workflow_executions"].append(
                store.executions.create(wf, {"i": i, "tag": tag})["id"]
            )
    execs = ids["workflow_executions"]
    rows = [
        {
            "agent_id": ag,
            "workflow_execution_id": execs[i % len(execs)],
            "status": "completed",
            "input": {"text": f"{tag} record {i}", "n": i},
            "output": {"label": "positive" if i % 3 else "negative", "score": (i % 100) / 100},
            "metrics": {"latency_ms": i % 37},
            "started_at": "2026-01-01T00:00:00.000000Z",
        }
        for i in range(n_agent_exec)
    ]
    for start in range(0, len(rows), 1000):
        chunk = rows[start : start + 1000]
        store.agent_executions.add_many(chunk)
    ids["agent_executions"] = [
        r["id"] for r in store.backend.select("agent_executions", {}) if tag in str(r["input"])
    ]
    return ids


def data(store: Store) -> dict[str, dict[str, dict[str, Any]]]:
    """Every synced table's rows by id, without the local bookkeeping columns."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for e in ENTITIES:
        rows = {}
        for r in store.backend.select(e, {}):
            rows[r["id"]] = {k: v for k, v in r.items() if k not in SYNC_COLUMNS}
        out[e] = rows
    return out


def versions(store: Store) -> dict[tuple[str, str], tuple[str, int | None, bool]]:
    """(entity, id) -> (hlc, central_version, deleted) from the edge's sync_rows."""
    return {
        (r["entity"], r["entity_id"]): (r["hlc"], r["central_version"], bool(r["deleted"]))
        for r in store.backend.select("sync_rows", {})
    }


def central_versions(db: Path) -> dict[tuple[str, str], tuple[str, int, bool]]:
    """(entity, id) -> (hlc, version, deleted) of central's records."""
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT entity, id, hlc, version, deleted FROM records").fetchall()
    return {(e, i): (h, v, bool(d)) for e, i, h, v, d in rows}


def duplicate_applications(db: Path) -> list[tuple[Any, ...]]:
    """Edge changes central wrote more than once (same entity, id and hlc at two versions)."""
    with sqlite3.connect(db) as con:
        return con.execute(
            "SELECT entity, id, hlc, COUNT(*) FROM record_history "
            "GROUP BY entity, id, hlc HAVING COUNT(*) > 1"
        ).fetchall()


def sync_until_quiet(edges: list[Edge], rounds: int = 400) -> int:
    """Sync every edge in turn until one full round moves nothing and fails nothing."""
    for n in range(1, rounds + 1):
        quiet = True
        for edge in edges:
            report = edge.manager.sync_once()
            moved = sum(r.pushed + r.pulled for r in report.entities.values())
            if not report.ok or moved:
                quiet = False
        if quiet:
            return n
    raise AssertionError(f"no convergence after {rounds} rounds")
