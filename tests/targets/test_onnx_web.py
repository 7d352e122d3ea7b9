"""ONNX agents on onnxruntime-web from Pyodide, against onnxruntime on CPython, same inputs.

The browser's executor (``edge_min.agents.onnx_web``) must give what the gateway's
(``edge_min.agents.onnx_session``) gives: the same label and scores for the shipped
text-classifier-lite on every sentence of its corpus, the same outputs and the same error
messages for tensor input on the test models. Each case runs here in ``OnnxSession`` and
in Pyodide (``tests/targets/onnx_web_check.py``): under Node.js (wasm/run_python.mjs --ort,
with JSPI and without), and in Debian's Chromium from a static page served on 127.0.0.1
(tests/targets/onnx_web_page/: a module Web Worker, as the browser target runs). A missing
harness FAILS these tests: CI installs it (make wasm-setup, make models, system-deps).

Measured (onnxruntime 1.32 on CPython, onnxruntime-web 1.31.1, Node 20 and Chromium 156):
the same label on all 837 corpus sentences, the same scores on 836; on the other one a
probability is one float32 step (7e-9) apart before rounding, which moves the 6th decimal
of its score by 1e-6. Floats of the test models' tensor outputs differ by at most 2.1e-7.
TOLERANCE is one step of the 6th decimal, plus float noise.
"""

from __future__ import annotations

import base64
import functools
import http.server
import io
import json
import os
import shutil
import subprocess
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.fixtures.onnx import CLASSES, build_models

pytestmark = [
    pytest.mark.pyodide,
    pytest.mark.slow,
    # the 1e30 of a float32 input case: numpy warns that it becomes inf, as it should
    pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning"),
]

WASM = ROOT / "wasm"
RUNNER = WASM / "run_python.mjs"
CHECK = Path(__file__).with_name("onnx_web_check.py")
PAGE = Path(__file__).with_name("onnx_web_page")
ORT_DIST = WASM / "node_modules" / "onnxruntime-web" / "dist"
PYODIDE = WASM / "node_modules" / "pyodide"
WHEELS = WASM / ".cache" / "wheels"
SHIPPED = ROOT / "models" / "out" / "text-classifier-lite.onnx"
CORPUS = ROOT / "models" / "corpus" / "feedback.tsv"
CHROMIUM = "/usr/bin/chromium"
SETUP_HINT = "run `make wasm-setup` (npm ci: pyodide and onnxruntime-web) and `make models`"
RUN_TIMEOUT_S = 300
#: Largest difference allowed between a float of onnxruntime and one of onnxruntime-web.
TOLERANCE = 2e-6
BENCH_TEXT = "The gateway keeps dropping its connection since the last firmware update."
TCL_CLASSES = ["positive", "negative", "neutral"]
RUNTIME_TEXTS = ["The update bricked my gateway, terrible support", "Works perfectly, love it."]
#: Messages that end with numpy's own explanation in parentheses, which Pyodide lacks.
NUMPY_WORDS = ("nested lists of uneven lengths", "is not a base64 .npy file")


def _need(path: Path) -> None:
    if not path.exists():
        pytest.fail(f"{path} is missing: {SETUP_HINT}")


def _npy(arr: Any) -> dict[str, str]:
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, arr)
    return {"npy_b64": base64.b64encode(buf.getvalue()).decode()}


def sentences() -> list[str]:
    lines = CORPUS.read_text(encoding="utf-8").splitlines()[1:]
    return [line.split("\t", 2)[2] for line in lines]


