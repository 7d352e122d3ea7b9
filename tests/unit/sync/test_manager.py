"""SyncManager on a VirtualClock: schedule, priority, no starvation, retry, offline modes, cuts.

The store side is a small in-memory stand-in with SyncState's API and central a small
in-memory stand-in speaking the real wire frames (edge_min.sync.protocol), so these tests
are about the manager's decisions; tests/integration/sync/ runs the real pieces.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from edge_min.clock import VirtualClock
from edge_min.config.sync import EntitySync, RetryPolicy, SyncConfig
from edge_min.sync.errors import SyncError
from edge_min.sync.manager import SyncManager, status_document
from edge_min.sync.protocol import decode_frame, encode_frame, error_frame
from edge_min.sync.transport import TransportError

ENTITIES = ("workflows", "workflow_executions", "agents", "agent_executions")


@dataclass
class OutBatch:
    entity: str
    batch_id: str
    items: list[dict[str, Any]]
    upto_seq: int


@dataclass
class Ack:
    accepted: int
    conflicts: int
    repush: int = 0


@dataclass
class FakeState:
    """SyncState's API over dicts: changes per entity, push/pull cursors, applied rows."""

    node: str = "edge-1"
    changes: dict[str, list[tuple[int, str, dict[str, Any]]]] = field(default_factory=dict)
    push_seq: dict[str, int] = field(default_factory=dict)
    pull_version: dict[str, int] = field(default_factory=dict)
    rows: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    attempts: list[tuple[str, bool, str | None]] = field(default_factory=list)
    endless: set[str] = field(default_factory=set)
    seq: int = 0

    def edit(self, entity: str, n: int) -> None:
        for _ in range(n):
            self.seq += 1
            rid = f"{entity}-{self.seq}"
            self.changes.setdefault(entity, []).append((self.seq, rid, {"id": rid}))

    def outgoing(self, entity: str, *, limit: int, max_bytes: int) -> OutBatch:
        if entity in self.endless:  # always more work, as a busy producer would make
            self.edit(entity, limit)
        after = self.push_seq.get(entity, 0)
        todo = [c for c in self.changes.get(entity, []) if c[0] > after][:limit]
        items = [
            {
                "id": rid,
                "base_version": None,
                "hlc": f"{seq:013d}.00000.{self.node}",
                "row": row,
                "field_hlcs": {},
                "deleted": False,
            }
            for seq, rid, row in todo
        ]
        upto = todo[-1][0] if todo else after
        first = todo[0][0] if todo else after
        return OutBatch(entity, f"{self.node}:{entity}:{first}-{upto}", items, upto)

    def acknowledge(self, batch: OutBatch, results: list[dict[str, Any]], policy: str) -> Ack:
        self.push_seq[batch.entity] = batch.upto_seq
        ok = sum(1 for r in results if r["status"] == "accepted")
        return Ack(ok, len(results) - ok)

    def pull_cursor(self, entity: str) -> int:
        return self.pull_version.get(entity, 0)

    def apply_pulled(
        self, entity: str, records: list[dict[str, Any]], policy: str, upto_version: int
    ) -> Any:
        for r in records:
            self.rows[(entity, r["id"])] = r
        self.pull_version[entity] = upto_version
        return None

    def pending_count(self, entity: str) -> int:
        after = self.push_seq.get(entity, 0)
        return sum(1 for c in self.changes.get(entity, []) if c[0] > after)

    def record_attempt(self, entity: str, ok: bool, error: str | None) -> None:
        self.attempts.append((entity, ok, error))

    def status(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for i, (e, ok, err) in enumerate(self.attempts):
            row = out.setdefault(e, {"last_success": None, "pending": self.pending_count(e)})
            row["last_attempt"] = f"t{i:05d}"
            row["last_error"] = err
            if ok:
                row["last_success"] = f"t{i:05d}"
        return out


class FakeCentral:
    """Central's push/pull in memory, answering real frames; ``fail`` makes requests fail."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], dict[str, Any]] = {}
        self.applied: dict[str, list[dict[str, Any]]] = {}
        self.applications = 0
        self.version = 0
        self.log: list[tuple[str, str]] = []
        self.fail: BaseException | None = None
        self.cut_answer_once = False
        self.error_answer: SyncError | None = None
        self.closed = 0

    def close(self) -> None:
        self.closed += 1

    def request(
        self, method: str, path: str, body: bytes = b"", headers: Any = None
    ) -> tuple[int, dict[str, str], bytes]:
        if self.fail is not None:
            raise self.fail
        if self.error_answer is not None:
            return 409, {}, error_frame(self.error_answer, node="central")
        if method == "POST":
            header, items = decode_frame(body)
            self.log.append(("push", header["entity"]))
            results = self.applied.get(header["batch"])
            if results is None:
                results = []
                self.applications += 1
                for item in items:
                    self.version += 1
                    self.records[(header["entity"], item["id"])] = {
                        **item,
                        "version": self.version,
                        "origin": header["node"],
                    }
                    results.append(
                        {"id": item["id"], "status": "accepted", "version": self.version}
                    )
                self.applied[header["batch"]] = results
            if self.cut_answer_once:  # applied, but the answer is lost on the way back
                self.cut_answer_once = False
                raise TransportError("the answer was cut")
            frame = encode_frame(
                {
                    "kind": "push_result",
                    "entity": header["entity"],
                    "batch": header["batch"],
                    "node": "central",
                },
                results,
                compression="none",
            )
            return 200, {}, frame
        q = {k: v[0] for k, v in parse_qs(urlsplit(path).query).items()}
        entity, after, limit = q["entity"], int(q["after"]), int(q["limit"])
        self.log.append(("pull", entity))
        recs = sorted(
            (r for (e, _), r in self.records.items() if e == entity and r["version"] > after),
            key=lambda r: r["version"],
        )[:limit]
        frame = encode_frame(
            {"kind": "pull_result", "entity": entity, "batch": "", "node": "central"},
            recs,
            compression="none",
        )
        return 200, {}, frame


def make(
    *,
    offline_mode: str = "auto",
    schedule: dict[str, float] | None = None,
    retry: RetryPolicy | None = None,
    entities: dict[str, EntitySync] | None = None,
    seed: int = 7,
) -> tuple[SyncManager, FakeState, FakeCentral, VirtualClock]:
    clock = VirtualClock()
    cfg = SyncConfig()
    cfg = SyncConfig(
        entities=entities or cfg.entities,
        schedule=cfg.schedule if schedule is None else schedule,
        retry=retry or RetryPolicy(max_attempts=3, initial_delay=10, max_delay=100),
    )
    state, central = FakeState(), FakeCentral()
    mgr = SyncManager(
        state,
        central,
        node="edge-1",
        sync_config=cfg,
        sync_interval=50,
        offline_mode=offline_mode,
        clock=clock,
        rng=random.Random(seed),
    )
    return mgr, state, central, clock


def test_every_entity_is_due_at_the_first_tick_then_on_its_own_schedule() -> None:
    mgr, _state, _central, clock = make(schedule={"workflows": 10.0, "agents": 30.0})
    first = mgr.tick(clock.monotonic())
    assert first == ["workflows", "agents", "workflow_executions", "agent_executions"]
    assert mgr.tick(clock.monotonic()) == []  # claimed until the run happens
    mgr.sync_once(first)
    clock.advance(5)
    assert mgr.tick(clock.monotonic()) == []
    clock.advance(5)
    assert mgr.tick(clock.monotonic()) == ["workflows"]
    mgr.sync_once(["workflows"])
    clock.advance(20)  # t=30
    assert mgr.tick(clock.monotonic()) == ["workflows", "agents"]
    mgr.sync_once(["workflows", "agents"])
    # Entities missing from sync-config's schedule use edge-config's sync_interval (50 s).
    clock.advance(19)  # t=49: only workflows (due at 40) again
    assert mgr.tick(clock.monotonic()) == ["workflows"]
    mgr.sync_once(["workflows"])
    clock.advance(1)  # t=50
    assert mgr.tick(clock.monotonic()) == ["workflow_executions", "agent_executions"]


def test_interval_comes_from_schedule_else_sync_interval() -> None:
    mgr, *_ = make(schedule={"agents": 3600.0})
    assert mgr.interval("agents") == 3600.0
    assert mgr.interval("workflows") == 50.0


def test_high_priority_moves_first_and_gets_more_batches_per_round() -> None:
    mgr, state, central, _ = make()
    for e in ENTITIES:
        state.edit(e, 1000)
    report = mgr.sync_once()
    assert report.ok
    pushes = [e for kind, e in central.log if kind == "push"]
    # Spec priorities: workflows, agents high (4 per round), workflow_executions medium (2),
    # agent_executions low (1). Batch sizes 50/20/100/200 decide how many batches each has.
    assert pushes[:11] == ["workflows"] * 4 + ["agents"] * 4 + ["workflow_executions"] * 2 + [
        "agent_executions"
    ]
    assert state.pending_count("agent_executions") == 0


def test_low_priority_is_not_starved_by_endless_high_priority_work() -> None:
    mgr, state, central, _ = make()
    state.endless.add("workflows")
    state.edit("agent_executions", 2000)  # 10 batches of 200
    mgr.sync_once(["workflows", "agent_executions"], max_batches=50)
    pushes = [e for kind, e in central.log if kind == "push"]
    assert pushes.count("workflows") == 40
    assert pushes.count("agent_executions") == 10
    assert state.pending_count("agent_executions") == 0


def test_failed_attempts_back_off_with_jitter_then_wait_for_the_schedule() -> None:
    retry = RetryPolicy(max_attempts=3, initial_delay=10, max_delay=100, backoff_factor=2)
    mgr, _state, central, clock = make(schedule={"workflows": 1000.0}, retry=retry)
    central.fail = TransportError("link down")
    assert mgr.tick(0.0)
    waits = []
    for _ in range(3):
        report = mgr.sync_once(["workflows"])
        assert not report.ok and report.entities["workflows"].error_code == "sync_transport"
        waits.append(mgr._next_due["workflows"] - clock.monotonic())
        clock.advance(waits[-1])
    assert 5 <= waits[0] <= 10 and 10 <= waits[1] <= 20  # equal jitter: [base/2, base]
    assert waits[2] == 1000.0  # attempts used up: back to the regular schedule
    assert mgr.consecutive_failures == 3
    assert mgr.status()["status"] == "failed"
    # The same seed gives the same delays.
    mgr2, _, central2, clock2 = make(schedule={"workflows": 1000.0}, retry=retry)
    central2.fail = TransportError("link down")
    mgr2.sync_once(["workflows"])
    assert mgr2._next_due["workflows"] - clock2.monotonic() == waits[0]


def test_a_link_failure_fails_the_rest_of_the_run_without_more_requests() -> None:
    mgr, _state, central, _ = make()
    central.fail = TransportError("connection refused")
    report = mgr.sync_once()
    assert all(not r.ok for r in report.entities.values())
    assert central.log == []


def test_permanent_errors_wait_for_the_schedule_without_retrying() -> None:
    mgr, _state, central, clock = make(schedule={"agents": 3600.0})
    from edge_min.sync.errors import ProtocolVersionError

    central.error_answer = ProtocolVersionError("central speaks version 2; upgrade")
    report = mgr.sync_once(["agents"])
    assert report.entities["agents"].error_code == "sync_version"
    assert mgr._next_due["agents"] - clock.monotonic() == 3600.0


def test_offline_mode_always_never_syncs() -> None:
    mgr, state, central, _ = make(offline_mode="always")
    state.edit("workflows", 3)
    assert mgr.tick(0.0) == []
    report = mgr.sync_once()
    assert report.skipped and "always" in report.skipped and not report.ok
    assert central.log == []


def test_offline_mode_auto_waits_for_the_link_and_syncs_on_connect() -> None:
    mgr, state, _central, clock = make()
    mgr.sync_once()
    mgr.link_changed(False)
    state.edit("workflows", 3)
    clock.advance(10_000)
    assert mgr.tick(clock.monotonic()) == []
    assert mgr.sync_once().skipped
    mgr.link_changed(True)
    assert len(mgr.tick(clock.monotonic())) == 4
    assert mgr.sync_once().ok and state.pending_count("workflows") == 0


def test_sync_on_connect_off_keeps_the_schedule() -> None:
    mgr, _state, _central, clock = make()
    mgr.sync_on_connect = False
    mgr.sync_once()
    mgr.tick(clock.monotonic())
    mgr.link_changed(False)
    mgr.link_changed(True)
    assert mgr.tick(clock.monotonic() + 1) == []


def test_offline_mode_never_tries_even_when_the_link_looks_down() -> None:
    mgr, state, central, _ = make(offline_mode="never")
    mgr.link_changed(False)
    state.edit("agents", 2)
    assert mgr.tick(0.0)
    assert mgr.sync_once().ok
    assert ("push", "agents") in central.log


def test_a_lost_push_answer_resends_the_same_batch_once_and_central_applies_it_once() -> None:
    mgr, state, central, _ = make()
    state.edit("workflows", 120)  # 3 batches of 50
    central.cut_answer_once = True
    first = mgr.sync_once(["workflows"])
    assert not first.ok and state.push_seq.get("workflows", 0) == 0  # cursor did not move
    second = mgr.sync_once(["workflows"])
    assert second.ok and state.pending_count("workflows") == 0
    pushes = [e for kind, e in central.log if kind == "push"]
    assert len(pushes) == 4  # 3 batches + the one resent
    assert central.applications == 3 and len(central.applied) == 3


def test_pull_applies_central_records_and_moves_the_cursor() -> None:
    mgr, state, central, _ = make()
    for i in range(45):
        central.version += 1
        central.records[("agents", f"a{i}")] = {"id": f"a{i}", "version": central.version}
    report = mgr.sync_once(["agents"])
    assert report.entities["agents"].pulled == 45
    assert state.pull_version["agents"] == 45 and len(state.rows) == 45


def test_progress_is_reported_per_batch() -> None:
    mgr, state, _central, _ = make()
    state.edit("agents", 45)
    seen: list[tuple[str, str, int, int]] = []
    mgr.sync_once(["agents"], progress=lambda *a: seen.append(a))
    assert [s for s in seen if s[1] == "push"] == [
        ("agents", "push", 20, 45),
        ("agents", "push", 40, 45),
        ("agents", "push", 45, 45),
    ]
    assert any(s[1] == "pull" for s in seen)


def test_status_goes_never_success_failed() -> None:
    mgr, state, central, _ = make()
    mgr.refresh_status()
    assert mgr.status()["status"] == "never"
    mgr.sync_once()
    doc = mgr.status()
    assert doc["status"] == "success" and set(doc["entities"]) == set(ENTITIES)
    assert set(doc["entities"]["agents"]) >= {
        "last_attempt",
        "last_success",
        "pending",
        "last_error",
    }
    central.fail = TransportError("down")
    mgr.sync_once(["agents"])
    assert mgr.status()["status"] == "failed"
    assert mgr.status(state)["entities"]["agents"]["last_error"] == "down"


def test_status_is_running_during_a_sync() -> None:
    mgr, state, _central, _ = make()
    state.edit("agents", 30)
    during: list[str] = []
    mgr.sync_once(["agents"], progress=lambda *a: during.append(mgr.status()["status"]))
    assert during and set(during) == {"running"}


def test_restart_forgets_backoff_and_makes_everything_due() -> None:
    mgr, _state, central, clock = make()
    central.fail = TransportError("down")
    mgr.sync_once()
    assert mgr.tick(clock.monotonic()) == []
    central.fail = None
    mgr.restart()
    assert central.closed == 1
    assert len(mgr.tick(clock.monotonic())) == 4
    assert mgr.sync_once().ok and mgr.consecutive_failures == 0


def test_restart_during_a_run_stops_it_at_the_next_batch() -> None:
    mgr, state, _central, _ = make()
    state.edit("agent_executions", 1000)
    report = mgr.sync_once(["agent_executions"], progress=lambda *a: mgr.restart())
    assert not report.ok and report.entities["agent_executions"].pushed == 200


def test_status_document_overall() -> None:
    assert status_document({})["status"] == "never"
    ok = {"last_attempt": "2", "last_success": "2", "pending": 0, "last_error": None}
    bad = {"last_attempt": "3", "last_success": "1", "pending": 4, "last_error": "cut"}
    assert status_document({"a": ok})["status"] == "success"
    assert status_document({"a": ok, "b": bad})["status"] == "failed"
    assert status_document({"a": ok}, running=True)["status"] == "running"


def test_bad_offline_mode_is_a_config_error() -> None:
    from edge_min.errors import ConfigError

    with pytest.raises(ConfigError, match="offline_mode"):
        SyncManager(FakeState(), FakeCentral(), node="n", offline_mode="sometimes")


def test_children_pull_after_their_parents_and_parents_join_the_run() -> None:
    mgr, _state, central, _ = make()
    for i, e in enumerate(["agent_executions"] * 30 + ["workflow_executions"] * 300 + ["agents"]):
        central.version += 1
        central.records[(e, f"r{i}")] = {"id": f"r{i}", "version": central.version}
    report = mgr.sync_once(["agent_executions"])
    assert set(report.entities) == set(ENTITIES)  # its parents (and theirs) came along
    pulls = [e for kind, e in central.log if kind == "pull"]
    first_child = pulls.index("agent_executions")
    assert all(e != "workflow_executions" for e in pulls[first_child:])
    assert all(e != "agents" for e in pulls[first_child:])


def test_a_child_is_not_pulled_when_its_parent_failed() -> None:
    mgr, _state, central, _ = make()
    real = central.request

    def flaky(method: str, path: str, body: bytes = b"", headers: Any = None) -> Any:
        if "entity=workflow_executions" in path:
            return 409, {}, error_frame(SyncError("busy"), node="central")
        return real(method, path, body, headers)

    central.request = flaky  # type: ignore[method-assign]
    report = mgr.sync_once(["agent_executions"])
    assert not report.entities["workflow_executions"].ok
    child = report.entities["agent_executions"]
    assert not child.ok and "workflow_executions" in (child.error or "")
    assert ("pull", "agent_executions") not in central.log


def test_a_batch_id_names_its_content() -> None:
    from edge_min.sync.manager import with_content_id

    one = OutBatch("agents", "edge-1/agents/1-2", [{"id": "a", "row": {"n": 1}}], 2)
    same = OutBatch("agents", "edge-1/agents/1-2", [{"id": "a", "row": {"n": 1}}], 2)
    edited = OutBatch("agents", "edge-1/agents/1-2", [{"id": "a", "row": {"n": 2}}], 2)
    assert with_content_id(one).batch_id == with_content_id(same).batch_id
    assert with_content_id(one).batch_id != with_content_id(edited).batch_id
    assert with_content_id(one).batch_id.startswith("edge-1/agents/1-2.")
