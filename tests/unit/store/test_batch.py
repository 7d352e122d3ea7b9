"""The batch port methods (insert_many, update_many) and the repositories' set_many/add_many.

Each batch must leave a backend exactly as the same writes made one at a time would, on
every backend and through the port's default (looping) implementation.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_min.clock import VirtualClock, iso
from edge_min.errors import StorageError
from edge_min.store import MemoryStore, Storage, Store
from edge_min.store.base import Row, Where
from edge_min.store.repos import _ENCODER, _dumps
from edge_min.store.sqlite import SqliteStore

T0 = "2026-01-01T00:00:00.000000Z"


def wf(id: str, name: str = "n", **extra: Any) -> dict[str, Any]:
    row = {"id": id, "name": name, "definition": "{}", "version": "1", "created_at": T0}
    return {**row, "updated_at": T0, **extra}


class PassThrough(Storage):
    """A wrapper that does not override the batch methods: exercises the port's defaults."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner

    def atomic(self) -> AbstractContextManager[None]:
        return self.inner.atomic()

    def insert(self, table: str, row: Mapping[str, Any]) -> None:
        self.inner.insert(table, row)

    def upsert(self, table: str, row: Mapping[str, Any], key: Sequence[str] = ("id",)) -> None:
        self.inner.upsert(table, row, key)

    def update(self, table: str, key: Where, changes: Mapping[str, Any]) -> int:
        return self.inner.update(table, key, changes)

    def get(self, table: str, key: Mapping[str, Any]) -> Row | None:
        return self.inner.get(table, key)

    def select(
        self,
        table: str,
        where: Where | None = None,
        order_by: Sequence[str] = (),
        limit: int | None = None,
    ) -> list[Row]:
        return self.inner.select(table, where, order_by, limit)

    def count(self, table: str, where: Where | None = None) -> int:
        return self.inner.count(table, where)

    def delete(self, table: str, key: Where) -> int:
        return self.inner.delete(table, key)

    def size_bytes(self) -> int:
        return self.inner.size_bytes()

    def close(self) -> None:
        self.inner.close()


KINDS = ("sqlite", "memory", "default")


def make(kind: str) -> Storage:
    if kind == "sqlite":
        return SqliteStore(":memory:")
    if kind == "memory":
        return MemoryStore()
    return PassThrough(SqliteStore(":memory:"))


@pytest.fixture(params=KINDS)
def bdb(request: pytest.FixtureRequest) -> Iterator[Storage]:
    db = make(request.param)
    yield db
    db.close()


def test_insert_many_equals_inserts_one_by_one(bdb: Storage) -> None:
    bdb.insert_many("workflows", [wf("w2", name="b"), wf("w1", sync_status="synced")])
    ref = MemoryStore()
    ref.insert("workflows", wf("w2", name="b"))
    ref.insert("workflows", wf("w1", sync_status="synced"))
    assert bdb.select("workflows", order_by=("id",)) == ref.select("workflows", order_by=("id",))
    bdb.insert_many("workflows", [])
    assert bdb.count("workflows") == 2


def test_insert_many_is_all_or_nothing(bdb: Storage) -> None:
    bdb.insert("workflows", wf("w0"))
    with pytest.raises(StorageError, match=r"already exists|UNIQUE"):
        bdb.insert_many("workflows", [wf("w1"), wf("w2"), wf("w1")])
    with pytest.raises(StorageError, match=r"UNIQUE|already exists"):
        bdb.insert_many("workflows", [wf("w3"), wf("w0")])
    with pytest.raises(StorageError, match=re.escape("workflows.name is required")):
        bdb.insert_many("workflows", [wf("w4"), wf("w5", name=None)])
    with pytest.raises(StorageError, match="unknown column 'nme' in table 'workflows'"):
        bdb.insert_many("workflows", [wf("w6"), {**wf("w7"), "nme": "x"}])
    assert [r["id"] for r in bdb.select("workflows")] == ["w0"]


def test_update_many_sets_each_row_and_counts_matches(bdb: Storage) -> None:
    bdb.insert_many("workflows", [wf("w1"), wf("w2"), wf("w3")])
    n = bdb.update_many(
        "workflows",
        "id",
        [
            {"id": "w1", "name": "a"},
            {"id": "w2", "version": "2"},
            {"id": "w1", "name": "b", "version": "3"},  # the same row again: last wins
            {"id": "nope", "name": "x"},
            {"id": "w3"},  # no changes: counts the match, writes nothing
        ],
    )
    assert n == 4
    got = {r["id"]: (r["name"], r["version"]) for r in bdb.select("workflows")}
    assert got == {"w1": ("b", "3"), "w2": ("n", "2"), "w3": ("n", "1")}
    assert bdb.update_many("workflows", "id", []) == 0