def _tensor_cases() -> list[dict[str, Any]]:
    """Tensor-format sessions on the test models: outputs, casts and every refusal."""
    import numpy as np

    clf = {"model": "classifier.onnx", "input_format": "tensor"}
    return [
        {
            "init": clf,
            "requests": [
                {"features": [[1, 2, 3, 4], [0.5, 0, 0, 1]]},
                {"features": [[1, 2, 3, 4], [1, 2]]},
                [[1, 2, 3, 4]],
                {"features": [["a", "b", "c", "d"]]},
                {"features": [[True, False, True, True]]},
                {"features": [[1, 2, 3]]},
                {"features": [], "extra": 1},
                {"features": _npy(np.ones((2, 4), "float32"))},
                {"features": _npy(np.asfortranarray(np.arange(8, dtype="float32").reshape(2, 4)))},
            ],
        },
        {
            **{"init": {**clf, "classes": ["a", "b", "c"]}},
            "requests": [
                {"features": [[1, 2, 3, 4]]},
                {"features": [[1, 2, 3, 4], [4, 3, 2, 1]]},
            ],
        },
        {
            "init": {"model": "logits.onnx", "classes": ["a", "b", "c"]},
            "requests": [
                {"features": [[1, 2, 3, 4]]},
                {"features": [[-3, 0.25, 9, 1e3]]},
            ],
        },
        {
            "init": {"model": "scaled.onnx"},
            "requests": [
                {"x": [1, 2, 3], "n": 3},
                {"x": [1, 2, 3], "n": 2.5},
                {"x": [1.5, -2, 1e30], "n": -4},
                {"x": _npy(np.array([1, 2, 3], "float32")), "n": _npy(np.array(2, "int64"))},
                {"x": _npy(np.array([1, 2, 3], "float64")), "n": 2},
                {"x": {"npy_b64": "bm90IG5weQ=="}, "n": 2},
                {"x": {"data": [1, 2, 3]}, "n": 2},
                {"x": [1, 2, 3], "n": [3]},
            ],
        },
        {
            "init": {"model": "rnn.onnx"},
            "requests": [
                {"x": [[1, 0, 0, 1]], "h": [[0] * 8]},
                {"x": [[1, 0, 0, 1], [0, 1, 1, 0]], "h": [[0.1] * 8, [0.2] * 8]},
                {"x": [[1, 1, 1, 1]]},
            ],
        },
        {"init": {"model": "fp16.onnx"}, "requests": [{"x": [[1, 0, 0, 0], [0, 0.5, 70000, 0]]}]},
        {
            "init": {"model": "mlp-int8.onnx"},
            "requests": [
                {"features": np.random.default_rng(0).normal(size=(3, 64)).round(3).tolist()}
            ],
        },
        {
            "init": {"model": "text.onnx", "input_format": "text", "classes": CLASSES},
            "requests": [
                "I LOVE it, great!",
                ["fine", "terrible", "happy"],
                42,
            ],
        },
        {
            "init": {"model": "text.onnx", "input_format": "text", "classes": [*CLASSES, "x"]},
            "requests": [],
        },
        {
            "init": {
                "model": "classifier.onnx",
                "input_format": "text",
                "classes": ["a", "b", "c"],
            },
            "requests": [],
        },
    ]


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder Pyodide sees as /host: the models and the cases."""
    for path in (RUNNER, PYODIDE / "pyodide.mjs", ORT_DIST / "ort-wasm-simd-threaded.wasm"):
        _need(path)
    if not any(WHEELS.glob("*.whl")):
        pytest.fail(f"no wheels in {WHEELS}: {SETUP_HINT}")
    _need(SHIPPED)
    folder = tmp_path_factory.mktemp("onnx-web-host")
    build_models(folder)
    shutil.copy(SHIPPED, folder / "tcl.onnx")
    # The shipped agent config as it ships: model.path out/... relative to the yaml.
    (folder / "models" / "out").mkdir(parents=True)
    shutil.copy(ROOT / "models" / "text-classifier-lite.yaml", folder / "models")
    shutil.copy(SHIPPED, folder / "models" / "out")
    tcl = {"model": "tcl.onnx", "input_format": "text", "classes": TCL_CLASSES}
    corpus = sentences()
    odd = ["", "!!!", "CAFÉ très bien", "no issues at all, it never fails", "x" * 5000]
    cases: dict[str, Any] = {
        "sessions": [
            {"init": tcl, "requests": [*corpus, *odd, {"text": corpus[0]}, corpus[:7], 7, []]},
            *_tensor_cases(),
        ],
        "agent": {
            "config": {
                "name": "text-classifier-lite",
                "version": "1.0.0",
                "type": "edge",
                "resources": {"max_memory": "128MB", "max_cpu": 1.0, "max_storage": "100MB"},
                "model": {
                    "type": "quantized",
                    "format": "onnx",
                    "path": "/host/tcl.onnx",
                    "precision": "int8",
                },
                "runtime": {"executor": "onnxruntime", "threads": 2, "acceleration": "cpu"},
                "input": {"format": "text", "max_length": 512},
                "output": {"format": "json", "classes": TCL_CLASSES},
            },
            "requests": [corpus[1], "x" * 600 + " terrible", {"text": "awful"}, 5],
            "bench": {"text": BENCH_TEXT, "calls": 300},
        },
        "bench": {"init": tcl, "text": BENCH_TEXT, "calls": 300},
        "runtime": {
            "agent_file": "/host/models/text-classifier-lite.yaml",
            "texts": RUNTIME_TEXTS,
        },
    }
    for case in cases["sessions"]:
        case["init"] = {**case["init"], "model": f"/host/{case['init']['model']}"}
    cases["bench"]["init"]["model"] = "/host/tcl.onnx"
    (folder / "cases.json").write_text(json.dumps(cases), encoding="utf-8")
    return folder


def _outcome(fn: Any, *args: Any) -> dict[str, Any]:
    try:
        return {"ok": fn(*args)}
    except Exception as exc:
        return {"error": type(exc).__name__, "message": str(exc)}


@pytest.fixture(scope="module")
def cpython(host: Path) -> list[dict[str, Any]]:
    """Every session case through the gateway's OnnxSession (onnxruntime on CPython)."""
    from edge_min.agents.onnx_session import OnnxSession

    cases = json.loads((host / "cases.json").read_text(encoding="utf-8"))
    found = []
    for case in cases["sessions"]:
        init = {**case["init"], "model": str(host / Path(case["init"]["model"]).name)}
        opened = _outcome(OnnxSession, init)
        if "error" in opened:
            found.append({"load": opened})
            continue
        session = opened["ok"]
        found.append({"outputs": [_outcome(session, r, {}) for r in case["requests"]]})
    return found


