"""Cost per scheduler timer operation (add + pop) against raw heapq, as a markdown table.

Run it as ``python bench/bench_scheduler.py``; a bench driver imports it and calls ``run()``.
One "operation" is one timer added with ``add_once`` and later popped by ``tick`` at its
deadline, with N timers pending; the baseline is one ``heapq.heappush`` plus one
``heapq.heappop`` of a tuple in a heap of N, measured in the same process and run.
The goal is at most 20 µs per operation, growing like log N.
"""

from __future__ import annotations

import gc
import heapq
import os
import platform
import random
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    # Running as a script from a checkout: make the package importable without installing.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_min.clock import VirtualClock
from edge_min.scheduler import Scheduler

SIZES = (1_000, 10_000, 100_000)
GOAL_US = 20.0


def _noop() -> None:
    return None


def _bench_scheduler(n: int, seed: int) -> float:
    """Seconds for n add_once + n pops (one tick per deadline, in deadline order)."""
    rng = random.Random(seed)
    delays = [rng.uniform(1.0, 1_000_000.0) for _ in range(n)]
    names = [f"t{i}" for i in range(n)]
    scheduler = Scheduler(VirtualClock())
    add = scheduler.add_once
    tick = scheduler.tick
    next_deadline = scheduler.next_deadline
    popped = 0
    began = time.perf_counter()
    for name, delay in zip(names, delays, strict=True):
        add(name, _noop, after=delay, now=0.0)
    while True:
        deadline = next_deadline()
        if deadline is None:
            break
        popped += len(tick(deadline))
    elapsed = time.perf_counter() - began
    if popped != n:
        raise AssertionError(f"popped {popped} of {n} timers")
    return elapsed


def _bench_heapq(n: int, seed: int) -> float:
    """Seconds for n heappush + n heappop of (deadline, priority, seq, payload) tuples."""
    rng = random.Random(seed)
    delays = [rng.uniform(1.0, 1_000_000.0) for _ in range(n)]
    heap: list[tuple[float, int, int, object]] = []
    push, pop = heapq.heappush, heapq.heappop
    payload = object()
    began = time.perf_counter()
    for seq, delay in enumerate(delays):
        push(heap, (delay, 0, seq, payload))
    while heap:
        pop(heap)
    return time.perf_counter() - began


def _best(fn: object, n: int, repeats: int) -> float:
    times = []
    for i in range(repeats):
        gc.collect()
        times.append(fn(n, i))  # type: ignore[operator]
    return min(times)


def machine() -> dict[str, object]:
    """What the numbers were measured on."""
    return {
        "machine": platform.machine(),
        "processors": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
    }


def run(sizes: tuple[int, ...] = SIZES, repeats: int = 3) -> list[dict[str, object]]:
    """One row per size: µs per add+pop for the scheduler and heapq, and their ratio."""
    rows: list[dict[str, object]] = []
    host = machine()
    for n in sizes:
        reps = repeats if n <= 10_000 else max(1, repeats - 1)
        sched_us = _best(_bench_scheduler, n, reps) / n * 1e6
        heap_us = _best(_bench_heapq, n, reps) / n * 1e6
        rows.append(
            {
                "bench": "scheduler.timer_add_pop",
                "timers": n,
                "scheduler_us": round(sched_us, 3),
                "heapq_us": round(heap_us, 3),
                "ratio": round(sched_us / heap_us, 2),
                "goal_us": GOAL_US,
                "within_goal": sched_us <= GOAL_US,
                **host,
            }
        )
    return rows


def markdown(rows: list[dict[str, object]]) -> str:
    """The rows as a markdown table with the machine underneath."""
    lines = [
        "| timers | scheduler add+pop (µs) | heapq push+pop (µs) | ratio | ≤ 20 µs |",
        "|---:|---:|---:|---:|:---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['timers']:,} | {r['scheduler_us']:.2f} | {r['heapq_us']:.2f} "
            f"| {r['ratio']:.1f}x | {'yes' if r['within_goal'] else 'NO'} |"
        )
    if rows:
        r = rows[0]
        lines.append("")
        lines.append(
            f"machine: {r['machine']}, {r['processors']} processors, "
            f"{r['implementation']} {r['python']}"
        )
    return "\n".join(lines)


def main() -> int:
    """Print the table; exit 1 if any size misses the goal."""
    rows = run()
    print(markdown(rows))
    return 0 if all(r["within_goal"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
