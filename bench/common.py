"""What the benchmark modules share: the row shape, timing helpers, the machine description.

Every area module (``bench_engine``, ``bench_store``) returns ``list[Row]``; ``run.py`` turns
the rows into one markdown table. ``ratio`` is always edge_min's speed divided by the
baseline's speed, measured in the same process and run: 1.0 means as fast as the baseline,
0.25 means four times slower, whatever unit (per second or µs per operation) the row shows.
"""

from __future__ import annotations

import datetime as dt
import gc
import os
import platform
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypedDict

if __package__ in (None, ""):
    # Run from a checkout without installing: make edge_min importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class Row(TypedDict):
    """One line of the results table; ``met`` is None where the row has no goal."""

    benchmark: str
    edge_min: str
    baseline: str
    ratio: float | None
    goal: str
    met: bool | None


def row(
    benchmark: str,
    edge_min: str,
    baseline: str,
    ratio: float | None,
    goal: str = "—",
    met: bool | None = None,
) -> Row:
    """A table row (keyword-friendly constructor)."""
    return Row(
        benchmark=benchmark, edge_min=edge_min, baseline=baseline, ratio=ratio, goal=goal, met=met
    )


def per_second(count: float, seconds: float) -> str:
    """``count / seconds`` as a rounded rate, e.g. ``12,340 /s``."""
    return f"{count / seconds:,.0f} /s" if seconds > 0 else "inf /s"


def micros(seconds: float) -> str:
    """Seconds as microseconds with two decimals, e.g. ``9.61 µs``."""
    return f"{seconds * 1e6:,.2f} µs"


def timed(fn: Callable[[], object]) -> float:
    """Seconds ``fn()`` took, with garbage collected before and the collector paused during."""
    gc.collect()
    gc.disable()
    try:
        began = time.perf_counter()
        fn()
        return time.perf_counter() - began
    finally:
        gc.enable()


def best(values: list[float]) -> float:
    """The fastest of repeated timings: what the code costs when nothing else gets in the way.

    Other processes and a slow fsync only ever add time, so the minimum is the least noisy
    estimate (the reasoning of ``timeit``); both sides of every ratio get the same treatment.
    """
    return min(values)


def scratch_dir() -> tempfile.TemporaryDirectory[str]:
    """A temporary directory for database files, on a real disk so fsync costs what it costs.

    ``EDGE_BENCH_DIR`` picks where (e.g. the SD card of a gateway); the default is the
    system temp directory.
    """
    return tempfile.TemporaryDirectory(prefix="edge-bench-", dir=os.environ.get("EDGE_BENCH_DIR"))


def machine() -> dict[str, str]:
    """What the numbers were measured on, for the header of the report."""
    return {
        "machine": platform.machine(),
        "processor": platform.processor() or _cpu_model() or "unknown",
        "cpus": str(os.cpu_count()),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "sqlite": sqlite3.sqlite_version,
        "os": platform.platform(terse=True),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load": _load(),
    }


def _load() -> str:
    # Other processes on the machine slow every timing down; say how busy it was.
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except (AttributeError, OSError):
        return "unknown"


def _cpu_model() -> str:
    # platform.processor() is empty on most Linux builds; /proc/cpuinfo names the model.
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    for line in text.splitlines():
        if line.lower().startswith(("model name", "hardware", "cpu model")):
            return line.split(":", 1)[1].strip()
    return ""


def _met(value: bool | None) -> str:
    return "—" if value is None else ("yes" if value else "**no**")


def table(rows: Sequence[Row]) -> str:
    """The rows as one markdown table."""
    lines = [
        "| benchmark | edge_min | baseline | ratio | goal | met? |",
        "|---|---:|---:|---:|---|:---:|",
    ]
    for r in rows:
        ratio = "—" if r["ratio"] is None else f"{r['ratio']:.2f}"
        cells = (r["benchmark"], r["edge_min"], r["baseline"], ratio, r["goal"], _met(r["met"]))
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


# Sections other benchmark commands own inside docs/benchmarks.md (e.g. `make bench-binary`),
# kept when `make bench` rewrites the rest: each sits between these two comment lines.
_START = "<!-- section:{} -->"
_END = "<!-- /section:{} -->"


def write_section(doc: Path, name: str, body: str) -> None:
    """Put ``body`` into ``doc`` as section ``name``, replacing the previous one if any."""
    text = doc.read_text(encoding="utf-8") if doc.exists() else "# Benchmarks\n"
    start, end = _START.format(name), _END.format(name)
    block = f"{start}\n{body.rstrip()}\n{end}\n"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        after = rest.split(end, 1)[1].lstrip("\n")
        text = before + block + after
    else:
        text = text.rstrip("\n") + "\n\n" + block
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text, encoding="utf-8")


def preserved_sections(doc: Path) -> str:
    """Every section of ``doc`` written by ``write_section``, to keep when rewriting it."""
    if not doc.exists():
        return ""
    text = doc.read_text(encoding="utf-8")
    out = []
    while "<!-- section:" in text:
        _, text = text.split("<!-- section:", 1)
        name = text.split(" -->", 1)[0]
        end = _END.format(name)
        if end not in text:
            break
        body, text = text.split(end, 1)
        out.append("<!-- section:" + body + end + "\n")
    return "".join("\n" + b for b in out)