def _flag() -> list[str]:
    """node's JSPI flag: --experimental-wasm-jspi (22+), or -stack-switching (20)."""
    options = subprocess.run(
        ["node", "--v8-options"], capture_output=True, text=True, check=True
    ).stdout
    for flag in ("--experimental-wasm-jspi", "--experimental-wasm-stack-switching"):
        if flag.removeprefix("--") in options:
            return [flag]
    return []  # a node with JSPI on by default


def run_node(host: Path, *node_flags: str) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        pytest.fail(f"node not found on PATH: install Node.js >= 20; {SETUP_HINT}")
    proc = subprocess.run(
        [
            node,
            *node_flags,
            str(RUNNER),
            "--ort",
            "--mount",
            str(host),
            str(CHECK),
            "/host/cases.json",
        ],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-4000:]}"
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _differences(a: Any, b: Any, where: str, found: list[tuple[float, str]]) -> None:
    """Collect float differences; anything else (labels, ints, strings, shapes) must match."""
    if isinstance(a, float) or isinstance(b, float):
        assert isinstance(a, int | float) and isinstance(b, int | float), where
        assert not isinstance(a, bool) and not isinstance(b, bool), where
        if a != b:
            found.append((abs(a - b), where))
        return
    assert type(a) is type(b), f"{where}: {a!r} != {b!r}"
    if isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        for key in a:
            _differences(a[key], b[key], f"{where}.{key}", found)
    elif isinstance(a, list):
        assert len(a) == len(b), f"{where}: lengths {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _differences(x, y, f"{where}[{i}]", found)
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _same_error(gateway: dict[str, Any], web: dict[str, Any], where: str) -> None:
    assert web.get("error") == gateway["error"], f"{where}: {web} vs {gateway}"
    g, w = gateway["message"], web["message"]
    if any(p in g for p in NUMPY_WORDS):  # numpy's own words follow, in parentheses
        g, w = g.split(" (")[0], w.split(" (")[0]
    assert w == g, f"{where}:\n web     {w}\n gateway {g}"


def compare(cpython: list[dict[str, Any]], web: list[dict[str, Any]], key: str) -> float:
    """Assert web == gateway on every case; the largest float difference seen."""
    diffs: list[tuple[float, str]] = []
    assert len(web) == len(cpython)
    for n, (gateway, got) in enumerate(zip(cpython, web, strict=True)):
        if "load" in gateway:
            _same_error(gateway["load"], got.get("load") or {}, f"case {n} load")
            continue
        assert key in got, f"case {n}: {got}"
        for i, (g, w) in enumerate(zip(gateway["outputs"], got[key], strict=True)):
            where = f"case {n} request {i}"
            if "error" in g:
                _same_error(g, w, where)
            else:
                assert "ok" in w, f"{where}: {w}"
                _differences(g["ok"], w["ok"], where, diffs)
    worst = max((d for d, _ in diffs), default=0.0)
    assert worst <= TOLERANCE, sorted(diffs)[-5:]
    return worst


def tcl_agreement(cpython: list[dict[str, Any]], web: list[dict[str, Any]], key: str) -> int:
    """The shipped classifier on the corpus: the same label for every sentence (scores are
    within TOLERANCE, checked by ``compare``); how many have exactly the same scores."""
    corpus = len(sentences())
    gateway, got = cpython[0]["outputs"][:corpus], web[0][key][:corpus]
    assert [g["ok"]["label"] for g in gateway] == [w["ok"]["label"] for w in got]
    return sum(g == w for g, w in zip(gateway, got, strict=True))


