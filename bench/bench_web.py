"""The browser target: start-up, durable steps per second, bytes of the first load.

Run ``python bench/bench_web.py`` (``make bench-web``, after ``make web``; ``--no-write``
leaves docs/benchmarks.md alone, ``--bundle DIR`` picks another bundle). The bundle is
served by ``python -m http.server`` on 127.0.0.1 and driven by Playwright in Debian's
headless Chromium, as in tests/targets/test_web.py. Rows:

- **cold start**: a fresh browser context (empty HTTP cache, empty IndexedDB) opens the page;
  the time from navigation start to ``edgeMin.ready`` (Pyodide loaded and compiled, the
  wheels checked and unpacked, the runtime open and what opening wrote persisted). Median of
  ``COLD_STARTS``; the worker's own split (Pyodide, wheels, storage) is printed with it.
- **warm start**: the same context reloads the page (HTTP cache and IndexedDB as left);
  navigation start to ``edgeMin.ready``, median of ``WARM_STARTS``.
- **no-op durable steps per second**: runs of a five-step chain of the builtin ``noop``
  agent, ``RUNS`` started together (``run`` for each, then ``wait`` for each), timed from
  the first call to the last reply, best of ``ROUNDS``. The baseline is the same
  ``targets.browser.host.BrowserHost`` (the worker's loop, the same config and calls) on
  CPython in this process, with a persist that does nothing (so the ratio is the cost of
  Pyodide plus IDBFS); its SQLite is on the real disk (the tab's is in memory until persisted).
- **bytes on first load**: the bytes of every response body the server sent from navigation
  to ``ready`` in a fresh context (page, loader, worker, Pyodide, wheels, onnxruntime-web's
  loader, the model), counted by the server itself, so the worker's requests are in it.
  onnxruntime-web's wasm is fetched later, by the first ONNX session; its bytes are in the
  details.
- **ONNX classification**: the shipped text-classifier-lite as a one-step workflow in the
  tab, ``ONNX_RUNS`` runs one after the other; the engine's ``duration_ms`` of each classify
  step (the executor's call into onnxruntime-web through JSPI), median. The baseline is the
  gateway's ``OnnxSession`` (onnxruntime on CPython, in-process, the same model file and
  text), median of ``ONNX_CALLS`` calls in this process.
"""

from __future__ import annotations

import asyncio
import functools
import http.server
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Row, best, machine, per_second, row, table, write_section

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
CHROMIUM = "/usr/bin/chromium"
COLD_STARTS = 3
WARM_STARTS = 3
RUNS = 100
ROUNDS = 5
STEPS_PER_RUN = 5
READY_TIMEOUT_MS = 180_000
ONNX_RUNS = 60
ONNX_CALLS = 300
ONNX_TEXT = "The gateway keeps dropping its connection since the last firmware update."
CLASSIFY = """\
name: bench-classify
version: 1.0.0
steps:
  - id: classify
    agent: text-classifier-lite
    input: "${input.text}"
"""
WORKFLOW = "name: bench-chain\nversion: 1.0.0\nsteps:\n" + "".join(
    f"  - id: s{i}\n    agent: noop\n" + (f"    needs: [s{i - 1}]\n" if i > 1 else "")
    for i in range(1, STEPS_PER_RUN + 1)
)

# In the page: ms from navigation start to ready, and the worker's boot split.
READY = """async (ms) => {
  const timeout = new Promise((_, no) => setTimeout(() => no(Error("timeout")), ms));
  await Promise.race([edgeMin.ready, timeout]);
  const at = performance.now();
  const status = await edgeMin.status();
  return {ms: at, boot: status.browser.boot?.timings ?? null};
}"""

# In the page: RUNS runs started together, then waited for; ms from first call to last reply.
STEPS = """async ([runs]) => {
  const began = performance.now();
  const ids = await Promise.all(Array.from({length: runs}, () => edgeMin.run("bench-chain", null)));
  const done = await Promise.all(ids.map((id) => edgeMin.wait(id)));
  const ms = performance.now() - began;
  return {ms, ok: done.every((r) => r.status === "succeeded")};
}"""


class Counted(http.server.SimpleHTTPRequestHandler):
    """http.server's static file handler, adding the size of every body it sends to ``sent``."""

    sent: list[int] = []

    def copyfile(self, source: Any, outputfile: Any) -> None:
        data = source.read()
        outputfile.write(data)
        type(self).sent.append(len(data))

    def log_message(self, format: str, *args: Any) -> None:
        pass


# In the page: the examples, a one-step classify workflow, its runs one by one; each classify
# step's duration_ms (the engine's measure of the executor call).
ONNX = """async ([workflow, text, runs]) => {
  await edgeMin.addExamples();
  await edgeMin.addWorkflow(workflow);
  const ms = [];
  for (let i = 0; i < runs + 3; i++) {
    const run = await edgeMin.wait(await edgeMin.run("bench-classify", {text}));
    if (run.status !== "succeeded") throw Error(`a classify run ${run.status}`);
    if (i >= 3) ms.push(run.steps[0].metrics.duration_ms);  // the first ones load the model
  }
  return ms;
}"""


