"""Run ONNX agents on onnxruntime-web from inside Pyodide; print one JSON line of results.

Runs in Pyodide only (Node.js through wasm/run_python.mjs --ort, or the Chromium page of
tests/targets/test_onnx_web.py), with onnxruntime-web's backend as ``js.edgeMinOrt``.
``sys.argv[1]`` is a JSON file of cases written by the test:

- ``sessions``: ``[{"init": {...}, "requests": [...]}]``, each init as ``OnnxSession`` takes
  it; every request's output (or error type and message), through the blocking call (JSPI)
  when this runtime can block and through ``call_async`` always;
- ``agent``: an edge-agent-config as a dict and ``requests``: added through the core's own
  ``validate_agent``/``make_executor`` after ``onnx_web.register``, then invoked;
- ``bench``: ``{"text", "calls"}``: milliseconds per classification through the executor
  (blocking) and through ``call_async``, warm;
- ``runtime``: ``{"agent_file", "texts"}``: the unmodified ``Runtime`` on the in-process
  platform adds the agent from its yaml file and runs a one-step workflow per text, ticked
  until every run ends (blocking only).

The test compares these with CPython's onnxruntime on the same inputs.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any


def outcome(fn: Any, *args: Any) -> dict[str, Any]:
    try:
        return {"ok": fn(*args)}
    except Exception as exc:
        return {"error": type(exc).__name__, "message": str(exc)}


async def aoutcome(coro: Any) -> dict[str, Any]:
    try:
        return {"ok": await coro}
    except Exception as exc:
        return {"error": type(exc).__name__, "message": str(exc)}


async def run_sessions(backend: Any, cases: list[dict[str, Any]], blocking: bool) -> list[Any]:
    from edge_min.agents import onnx_web

    results: list[Any] = []
    for case in cases:
        entry: dict[str, Any] = {}
        opened = await aoutcome(onnx_web.open_session_async(case["init"], backend))
        if "error" in opened:
            entry["load"] = opened
        else:
            session = opened["ok"]
            entry["async"] = [await aoutcome(session.call_async(r)) for r in case["requests"]]
            session.close()
        if blocking:
            got = outcome(onnx_web.open_session, case["init"], backend)
            if "error" in got:
                entry["load_blocking"] = got
            else:
                session = got["ok"]
                entry["blocking"] = [outcome(session, r, {}) for r in case["requests"]]
                session.close()
        results.append(entry)
    return results


def run_agent(case: dict[str, Any], blocking: bool) -> dict[str, Any]:
    from edge_min.agents.executors import InvocationContext, make_executor, validate_agent
    from edge_min.config import parse_agent_config
    from edge_min.platform import get_platform

    agent = parse_agent_config(case["config"], source="<onnx web check>")
    platform = get_platform()
    added = outcome(validate_agent, agent, platform, "/tmp/agents")
    if "error" in added or not blocking:
        return {"add": added}
    executor = make_executor(agent, platform, "/tmp/agents")
    ctx = InvocationContext("check", timeout=30)
    outputs = [outcome(executor.invoke, r, ctx) for r in case["requests"]]
    bench = case.get("bench")
    timing: dict[str, Any] = {}
    if bench:
        text, calls = bench["text"], int(bench["calls"])
        for _ in range(20):
            executor.invoke(text, ctx)
        started = time.perf_counter()
        for _ in range(calls):
            executor.invoke(text, ctx)
        timing["executor_ms"] = (time.perf_counter() - started) * 1000 / calls
        timing["calls"] = calls
    executor.close()
    return {"add": added, "outputs": outputs, "bench": timing, "platform": platform.name}


async def bench_async(backend: Any, case: dict[str, Any]) -> dict[str, Any]:
    from edge_min.agents import onnx_web

    init, text, calls = case["init"], case["text"], int(case["calls"])
    session = await onnx_web.open_session_async(init, backend)
    for _ in range(20):
        await session.call_async(text)
    started = time.perf_counter()
    for _ in range(calls):
        await session.call_async(text)
    per_call = (time.perf_counter() - started) * 1000 / calls
    # The same runs straight against the backend: what onnxruntime-web itself takes.
    feeds, _ = session.feeds(text)
    run_ms = []
    for _ in range(calls):
        reply = json.loads(str(await backend.run(session.id, feeds)))
        run_ms.append(float(reply["run_ms"]))
    session.close()
    return {"call_async_ms": per_call, "ort_run_ms": sum(run_ms) / len(run_ms), "calls": calls}


WORKFLOW = """
name: classify
version: 1.0.0
trigger: {type: manual}
steps:
  - id: classify
    agent: text-classifier-lite
    input: "${input.text}"
"""


def run_runtime(case: dict[str, Any]) -> dict[str, Any]:
    import os

    from edge_min.config import parse_config
    from edge_min.config.agent import load_agent_config
    from edge_min.platform.inprocess import InProcessPlatform
    from edge_min.runtime import Paths, Runtime
    from edge_min.workflows.views import describe_execution

    config = parse_config(
        {
            "runtime": {"offline_mode": "always"},
            "storage": {"backup_interval": 0},
            "security": {"encryption_enabled": False, "attestation_enabled": False},
        },
        source="<onnx web check>",
    )
    root = "/tmp/edge-data"
    # The sync key is made with os.link, which Emscripten lacks; the browser target's branch
    # makes it by exclusive create instead. Until that lands, it is written here.
    os.makedirs(f"{root}/keys", exist_ok=True)
    with open(f"{root}/keys/sync.key", "w", encoding="ascii") as fh:
        fh.write(os.urandom(32).hex())
    runtime = Runtime(config, Paths.resolve(config, root), platform=InProcessPlatform()).open()
    try:
        runtime.agents.add(load_agent_config(case["agent_file"]))
        runtime.engine.add_workflow(WORKFLOW)
        ids = [runtime.engine.submit("classify", {"text": t}) for t in case["texts"]]
        views: list[dict[str, Any]] = []
        for _ in range(200):
            runtime.tick()
            views = [describe_execution(runtime.store, i) for i in ids]
            if all(v["status"] in ("succeeded", "failed") for v in views):
                break
        return {
            "runs": [
                {"status": v["status"], "steps": {st["step"]: st for st in v["steps"]}}
                for v in views
            ]
        }
    finally:
        runtime.close()


async def main(argv: list[str]) -> dict[str, Any]:
    import js

    from edge_min.agents import onnx_web

    with open(argv[1], encoding="utf-8") as fh:
        cases = json.load(fh)
    backend = js.edgeMinOrt
    problem = onnx_web.bridge_problem()
    blocking = problem is None
    onnx_web.register(backend)
    result: dict[str, Any] = {
        "blocking": blocking,
        "bridge_problem": problem,
        "version": str(backend.version),
        "platform": sys.platform,
    }
    result["sessions"] = await run_sessions(backend, cases.get("sessions", []), blocking)
    if "agent" in cases:
        result["agent"] = run_agent(cases["agent"], blocking)
    if "runtime" in cases and blocking:
        result["runtime"] = run_runtime(cases["runtime"])
    if "bench" in cases:
        result["bench"] = await bench_async(backend, cases["bench"])
    return result


if __name__ == "__main__":
    found = await main(sys.argv)  # noqa: F704 (Pyodide runs this file with top-level await)
    print(json.dumps(found))
