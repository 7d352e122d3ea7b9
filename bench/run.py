"""``make bench``: every benchmark area, one markdown table, also written to docs/benchmarks.md.

Run ``python bench/run.py`` (``--no-write`` to leave the docs alone, ``--profile`` to also
print a cProfile of the engine on memory storage). Benchmarks are measurements, not tests:
a missed goal is printed as ``no`` and the exit status stays 0; only an area that crashed
makes it 1 (its row then says why).
"""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_api
import bench_encryption
import bench_engine
import bench_monitor
import bench_onnx
import bench_protocol
import bench_scheduler
import bench_store
import bench_sync
import bench_update
from common import Row, machine, micros, preserved_sections, row, table

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"

METHOD = """\
Each row times edge_min and a baseline **in the same process and run**, on the same machine,
so the ratio (edge_min's speed ÷ the baseline's speed: 1.0 = as fast, 0.25 = four times
slower) means more than either number alone. Timings are the best of repeated runs on fresh
database files in the system temp directory (`EDGE_BENCH_DIR` moves them, e.g. onto an SD
card), with the garbage collector paused while the clock runs.

- **engine, SQLite**: runs of a five-step chain of the builtin `noop` agent, queued up front,
  driven by `Engine.poll` with `InlineDispatcher` and N runs at a time, on a file with
  `synchronous=FULL`; only the poll loop is timed. A recording wrapper around the storage
  backend logs every write the engine makes, grouped by transaction; the baseline is a bare
  `sqlite3` connection (same PRAGMAs) replaying exactly those INSERTs and UPDATEs, with the
  same values, in the same transactions, on a copy of the database as it was before the
  loop. SQL and parameters are prepared before its clock starts, so it is SQLite and the
  fsyncs alone. A second replay commits every row write on its own, which shows what
  batching the commits of concurrent runs saves. The engine's reads (admitting queued runs)
  are not replayed: they are part of its cost. The more runs share a commit, the less the
  fsync hides the engine's per-row Python cost, so this ratio falls as concurrency rises.
- **encryption at rest**: `bench/bench_encryption.py` (`make bench-encryption`): the engine
  workload above on SQLite FULL with the payload columns sealed (AES-256-GCM through the key
  ring, `secure_delete` on) against the same store without the cipher, in alternating rounds
  of the same run; the same on `MemoryStore`, where no fsync hides the cipher's CPU; and
  the cost of sealing and opening one value.
- **engine, memory**: the same workload on `MemoryStore`; the baseline applies the same row
  writes to plain dicts and `json.dumps` the JSON columns.
- **store**: `store.executions.add(row)` + `.set(id, ...)` against the SQL the SQLite backend
  issues for them, run by a bare connection with the parameters ready.
- **scheduler**: `bench/bench_scheduler.py`: one timer added with `add_once` and popped by
  `tick` at its deadline, with N timers pending, against `heapq.heappush` + `heappop`.
- **protocol**: `bench/bench_protocol.py`: `encode_frame`/`decode_frame` of 1,000
  `agent_executions`-like rows (no compression, the best available one, and with AES-GCM)
  against `json.dumps`/`json.loads` of the same rows; bytes on the wire against the JSON.
- **monitor**: `bench/bench_monitor.py`: the monitor's own CPU time over simulated hours of
  the spec's `edge-monitoring.yaml` on a virtual clock (real /proc reads, real SQLite, real
  health-check processes, whose CPU is shown apart); no baseline, a goal.
- **sync**: `bench/bench_sync.py`, records per second pushed and pulled end to end over
  loopback against a real central (TLS and payload encryption on and off), bytes on the wire
  per record against uncompressed JSON of the same records, bytes sent again per cut.
- **api**: `bench/bench_api.py`, p50/p99 latency and requests/s of 200 concurrent keep-alive
  clients against a real runtime with the token authorizer while workflows run, beside a
  bare `ThreadingHTTPServer` answering fixed JSON to the same clients.
- **onnx**: `bench/bench_onnx.py`, on `text-classifier-lite` as `make models` builds it and
  its agent config (2 intra-op threads). The baseline is `InferenceSession.run` on the same
  session, one sentence at batch 1, with the feed array and output-name list built before
  the clock starts. The in-process row is the worker's handler (`OnnxSession`: text in,
  `{"label", "scores"}` out); the worker rows are `OnnxExecutor.invoke` through the warm,
  isolated worker process. Variants run in interleaved rounds; latency is the median call,
  throughput the median round. What the in-process overhead is made of: a fresh input array
  per call and onnxruntime converting it, reading the scores back as Python floats,
  `round(p, 6)` on each score (the output contract; ~2 µs of it), the label and the dict.
  On a model this small (~18 µs) that is far more than 10%; it is fixed per call, so it
  shrinks in proportion as models grow.
"""


