"""The onnxruntime agent: what edge_min adds on top of ``InferenceSession.run``, int8 vs fp32.

Run ``python bench/bench_onnx.py`` for the rows, ``--profile`` for a cProfile of the
in-process path. Everything uses the model ``make models`` builds
(``models/out/text-classifier-lite.onnx``, int8, and its ``-fp32`` twin) and its agent
config (``models/text-classifier-lite.yaml``: 2 intra-op threads, CPU, text in, three
classes out), in one process and one run:

- **raw**: ``session.run(None, feeds)`` on one sentence at batch 1, the feeds (a 1-element
  object array) built once before the clock starts: the least any caller can pay.
- **in-process**: the worker's handler, ``OnnxSession(init)(text, context)``, with the
  ``init`` the executor sends: text in, ``{"label", "scores"}`` out. The difference from
  raw is the wrapper's Python cost per call (input check, the array, scores, the dict).
- **worker**: ``OnnxExecutor.invoke`` on ``PosixPlatform``: the request framed to the warm,
  isolated worker process and the reply read back (two pipe hops and two context switches
  per call), reported on its own rows with its own ratio against raw.
- **int8 vs fp32**: raw ``session.run`` latency of each model, and file sizes.

Both sessions of a comparison are loaded side by side and timed in interleaved rounds (the
order alternating), so drift in machine load hits both; each call is timed on its own with
the collector paused, latency is the median call, throughput the median round's calls/s.
``ORT_DISABLE_TELEMETRY=1`` is set before onnxruntime is imported.
"""

from __future__ import annotations

import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import Row, micros, row

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "models" / "text-classifier-lite.yaml"
INT8 = ROOT / "models" / "out" / "text-classifier-lite.onnx"
FP32 = ROOT / "models" / "out" / "text-classifier-lite-fp32.onnx"
SENTENCE = "The update made the app much faster and the support team answered within an hour."
GOAL_OVERHEAD = 0.10  # in-process wrapper over raw session.run, at batch 1

ROUNDS = 20
CALLS = 1_000  # per round and variant, in process
WORKER_ROUNDS = 10
WORKER_CALLS = 300
WARMUP = 300


def _round(fn: Callable[[], object], calls: int) -> list[float]:
    """Seconds per call for ``calls`` calls, each timed on its own, the collector paused."""
    out = [0.0] * calls
    clock = time.perf_counter
    gc.collect()
    gc.disable()
    try:
        for i in range(calls):
            began = clock()
            fn()
            out[i] = clock() - began
    finally:
        gc.enable()
    return out


def compare(
    variants: dict[str, Callable[[], object]], rounds: int, calls: int
) -> dict[str, dict[str, float]]:
    """Interleaved rounds of every variant: median seconds per call and median calls/s."""
    names = list(variants)
    for fn in variants.values():
        for _ in range(WARMUP):
            fn()
    samples: dict[str, list[float]] = {n: [] for n in names}
    rates: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            times = _round(variants[name], calls)
            samples[name].extend(times)
            rates[name].append(calls / sum(times))
    return {
        n: {"median": statistics.median(samples[n]), "rate": statistics.median(rates[n])}
        for n in names
    }


def _agent() -> Any:
    from edge_min.config.agent import load_agent_config

    return load_agent_config(CONFIG)


def _init(agent: Any, model: Path) -> dict[str, Any]:
    # What OnnxExecutor sends its worker (edge_min.agents.onnx, OnnxExecutor._ensure).
    return {
        "model": str(model),
        "threads": agent.runtime.threads,
        "acceleration": agent.runtime.acceleration,
        "provider_fallback": agent.runtime.provider_fallback,
        "input_format": agent.input.format,
        "classes": list(agent.output.classes or ()),
    }


def _raw(session: Any) -> Callable[[], object]:
    import numpy as np

    feeds = {session.get_inputs()[0].name: np.array([SENTENCE], dtype=object)}
    names = [o.name for o in session.get_outputs()]  # as the wrapper asks: every output
    run = session.run
    return lambda: run(names, feeds)