@contextmanager
def served(bundle: Path) -> Iterator[str]:
    """``bundle`` served on 127.0.0.1 by http.server's static handler (``Counted``)."""
    handler = functools.partial(Counted, directory=str(bundle))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="bench-web-http", daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        with urllib.request.urlopen(url + "bundle.json", timeout=10):
            pass
        yield url
    finally:
        server.shutdown()
        server.server_close()


def seconds(values: Sequence[float]) -> str:
    """Milliseconds as a list of seconds, e.g. ``13.85, 20.06 s``."""
    return ", ".join(f"{v / 1000:.2f}" for v in values) + " s"


def tab_numbers(url: str) -> dict[str, Any]:
    """Cold and warm starts, bytes of the first load, steps per second in the tab."""
    from playwright.sync_api import sync_playwright

    out: dict[str, Any] = {
        "cold_ms": [], "warm_ms": [], "boot": [], "bytes": [], "steps": [], "onnx_ms": [],
    }  # fmt: skip
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        out["browser"] = f"Chromium {browser.version} (headless)"
        try:
            for i in range(COLD_STARTS):
                context = browser.new_context()
                Counted.sent.clear()
                page = context.new_page()
                page.goto(url)
                ready = page.evaluate(READY, READY_TIMEOUT_MS)
                out["cold_ms"].append(ready["ms"])
                out["boot"].append(ready["boot"])
                out["bytes"].append(sum(Counted.sent))
                if i == COLD_STARTS - 1:
                    for _ in range(WARM_STARTS):
                        page.reload()
                        out["warm_ms"].append(page.evaluate(READY, READY_TIMEOUT_MS)["ms"])
                    page.evaluate("(y) => edgeMin.addWorkflow(y)", WORKFLOW)
                    page.evaluate(STEPS, [4])  # warm up: the engine's first run imports
                    for _ in range(ROUNDS):
                        result = page.evaluate(STEPS, [RUNS])
                        if not result["ok"]:
                            raise RuntimeError(f"a bench run did not succeed: {result}")
                        out["steps"].append(result["ms"] / 1000)
                    Counted.sent.clear()
                    out["onnx_ms"] = page.evaluate(ONNX, [CLASSIFY, ONNX_TEXT, ONNX_RUNS])
                    out["onnx_bytes"] = sum(Counted.sent)
                context.close()
        finally:
            browser.close()
    return out


async def _cpython_rounds(scratch: Path) -> list[float]:
    from targets.browser.host import BrowserHost

    replies: dict[int, dict[str, Any]] = {}

    def receive(text: str) -> None:
        message = json.loads(text)
        if message.get("type") == "reply":
            replies[message["id"]] = message

    async def persist() -> None:
        await asyncio.sleep(0)

    mount = scratch / "mount"
    mount.mkdir()
    host = BrowserHost(persist, receive, mount=str(mount), backend="none")
    task = asyncio.create_task(host.serve())
    next_id = 0

    def send(method: str, **params: Any) -> int:
        nonlocal next_id
        next_id += 1
        host.receive(
            json.dumps({"type": "call", "id": next_id, "method": method, "params": params})
        )
        return next_id

    async def values(ids: list[int]) -> list[Any]:
        while not all(i in replies for i in ids):
            if task.done():
                task.result()
            await asyncio.sleep(0)
        bad = [replies[i] for i in ids if not replies[i]["ok"]]
        if bad:
            raise RuntimeError(f"a call failed on CPython: {bad[0]}")
        return [replies[i]["value"] for i in ids]

    async def one_round(runs: int) -> float:
        began = time.perf_counter()
        run_ids = await values([send("run", name="bench-chain", input=None) for _ in range(runs)])
        done = await values([send("wait", id=r) for r in run_ids])
        elapsed = time.perf_counter() - began
        if not all(r["status"] == "succeeded" for r in done):
            raise RuntimeError("a bench run did not succeed on CPython")
        return elapsed

    try:
        await values([send("addWorkflow", yaml=WORKFLOW)])
        await one_round(4)
        return [await one_round(RUNS) for _ in range(ROUNDS)]
    finally:
        host.stop()
        await task


def cpython_onnx_ms() -> list[float]:
    """Milliseconds per classification by the gateway's OnnxSession on CPython."""
    sys.path.insert(0, str(ROOT))
    from edge_min.agents.onnx_session import OnnxSession

    session = OnnxSession({
        "model": str(ROOT / "models" / "out" / "text-classifier-lite.onnx"),
        "input_format": "text",
        "classes": ["positive", "negative", "neutral"],
    })  # fmt: skip
    for _ in range(10):
        session(ONNX_TEXT, {})
    out = []
    for _ in range(ONNX_CALLS):
        began = time.perf_counter()
        session(ONNX_TEXT, {})
        out.append((time.perf_counter() - began) * 1000)
    return out