def scheduler_rows() -> list[Row]:
    """bench_scheduler's rows in the shared shape (its ratio is turned into a speed ratio)."""
    out: list[Row] = []
    for r in bench_scheduler.run():
        sched_us, heap_us, goal_us = (
            cast(float, r[k]) for k in ("scheduler_us", "heapq_us", "goal_us")
        )
        out.append(
            row(
                f"scheduler: µs per timer add+pop with {cast(int, r['timers']):,} timers "
                "vs heapq push+pop",
                micros(sched_us / 1e6),
                micros(heap_us / 1e6),
                heap_us / sched_us,
                f"≤ {goal_us:g} µs",
                bool(r["within_goal"]),
            )
        )
    return out


AREAS: tuple[tuple[str, Callable[[], list[Row]]], ...] = (
    ("engine", bench_engine.run),
    ("encryption", bench_encryption.run),
    ("store", bench_store.run),
    ("scheduler", scheduler_rows),
    ("protocol", bench_protocol.run),
    ("monitor", bench_monitor.run),
    ("onnx", bench_onnx.run),
    ("sync", bench_sync.run),
    ("api", bench_api.run),
    ("update", bench_update.run),
)


def collect() -> tuple[list[Row], bool]:
    """Rows from every area, and whether every area ran to the end."""
    rows: list[Row] = []
    ok = True
    for name, fn in AREAS:
        began = time.perf_counter()
        try:
            rows.extend(fn())
        except Exception as exc:
            ok = False
            traceback.print_exc(file=sys.stderr)
            rows.append(row(f"{name}: FAILED ({type(exc).__name__}: {exc})", "—", "—", None))
        print(f"[{name}: {time.perf_counter() - began:.1f}s]", file=sys.stderr)
    return rows, ok


def header(m: dict[str, str], load_after: str) -> str:
    """What the numbers were measured on and when, and how busy the machine was."""
    text = (
        f"Measured {m['date']} on {m['machine']} ({m['processor']}), {m['cpus']} CPUs, "
        f"{m['os']}, {m['python']}, SQLite {m['sqlite']}. Load average (1, 5, 15 min): "
        f"{m['load']} before, {load_after} after."
    )
    if busy(m["load"], m["cpus"]) or busy(load_after, m["cpus"]):
        text += (
            "\n\n**The machine was busy** (1-minute load above its CPU count): other "
            "processes' CPU and disk use make these numbers noisy, fsync-bound ones most. "
            "Rerun on an idle machine before drawing conclusions."
        )
    return text


def busy(load: str, cpus: str) -> bool:
    """Whether a ``load`` from ``machine()`` has its 1-minute average above ``cpus``."""
    try:
        return float(load.split(",")[0]) > float(cpus)
    except ValueError:
        return False


def report(rows: Sequence[Row], head: str) -> str:
    """The whole output: header, table, and a one-line count of goals met."""
    goals = [r for r in rows if r["met"] is not None]
    met = sum(1 for r in goals if r["met"])
    return (
        f"{head}\n\n{table(rows)}\n\n"
        f"{met} of {len(goals)} goals met. Ratio = edge_min's speed ÷ the baseline's speed.\n"
    )


def document(output: str) -> str:
    """docs/benchmarks.md: title, method, the latest output."""
    return (
        "# Benchmarks\n\n"
        "Written by `make bench` (`bench/run.py`); rerun it to refresh. The numbers are from\n"
        "one machine at one time: compare ratios, and rerun on the target hardware.\n\n"
        f"## Latest results\n\n{output}\n## Method\n\n{METHOD}" + preserved_sections(DOC)
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run every area, print the report, write docs/benchmarks.md."""
    args = set(sys.argv[1:] if argv is None else argv)
    began = time.perf_counter()
    host = machine()  # before the benchmarks add load of their own
    rows, ok = collect()
    output = report(rows, header(host, machine()["load"]))
    print(output)
    if "--no-write" not in args:
        DOC.parent.mkdir(parents=True, exist_ok=True)
        DOC.write_text(document(output), encoding="utf-8")
        print(f"wrote {DOC.relative_to(ROOT)}", file=sys.stderr)
    if "--profile" in args:
        print(bench_engine.profile("memory"))
    print(f"[total: {time.perf_counter() - began:.1f}s]", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
