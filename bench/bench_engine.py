"""Durable no-op steps per second through the workflow engine, against raw baselines.

Run ``python bench/bench_engine.py`` for the rows, ``--profile [memory|sqlite]`` for a cProfile
of the engine. The workload: runs of a five-step chain of the builtin ``noop`` agent, queued
up front, driven by ``Engine.poll`` with ``InlineDispatcher`` and ``max_concurrent_workflows``
runs at a time; only the poll loop is timed (submitting the runs is setup).

The storage backend is wrapped in ``RecordingStorage``, which logs every write the engine
makes, grouped by transaction. The baselines then replay exactly that log, in the same run:

- SQLite: a raw ``sqlite3`` connection on a copy of the engine's database as it was before
  the timed loop, with the same PRAGMAs (WAL, ``synchronous=FULL``, foreign keys), executes
  the same INSERTs and UPDATEs with the same values in the same transactions (same number of
  commits, same rows). SQL text and parameters are prepared before the clock starts, so the
  baseline is the cost of SQLite and the fsyncs alone. A second, unbatched replay commits
  each row write on its own: what a store that does not batch across runs would pay.
- memory: plain Python applying the same row writes to dicts of dicts, with ``json.dumps`` of
  the JSON columns (what ``MemoryStore`` plus the repositories must at least do).

The recorder costs one extra Python call per storage call; it is inside the engine's timing,
so it counts against edge_min, never against the baseline.
"""

from __future__ import annotations

import cProfile
import io
import json
import pstats
import sqlite3
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Row, best, per_second, row, scratch_dir, timed

from edge_min.agents.registry import AgentRegistry
from edge_min.clock import SystemClock
from edge_min.store import MemoryStore, Storage, Store, open_sqlite
from edge_min.store.base import Where
from edge_min.store.tables import TABLES
from edge_min.sync.tracker import ChangeTracker
from edge_min.workflows.engine import Engine, InlineDispatcher, Limits

STEPS_PER_RUN = 5
WORKFLOW = "name: bench-chain\nversion: 1.0.0\nsteps:\n" + "".join(
    f"  - id: s{i}\n    agent: noop\n" + (f"    needs: [s{i - 1}]\n" if i > 1 else "")
    for i in range(1, STEPS_PER_RUN + 1)
)
SQLITE_GOAL = 0.5  # engine at least half the raw rate
MEMORY_GOAL = 20_000.0  # steps per second on MemoryStore with InlineDispatcher

# A write as logged: ("insert", table, row) or ("update", table, key, changes).
Op = tuple[Any, ...]


