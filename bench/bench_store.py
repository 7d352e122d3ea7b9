"""Repository insert + update of a row against raw sqlite3 running the same statements.

Run ``python bench/bench_store.py``. One operation is what the engine does to a run's row:
``store.executions.add(row)`` (INSERT of a ``workflow_executions`` row with a JSON input)
followed by ``store.executions.set(id, status=..., output=..., completed_at=...)`` (UPDATE with a
JSON output). The baseline is a bare ``sqlite3`` connection with the same PRAGMAs (WAL,
the same ``synchronous``, foreign keys on) executing the statements the SQLite backend issues
(an INSERT naming every column, an UPDATE of the changed columns plus ``sync_status``) with
the same values, JSON encoded and timestamps made before the clock starts. Both run on fresh
files in the same directory, in alternating order across repeats; the best repeat counts.

Three shapes: every statement its own transaction under ``synchronous=FULL`` (an fsync per
commit dominates) and under ``NORMAL`` (no fsync: the layer's own cost shows), and many rows in
one transaction (pure per-row overhead of validation, JSON and SQL building).
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Row, best, per_second, row, scratch_dir, timed

from edge_min.clock import SystemClock, iso
from edge_min.store import Store, open_store
from edge_min.store.tables import TABLES
from edge_min.sync.tracker import ChangeTracker

TABLE = "workflow_executions"
WORKFLOW_ID = "bench-workflow"
# (label, synchronous, rows, one transaction for all rows)
SHAPES: tuple[tuple[str, str, int, bool], ...] = (
    ("each statement its own commit", "FULL", 150, False),
    ("each statement its own commit", "NORMAL", 1_500, False),
    ("all rows in one transaction", "FULL", 1_500, True),
)


def _payloads(n: int) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(row to insert, changes to set) per operation: the shape the engine writes."""
    return [
        (
            {
                "id": f"run-{i:06d}",
                "workflow_id": WORKFLOW_ID,
                "status": "queued",
                "input": {"n": i, "text": "sensor reading within range", "tags": ["a", "b"]},
                "started_at": iso(1_700_000_000.0 + i),
            },
            {
                "status": "succeeded",
                "output": {"s5": {"n": i, "label": "ok", "score": 0.25}},
                "completed_at": iso(1_700_000_001.0 + i),
            },
        )
        for i in range(n)
    ]


def _new_store(path: Path, synchronous: str) -> Store:
    store = open_store(path, synchronous, clock=SystemClock(), changes=ChangeTracker)
    store.workflows.create(name="bench", definition={"steps": []}, version="1", id=WORKFLOW_ID)
    return store


def edge_once(path: Path, synchronous: str, n: int, batched: bool) -> float:
    """Seconds for n add + set through the repository on a fresh database."""
    store = _new_store(path, synchronous)
    work = _payloads(n)
    repo = store.executions

    def ops() -> None:
        for new, changes in work:
            repo.add(new)
            repo.set(new["id"], **changes)

    def batch() -> None:
        with store.atomic():
            ops()

    try:
        return timed(batch if batched else ops)
    finally:
        store.close()


def _raw_statements(n: int) -> list[tuple[str, list[Any], str, list[Any]]]:
    """The backend's INSERT and UPDATE for each operation, parameters ready."""
    columns = TABLES[TABLE].column_names
    names = ", ".join('"' + c + '"' for c in columns)
    insert = f'INSERT INTO "{TABLE}" ({names}) VALUES ({", ".join("?" * len(columns))})'
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    out = []
    for new, changes in _payloads(n):
        full: dict[str, Any] = dict.fromkeys(columns)
        full.update(new, input=dumps(new["input"]), sync_status="pending")
        upd = {**changes, "output": dumps(changes["output"]), "sync_status": "pending"}
        sets = ", ".join(f'"{c}" = ?' for c in upd)
        out.append(
            (
                insert,
                list(full.values()),
                f'UPDATE "{TABLE}" SET {sets} WHERE "id" = ?',
                [*upd.values(), new["id"]],
            )
        )
    return out


def raw_once(path: Path, synchronous: str, n: int, batched: bool) -> float:
    """Seconds for the same statements on a bare sqlite3 connection to a fresh database."""
    _new_store(path, synchronous).close()  # same schema and parent row, made by the real code
    plan = _raw_statements(n)
    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
        ex = conn.execute

        def ops() -> None:
            for ins, ins_params, upd, upd_params in plan:
                ex(ins, ins_params)
                ex(upd, upd_params)

        def batch() -> None:
            ex("BEGIN IMMEDIATE")
            ops()
            ex("COMMIT")

        seconds = timed(batch if batched else ops)
        done = ex(f'SELECT COUNT(*) FROM "{TABLE}" WHERE status = ?', ["succeeded"]).fetchone()[0]
        if done != n:
            raise RuntimeError(f"raw baseline wrote {done} of {n} rows; the benchmark is wrong")
        return seconds
    finally:
        conn.close()


def run(repeats: int = 5) -> list[Row]:
    """One row per shape: repository operations per second against raw sqlite3."""
    out: list[Row] = []
    for label, synchronous, n, batched in SHAPES:
        edge_s: list[float] = []
        raw_s: list[float] = []
        with scratch_dir() as tmp:
            d = Path(tmp)
            for i in range(repeats):
                pair = [
                    (edge_s, edge_once, d / f"edge-{i}.db"),
                    (raw_s, raw_once, d / f"raw-{i}.db"),
                ]
                for times, fn, path in pair if i % 2 == 0 else reversed(pair):
                    times.append(fn(path, synchronous, n, batched))
        edge, raw = best(edge_s), best(raw_s)
        out.append(
            row(
                f"store, SQLite {synchronous}: repo add+set of a row vs raw sqlite3 same "
                f"statements ({label}, {n:,} rows)",
                per_second(n, edge),
                per_second(n, raw),
                raw / edge,
            )
        )
    return out


def main() -> int:
    """Print the rows."""
    for r in run():
        print(r)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