def test_update_many_keeps_the_order_of_one_rows_updates_across_shapes(bdb: Storage) -> None:
    bdb.insert_many("workflows", [wf("w1"), wf("w2")])
    rows = [
        {"id": "w1", "name": "x"},
        {"id": "w2", "name": "q"},
        {"id": "w1", "name": "y", "version": "2"},
        {"id": "w1", "name": "z"},
        {"id": "w2", "name": "r", "version": "3"},
    ]
    assert bdb.update_many("workflows", "id", rows) == 5
    got = {r["id"]: (r["name"], r["version"]) for r in bdb.select("workflows")}
    assert got == {"w1": ("z", "2"), "w2": ("r", "3")}


def test_update_many_keys_mean_what_they_mean_in_a_where(bdb: Storage) -> None:
    bdb.insert("schedule_state", {"job_id": "a", "last_run_at": None, "next_run_at": 1.0})
    bdb.insert("schedule_state", {"job_id": "b", "last_run_at": 5.0, "next_run_at": 1.0})
    bdb.insert("schedule_state", {"job_id": "c", "last_run_at": 6.0, "next_run_at": 1.0})
    rows = [{"last_run_at": None, "next_run_at": 2.0}, {"last_run_at": [5.0], "next_run_at": 3.0}]
    assert bdb.update_many("schedule_state", "last_run_at", rows) == 2
    got = {r["job_id"]: r["next_run_at"] for r in bdb.select("schedule_state")}
    assert got == {"a": 2.0, "b": 3.0, "c": 1.0}


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"id": "w1", "name": "a"}, {"name": "b"}], "row 2 has no 'id', the key column"),
        ([{"id": "w1", "nme": "a"}], "unknown column 'nme' in table 'workflows'"),
        ([{"id": "w1", "name": None}], "workflows.name is required"),
        ([{"id": "w1", "name": 5}], "workflows.name is TEXT but got int 5"),
        ([{"id": 5, "name": "a"}], "workflows.id is TEXT but got int 5"),
    ],
)
def test_update_many_validates_every_row_before_writing(
    bdb: Storage, rows: list[dict[str, Any]], message: str
) -> None:
    bdb.insert("workflows", wf("w1"))
    with pytest.raises(StorageError, match=re.escape(message)):
        bdb.update_many("workflows", "id", [{"id": "w1", "version": "9"}, *rows])
    assert bdb.get("workflows", {"id": "w1"})["version"] == "1"  # type: ignore[index]


def test_update_many_refuses_an_unknown_key_column_or_table(bdb: Storage) -> None:
    with pytest.raises(StorageError, match="unknown column 'nope' in table 'workflows'"):
        bdb.update_many("workflows", "nope", [{"nope": 1}])
    with pytest.raises(StorageError, match="unknown table 'nope'"):
        bdb.update_many("nope", "id", [{"id": "x"}])
    with pytest.raises(StorageError, match="unknown table 'nope'"):
        bdb.insert_many("nope", [{"id": "x"}])
    with pytest.raises(StorageError, match="unknown table 'nope'"):
        bdb.insert_many("nope", [])


def test_a_batch_inside_atomic_is_part_of_that_transaction(bdb: Storage) -> None:
    bdb.insert("workflows", wf("w1"))
    with pytest.raises(RuntimeError), bdb.atomic():
        bdb.insert_many("workflows", [wf("w2")])
        bdb.update_many("workflows", "id", [{"id": "w1", "name": "changed"}])
        raise RuntimeError("boom")
    assert [(r["id"], r["name"]) for r in bdb.select("workflows")] == [("w1", "n")]
    with bdb.atomic():
        bdb.insert_many("workflows", [wf("w2")])
        bdb.update_many("workflows", "id", [{"id": "w2", "name": "kept"}])
    assert bdb.get("workflows", {"id": "w2"})["name"] == "kept"  # type: ignore[index]


