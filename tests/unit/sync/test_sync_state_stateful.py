"""Hypothesis stateful test: two edges and central-side edits, random syncs, every policy.

Two edge stores (MemoryStore) and one real central store (SQLite, used in process: its push
and pull methods, no HTTP). A third writer edits on central directly (a "central" node pushing
on top of the current version). Clocks are skewed by up to ±3 h. Any interleaving of edits,
deletes, partial pushes, partial pulls, clock steps and manual resolutions may happen; then
``settle`` runs full sync rounds until quiet and checks that every node holds the same rows and
that each row's winner is what the policy says, computed from the state before the round:

- last_modified: the version with the greatest HLC (central's, or a device's pending one);
- central_wins (and manual resolved with take=central): in push order, a device's pending
  version wins only if it is based on the version current at central when it arrives;
- edge_wins: the pending version of the last device to push (central's if none pending);
- merge: per field, the value with the greatest field HLC (rows without deletions);
- manual resolved with take=edge: one of the devices' pending versions.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test

from edge_min.central.model import PushBatch, PushItem
from edge_min.central.store import CentralStore, open_central_store
from edge_min.clock import VirtualClock
from edge_min.store import MemoryStore, Store
from edge_min.sync.changes import SyncState
from edge_min.sync.conflicts import POLICIES
from edge_min.sync.hlc import HybridClock
from edge_min.sync.tracker import ChangeTracker
from tests.unit.sync.syncutil import pull_all, push_all, rows

T0 = 1_767_225_600.0
HOURS3 = 3 * 3600.0
W = "workflows"
IDS = ("r0", "r1", "r2")
FIELDS = ("name", "version", "definition")
DATA = ("id", "name", "definition", "version", "created_at", "updated_at")

skews = st.floats(-HOURS3, HOURS3, allow_nan=False)
values = st.sampled_from(["x", "y", "z", "w"])


def records(central: CentralStore) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in central.pull(W, 0, 10_000)}


def outcome(deleted: bool, row: dict[str, Any] | None) -> tuple[bool, dict[str, Any] | None]:
    return (True, None) if deleted else (False, {k: (row or {}).get(k) for k in DATA})


class SyncMachine(RuleBasedStateMachine):
    """Two devices, a central-side writer and one central store, under one policy."""

    policy = "last_modified"

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        self.central = open_central_store(f"sqlite:///{self.tmp.name}/c.db")
        self.devices: list[SyncState] = []
        self.clocks: list[VirtualClock] = []

    def teardown(self) -> None:
        if self.devices:  # every run ends converged, whatever its last step was
            self.settle("central")
        self.central.close()
        self.tmp.cleanup()

    @initialize(a=skews, b=skews, c=skews)
    def start(self, a: float, b: float, c: float) -> None:
        for i, skew in enumerate((a, b)):
            clock = VirtualClock(T0 + skew)
            self.clocks.append(clock)
            self.devices.append(
                SyncState(Store(MemoryStore(), clock, ChangeTracker), f"dev-{'ab'[i]}")
            )
        self.central_clock = VirtualClock(T0 + c)
        self.writer = HybridClock(self.central_clock, "central-ops")

    # -- edits ------------------------------------------------------------------------------

    @rule(dev=st.integers(0, 1), rid=st.sampled_from(IDS), col=st.sampled_from(FIELDS), v=values)
    def edit(self, dev: int, rid: str, col: str, v: str) -> None:
        repo = self.devices[dev].store.workflows
        value: Any = {"v": v} if col == "definition" else v
        if repo.get(rid) is None:
            repo.create(f"n-{v}", {"v": v}, f"v-{v}", id=rid)
        else:
            repo.update(rid, **{col: value})

    @rule(dev=st.integers(0, 1), rid=st.sampled_from(IDS))
    def delete(self, dev: int, rid: str) -> None:
        self.devices[dev].store.workflows.delete(rid)

    @rule(rid=st.sampled_from(IDS), col=st.sampled_from(FIELDS), v=values, remove=st.booleans())
    def central_edit(self, rid: str, col: str, v: str, remove: bool) -> None:
        """An operator edits on central, on top of the current version."""
        cur = records(self.central).get(rid)
        if cur is not None:
            self.writer.observe(cur["hlc"])
        stamp = self.writer.now()
        if remove:
            if cur is None or cur["deleted"]:
                return
            row: dict[str, Any] = {}
            fh = dict(cur["field_hlcs"])
        elif cur is None or cur["deleted"]:
            row = {
                "id": rid,
                "name": f"c-{v}",
                "definition": json.dumps({"c": v}),
                "version": f"c{v}",
                "created_at": "c",
                "updated_at": stamp,
            }
            fh = {k: stamp for k in DATA[1:]}
        else:
            row = dict(cur["row"])
            row[col] = json.dumps({"c": v}) if col == "definition" else f"c-{v}"
            row["updated_at"] = stamp
            fh = {**cur["field_hlcs"], col: stamp, "updated_at": stamp}
        base = None if cur is None else cur["version"]
        item = PushItem(rid, base, stamp, row, fh, remove)
        [result] = self.central.push(PushBatch(str(uuid.uuid4()), "central-ops", W, [item]))
        assert result["status"] == "accepted"

    @rule(dev=st.integers(0, 1), seconds=st.sampled_from([0.001, 1.0, 60.0]))
    def tick(self, dev: int, seconds: float) -> None:
        self.clocks[dev].advance(seconds)
        self.central_clock.advance(seconds / 2)

    @rule(dev=st.integers(0, 1), back=st.booleans())
    def ntp_step(self, dev: int, back: bool) -> None:
        """The device's wall clock jumps an hour (the HLC must not follow it back)."""
        clock = self.clocks[dev]
        clock.set_wall(clock.time() + (-3600.0 if back else 3600.0))

    # -- partial syncs ----------------------------------------------------------------------

    @rule(dev=st.integers(0, 1), limit=st.integers(1, 3))
    def push_one(self, dev: int, limit: int) -> None:
        state = self.devices[dev]
        batch = state.outgoing(W, limit=limit)
        if batch.items:
            item_objs = [PushItem(**item) for item in batch.items]
            results = self.central.push(PushBatch(batch.batch_id, state.node, W, item_objs))
            state.acknowledge(batch, results, self.policy)

    @rule(dev=st.integers(0, 1), limit=st.integers(1, 3))
    def pull_one(self, dev: int, limit: int) -> None:
        state = self.devices[dev]
        recs = self.central.pull(W, state.pull_cursor(W), limit)
        if recs:
            state.apply_pulled(W, recs, self.policy, recs[-1]["version"])

    @rule(dev=st.integers(0, 1), take=st.sampled_from(["edge", "central"]))
    def resolve_one(self, dev: int, take: str) -> None:
        found = self.devices[dev].conflicts()
        if found:
            self.devices[dev].resolve(found[0]["id"], take)

    # -- the check --------------------------------------------------------------------------

    def _pending(self, state: SyncState) -> dict[str, Any]:
        ids = {c["entity_id"] for c in state.db.select("sync_changes", {"entity": W})}
        ids |= {c["entity_id"] for c in state.conflicts(W)}
        return {rid: state.edge_state(W, rid) for rid in ids}

    def _expected(self, take: str) -> dict[str, tuple[bool, dict[str, Any] | None] | None]:
        """Per row, the outcome the policy promises (None: only convergence is checked)."""
        cur = records(self.central)
        pend = [self._pending(d) for d in self.devices]
        policy = self.policy
        if policy == "manual":
            policy = "central_wins" if take == "central" else "manual_edge"
        out: dict[str, tuple[bool, dict[str, Any] | None] | None] = {}
        for rid in IDS:
            c = cur.get(rid)
            cands = [p[rid] for p in pend if rid in p]
            central_out = None if c is None else outcome(c["deleted"], c["row"])
            if policy == "last_modified":
                best: Any = c
                for s in cands:
                    if best is None or s.hlc > best["hlc"]:
                        best = {"hlc": s.hlc, "deleted": s.deleted, "row": s.row}
                out[rid] = None if best is None else outcome(best["deleted"], best["row"])
            elif policy == "central_wins":
                version: Any = None if c is None else c["version"]
                result = central_out
                for s in cands:
                    if s.base_version == version:
                        result, version = outcome(s.deleted, s.row), object()
                out[rid] = result
            elif policy == "edge_wins":
                out[rid] = outcome(cands[-1].deleted, cands[-1].row) if cands else central_out
            elif policy == "merge":
                if (c is not None and c["deleted"]) or any(s.deleted for s in cands) or not cands:
                    out[rid] = central_out if not cands else None
                    continue
                sides = [(s.field_hlcs, s.row or {}) for s in cands]
                if c is not None:
                    sides.append((c["field_hlcs"], c["row"]))
                row = {"id": rid}
                for col in DATA[1:]:
                    row[col] = max(sides, key=lambda side: side[0].get(col, ""))[1].get(col)
                out[rid] = outcome(False, row)
            else:  # manual, take=edge: one of the pending versions survives
                out[rid] = central_out if not cands else None
                if cands:
                    self._choices[rid] = [outcome(s.deleted, s.row) for s in cands]
        return out

    @rule(take=st.sampled_from(["edge", "central"]))
    def settle(self, take: str) -> None:
        self._choices: dict[str, list[Any]] = {}
        expected = self._expected(take)
        for _ in range(30):
            for state in self.devices:
                for conflict in state.conflicts():
                    state.resolve(conflict["id"], take)
                push_all(state, self.central, W, self.policy, limit=2)
            for state in self.devices:
                pull_all(state, self.central, W, self.policy, limit=2)
            if not any(s.pending_count(W) for s in self.devices):
                break
        cur = records(self.central)
        live = {rid: r["row"] for rid, r in cur.items() if not r["deleted"]}
        for state in self.devices:
            assert state.pending_count(W) == 0 and state.conflicts() == []
            assert rows(state, W) == live, state.node
            for rid, rec in cur.items():
                sr = state.db.get("sync_rows", {"entity": W, "entity_id": rid})
                assert sr is not None and sr["central_version"] == rec["version"]
                assert json.loads(sr["field_hlcs"]) == rec["field_hlcs"]
            assert {r["sync_status"] for r in state.db.select(W)} <= {"synced"}
        for rid, want in expected.items():
            got = None if rid not in cur else outcome(cur[rid]["deleted"], cur[rid]["row"])
            if want is not None:
                assert got == want, (self.policy, take, rid)
            elif rid in self._choices:
                assert got in self._choices[rid], (self.policy, rid)


@pytest.mark.slow
@pytest.mark.parametrize("policy", POLICIES)
def test_sync_converges_to_what_the_policy_says(policy: str) -> None:
    machine = type(f"SyncMachine_{policy}", (SyncMachine,), {"policy": policy})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=60,
            stateful_step_count=50,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