def measure() -> dict[str, Any]:
    """Every number of the area (seconds per call, calls/s, bytes)."""
    os.environ["ORT_DISABLE_TELEMETRY"] = "1"
    from edge_min.agents.executors import InvocationContext
    from edge_min.agents.onnx import OnnxExecutor
    from edge_min.agents.onnx_session import OnnxSession
    from edge_min.platform.posix import PosixPlatform

    agent = _agent()
    wrapper = OnnxSession(_init(agent, INT8))
    wrapper_fp32 = OnnxSession(_init(agent, FP32))
    context: dict[str, Any] = {"idempotency_key": "bench", "agent": agent.name}
    raw = _raw(wrapper.session)  # the very session the wrapper runs: same model, options
    in_process = compare({"raw": raw, "wrapper": lambda: wrapper(SENTENCE, context)}, ROUNDS, CALLS)
    precision = compare({"int8": raw, "fp32": _raw(wrapper_fp32.session)}, ROUNDS, CALLS)
    with tempfile.TemporaryDirectory(prefix="edge-bench-onnx-") as tmp:
        executor = OnnxExecutor(agent, PosixPlatform(), tmp, model_path=str(INT8))
        call = InvocationContext(idempotency_key="bench:classify", timeout=30.0)
        try:
            executor.start()
            worker = compare(
                {"raw": raw, "worker": lambda: executor.invoke(SENTENCE, call)},
                WORKER_ROUNDS,
                WORKER_CALLS,
            )
            assert executor.last_meta.get("sessions_created") == 1, executor.last_meta
        finally:
            executor.close()
    assert wrapper(SENTENCE, context)["label"] in agent.output.classes
    return {
        "in_process": in_process,
        "precision": precision,
        "worker": worker,
        "threads": agent.runtime.threads,
        "size": {"int8": INT8.stat().st_size, "fp32": FP32.stat().st_size},
    }


def _rate(value: float) -> str:
    return f"{value:,.0f} calls/s"


def rows(m: dict[str, Any]) -> list[Row]:
    """The measurements as rows of the shared table."""
    ip, wk, pr, size = m["in_process"], m["worker"], m["precision"], m["size"]
    raw, wrap = ip["raw"]["median"], ip["wrapper"]["median"]
    overhead = wrap / raw - 1
    w_raw, w_call = wk["raw"]["median"], wk["worker"]["median"]
    where = f"text-classifier-lite int8, batch 1, {m['threads']} threads"
    return [
        row(
            f"onnx: in-process agent call (text → label+scores) vs raw InferenceSession.run, "
            f"median µs per call ({where})",
            f"{micros(wrap)} (+{overhead:.1%})",
            micros(raw),
            raw / wrap,
            f"≤ {GOAL_OVERHEAD:.0%} overhead",
            overhead <= GOAL_OVERHEAD,
        ),
        row(
            "onnx: in-process agent call vs raw InferenceSession.run, throughput",
            _rate(ip["wrapper"]["rate"]),
            _rate(ip["raw"]["rate"]),
            ip["wrapper"]["rate"] / ip["raw"]["rate"],
        ),
        row(
            "onnx: isolated worker round trip (OnnxExecutor.invoke) vs raw "
            "InferenceSession.run, median µs per call",
            f"{micros(w_call)} (+{w_call / w_raw - 1:.0%})",
            micros(w_raw),
            w_raw / w_call,
        ),
        row(
            "onnx: isolated worker round trip vs raw InferenceSession.run, throughput",
            _rate(wk["worker"]["rate"]),
            _rate(wk["raw"]["rate"]),
            wk["worker"]["rate"] / wk["raw"]["rate"],
        ),
        row(
            "onnx: int8 vs fp32 model, raw InferenceSession.run median µs per call",
            micros(pr["int8"]["median"]),
            micros(pr["fp32"]["median"]),
            pr["fp32"]["median"] / pr["int8"]["median"],
        ),
        row(
            "onnx: int8 vs fp32 model, file size",
            f"{size['int8'] / 1024:,.1f} KiB",
            f"{size['fp32'] / 1024:,.1f} KiB",
            None,
        ),
    ]


def run() -> list[Row]:
    """The area's rows; one explanatory row when the model or onnxruntime is missing."""
    missing = [p.relative_to(ROOT) for p in (INT8, FP32) if not p.exists()]
    if missing:
        text = ", ".join(str(p) for p in missing)
        return [row(f"onnx: skipped, {text} not built (run make models)", "—", "—", None)]
    try:
        import numpy  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        return [row(f"onnx: skipped, {exc.name} not installed (edge-min[onnx])", "—", "—", None)]
    return rows(measure())


def profile(calls: int = 20_000, top: int = 25) -> str:
    """A cProfile of the in-process path (``OnnxSession.__call__``), by own time."""
    import cProfile
    import io
    import pstats

    os.environ["ORT_DISABLE_TELEMETRY"] = "1"
    from edge_min.agents.onnx_session import OnnxSession

    agent = _agent()
    wrapper = OnnxSession(_init(agent, INT8))
    context: dict[str, Any] = {}
    for _ in range(WARMUP):
        wrapper(SENTENCE, context)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls):
        wrapper(SENTENCE, context)
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    """Print the rows, or the profile with ``--profile``."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--profile"]:
        print(profile())
        return 0
    for r in run():
        ratio = "—" if r["ratio"] is None else f"{r['ratio']:.2f}"
        print(f"{r['benchmark']}: {r['edge_min']} vs {r['baseline']} (ratio {ratio}) {r['goal']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