_IDS = st.sampled_from(["a", "b", "c", "d"])
_CHANGE = st.fixed_dictionaries(
    {"id": _IDS},
    optional={
        "name": st.sampled_from(["x", "y", "z"]),
        "version": st.sampled_from(["1", "2"]),
        "sync_status": st.sampled_from(["pending", "synced"]),
        "last_synced_at": st.none() | st.just(T0),
    },
)


@settings(max_examples=150, deadline=None)
@given(kind=st.sampled_from(KINDS), batches=st.lists(st.lists(_CHANGE, max_size=8), max_size=4))
def test_update_many_leaves_the_same_rows_as_single_updates(
    kind: str, batches: list[list[dict[str, Any]]]
) -> None:
    db, ref = make(kind), MemoryStore()
    try:
        for s in (db, ref):
            for id in ("a", "b", "c"):
                s.insert("workflows", wf(id))
        for batch in batches:
            n = db.update_many("workflows", "id", batch)
            expected = 0
            for row in batch:
                changes = {k: v for k, v in row.items() if k != "id"}
                expected += ref.update("workflows", {"id": row["id"]}, changes)
            assert n == expected
        assert db.select("workflows", order_by=("id",)) == ref.select("workflows", order_by=("id",))
    finally:
        db.close()


# -- the repositories ---------------------------------------------------------------------


def test_set_many_and_add_many_stamp_encode_and_count(store: Store, clock: VirtualClock) -> None:
    wf_row = store.workflows.create("w", {"steps": []}, "1")
    clock.advance(5)
    store.executions.add_many(
        [
            {"id": "e1", "workflow_id": wf_row["id"], "status": "queued", "started_at": T0},
            {"id": "e2", "workflow_id": wf_row["id"], "status": "queued", "started_at": T0,
             "input": {"n": [1, "é"]}},
        ]
    )  # fmt: skip
    e2 = store.executions.require("e2")
    assert e2["input"] == {"n": [1, "é"]} and e2["sync_status"] == "pending"
    assert store.backend.get("workflow_executions", {"id": "e2"})["input"] == '{"n":[1,"é"]}'  # type: ignore[index]
    clock.advance(5)
    n = store.executions.set_many(
        [("e1", {"status": "running"}), ("nope", {"status": "x"}), ("e1", {"output": [1]})]
    )
    assert n == 2
    e1 = store.executions.require("e1")
    assert (e1["status"], e1["output"]) == ("running", [1])
    assert store.executions.set_many([]) == 0
    store.executions.add_many([])
    store.workflows.add_many([{"name": "v", "definition": {}, "version": "2"}])
    added = store.workflows.get_by_name("v")
    assert added is not None
    assert added["created_at"] == added["updated_at"] == iso(clock.time())


def test_set_many_refuses_managed_columns_and_bad_json(store: Store) -> None:
    wf_row = store.workflows.create("w", {}, "1")
    with pytest.raises(StorageError, match="sync_status are set by the store itself"):
        store.workflows.set_many(
            [(wf_row["id"], {"name": "a"}), (wf_row["id"], {"sync_status": "x"})]
        )
    with pytest.raises(
        StorageError, match=re.escape("workflows.definition must be JSON-serialisable")
    ):
        store.workflows.set_many([(wf_row["id"], {"definition": {1, 2}})])
    assert store.workflows.require(wf_row["id"])["name"] == "w"


# -- the fast JSON path -------------------------------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(value=_JSON)
def test_dumps_writes_exactly_what_the_encoder_writes(value: Any) -> None:
    assert _dumps(value) == _ENCODER.encode(value)


def test_dumps_reports_circular_values_like_the_encoder() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular reference"):
        _dumps(loop)
    with pytest.raises(TypeError, match="not JSON serializable"):
        _dumps({"a": object()})


def test_values_keep_their_checks_on_the_fast_path(bdb: Storage) -> None:
    bdb.insert("schedule_state", {"job_id": "a", "last_run_at": 1, "next_run_at": 2.5})
    with pytest.raises(
        StorageError, match=re.escape("schedule_state.last_run_at is REAL but got bool")
    ):
        bdb.update("schedule_state", {"job_id": "a"}, {"last_run_at": True})
    with pytest.raises(
        StorageError, match=re.escape("schedule_state.job_id is TEXT but got int 3")
    ):
        bdb.update("schedule_state", {"job_id": 3}, {"last_run_at": 1.0})
    assert bdb.get("schedule_state", {"job_id": "a"}) == {
        "job_id": "a", "last_run_at": 1, "next_run_at": 2.5,
    }  # fmt: skip
