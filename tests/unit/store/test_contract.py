"""The storage contract, run against every backend (SQLite on a file, memory)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_min.errors import StorageError
from edge_min.store import Ge, Gt, IsNull, Le, Lt, MemoryStore, Ne, NotNull, Storage
from edge_min.store.sqlite import SqliteStore

T0 = "2026-01-01T00:00:00.000000Z"


def wf(id: str, name: str = "n", **extra: Any) -> dict[str, Any]:
    row = {"id": id, "name": name, "definition": "{}", "version": "1", "created_at": T0}
    return {**row, "updated_at": T0, **extra}


def job(job_id: str, last: float | None, nxt: float | None) -> dict[str, Any]:
    return {"job_id": job_id, "last_run_at": last, "next_run_at": nxt}


def test_insert_fills_defaults_and_get_returns_every_column(db: Storage) -> None:
    db.insert("workflows", wf("w1"))
    row = db.get("workflows", {"id": "w1"})
    assert row == {**wf("w1"), "sync_status": "pending", "last_synced_at": None}
    assert list(row) == [
        "id", "name", "definition", "version", "created_at", "updated_at",
        "sync_status", "last_synced_at",
    ]  # fmt: skip
    assert db.get("workflows", {"id": "nope"}) is None


def test_duplicate_primary_key_is_refused_and_keeps_the_first_row(db: Storage) -> None:
    db.insert("workflows", wf("w1", name="first"))
    with pytest.raises(StorageError):
        db.insert("workflows", wf("w1", name="second"))
    assert db.get("workflows", {"id": "w1"})["name"] == "first"  # type: ignore[index]


@pytest.mark.parametrize(
    ("row", "column"),
    [
        ({k: v for k, v in wf("w1").items() if k != "name"}, "name"),
        (wf("w1", name=None), "name"),
        (wf(None), "id"),  # type: ignore[arg-type]
        (wf("w1", sync_status=None), "sync_status"),
    ],
)
def test_not_null_and_primary_key_are_required(
    db: Storage, row: dict[str, Any], column: str
) -> None:
    with pytest.raises(StorageError, match=f"workflows.{column} is required"):
        db.insert("workflows", row)
    assert db.count("workflows") == 0


def test_unknown_table_and_column_are_named(db: Storage) -> None:
    with pytest.raises(StorageError, match="unknown table 'nope'"):
        db.select("nope")
    with pytest.raises(StorageError, match="unknown column 'colour' in table 'workflows'"):
        db.insert("workflows", {**wf("w1"), "colour": "red"})
    with pytest.raises(StorageError, match="unknown column 'x; DROP TABLE workflows'"):
        db.select("workflows", {"x; DROP TABLE workflows": 1})
    with pytest.raises(StorageError, match="unknown column 'evil'"):
        db.select("workflows", order_by=("-evil",))
    with pytest.raises(StorageError, match="unknown column 'evil'"):
        db.update("workflows", {"id": "w1"}, {"evil": "x"})
    with pytest.raises(StorageError, match="unknown table"):
        db.delete("sqlite_master", {"name": "x"})


def test_values_must_suit_the_column_type(db: Storage) -> None:
    with pytest.raises(StorageError, match=r"workflows.definition is TEXT but got dict"):
        db.insert("workflows", wf("w1", definition={"a": 1}))
    with pytest.raises(StorageError, match="is TEXT but got int"):
        db.select("workflows", {"name": 5})
    db.insert("schedule_state", job("j", 5, 7.5))  # REAL takes ints
    assert db.get("schedule_state", {"job_id": "j"}) == job("j", 5, 7.5)


def test_upsert_inserts_then_updates_only_the_given_columns(db: Storage) -> None:
    db.upsert("workflows", wf("w1", name="a"))
    db.update("workflows", {"id": "w1"}, {"sync_status": "synced"})
    db.upsert("workflows", wf("w1", name="b"))
    row = db.get("workflows", {"id": "w1"})
    assert row is not None and row["name"] == "b" and row["sync_status"] == "synced"
    db.upsert("meta", {"key": "k", "value": "1"}, key=("key",))
    db.upsert("meta", {"key": "k", "value": "2"}, key=("key",))
    assert db.select("meta") == [{"key": "k", "value": "2"}]
    with pytest.raises(StorageError, match="primary key"):
        db.upsert("workflows", wf("w2"), key=("name",))


def test_update_and_delete_return_counts_and_refuse_an_empty_where(db: Storage) -> None:
    for i in range(4):
        db.insert("workflows", wf(f"w{i}", name="even" if i % 2 == 0 else "odd"))
    assert db.update("workflows", {"name": "even"}, {"version": "2"}) == 2
    assert db.update("workflows", {"id": "missing"}, {"version": "2"}) == 0
    assert db.count("workflows", {"version": "2"}) == 2
    with pytest.raises(StorageError, match="non-empty where"):
        db.update("workflows", {}, {"version": "3"})
    with pytest.raises(StorageError, match="non-empty where"):
        db.delete("workflows", {})
    with pytest.raises(StorageError, match=r"workflows\.name is required"):
        db.update("workflows", {"id": "w1"}, {"name": None})
    assert db.delete("workflows", {"name": "odd"}) == 2
    assert db.count("workflows") == 2


def test_get_needs_exactly_the_primary_key(db: Storage) -> None:
    with pytest.raises(StorageError, match="primary key"):
        db.get("workflows", {"name": "x"})


def test_where_conditions(db: Storage) -> None:
    db.insert("schedule_state", job("a", 1.0, 10.0))
    db.insert("schedule_state", job("b", 2.0, None))
    db.insert("schedule_state", job("c", None, 30.0))
    db.insert("schedule_state", job("d", 4.0, 40.0))

    def ids(where: dict[str, Any]) -> list[str]:
        return [r["job_id"] for r in db.select("schedule_state", where, order_by=("job_id",))]

    assert ids({"job_id": "b"}) == ["b"]
    assert ids({"job_id": ["a", "d", "zz"]}) == ["a", "d"]
    assert ids({"job_id": ()}) == []
    assert ids({"last_run_at": Gt(1)}) == ["b", "d"]
    assert ids({"last_run_at": Ge(2)}) == ["b", "d"]
    assert ids({"last_run_at": Lt(2)}) == ["a"]
    assert ids({"last_run_at": Le(2)}) == ["a", "b"]
    assert ids({"last_run_at": Ne(2.0)}) == ["a", "d"]  # NULL never matches, as in SQL
    assert ids({"next_run_at": IsNull()}) == ["b"]
    assert ids({"next_run_at": None}) == ["b"]
    assert ids({"next_run_at": NotNull()}) == ["a", "c", "d"]
    assert ids({"last_run_at": Gt(0), "next_run_at": Lt(35)}) == ["a"]
    assert db.count("schedule_state", {"last_run_at": IsNull()}) == 1
    with pytest.raises(StorageError, match="use IsNull"):
        db.select("schedule_state", {"last_run_at": Gt(None)})


def test_order_by_limit_and_nulls_first(db: Storage) -> None:
    db.insert("schedule_state", job("a", 2.0, 1.0))
    db.insert("schedule_state", job("b", None, 1.0))
    db.insert("schedule_state", job("c", 1.0, 2.0))
    db.insert("schedule_state", job("d", 2.0, 2.0))

    def ids(order: tuple[str, ...], limit: int | None = None) -> list[str]:
        return [r["job_id"] for r in db.select("schedule_state", order_by=order, limit=limit)]

    assert ids(("last_run_at", "job_id")) == ["b", "c", "a", "d"]
    assert ids(("-last_run_at", "-job_id")) == ["d", "a", "c", "b"]
    assert ids(("-next_run_at", "job_id")) == ["c", "d", "a", "b"]
    assert ids(("job_id",), limit=2) == ["a", "b"]
    assert ids(("job_id",), limit=0) == []
    with pytest.raises(StorageError, match="limit"):
        db.select("schedule_state", limit=-1)


def test_atomic_commits_and_rolls_back(db: Storage) -> None:
    with db.atomic():
        db.insert("workflows", wf("w1"))
        db.insert("workflows", wf("w2"))
    assert db.count("workflows") == 2
    with pytest.raises(RuntimeError), db.atomic():
        db.insert("workflows", wf("w3"))
        db.update("workflows", {"id": "w1"}, {"name": "changed"})
        db.delete("workflows", {"id": "w2"})
        raise RuntimeError("boom")
    assert sorted(r["id"] for r in db.select("workflows")) == ["w1", "w2"]
    assert db.get("workflows", {"id": "w1"})["name"] == "n"  # type: ignore[index]


def test_nested_atomic_rolls_back_only_the_inner_block(db: Storage) -> None:
    with db.atomic():
        db.insert("workflows", wf("outer"))
        with pytest.raises(ValueError), db.atomic():
            db.insert("workflows", wf("inner"))
            raise ValueError
        with db.atomic():
            db.insert("workflows", wf("inner2"))
    assert sorted(r["id"] for r in db.select("workflows")) == ["inner2", "outer"]
    with pytest.raises(ValueError), db.atomic():
        with db.atomic():
            db.insert("workflows", wf("kept-by-inner"))
        raise ValueError
    assert db.count("workflows") == 2


def test_a_failed_statement_inside_atomic_can_be_handled(db: Storage) -> None:
    with db.atomic():
        db.insert("workflows", wf("w1"))
        with pytest.raises(StorageError):
            db.insert("workflows", wf("w1"))
        db.insert("workflows", wf("w2"))
    assert db.count("workflows") == 2


def test_closed_store_refuses_work(db: Storage) -> None:
    db.close()
    with pytest.raises(StorageError, match="closed"):
        db.select("workflows")


def test_size_bytes(db: Storage) -> None:
    if isinstance(db, MemoryStore):
        assert db.size_bytes() == 0
    else:
        before = db.size_bytes()
        assert before > 0
        for i in range(200):
            db.insert("workflows", wf(f"w{i}", definition="x" * 500))
        assert db.size_bytes() > before + 200 * 500


# The two backends agree on arbitrary data and queries.

_values = st.one_of(st.none(), st.integers(-2, 2).map(float))
_rows = st.lists(
    st.tuples(st.sampled_from("abcdefgh"), _values, _values), max_size=8, unique_by=lambda r: r[0]
)
_conds = st.one_of(
    _values,
    st.lists(st.integers(-2, 2).map(float), max_size=3),
    st.builds(Gt, st.integers(-2, 2)),
    st.builds(Lt, st.integers(-2, 2)),
    st.builds(Ge, st.integers(-2, 2)),
    st.builds(Le, st.integers(-2, 2)),
    st.builds(Ne, st.integers(-2, 2)),
    st.just(IsNull()),
    st.just(NotNull()),
)
_where = st.dictionaries(st.sampled_from(["last_run_at", "next_run_at"]), _conds, max_size=2)
_order = st.lists(
    st.sampled_from(["last_run_at", "-last_run_at", "next_run_at", "-next_run_at"]),
    max_size=2,
    unique=True,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=_rows, where=_where, order=_order, changes=_where, limit=st.none() | st.integers(0, 5))
def test_backends_agree(
    rows: list[tuple[str, Any, Any]],
    where: dict[str, Any],
    order: list[str],
    changes: dict[str, Any],
    limit: int | None,
) -> None:
    results = []
    for backend in (SqliteStore(":memory:", synchronous="OFF"), MemoryStore()):
        for r in rows:
            backend.insert("schedule_state", job(*r))
        upd = {k: v for k, v in changes.items() if isinstance(v, float | type(None))}
        n_upd = backend.update("schedule_state", {"job_id": ["a", "b", "c"]}, upd)
        selected = backend.select("schedule_state", where, (*order, "job_id"), limit)
        results.append((n_upd, backend.count("schedule_state", where), selected))
        backend.close()
    assert results[0] == results[1]