def _report(name: str, result: dict[str, Any], worst: float, identical: int) -> None:
    print(f"\n{name}: onnxruntime-web {result['version']}, worst float difference {worst:.2e}")
    print(f"  corpus: same label on all {len(sentences())}, identical scores on {identical}")
    print(f"  bench (ms per classification): {json.dumps(result.get('bench'))}")
    agent = result.get("agent") or {}
    if agent.get("bench"):
        print(f"  through the executor, blocking (JSPI): {json.dumps(agent['bench'])}")


# -- Node.js -----------------------------------------------------------------------------------


JSPI_PROBE = (
    "process.stdout.write(String(typeof WebAssembly.Suspending === 'function' || "
    "typeof WebAssembly.Function === 'function'))"
)


@pytest.fixture(scope="module")
def node_jspi(host: Path) -> dict[str, Any]:
    """The cases under node with its JSPI flag; a skip on a node whose flag gives Pyodide
    nothing to stack-switch with.

    Debian 12's node 18 has ``--experimental-wasm-stack-switching`` but neither
    ``WebAssembly.Suspending`` nor ``WebAssembly.Function`` under it (Pyodide then fails with
    "WebAssembly.Function is not a constructor"): on such a node (a fresh Debian 12, as in
    ``make test-fresh``) the blocking path is covered by the same checks in Chromium
    (``test_chromium_gives_what_cpython_gives``) and the refusal by
    ``test_node_without_jspi_refuses_the_agent_at_add_and_still_awaits``. A node that has
    the API must pass.
    """
    flags = _flag()
    probe = subprocess.run(
        ["node", *flags, "-e", JSPI_PROBE], capture_output=True, text=True, check=False
    )
    if probe.stdout.strip() != "true":
        version = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout
        pytest.skip(
            f"node {version.strip()} has no JSPI Pyodide can use (flags {flags}); the same "
            "checks run in Chromium (test_chromium_gives_what_cpython_gives)"
        )
    return run_node(host, *flags)


def test_node_with_jspi_gives_what_cpython_gives(
    node_jspi: dict[str, Any], cpython: list[dict[str, Any]]
) -> None:
    assert node_jspi["blocking"] is True, node_jspi["bridge_problem"]
    assert node_jspi["platform"] == "emscripten" and node_jspi["version"] == "1.31.1"
    worst = max(
        compare(cpython, node_jspi["sessions"], "blocking"),
        compare(cpython, node_jspi["sessions"], "async"),
    )
    identical = tcl_agreement(cpython, node_jspi["sessions"], "blocking")
    _report("node + JSPI", node_jspi, worst, identical)


def test_node_with_jspi_adds_and_runs_the_agent_through_the_core(
    node_jspi: dict[str, Any], host: Path
) -> None:
    from edge_min.agents.onnx_session import OnnxSession

    agent = node_jspi["agent"]
    assert agent["add"] == {"ok": None} and agent["platform"] == "inprocess"
    tcl = OnnxSession(
        {"model": str(host / "tcl.onnx"), "input_format": "text", "classes": TCL_CLASSES}
    )
    corpus = sentences()
    outputs = agent["outputs"]
    assert outputs[0] == {"ok": tcl(corpus[1], {})}
    # input.max_length 512 cuts the text before the model sees it, as on the gateway.
    assert outputs[1] == {"ok": tcl("x" * 512, {})}
    assert (
        outputs[2] == {"ok": tcl({"text": "awful"}, {})} and outputs[2]["ok"]["label"] == "negative"
    )
    assert outputs[3]["error"] == "AgentError"
    assert outputs[3]["message"].startswith("agent 'text-classifier-lite': input.format text takes")
    assert agent["bench"]["executor_ms"] > 0


def _check_runtime(result: dict[str, Any], host: Path) -> None:
    """The workflows' classify steps hold what the gateway's session gives on each text."""
    from edge_min.agents.onnx_session import OnnxSession

    tcl = OnnxSession(
        {"model": str(host / "tcl.onnx"), "input_format": "text", "classes": TCL_CLASSES}
    )
    runs = result["runtime"]["runs"]
    assert [r["status"] for r in runs] == ["succeeded"] * len(RUNTIME_TEXTS), runs
    outputs = [r["steps"]["classify"]["output"] for r in runs]
    assert outputs == [tcl(t, {}) for t in RUNTIME_TEXTS]
    assert [o["label"] for o in outputs] == ["negative", "positive"]