def cpython_steps() -> list[float]:
    """Seconds per round of the same workload through BrowserHost on CPython."""
    with tempfile.TemporaryDirectory(prefix="edge-bench-web-") as scratch:
        return asyncio.run(_cpython_rounds(Path(scratch)))


def run(bundle: Path) -> tuple[list[Row], list[str], dict[str, Any]]:
    """The rows, the details under them, and what they were measured with."""
    with served(bundle) as url:
        tab = tab_numbers(url)
    cpython = cpython_steps()
    onnx_cpy = statistics.median(cpython_onnx_ms())
    onnx_tab = statistics.median(tab["onnx_ms"])
    steps = RUNS * STEPS_PER_RUN
    tab_s, cpy_s = best(tab["steps"]), best(cpython)
    cold, warm = statistics.median(tab["cold_ms"]), statistics.median(tab["warm_ms"])
    boot = tab["boot"][len(tab["boot"]) // 2] or {}
    first = max(tab["bytes"])
    bundle_bytes = json.loads((bundle / "bundle.json").read_text())["bytes"]
    split = ", ".join(f"{k.removesuffix('_ms')} {v} ms" for k, v in boot.items() if v >= 1)
    rows = [
        row(
            "web: cold start to ready (fresh context, empty cache)",
            f"{cold / 1000:.2f} s",
            "—",
            None,
        ),
        row(
            "web: warm start to ready (reload)",
            f"{warm / 1000:.2f} s",
            f"{cold / 1000:.2f} s cold",
            cold / warm if warm else None,
        ),
        row(
            f"web: no-op durable steps ({RUNS} runs x {STEPS_PER_RUN}), tab vs CPython",
            per_second(steps, tab_s),
            per_second(steps, cpy_s) + " CPython",
            cpy_s / tab_s,
        ),
        row(
            "web: bytes downloaded on first load",
            f"{first / 1e6:.2f} MB",
            f"{bundle_bytes / 1e6:.2f} MB bundle",
            None,
        ),
        row(
            "web: ONNX classification (text-classifier-lite), tab vs CPython onnxruntime",
            f"{onnx_tab:.2f} ms",
            f"{onnx_cpy:.3f} ms CPython",
            onnx_cpy / onnx_tab if onnx_tab else None,
        ),
    ]
    details = [
        f"cold starts: {seconds(tab['cold_ms'])} (median {cold / 1000:.2f} s); the worker's "
        f"split of the median one: {split}",
        f"warm starts (reloads of the last cold context): {seconds(tab['warm_ms'])}",
        f"steps: {ROUNDS} rounds of {steps} steps, best; tab "
        + ", ".join(f"{v:.3f}" for v in tab["steps"])
        + " s; CPython "
        + ", ".join(f"{v:.3f}" for v in cpython)
        + " s",
        f"first load: {first:,} bytes of response bodies sent by the server (max over the "
        f"cold starts), bundle.json says {bundle_bytes:,}; the rest is fetched when first "
        f"used: the first ONNX agent's session fetched {tab['onnx_bytes']:,} bytes more "
        "(onnxruntime-web's wasm, the examples)",
        f"ONNX: {len(tab['onnx_ms'])} classify steps in the tab, duration_ms min "
        f"{min(tab['onnx_ms']):.2f}, median {onnx_tab:.2f}, max {max(tab['onnx_ms']):.2f}; "
        f"OnnxSession on CPython, {ONNX_CALLS} calls, median {onnx_cpy:.3f} ms",
    ]
    return rows, details, tab


def main(argv: Sequence[str] | None = None) -> int:
    """Print the rows; write them as the ``web`` section of docs/benchmarks.md."""
    args = list(sys.argv[1:] if argv is None else argv)
    bundle = ROOT / "dist" / "web"
    if "--bundle" in args:
        bundle = Path(args[args.index("--bundle") + 1])
    if not (bundle / "bundle.json").exists():
        print(f"no bundle in {bundle}: run `make web` first", file=sys.stderr)
        return 2
    rows, details, tab = run(bundle)
    text = table(rows) + "\n\n" + "\n".join(f"- {d}" for d in details)
    m = machine()
    where = (
        f"{m['date']}; {m['processor']}, {m['cpus']} CPUs, {m['os']}, load {m['load']}; "
        f"{tab['browser']}; {m['python']} for the baseline"
    )
    print(where)
    print(text)
    if "--no-write" not in args:
        write_section(
            DOC,
            "web",
            "## Browser tab (`make bench-web`)\n\n"
            "The bundle of `make web` served on 127.0.0.1 and driven by Playwright in Debian's "
            "headless Chromium; see `bench/bench_web.py` for what each row times. The "
            "CPython baseline is the worker's own loop (`targets.browser.host.BrowserHost`, "
            "same config, same calls) in the benchmark's process with a persist that does "
            "nothing, so the ratio is what Pyodide and IDBFS cost together. The ONNX row "
            "is the classify step's own duration in the tab (onnxruntime-web through JSPI) "
            "against the gateway's OnnxSession on CPython.\n\n"
            f"Measured {where}.\n\n" + text,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