class RecordingStorage(Storage):
    """A pass-through ``Storage`` that logs the writes made while ``recording`` is set."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.recording = False
        self.transactions: list[list[Op]] = []
        self.reads = 0
        self._open: list[Op] | None = None
        self._depth = 0

    def _log(self, op: Op) -> None:
        if not self.recording:
            return
        if self._open is not None:
            self._open.append(op)
        else:
            self.transactions.append([op])  # a write outside atomic() commits on its own

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """The inner transaction; its writes are logged as one group when it commits."""
        outer = self._depth == 0
        if outer:
            self._open = []
        self._depth += 1
        try:
            with self.inner.atomic():
                yield
        except BaseException:
            if outer:
                self._open = None
            raise
        finally:
            self._depth -= 1
        if outer:
            ops, self._open = self._open or [], None
            if self.recording and ops:
                self.transactions.append(ops)

    def insert(self, table: str, row: Mapping[str, Any]) -> None:
        """Insert through the inner store and log it."""
        self.inner.insert(table, row)
        self._log(("insert", table, dict(row)))

    def insert_many(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Batch insert through the inner store; logged row by row, as the raw loop replays it."""
        self.inner.insert_many(table, rows)
        for one in rows:
            self._log(("insert", table, dict(one)))

    def update_many(self, table: str, key_column: str, rows: Sequence[Mapping[str, Any]]) -> int:
        """Batch update through the inner store; logged row by row."""
        n = self.inner.update_many(table, key_column, rows)
        for one in rows:
            changes = {k: v for k, v in one.items() if k != key_column}
            self._log(("update", table, {key_column: one[key_column]}, changes))
        return n

    def upsert(self, table: str, row: Mapping[str, Any], key: Sequence[str] = ("id",)) -> None:
        """Upsert through the inner store and log it."""
        self.inner.upsert(table, row, key)
        self._log(("upsert", table, dict(row), tuple(key)))

    def update(self, table: str, key: Where, changes: Mapping[str, Any]) -> int:
        """Update through the inner store and log it."""
        n = self.inner.update(table, key, changes)
        self._log(("update", table, dict(key), dict(changes)))
        return n

    def delete(self, table: str, key: Where) -> int:
        """Delete through the inner store and log it."""
        n = self.inner.delete(table, key)
        self._log(("delete", table, dict(key)))
        return n

    def get(self, table: str, key: Mapping[str, Any]) -> dict[str, Any] | None:
        """Read through (counted, not logged)."""
        self.reads += 1
        return self.inner.get(table, key)

    def select(
        self,
        table: str,
        where: Where | None = None,
        order_by: Sequence[str] = (),
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Read through (counted, not logged)."""
        self.reads += 1
        return self.inner.select(table, where, order_by, limit)

    def count(self, table: str, where: Where | None = None) -> int:
        """Read through (counted, not logged)."""
        self.reads += 1
        return self.inner.count(table, where)

    def size_bytes(self) -> int:
        """The inner store's size."""
        return self.inner.size_bytes()

    def close(self) -> None:
        """Close the inner store."""
        self.inner.close()

    def row_writes(self) -> int:
        """How many row writes were logged."""
        return sum(len(tx) for tx in self.transactions)


# -- the engine side --------------------------------------------------------------------------


def prepare(store: Store, work_root: Path, runs: int, concurrency: int) -> Engine:
    """An engine with the chain workflow stored, the noop agent registered and ``runs`` queued."""
    agents = AgentRegistry(store, work_root=work_root)
    engine = Engine(
        store,
        agents,
        dispatcher=InlineDispatcher(),
        clock=store.clock,
        limits=Limits(max_concurrent_workflows=concurrency),
    )
    engine.add_workflow(WORKFLOW, origin="bench")
    agents.agent_id("noop")  # its row exists before the clock starts
    with store.atomic():  # one commit for the setup, not one fsync per queued run
        for i in range(runs):
            engine.submit("bench-chain", {"n": i})
    return engine


def drive(engine: Engine, runs: int) -> int:
    """Poll until every run has finished; how many polls that took."""
    limit = runs * (STEPS_PER_RUN + 2) + 10  # far more than a healthy engine needs
    polls = 0
    while engine.poll() or engine.busy():
        polls += 1
        if polls > limit:
            raise RuntimeError(f"engine still busy after {polls} polls; the benchmark is wrong")
    return polls + 1


def check_finished(store: Store, runs: int) -> None:
    """Refuse to report a rate for runs that did not all succeed."""
    done = store.backend.count("workflow_executions", {"status": "succeeded"})
    steps = store.backend.count("agent_executions", {"status": "succeeded"})
    if done != runs or steps != runs * STEPS_PER_RUN:
        raise RuntimeError(
            f"only {done}/{runs} runs and {steps}/{runs * STEPS_PER_RUN} steps succeeded"
        )


# -- the SQLite baseline ----------------------------------------------------------------------


def _sql(op: Op) -> tuple[str, list[Any]]:
    kind, table = op[0], op[1]
    if kind == "insert":
        cols = list(op[2])
        names = ", ".join(f'"{c}"' for c in cols)
        marks = ", ".join("?" * len(cols))
        return f'INSERT INTO "{table}" ({names}) VALUES ({marks})', [op[2][c] for c in cols]
    if kind == "update":
        key, changes = op[2], op[3]
        sets = ", ".join(f'"{c}" = ?' for c in changes)
        where = " AND ".join(f'"{c}" = ?' for c in key)
        return f'UPDATE "{table}" SET {sets} WHERE {where}', [*changes.values(), *key.values()]
    raise ValueError(f"the engine made a {kind} the raw replay does not model")


def raw_sqlite_replay(
    path: Path, transactions: list[list[Op]], synchronous: str, steps: int
) -> float:
    """Seconds a bare sqlite3 connection takes to commit the same writes in the same groups."""
    plan = [[_sql(op) for op in tx] for tx in transactions]
    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
        ex = conn.execute

        def replay() -> None:
            for tx in plan:
                ex("BEGIN IMMEDIATE")
                for sql, params in tx:
                    ex(sql, params)
                ex("COMMIT")

        seconds = timed(replay)
        sql = "SELECT COUNT(*) FROM agent_executions WHERE status = 'succeeded'"
        done = ex(sql).fetchone()[0]
        if done != steps:
            raise RuntimeError(f"raw replay finished {done} of {steps} steps; the bench is wrong")
        return seconds
    finally:
        conn.close()


def sqlite_once(runs: int, concurrency: int, unbatched: bool) -> dict[str, float]:
    """One measurement on fresh files: engine, raw batched and (optionally) unbatched seconds."""
    with scratch_dir() as tmp:
        d = Path(tmp)
        backend = open_sqlite(d / "engine.db", "FULL")
        rec = RecordingStorage(backend)
        store = Store(rec, SystemClock(), ChangeTracker)
        engine = prepare(store, d / "work", runs, concurrency)
        backend.backup_to(d / "raw.db")  # type: ignore[attr-defined]
        if unbatched:
            backend.backup_to(d / "raw-unbatched.db")  # type: ignore[attr-defined]
        rec.recording = True
        engine_s = timed(lambda: drive(engine, runs))
        rec.recording = False
        check_finished(store, runs)
        txs = rec.transactions
        store.close()
        steps = runs * STEPS_PER_RUN
        raw_s = raw_sqlite_replay(d / "raw.db", txs, "FULL", steps)
        unbatched_s = float("nan")
        if unbatched:  # thousands of fsyncs: measured once, it only shows the order of magnitude
            single = [[op] for tx in txs for op in tx]
            unbatched_s = raw_sqlite_replay(d / "raw-unbatched.db", single, "FULL", steps)
        return {
            "engine": engine_s,
            "raw": raw_s,
            "unbatched": unbatched_s,
            "commits": len(txs),
            "writes": rec.row_writes(),
        }


def sqlite_rows(
    runs: int = 400, concurrencies: Sequence[int] = (8, 32), repeats: int = 5
) -> list[Row]:
    """Engine on a SQLite file (FULL) against raw sqlite3 making the same commits."""
    out: list[Row] = []
    steps = runs * STEPS_PER_RUN
    for concurrency in concurrencies:
        first = concurrency == concurrencies[0]
        results = [sqlite_once(runs, concurrency, first and i == 0) for i in range(repeats)]
        eng, raw = (best([r[k] for r in results]) for k in ("engine", "raw"))
        unb = results[0]["unbatched"]
        commits, writes = int(results[0]["commits"]), int(results[0]["writes"])
        ratio = raw / eng
        out.append(
            row(
                f"engine, SQLite FULL: no-op steps/s vs raw sqlite3 making the same commits "
                f"({steps:,} steps of 5-step chains, {concurrency} concurrent runs, "
                f"{commits} commits, {writes:,} row writes)",
                per_second(steps, eng),
                per_second(steps, raw),
                ratio,
                f"≥ {SQLITE_GOAL:.0%} of raw",
                ratio >= SQLITE_GOAL,
            )
        )
        if first:
            out.append(
                row(
                    f"engine, SQLite FULL: the same engine run vs raw sqlite3 committing each "
                    f"of its {writes:,} row writes alone (what batching saves)",
                    per_second(steps, eng),
                    per_second(steps, unb),
                    unb / eng,
                )
            )
    return out


# -- the in-memory baseline -------------------------------------------------------------------


def _json_columns(store: Store) -> dict[str, tuple[str, ...]]:
    repos = (*store.synced_repos(), store.sync_log)
    return {r.table: r.json_columns for r in repos}


def plain_python_replay(
    tables: dict[str, dict[Any, dict[str, Any]]],
    transactions: list[list[Op]],
    json_columns: dict[str, tuple[str, ...]],
) -> float:
    """Seconds plain dicts take to apply the same row writes, JSON columns encoded."""
    plan: list[tuple[str, dict[Any, dict[str, Any]], Any, dict[str, Any], tuple[str, ...]]] = []
    for tx in transactions:
        for op in tx:
            kind, table = op[0], op[1]
            values = dict(op[2] if kind == "insert" else op[3])
            cols = tuple(c for c in json_columns.get(table, ()) if values.get(c) is not None)
            for c in cols:  # the baseline gets Python values and must encode them itself
                values[c] = json.loads(values[c])
            pk = TABLES[table].primary_key
            source = values if kind == "insert" else op[2]
            key = tuple(source[c] for c in pk)
            plan.append((kind, tables.setdefault(table, {}), key, values, cols))
    dumps = json.dumps

    def replay() -> None:
        for kind, rows, key, values, cols in plan:
            new = dict(values)
            for c in cols:
                new[c] = dumps(new[c], ensure_ascii=False, separators=(",", ":"))
            if kind == "insert":
                rows[key] = new
            else:
                rows.setdefault(key, {}).update(new)

    return timed(replay)


def memory_once(runs: int, concurrency: int) -> dict[str, float]:
    """One measurement: engine on MemoryStore and the plain-Python replay, in seconds."""
    with scratch_dir() as tmp:
        rec = RecordingStorage(MemoryStore())
        store = Store(rec, SystemClock(), ChangeTracker)
        engine = prepare(store, Path(tmp) / "work", runs, concurrency)
        before = {
            t: {(r["id"],): r for r in rec.inner.select(t)}
            for t in ("workflows", "agents", "workflow_executions", "agent_executions")
        }
        rec.recording = True
        engine_s = timed(lambda: drive(engine, runs))
        rec.recording = False
        check_finished(store, runs)
        plain_s = plain_python_replay(before, rec.transactions, _json_columns(store))
        return {"engine": engine_s, "plain": plain_s, "commits": len(rec.transactions)}


def memory_rows(sizes: Sequence[int] = (100, 400), concurrency: int = 8) -> list[Row]:
    """Engine on MemoryStore with InlineDispatcher against plain Python doing the same writes."""
    out: list[Row] = []
    for runs in sizes:
        # Up to three repeats, fewer while a repeat is slow, to keep `make bench` short.
        results = [memory_once(runs, concurrency)]
        while len(results) < 3 and sum(r["engine"] for r in results) < 3.0:
            results.append(memory_once(runs, concurrency))
        steps = runs * STEPS_PER_RUN
        eng = best([r["engine"] for r in results])
        plain = best([r["plain"] for r in results])
        rate = steps / eng
        out.append(
            row(
                f"engine, MemoryStore + InlineDispatcher: no-op steps/s vs plain dicts + "
                f"json.dumps ({steps:,} steps, {concurrency} concurrent runs)",
                per_second(steps, eng),
                per_second(steps, plain),
                plain / eng,
                f"≥ {MEMORY_GOAL:,.0f} /s",
                rate >= MEMORY_GOAL,
            )
        )
    return out


def run() -> list[Row]:
    """Every engine row."""
    return [*sqlite_rows(), *memory_rows()]


# -- profiling --------------------------------------------------------------------------------


def profile(backend: str = "memory", runs: int = 200, concurrency: int = 8, top: int = 20) -> str:
    """cProfile of the poll loop on ``backend`` ("memory" or "sqlite"): the top functions."""
    with scratch_dir() as tmp:
        d = Path(tmp)
        inner: Storage = MemoryStore() if backend == "memory" else open_sqlite(d / "p.db", "FULL")
        store = Store(inner, SystemClock(), ChangeTracker)
        engine = prepare(store, d / "work", runs, concurrency)
        prof = cProfile.Profile()
        prof.enable()
        drive(engine, runs)
        prof.disable()
        check_finished(store, runs)
        store.close()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats("edge_min", top)
    return out.getvalue()


def main(argv: Sequence[str] | None = None) -> int:
    """Print the engine rows, or a profile with ``--profile [memory|sqlite]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "--profile":
        print(profile(args[1] if len(args) > 1 else "memory"))
        return 0
    for r in run():
        print(r)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
