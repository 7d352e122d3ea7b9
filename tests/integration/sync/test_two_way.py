"""Two real edges and a real central (SQLite on 127.0.0.1): both ways, by policy, converging."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_min.central.server import CentralServer
from tests.integration.sync.helpers import (
    Edge,
    central_versions,
    data,
    duplicate_applications,
    make_edge,
    seed,
    start_central,
    sync_until_quiet,
    versions,
)


@pytest.fixture()
def central(tmp_path: Path) -> Iterator[CentralServer]:
    server = start_central(tmp_path / "central.db")
    yield server
    server.stop()


def _converged(tmp_path: Path, a: Edge, b: Edge) -> None:
    assert data(a.store) == data(b.store)
    cv = central_versions(tmp_path / "central.db")
    assert versions(a.store) == cv == versions(b.store)
    assert duplicate_applications(tmp_path / "central.db") == []
    for e in ("workflows", "agents", "workflow_executions", "agent_executions"):
        assert a.state.pending_count(e) == 0 and b.state.pending_count(e) == 0


def test_two_edges_converge_through_central(tmp_path: Path, central: CentralServer) -> None:
    a = make_edge(tmp_path, "edge-a", central.url)
    b = make_edge(tmp_path, "edge-b", central.url)
    try:
        ids_a = seed(a.store, "a", 20, 300)
        ids_b = seed(b.store, "b", 10, 200)
        sync_until_quiet([a, b])
        _converged(tmp_path, a, b)
        assert len(data(a.store)["agent_executions"]) == 500
        # Edits on both sides, some on the same rows, and deletes.
        for i, rid in enumerate(ids_b["agent_executions"][:50]):
            a.store.agent_executions.set(rid, status=f"edited-by-a-{i}")
        for i, rid in enumerate(ids_a["agent_executions"][:80]):
            b.store.agent_executions.set(rid, status=f"edited-by-b-{i}")
        for rid in ids_a["agent_executions"][60:70]:
            a.store.agent_executions.set(rid, output={"label": "a-wins?"})
        a.store.agent_executions.delete(ids_a["agent_executions"][-1])
        b.store.agent_executions.delete(ids_b["agent_executions"][-1])
        sync_until_quiet([a, b])
        _converged(tmp_path, a, b)
        rows = data(a.store)["agent_executions"]
        assert len(rows) == 498
        assert rows[ids_b["agent_executions"][0]]["status"] == "edited-by-a-0"
        synced = a.store.backend.select("agent_executions", {"sync_status": "synced"})
        assert len(synced) == 498
        logs = a.store.backend.select("sync_log", {})
        assert {r["operation"] for r in logs} >= {"push", "pull"}
    finally:
        a.close()
        b.close()


def test_payload_encryption_and_compression_with_a_shared_key(tmp_path: Path) -> None:
    key = os.urandom(32)
    server = start_central(tmp_path / "central.db", key=key)
    a = make_edge(tmp_path, "edge-a", server.url, key=key)
    b = make_edge(tmp_path, "edge-b", server.url, key=key)
    plain = make_edge(tmp_path, "edge-plain", server.url)
    wrong = make_edge(tmp_path, "edge-wrong", server.url, key=os.urandom(32))
    try:
        seed(a.store, "a", 5, 120)
        seed(b.store, "b", 5, 80)
        sync_until_quiet([a, b])
        _converged(tmp_path, a, b)
        assert a.manager.transport.stats.bytes_received > 0
        # A device without the key, or with another key, gets nothing and applies nothing.
        seed(plain.store, "p", 1, 1)
        report = plain.manager.sync_once(["workflows"])
        assert not report.ok
        report = wrong.manager.sync_once(["agents"])
        assert not report.ok and report.entities["agents"].error_code == "sync_decrypt"
        assert data(wrong.store)["agents"] == {}
    finally:
        for e in (a, b, plain, wrong):
            e.close()
        server.stop()
