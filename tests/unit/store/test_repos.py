"""Repositories on both backends: stamping, sync state, JSON columns, queries."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from edge_min.clock import VirtualClock, iso
from edge_min.errors import NotFound, StorageError
from edge_min.store import Store
from edge_min.store.repos import new_id


def _seed(store: Store) -> dict[str, Any]:
    w = store.workflows.create("wf", {"steps": [{"id": "a"}]}, "1.0.0")
    a = store.agents.create("clf", "onnx", {"model": "m.onnx", "threshold": 0.5}, "1")
    e = store.executions.create(w["id"], {"text": "hi"})
    ae = _add_step(store, a["id"], e["id"], input={"text": "hi"})
    return {"workflow": w, "agent": a, "execution": e, "agent_execution": ae}


def _add_step(store: Store, agent_id: str, execution_id: str, **row: Any) -> dict[str, Any]:
    """An ``agent_executions`` row written as the engine writes one (``add``), read back."""
    full = {
        "id": new_id(),
        "agent_id": agent_id,
        "workflow_execution_id": execution_id,
        "status": "running",
        "started_at": iso(store.clock.time()),
        **row,
    }
    store.agent_executions.add(full)
    return store.agent_executions.require(full["id"])


def test_create_stamps_times_and_pending(store: Store, clock: VirtualClock) -> None:
    rows = _seed(store)
    now = iso(clock.time())
    for key in ("workflow", "agent"):
        assert rows[key]["created_at"] == rows[key]["updated_at"] == now
    for row in rows.values():
        assert row["sync_status"] == "pending" and row["last_synced_at"] is None
    assert rows["execution"]["started_at"] == now and rows["execution"]["status"] == "pending"
    assert rows["agent_execution"]["status"] == "running"


# Every way a repository changes a row, each must leave it pending with a fresh updated_at.
CHANGES: dict[str, Callable[[Store, dict[str, Any]], dict[str, Any]]] = {
    "workflows.update": lambda s, r: s.workflows.update(r["workflow"]["id"], version="2"),
    "agents.update": lambda s, r: s.agents.update(r["agent"]["id"], config={"t": 1}),
    "executions.update": lambda s, r: s.executions.update(r["execution"]["id"], status="running"),
    "agent_executions.update": lambda s, r: s.agent_executions.update(
        r["agent_execution"]["id"], status="x"
    ),
}
REPO_OF = {
    "workflows": ("workflows", "workflow"),
    "agents": ("agents", "agent"),
    "executions": ("executions", "execution"),
    "agent_executions": ("agent_executions", "agent_execution"),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_every_change_sets_pending_and_updated_at(
    store: Store, clock: VirtualClock, change: str
) -> None:
    rows = _seed(store)
    attr, key = REPO_OF[change.split(".")[0]]
    repo = getattr(store, attr)
    clock.advance(10)
    assert repo.mark_synced(rows[key]["id"]) is True
    synced = repo.require(rows[key]["id"])
    assert synced["sync_status"] == "synced" and synced["last_synced_at"] == iso(clock.time())
    assert synced.get("updated_at") == rows[key].get("updated_at")  # syncing is not a change
    clock.advance(5)
    changed = CHANGES[change](store, rows)
    assert changed["sync_status"] == "pending"
    if "updated_at" in changed:
        assert changed["updated_at"] == iso(clock.time())
    assert repo.require(rows[key]["id"]) == changed
    assert [r["id"] for r in repo.pending()] == [rows[key]["id"]]


def test_mark_synced_keeps_a_row_changed_after_the_push_pending(
    store: Store, clock: VirtualClock
) -> None:
    w = store.workflows.create("wf", {}, "1")
    pushed_version = w["updated_at"]
    clock.advance(1)
    store.workflows.update(w["id"], version="2")
    assert store.workflows.mark_synced(w["id"], if_updated_at=pushed_version) is False
    assert store.workflows.require(w["id"])["sync_status"] == "pending"
    current = store.workflows.require(w["id"])["updated_at"]
    assert store.workflows.mark_synced(w["id"], 123.0, if_updated_at=current) is True
    assert store.workflows.require(w["id"])["last_synced_at"] == iso(123.0)


def test_store_managed_columns_cannot_be_updated(store: Store) -> None:
    w = store.workflows.create("wf", {}, "1")
    for col in ("sync_status", "updated_at", "created_at", "id", "last_synced_at"):
        with pytest.raises(StorageError, match=f"{col} are set by the store"):
            store.workflows.update(w["id"], **{col: "x"})
    with pytest.raises(NotFound, match="no workflows row with id 'nope'"):
        store.workflows.update("nope", version="2")
    with pytest.raises(StorageError, match="unknown column 'colour'"):
        store.workflows.update(w["id"], colour="red")


def test_json_columns_round_trip_and_none_is_null(store: Store) -> None:
    definition = {"name": "wf", "steps": [{"id": "a", "input": "${input}"}], "ünï": 1.5}
    w = store.workflows.create("wf", definition, "1")
    assert store.workflows.require(w["id"])["definition"] == definition
    raw = store.backend.get("workflows", {"id": w["id"]})
    assert raw is not None and isinstance(raw["definition"], str) and "ünï" in raw["definition"]
    e = store.executions.create(w["id"])
    raw_e = store.backend.get("workflow_executions", {"id": e["id"]})
    assert raw_e is not None and raw_e["input"] is None and e["input"] is None
    finished = store.executions.update(e["id"], status="completed", output=["a", 1, None])
    assert finished["output"] == ["a", 1, None]
    with pytest.raises(StorageError, match="JSON-serialisable"):
        store.workflows.create("bad", {"x": object()}, "1")
    # Text written by other tooling that is not JSON comes back as text.
    store.backend.update("workflows", {"id": w["id"]}, {"definition": "name: wf"})
    assert store.workflows.require(w["id"])["definition"] == "name: wf"


def test_lookups_and_lists(store: Store, clock: VirtualClock) -> None:
    old = store.workflows.create("wf", {"v": 1}, "1")
    clock.advance(1)
    new = store.workflows.create("wf", {"v": 2}, "2", id="fixed-id")
    store.workflows.create("another", {}, "1")
    assert new["id"] == "fixed-id"
    assert store.workflows.get_by_name("wf") == new
    assert store.workflows.get_by_name("none") is None
    assert [w["name"] for w in store.workflows.list()] == ["another", "wf", "wf"]
    store.workflows.mark_synced(old["id"])
    assert len(store.workflows.list(sync_status="pending")) == 2
    assert store.workflows.delete(old["id"]) is True and store.workflows.get(old["id"]) is None
    assert store.workflows.delete(old["id"]) is False

    store.agents.create("a", "onnx", {}, "1")
    store.agents.create("b", "python", {}, "1")
    assert [a["name"] for a in store.agents.list(type="python")] == ["b"]
    assert store.agents.get_by_name("a")["type"] == "onnx"  # type: ignore[index]

    e1 = store.executions.create(new["id"], status="running")
    clock.advance(1)
    e2 = store.executions.create(new["id"], status="completed")
    assert [e["id"] for e in store.executions.list(new["id"])] == [e2["id"], e1["id"]]
    assert [e["id"] for e in store.executions.list(status="running")] == [e1["id"]]
    assert store.executions.list(limit=1) == [store.executions.require(e2["id"])]


def test_agent_executions_per_workflow_execution(store: Store, clock: VirtualClock) -> None:
    rows = _seed(store)
    clock.advance(1)
    second = _add_step(store, rows["agent"]["id"], rows["execution"]["id"])
    done = store.agent_executions.update(
        second["id"], status="completed", output="out", metrics={"ms": 2}, completed_at=iso(99.0)
    )
    assert done["completed_at"] == iso(99.0) and done["metrics"] == {"ms": 2}
    listed = store.agent_executions.list(workflow_execution_id=rows["execution"]["id"])
    assert [r["id"] for r in listed] == [rows["agent_execution"]["id"], second["id"]]
    assert store.agent_executions.list(status="completed") == [done]


def test_sync_log_append_list_prune(store: Store, clock: VirtualClock) -> None:
    first = store.sync_log.append("push", "workflow", "w1", "ok", {"bytes": 10})
    clock.advance(100)
    store.sync_log.append("pull", "agent", "a1", "error", "timeout")
    assert first["timestamp"] == iso(clock.time() - 100) and first["details"] == {"bytes": 10}
    assert [r["operation"] for r in store.sync_log.list()] == ["push", "pull"]
    assert [r["entity_id"] for r in store.sync_log.list(status="error")] == ["a1"]
    assert store.sync_log.prune(older_than=clock.time() - 50) == 1
    assert [r["operation"] for r in store.sync_log.list()] == ["pull"]


def test_apply_remote_writes_a_synced_row(store: Store, clock: VirtualClock) -> None:
    remote = {
        "id": "r1",
        "name": "from-central",
        "definition": {"steps": []},
        "version": "3",
        "created_at": iso(1.0),
        "updated_at": iso(2.0),
    }
    row = store.workflows.apply_remote(remote, at=clock.time())
    assert row["sync_status"] == "synced" and row["last_synced_at"] == iso(clock.time())
    assert row["updated_at"] == iso(2.0) and row["definition"] == {"steps": []}
    assert store.workflows.pending() == []
    store.workflows.apply_remote({**remote, "version": "4"})
    assert store.workflows.require("r1")["version"] == "4"


def test_atomic_spans_repositories(store: Store) -> None:
    with pytest.raises(RuntimeError), store.atomic():
        w = store.workflows.create("wf", {}, "1")
        store.executions.create(w["id"])
        raise RuntimeError
    assert store.workflows.list() == [] and store.executions.list() == []


def test_meta_and_schedule_state(store: Store) -> None:
    assert store.meta.get("device_id") is None and store.meta.get("x", "d") == "d"
    store.meta.set("device_id", "dev-1")
    store.meta.set("device_id", "dev-2")
    assert store.meta.get("device_id") == "dev-2"
    assert store.meta.delete("device_id") is True and store.meta.delete("device_id") is False
    store.schedule.save("backup", 100.0, 200.0)
    store.schedule.save("sync", 150.0, 450.0)
    store.schedule.save("backup", 200.0, 300.0)
    assert store.schedule.get("backup") == {
        "job_id": "backup",
        "last_run_at": 200.0,
        "next_run_at": 300.0,
    }
    assert [j["job_id"] for j in store.schedule.due(now=400.0)] == ["backup"]
    assert [j["job_id"] for j in store.schedule.all()] == ["backup", "sync"]
    assert store.schedule.delete("sync") is True and store.schedule.get("sync") is None


def test_synced_repos_push_parents_first(store: Store) -> None:
    assert [r.table for r in store.synced_repos()] == [
        "workflows",
        "agents",
        "workflow_executions",
        "agent_executions",
    ]
