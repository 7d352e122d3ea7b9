"""Change tracking in the repositories and the SyncState API, against a real central store."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_min.central.server import CentralServer
from edge_min.central.store import CentralStore, open_central_store
from edge_min.clock import VirtualClock
from edge_min.errors import NotFound, StorageError
from edge_min.store import MemoryStore, Store, open_store
from edge_min.sync.changes import SyncState
from edge_min.sync.errors import ConflictError
from edge_min.sync.protocol import CONTENT_TYPE, decode_frame, encode_frame, raise_for_error
from edge_min.sync.tracker import ChangeTracker
from tests.unit.sync.syncutil import central_rows, pull_all, push_all, rows, sync

T0 = 1_767_225_600.0
HOURS3 = 3 * 3600.0
W = "workflows"


def make_store(kind: str, tmp_path: Path, name: str, clock: VirtualClock) -> Store:
    if kind == "sqlite":
        return open_store(tmp_path / f"{name}.db", clock=clock, changes=ChangeTracker)
    return Store(MemoryStore(), clock, ChangeTracker)


@pytest.fixture(params=["sqlite", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s = make_store(request.param, tmp_path, "edge", VirtualClock(T0))
    yield s
    s.close()


@pytest.fixture
def central(tmp_path: Path) -> Iterator[CentralStore]:
    c = open_central_store(f"sqlite:///{tmp_path}/c.db")
    yield c
    c.close()


def changes(store: Store) -> list[dict[str, Any]]:
    return store.backend.select("sync_changes", order_by=("seq",))


def seed(store: Store) -> tuple[str, str]:
    wf = store.workflows.create("wf", {"steps": []}, "1", id="wf1")
    ag = store.agents.create("ag", "command", {"cmd": "x"}, "1", id="ag1")
    return wf["id"], ag["id"]


# -- change tracking -----------------------------------------------------------------------


def test_every_write_path_of_the_four_tables_logs_a_change(store: Store) -> None:
    seed(store)
    ex = store.executions.create("wf1", {"n": 1}, id="ex1")
    store.agent_executions.add(
        {
            "id": "ae1",
            "agent_id": "ag1",
            "workflow_execution_id": ex["id"],
            "status": "running",
            "started_at": "t",
        }
    )
    store.workflows.update("wf1", name="wf2")
    store.agents.set("ag1", version="2")
    store.executions.update("ex1", status="completed", output={"ok": True}, completed_at="t")
    store.agent_executions.add(
        {
            "id": "ae2",
            "agent_id": "ag1",
            "workflow_execution_id": "ex1",
            "status": "running",
            "started_at": "t",
        }
    )
    store.agent_executions.add_many(
        [
            {
                "id": f"b{i}",
                "agent_id": "ag1",
                "workflow_execution_id": "ex1",
                "status": "running",
                "started_at": "t",
            }
            for i in range(3)
        ]
    )
    store.agent_executions.set_many([("b0", {"status": "done"}), ("b1", {"output": {"x": 1}})])
    store.agent_executions.delete("b2")
    log = [(c["entity"], c["entity_id"], c["op"], json.loads(c["fields"])) for c in changes(store)]
    assert log == [
        (W, "wf1", "upsert", ["*"]),
        ("agents", "ag1", "upsert", ["*"]),
        ("workflow_executions", "ex1", "upsert", ["*"]),
        ("agent_executions", "ae1", "upsert", ["*"]),
        (W, "wf1", "upsert", ["name", "updated_at"]),
        ("agents", "ag1", "upsert", ["version", "updated_at"]),
        ("workflow_executions", "ex1", "upsert", ["status", "output", "completed_at"]),
        ("agent_executions", "ae2", "upsert", ["*"]),
        *[("agent_executions", f"b{i}", "upsert", ["*"]) for i in range(3)],
        ("agent_executions", "b0", "upsert", ["status"]),
        ("agent_executions", "b1", "upsert", ["output"]),
        ("agent_executions", "b2", "delete", []),
    ]
    seqs = [c["seq"] for c in changes(store)]
    hlcs = [c["hlc"] for c in changes(store)]
    assert seqs == sorted(set(seqs)) and hlcs == sorted(set(hlcs))
    assert store.meta.get("sync.hlc") == hlcs[-1]
    # the tombstone: gone locally, marked in sync_rows
    assert store.agent_executions.get("b2") is None
    mark = store.backend.get("sync_rows", {"entity": "agent_executions", "entity_id": "b2"})
    assert mark is not None and mark["deleted"] == 1


def test_sync_bookkeeping_writes_and_misses_log_nothing(store: Store) -> None:
    seed(store)
    before = len(changes(store))
    store.workflows.mark_synced("wf1")
    store.workflows.apply_remote({**store.workflows.require("wf1"), "name": "remote"})
    assert not store.workflows.set("missing", name="x")
    assert not store.workflows.delete("missing")
    store.sync_log.append("push", W, "b", "ok")
    store.meta.set("k", "v")
    assert len(changes(store)) == before


def test_a_rolled_back_write_leaves_no_change(store: Store) -> None:
    seed(store)
    before = changes(store)
    with pytest.raises(RuntimeError), store.atomic():
        store.workflows.update("wf1", name="lost")
        store.agents.delete("ag1")
        raise RuntimeError("boom")
    assert changes(store) == before
    with pytest.raises(StorageError):  # the row write fails: no change is logged either
        store.workflows.create("dup", {}, "1", id="wf1")
    assert changes(store) == before


def test_device_id_is_made_once_and_kept(tmp_path: Path) -> None:
    s = open_store(tmp_path / "e.db", clock=VirtualClock(T0), changes=ChangeTracker)
    seed(s)
    node = s.meta.get("device.id")
    assert node and node.startswith("edge-")
    assert changes(s)[0]["hlc"].endswith("." + node)
    s.close()
    s = open_store(tmp_path / "e.db", clock=VirtualClock(T0), changes=ChangeTracker)
    assert SyncState(s).node == node
    s.close()


# -- push --------------------------------------------------------------------------------------


def test_outgoing_coalesces_cuts_and_names_batches_deterministically(store: Store) -> None:
    state = SyncState(store, "dev-a")
    for i in range(5):
        store.workflows.create(f"w{i}", {"i": i}, "1", id=f"w{i}")
    store.workflows.update("w0", name="w0-edited")
    batch = state.outgoing(W, limit=3)
    assert [i["id"] for i in batch.items] == ["w0", "w1", "w2"]
    w0 = batch.items[0]
    assert w0["row"]["name"] == "w0-edited" and w0["base_version"] is None
    assert w0["field_hlcs"]["name"] > w0["field_hlcs"]["definition"]
    assert set(w0["row"]) == {"id", "name", "definition", "version", "created_at", "updated_at"}
    assert state.outgoing(W, limit=3).batch_id == batch.batch_id
    small = state.outgoing(W, limit=100, max_bytes=1)
    assert len(small.items) == 1  # at least one item, however small the cap
    assert small.upto_seq < batch.upto_seq
    assert batch.batch_id == f"dev-a/{W}/1-{batch.upto_seq}"
    assert state.pending_count(W) == 5


def test_acknowledge_marks_synced_moves_cursor_and_logs(
    store: Store, central: CentralStore
) -> None:
    state = SyncState(store, "dev-a")
    seed(store)
    batch = state.outgoing(W)
    store.workflows.create("late", {}, "1", id="late")  # after the cut: stays pending
    header = {"kind": "push", "entity": W, "batch": batch.batch_id, "node": "dev-a"}
    from edge_min.central.model import parse_push

    results = central.push(parse_push(header, batch.items, "dev-a"))
    report = state.acknowledge(batch, results, "last_modified")
    assert (report.accepted, report.conflicts) == (1, 0)
    wf = store.workflows.require("wf1")
    assert wf["sync_status"] == "synced" and wf["last_synced_at"]
    assert store.workflows.require("late")["sync_status"] == "pending"
    assert state.pending_count(W) == 1
    assert state.acknowledge(batch, results, "last_modified").accepted == 0  # a duplicate
    log = store.sync_log.list(entity_type=W)
    assert [(e["operation"], e["entity_id"], e["status"]) for e in log] == [
        ("push", batch.batch_id, "ok")
    ]
    assert log[0]["details"]["accepted"] == 1
    sr = store.backend.get("sync_rows", {"entity": W, "entity_id": "wf1"})
    assert sr is not None and sr["central_version"] == results[0]["version"]


def test_update_after_the_cut_keeps_row_pending(store: Store, central: CentralStore) -> None:
    state = SyncState(store, "dev-a")
    seed(store)
    batch = state.outgoing(W)
    store.workflows.update("wf1", name="newer")
    from edge_min.central.model import parse_push

    header = {"kind": "push", "entity": W, "batch": batch.batch_id, "node": "dev-a"}
    state.acknowledge(batch, central.push(parse_push(header, batch.items, "dev-a")), "central_wins")
    assert store.workflows.require("wf1")["sync_status"] == "pending"
    push_all(state, central, W, "central_wins")  # based on the accepted version: no conflict
    assert central_rows(central, W)["wf1"]["name"] == "newer"
    assert store.workflows.require("wf1")["sync_status"] == "synced"


def test_a_resend_after_a_lost_answer_is_idempotent(store: Store, central: CentralStore) -> None:
    state = SyncState(store, "dev-a")
    seed(store)
    from edge_min.central.model import parse_push

    batch = state.outgoing(W)
    header = {"kind": "push", "entity": W, "batch": batch.batch_id, "node": "dev-a"}
    central.push(parse_push(header, batch.items, "dev-a"))  # the answer is lost
    again = state.outgoing(W)
    assert again.batch_id == batch.batch_id
    results = central.push(parse_push(header, again.items, "dev-a"))
    assert results[0]["status"] == "accepted"
    state.acknowledge(again, results, "central_wins")
    assert state.pending_count(W) == 0 and len(central.pull(W, 0, 10)) == 1


def test_own_write_echoed_back_is_never_a_conflict(store: Store, central: CentralStore) -> None:
    """The answer was lost and the row changed since: central's copy is ours, not a rival's."""
    state = SyncState(store, "dev-a")
    seed(store)
    from edge_min.central.model import parse_push

    batch = state.outgoing(W)
    header = {"kind": "push", "entity": W, "batch": batch.batch_id, "node": "dev-a"}
    central.push(parse_push(header, batch.items, "dev-a"))  # answer lost
    store.workflows.update("wf1", name="mine")
    sync(state, central, W, "central_wins")  # central_wins would drop "mine" if it were rival
    assert central_rows(central, W)["wf1"]["name"] == "mine"
    assert store.workflows.require("wf1")["name"] == "mine"


# -- pull and conflicts --------------------------------------------------------------------------


def two_devices(tmp_path: Path, skew: float = -HOURS3) -> tuple[SyncState, SyncState]:
    a = SyncState(make_store("sqlite", tmp_path, "a", VirtualClock(T0)), "dev-a")
    b = SyncState(make_store("memory", tmp_path, "b", VirtualClock(T0 + skew)), "dev-b")
    return a, b


def test_pull_applies_and_is_idempotent(tmp_path: Path, central: CentralStore) -> None:
    a, b = two_devices(tmp_path)
    seed(a.store)
    a.store.workflows.delete("wf1")
    a.store.workflows.create("wf3", {"x": 1}, "1", id="wf3")
    sync(a, central, W, "last_modified")
    records = central.pull(W, 0, 100)
    r1 = b.apply_pulled(W, records, "last_modified", records[-1]["version"])
    snapshot = (rows(b, W), b.db.select("sync_rows"), b.pull_cursor(W))
    r2 = b.apply_pulled(W, records, "last_modified", records[-1]["version"])
    assert (r1.applied, r2.applied, r2.skipped) == (len(records), 0, len(records))
    assert (rows(b, W), b.db.select("sync_rows"), b.pull_cursor(W)) == snapshot
    assert rows(b, W) == rows(a, W) and set(rows(b, W)) == {"wf3"}
    assert b.store.workflows.require("wf3")["sync_status"] == "synced"
    assert b.pending_count(W) == 0
    assert [e["operation"] for e in b.store.sync_log.list(entity_type=W)] == ["pull", "pull"]


@pytest.mark.parametrize("skew", [-HOURS3, HOURS3])
def test_a_causally_later_edit_wins_under_last_modified_despite_skew(
    tmp_path: Path, central: CentralStore, skew: float
) -> None:
    a, b = two_devices(tmp_path, skew)
    seed(a.store)
    sync(a, central, W, "last_modified")
    sync(b, central, W, "last_modified")
    a.store.workflows.update("wf1", name="first")
    sync(a, central, W, "last_modified")
    # b is hours off, pulls the first edit, then edits: its edit is later and must win,
    b.store.workflows.update("wf1", definition={"b": 1})  # pending while it pulls
    pull_all(b, central, W, "last_modified")
    b.store.workflows.update("wf1", name="second")
    seen = max(r["hlc"] for r in central.pull(W, 0, 100))
    assert b.outgoing(W).items[0]["hlc"] > seen  # observed: later than all it has seen
    # ... even when a edits again before b pushes, concurrently (a's wall clock decides).
    sync(b, central, W, "last_modified")
    sync(a, central, W, "last_modified")
    assert rows(a, W) == rows(b, W)
    assert rows(a, W)["wf1"]["name"] == "second"


def test_central_wins_and_edge_wins(tmp_path: Path, central: CentralStore) -> None:
    a, b = two_devices(tmp_path)
    seed(a.store)
    sync(a, central, W, "central_wins")
    sync(b, central, W, "central_wins")
    a.store.workflows.update("wf1", name="a")
    b.store.workflows.update("wf1", name="b")
    sync(a, central, W, "central_wins")
    sync(b, central, W, "central_wins")  # b's edit conflicts: central's (a's) wins
    assert rows(b, W)["wf1"]["name"] == "a" and b.pending_count(W) == 0
    a.store.workflows.update("wf1", name="a2")
    b.store.workflows.update("wf1", name="b2")
    sync(a, central, W, "edge_wins")
    sync(b, central, W, "edge_wins")  # b's edit conflicts: b keeps and re-pushes it
    sync(a, central, W, "edge_wins")
    assert rows(a, W)["wf1"]["name"] == rows(b, W)["wf1"]["name"] == "b2"
    assert central_rows(central, W)["wf1"]["name"] == "b2"


def test_merge_keeps_fields_changed_on_either_side(tmp_path: Path, central: CentralStore) -> None:
    a, b = two_devices(tmp_path)
    seed(a.store)
    sync(a, central, W, "merge")
    sync(b, central, W, "merge")
    a.store.workflows.set("wf1", name="from-a")
    b.store.workflows.set("wf1", version="from-b")
    sync(a, central, W, "merge")
    sync(b, central, W, "merge")
    sync(a, central, W, "merge")
    for dev in (a, b):
        row = rows(dev, W)["wf1"]
        assert (row["name"], row["version"]) == ("from-a", "from-b")
    assert rows(a, W) == rows(b, W)


def test_manual_holds_the_row_until_resolved(tmp_path: Path, central: CentralStore) -> None:
    a, b = two_devices(tmp_path)
    seed(a.store)
    sync(a, central, W, "manual")
    sync(b, central, W, "manual")
    a.store.workflows.update("wf1", name="a")
    b.store.workflows.update("wf1", name="b")
    sync(a, central, W, "manual")
    sync(b, central, W, "manual")
    assert rows(b, W)["wf1"]["name"] == "b"  # left as it was
    [conflict] = b.conflicts()
    assert conflict["entity_id"] == "wf1" and conflict["central_row"]["row"]["name"] == "a"
    assert conflict["edge_row"]["row"]["name"] == "b"
    b.store.workflows.update("wf1", version="b2")  # still held: nothing goes out
    assert b.outgoing(W).items == [] and b.pending_count(W) == 1
    assert b.status()[W]["conflicts"] == 1
    b.resolve(conflict["id"], "edge")
    with pytest.raises(ConflictError):
        b.resolve(conflict["id"], "central")
    with pytest.raises(NotFound):
        b.resolve("nope", "edge")
    sync(b, central, W, "manual")
    sync(a, central, W, "manual")
    assert rows(a, W)["wf1"]["name"] == "b" and rows(a, W) == rows(b, W)
    assert b.conflicts() == [] and a.conflicts() == []
    # and take=central
    a.store.workflows.update("wf1", name="a3")
    b.store.workflows.update("wf1", name="b3")
    sync(a, central, W, "manual")
    sync(b, central, W, "manual")
    [conflict] = b.conflicts()
    b.resolve(conflict["id"], "central")
    assert rows(b, W)["wf1"]["name"] == "a3" and b.pending_count(W) == 0


def test_status_and_record_attempt(store: Store) -> None:
    state = SyncState(store, "dev-a")
    seed(store)
    state.record_attempt(W, False, "connection refused")
    state.record_attempt(W, False, "connection refused")
    st = state.status()[W]
    assert (st["failures"], st["last_error"], st["pending"], st["last_success"]) == (
        2,
        "connection refused",
        1,
        None,
    )
    state.record_attempt(W, True)
    st = state.status()
    assert set(st) == {W, "workflow_executions", "agents", "agent_executions"}
    assert st[W]["failures"] == 0 and st[W]["last_success"] == st[W]["last_attempt"]
    assert st[W]["last_error"] is None and st["agents"]["pending"] == 1


# -- end to end over HTTP against the real central server ------------------------------------------


class HttpCentral:
    """Speaks the real frames to a CentralServer over urllib, for one device."""

    def __init__(self, url: str, node: str) -> None:
        self.url, self.node = url, node

    def _call(self, method: str, path: str, body: bytes | None = None) -> list[dict[str, Any]]:
        req = urllib.request.Request(self.url + path, data=body, method=method)
        req.add_header("X-Edge-Node", self.node)
        req.add_header("Content-Type", CONTENT_TYPE)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                data = resp.read()
        except urllib.error.HTTPError as exc:
            data = exc.read()
        header, items = decode_frame(data)
        raise_for_error(header, items)
        return items

    def sync(self, state: SyncState, entity: str, policy: str) -> None:
        while (batch := state.outgoing(entity, limit=2)).items:
            header = {"kind": "push", "entity": entity, "batch": batch.batch_id, "node": self.node}
            frame = encode_frame(header, batch.items, compression="zlib")
            state.acknowledge(batch, self._call("POST", "/api/sync/push", frame), policy)
        while records := self._call(
            "GET", f"/api/sync/pull?entity={entity}&after={state.pull_cursor(entity)}&limit=2"
        ):
            state.apply_pulled(entity, records, policy, records[-1]["version"])


def test_two_devices_end_to_end_over_http(tmp_path: Path) -> None:
    server = CentralServer(open_central_store(f"sqlite:///{tmp_path}/c.db"), "127.0.0.1", 0)
    server.start()
    try:
        a, b = two_devices(tmp_path)
        ha, hb = HttpCentral(server.url, a.node), HttpCentral(server.url, b.node)
        for i in range(5):
            a.store.workflows.create(f"a{i}", {"i": i}, "1", id=f"a{i}")
            b.store.workflows.create(f"b{i}", {"i": i}, "1", id=f"b{i}")
        ha.sync(a, W, "last_modified")
        hb.sync(b, W, "last_modified")
        ha.sync(a, W, "last_modified")
        assert rows(a, W) == rows(b, W) and len(rows(a, W)) == 10
        b.store.workflows.update("a1", name="b-edit")  # b is 3 h behind, but later
        a.store.workflows.delete("b2")
        hb.sync(b, W, "last_modified")
        ha.sync(a, W, "last_modified")
        hb.sync(b, W, "last_modified")
        assert rows(a, W) == rows(b, W)
        assert rows(a, W)["a1"]["name"] == "b-edit" and "b2" not in rows(b, W)
        assert a.pending_count(W) == b.pending_count(W) == 0
        assert all(r["sync_status"] == "synced" for r in a.db.select(W))
        ops = {(e["operation"], e["status"]) for e in a.store.sync_log.list(entity_type=W)}
        assert ops == {("push", "ok"), ("pull", "ok")}
    finally:
        server.stop()