def test_node_with_jspi_runs_workflows_in_the_unmodified_runtime(
    node_jspi: dict[str, Any], host: Path
) -> None:
    _check_runtime(node_jspi, host)


def test_node_without_jspi_refuses_the_agent_at_add_and_still_awaits(
    host: Path, cpython: list[dict[str, Any]]
) -> None:
    result = run_node(host)
    if result["blocking"]:
        pytest.skip("this node has JSPI on by default: nothing to refuse")
    assert "JSPI" in result["bridge_problem"]
    add = result["agent"]["add"]
    assert add["error"] == "AgentError"
    assert add["message"].startswith("agent 'text-classifier-lite': onnx agents in a browser")
    assert "Chromium" in add["message"]
    compare(cpython, result["sessions"], "async")


# -- Chromium ----------------------------------------------------------------------------------


class _Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".mjs": "text/javascript",
        ".js": "text/javascript",
        ".wasm": "application/wasm",
        ".json": "application/json",
    }
    served: list[tuple[str, int]] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def copyfile(self, source: Any, outputfile: Any) -> None:
        data = source.read()
        type(self).served.append((self.path, len(data)))
        outputfile.write(data)


def _zip_package(target: Path) -> None:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted((ROOT / "edge_min").rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                zf.write(path, path.relative_to(ROOT).as_posix())


@pytest.fixture(scope="module")
def site(host: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The static page on 127.0.0.1: Pyodide, onnxruntime-web, edge_min, the check, /host."""
    root = tmp_path_factory.mktemp("onnx-web-site")
    for name in ("index.html", "worker.mjs"):
        shutil.copy(PAGE / name, root / name)
    os.symlink(PYODIDE, root / "pyodide")
    os.symlink(ORT_DIST, root / "ort-dist")
    os.symlink(WASM / "ort", root / "ort")
    os.symlink(WHEELS, root / "wheels")
    os.symlink(host, root / "host")
    shutil.copy(CHECK, root / "check.py")
    _zip_package(root / "edge_min.zip")
    files = sorted(p.relative_to(host).as_posix() for p in host.rglob("*") if p.is_file())
    manifest = {
        "wheels": sorted(p.name for p in WHEELS.glob("*.whl")),
        "host": files,
        "argv": ["/host/cases.json"],
    }
    (root / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    handler = functools.partial(_Handler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def chromium(site: str) -> dict[str, Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: .venv/bin/pip install -e '.[dev]'")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: bash scripts/system-deps.sh test")
    refused: list[str] = []
    _Handler.served = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            context = browser.new_context()

            def offline(route: Any) -> None:
                if route.request.url.startswith(site):
                    route.continue_()
                else:
                    refused.append(route.request.url)
                    route.abort()

            context.route("**/*", offline)
            page = context.new_page()
            started = time.monotonic()
            page.goto(site)
            result: dict[str, Any] = page.evaluate("window.checkResult", None)
            seconds = time.monotonic() - started
            version = browser.version
        finally:
            browser.close()
    assert result["status"] == 0, result["stderr"][-4000:]
    found: dict[str, Any] = json.loads(result["stdout"].strip().splitlines()[-1])
    found["browser"] = version
    found["seconds"] = round(seconds, 1)
    found["refused"] = refused
    found["served_bytes"] = sum(n for _, n in _Handler.served)
    found["ort_files"] = sorted({p for p, _ in _Handler.served if p.startswith("/ort-dist/")})
    return found


def test_chromium_gives_what_cpython_gives(
    chromium: dict[str, Any], cpython: list[dict[str, Any]], host: Path
) -> None:
    assert chromium["refused"] == [], "the page reached beyond 127.0.0.1"
    # What a page needs of the npm package: the wasm-only build and its one .wasm.
    assert chromium["ort_files"] == [
        "/ort-dist/ort-wasm-simd-threaded.mjs",
        "/ort-dist/ort-wasm-simd-threaded.wasm",
        "/ort-dist/ort.wasm.min.mjs",
    ]
    assert chromium["blocking"] is True, chromium["bridge_problem"]  # Chromium 137+ has JSPI
    worst = max(
        compare(cpython, chromium["sessions"], "blocking"),
        compare(cpython, chromium["sessions"], "async"),
    )
    identical = tcl_agreement(cpython, chromium["sessions"], "async")
    assert chromium["agent"]["add"] == {"ok": None}
    assert chromium["agent"]["outputs"][2]["ok"]["label"] == "negative"
    _check_runtime(chromium, host)
    _report(f"chromium {chromium['browser']}", chromium, worst, identical)
