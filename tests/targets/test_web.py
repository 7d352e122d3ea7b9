"""The browser target in a real Chromium: the bundle of ``make web``, served on 127.0.0.1.

``wasm/build_web.py`` builds the bundle from this tree into a temporary folder; a real
``python -m http.server`` serves it; Playwright drives Debian's ``chromium``
(scripts/system-deps.sh installs it; Playwright's own browser download is not used). Each
test has a fresh browser context (its own IndexedDB); a reload or a new page in the same
context is the same origin's storage, as for a person who reloads or reopens the tab. What is
checked is ``window.edgeMin``: ready, agents and workflows added, runs and their steps, and
that whatever a Promise resolved with is still there after a reload and after the renderer
is killed (SIGKILL, page and worker with it) right after it resolved.

A missing Chromium, Playwright or Pyodide harness FAILS these tests with the command that
installs it: ``make test`` installs all three first, so a skip would only hide a broken setup.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.web, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
INSTALL_HINT = (
    "the browser tests drive Debian's chromium through Playwright: install them with "
    "`bash scripts/system-deps.sh test` (apt-get install chromium) and "
    "`.venv/bin/pip install -e '.[dev]'` (playwright), or run `make test-web`"
)
# Pyodide boots in 3-6 s on an idle 2-core machine and over 10 s under load: the limits only
# stop a hung page from stalling the suite.
READY_TIMEOUT_MS = 120_000
CALL_TIMEOUT_MS = 60_000

WORDS_AGENT = """\
name: word-count
version: 1.0.0
type: edge
runtime:
  executor: python
  entry: words:count
input: {format: json}
output: {format: json}
"""
WORDS_MODULE = """\
def count(value, context):
    text = value["text"] if isinstance(value, dict) else str(value)
    return {"words": len(text.split()), "shout": text.upper(), "key": context.idempotency_key}
"""
WORDS_WORKFLOW = """\
name: words
version: 1.0.0
steps:
  - id: count
    agent: word-count
    input: "${input}"
  - id: echo
    agent: echo
    needs: [count]
    input: "${steps.count.output.words}"
"""
ECHO_WORKFLOW = """\
name: echo-once
version: 1.0.0
steps:
  - id: a
    agent: echo
    input: "${input}"
"""
COMMAND_AGENT = """\
name: shell
version: 1.0.0
runtime:
  executor: command
  command: [echo, "{}"]
"""

# Runs in the page: a call whose rejection comes back as {code, message}, not a JS error.
CALL = """async ([method, args]) => {
  try { return {value: await edgeMin[method](...args)}; }
  catch (e) { return {error: {code: e.code, message: e.message, isError: e instanceof Error}}; }
}"""


def playwright_or_fail() -> Any:
    """Playwright's ``sync_playwright``; a failure naming the install commands when Playwright
    or Debian's chromium is missing (never a skip)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(f"playwright is not installed; {INSTALL_HINT}")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"{CHROMIUM} is missing (chromium on PATH: {shutil.which('chromium')}); {INSTALL_HINT}"
        )
    return sync_playwright


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``make web``'s bundle, built from this tree."""
    out = tmp_path_factory.mktemp("web") / "dist-web"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "wasm" / "build_web.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"wasm/build_web.py failed (run `make web` to see why):\n{proc.stderr}")
    return out


@pytest.fixture(scope="module")
def site(bundle: Path) -> Iterator[str]:
    """The bundle served by a real ``edge-min web serve`` on a free port of 127.0.0.1 (it
    checks the bundle first; tests/integration/test_web_serve.py has its own tests)."""
    from tests.integration.test_web_serve import web_serve

    server = web_serve("--dir", str(bundle), "--port", "0")
    try:
        assert server.stdout is not None and server.stderr is not None
        line = server.stdout.readline()
        if " at http://127.0.0.1:" not in line:
            pytest.fail(f"edge-min web serve did not start: {line}{server.stderr.read()}")
        url = line.rsplit(" at ", 1)[1].strip()
        with urllib.request.urlopen(url + "bundle.json", timeout=10) as resp:
            assert resp.status == 200
        yield url
    finally:
        server.terminate()
        server.wait(10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless."""
    sync_playwright = playwright_or_fail()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def thread_names(pid: int) -> set[str]:
    """The names of a process's threads (``/proc/<pid>/task/*/comm``)."""
    names: set[str] = set()
    for comm in Path(f"/proc/{pid}/task").glob("*/comm"):
        with contextlib.suppress(OSError):
            names.add(comm.read_text().strip())
    return names


class Tab:
    """A page of the site in one browser context, with the worker's console kept."""

    def __init__(self, context: Any, url: str) -> None:
        self.context = context
        self.url = url
        self.console: list[str] = []
        self.page: Any = None

    def open(self) -> dict[str, Any]:
        """A new page at the site; waits for ``edgeMin.ready``; returns ``status()``."""
        self.page = self.context.new_page()
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        self.page.set_default_timeout(CALL_TIMEOUT_MS)
        self.page.goto(self.url)
        return self.ready()

    def reload(self) -> dict[str, Any]:
        """Reload the page (its worker ends, a new one takes the Web Lock); ``status()``."""
        self.page.reload()
        return self.ready()

    def ready(self) -> dict[str, Any]:
        """Wait for ``edgeMin.ready``; ``status()``."""
        ready = self.page.evaluate(
            """async (ms) => {
              const timeout = new Promise((_, no) => setTimeout(() => no(Error("timeout")), ms));
              try { await Promise.race([edgeMin.ready, timeout]); return {ok: true}; }
              catch (e) { return {ok: false, code: e.code, message: e.message}; }
            }""",
            READY_TIMEOUT_MS,
        )
        assert ready["ok"], f"edgeMin.ready rejected: {ready}\n{self.logs()}"
        return self.ok("status")

    def call(self, method: str, *args: Any) -> dict[str, Any]:
        """``edgeMin[method](...args)`` as ``{"value": ...}`` or ``{"error": {code, message}}``."""
        result: dict[str, Any] = self.page.evaluate(CALL, [method, list(args)])
        return result

    def ok(self, method: str, *args: Any) -> Any:
        """The value of a call that must succeed."""
        result = self.call(method, *args)
        assert "value" in result, f"edgeMin.{method} rejected: {result}\n{self.logs()}"
        return result["value"]

    def crash(self) -> None:
        """Kill the renderer that runs the page and its worker (SIGKILL), as a crash would.

        CDP's ``Page.crash`` never answers through Playwright (the call hangs), so the
        renderer is found among the browser's processes (``SystemInfo.getProcessInfo``) as
        the one with a ``DedicatedWorker`` thread: only this page starts a worker.
        """
        crashed: list[bool] = []
        self.page.on("crash", lambda _: crashed.append(True))
        cdp = self.context.browser.new_browser_cdp_session()
        try:
            processes = cdp.send("SystemInfo.getProcessInfo")["processInfo"]
        finally:
            cdp.detach()
        renderers = [p["id"] for p in processes if p["type"] == "renderer"]
        running_worker = [pid for pid in renderers if "DedicatedWorker" in thread_names(pid)]
        assert len(running_worker) == 1, f"renderers {renderers}, with a worker {running_worker}"
        os.kill(running_worker[0], signal.SIGKILL)
        if not crashed:
            self.page.wait_for_event("crash", timeout=20_000)
        self.page.close()

    def logs(self) -> str:
        """The console so far (the worker's Python log included)."""
        return "\n".join(self.console[-60:])


@pytest.fixture
def tab(browser: Any, site: str) -> Iterator[Tab]:
    """A fresh browser context (empty IndexedDB) on the site."""
    context = browser.new_context()
    try:
        yield Tab(context, site)
    finally:
        context.close()


def add_words(tab: Tab) -> None:
    """The python agent (its module sent with it) and the workflow that uses it."""
    agent = tab.ok("addAgent", WORDS_AGENT, {"files": {"words.py": WORDS_MODULE}})
    assert agent["name"] == "word-count" and agent["version"] == "1.0.0"
    workflow = tab.ok("addWorkflow", WORDS_WORKFLOW)
    assert workflow["name"] == "words"


def test_a_run_and_its_steps_survive_a_reload(tab: Tab) -> None:
    status = tab.open()
    assert status["platform"] == {"name": "browser", "online": status["platform"]["online"]}
    persistence = status["persistence"]
    assert persistence["backend"] == "idbfs" and persistence["state"] == "ok", persistence
    assert status["tamper"]["state"] == "ok"  # the bundle is the program its manifest signs
    assert status["browser"]["quota"] > 0
    add_words(tab)

    run_id = tab.ok("run", "words", {"text": "the app keeps crashing"})
    run = tab.ok("wait", run_id)
    assert run["status"] == "succeeded", run
    steps = {s["step"]: s for s in run["steps"]}
    assert steps["count"]["output"] == {
        "words": 4,
        "shout": "THE APP KEEPS CRASHING",
        "key": f"{run_id}:count",
    }
    assert steps["echo"]["output"] == {"input": 4, "idempotency_key": f"{run_id}:echo"}

    status = tab.reload()
    assert status["executions"]["succeeded"] == 1 and status["workflows"] == 1
    again = tab.ok("get", run_id)
    assert again == run
    listed = tab.ok("runs", {"status": "succeeded", "limit": 10})
    assert [r["id"] for r in listed] == [run_id]
    assert {a["name"] for a in tab.ok("agents")} >= {"word-count"}
    # The agent's module was persisted with it: a run after the reload still imports it.
    second = tab.ok("wait", tab.ok("run", "words", {"text": "works great"}))
    assert second["status"] == "succeeded" and second["steps"][0]["output"]["words"] == 2


def test_errors_reject_with_the_runtime_codes(tab: Tab) -> None:
    tab.open()
    refused = tab.call("addAgent", COMMAND_AGENT)["error"]
    assert refused["code"] == "agent_error" and refused["isError"] is True
    assert "not available on this host (the browser platform cannot start" in refused["message"]
    missing = tab.call("run", "no-such-workflow", None)["error"]
    assert missing["code"] == "not_found", missing
    invalid = tab.call("addWorkflow", "name: broken\nversion: 1.0.0\nsteps: []\n")["error"]
    assert invalid["code"] == "workflow_invalid", invalid
    unknown = tab.call("wait", "0123456789abcdef")["error"]
    assert unknown["code"] == "not_found", unknown
    bad = tab.call("runs", {"status": "exploded"})["error"]
    assert bad["code"] == "usage_error", bad


CRASHES = 20


def test_no_reported_run_is_lost_when_the_renderer_crashes(tab: Tab) -> None:
    tab.open()
    add_words(tab)
    reported: dict[str, Any] = {}
    for crash in range(CRASHES):
        # Three runs started together; the renderer (page and worker) is SIGKILLed the moment
        # the first of them is reported done, while the others are still going.
        first = tab.page.evaluate(
            """async (n) => {
              const runs = [0, 1, 2].map((i) =>
                edgeMin.run("words", {text: `crash ${n} run ${i}`}).then((id) => edgeMin.wait(id)));
              return await Promise.race(runs);
            }""",
            crash,
        )
        tab.crash()
        assert first["status"] == "succeeded", first
        reported[first["id"]] = first
        # The database opens cleanly after each crash, and every run reported so far is there
        # with the same steps.
        status = tab.open()
        assert status["persistence"]["state"] == "ok", (crash, status["persistence"])
        listed = {r["id"] for r in tab.ok("runs", {"limit": 1000})}
        assert set(reported) <= listed, (crash, set(reported) - listed)
        for run_id, run in reported.items():
            assert tab.ok("get", run_id) == run, (crash, run_id)
    # The runs the crashes cut short resume and finish: none is left queued, running or failed.
    deadline = time.monotonic() + 120
    while True:
        counts = tab.ok("status")["executions"]
        if counts["queued"] == counts["running"] == 0 or time.monotonic() > deadline:
            break
        tab.page.wait_for_timeout(250)
    assert counts["queued"] == counts["running"] == counts["failed"] == 0, counts
    assert CRASHES <= counts["succeeded"] <= 3 * CRASHES, counts


def test_storage_cleared_under_the_tab_is_an_explicit_error_then_recovers(tab: Tab) -> None:
    tab.open()
    tab.ok("addWorkflow", ECHO_WORKFLOW)
    # What a person does in the browser's settings: the origin's IndexedDB is cleared, and
    # the browser closes the worker's connection to it.
    origin = tab.url.rstrip("/")
    cdp = tab.context.new_cdp_session(tab.page)
    cdp.send("Storage.clearDataForOrigin", {"origin": origin, "storageTypes": "indexeddb"})
    refused = tab.call("run", "echo-once", {"text": "after the clear"})["error"]
    assert refused["code"] == "not_persisted", refused
    assert "InvalidStateError" in refused["message"]
    # Never memory in silence: until a persist succeeds again, nothing is reported done; the
    # next turn opens IndexedDB again and writes every file into it.
    deadline = time.monotonic() + 30
    while True:
        status = tab.call("status")
        if "value" in status or time.monotonic() > deadline:
            break
        assert status["error"]["code"] == "not_persisted"
        tab.page.wait_for_timeout(200)
    assert status["value"]["persistence"]["state"] == "ok", status
    tab.page.close()
    status = tab.open()
    assert status["workflows"] == 1  # written again after the clear
    # The run committed while the persist failed was never reported, and is kept all the same.
    assert status["executions"]["succeeded"] == 1, status["executions"]


SLOW_AGENT = """\
name: slow
version: 1.0.0
type: edge
runtime:
  executor: python
  entry: slow:nap
"""
SLOW_MODULE = """\
import time

def nap(value, context):
    # busy: a tab's time.sleep may return at once (no SharedArrayBuffer to wait on)
    end = time.monotonic() + float(value["seconds"])
    while time.monotonic() < end:
        pass
    return {"slept": value["seconds"]}
"""
SLOW_WORKFLOW = """\
name: slow
version: 1.0.0
steps:
  - id: nap
    agent: slow
    input: "${input}"
"""


def test_a_second_tab_follows_the_first_and_takes_over_when_it_closes(tab: Tab) -> None:
    first = tab.open()
    assert first["tab"]["role"] == "leader" and first["tab"]["leader"] == first["tab"]["id"]
    tab.ok("addWorkflow", ECHO_WORKFLOW)
    tab.ok("addAgent", SLOW_AGENT, {"files": {"slow.py": SLOW_MODULE}})
    tab.ok("addWorkflow", SLOW_WORKFLOW)
    one = tab.ok("wait", tab.ok("run", "echo-once", {"tab": 1}))

    # The second tab of the origin follows: its calls are answered by the first tab's
    # runtime, so both see the same runs, and its own worker never opens the database.
    second = Tab(tab.context, tab.url)
    status = second.open()
    assert status["tab"]["role"] == "follower", status["tab"]
    assert status["tab"]["leader"] == first["tab"]["id"]
    assert status["browser"]["boot"] is None  # its worker waits for the lock, nothing more
    assert second.ok("get", one["id"]) == one
    two = second.ok("wait", second.ok("run", "echo-once", {"tab": 2}))
    assert two["status"] == "succeeded"
    assert tab.ok("get", two["id"]) == two
    assert [r["id"] for r in second.ok("runs", {"limit": 10})] == [
        r["id"] for r in tab.ok("runs", {"limit": 10})
    ]
    assert sorted(r["id"] for r in tab.ok("runs", {"limit": 10})) == sorted([one["id"], two["id"]])
    # The page says which it is.
    second.page.wait_for_function("document.querySelector('#state').dataset.role === 'follower'")

    # A call on its way to the first tab when it closes is rejected, never left hanging: the
    # first tab's worker is busy in a step when the second tab asks it for its status.
    tab.page.evaluate("""() => { edgeMin.run("slow", {seconds: 4}); }""")
    tab.page.wait_for_timeout(500)  # the nap has begun in the first tab's worker
    second.page.evaluate(
        """() => { window.cutCall = edgeMin.status().then(
             (value) => ({value}), (e) => ({error: {code: e.code, message: e.message}})); }"""
    )
    tab.page.wait_for_timeout(200)
    tab.page.close()
    cut = second.page.evaluate("() => window.cutCall")
    assert "error" in cut and cut["error"]["code"] == "leader_gone", cut
    assert "may or may not have been carried out" in cut["error"]["message"]

    # The second tab's worker takes the lock and runs the runtime on what was persisted; the
    # calls it makes meanwhile wait for it instead of failing.
    taken = second.ok("status")
    assert taken["tab"]["role"] == "leader", taken["tab"]
    assert taken["tab"]["leader"] == status["tab"]["id"] and taken["persistence"]["state"] == "ok"
    assert second.ok("get", one["id"]) == one and second.ok("get", two["id"]) == two
    # The slow run was never reported; if its start was persisted, it resumes here.
    deadline = time.monotonic() + 60
    while (counts := second.ok("status")["executions"])["queued"] + counts["running"] > 0:
        assert time.monotonic() < deadline, counts
        second.page.wait_for_timeout(250)
    assert counts["failed"] == 0, counts
    three = second.ok("wait", second.ok("run", "echo-once", {"tab": 3}))
    assert three["status"] == "succeeded"
    second.page.wait_for_function("document.querySelector('#state').dataset.role === 'leader'")


def test_feedback_triage_classifies_on_onnxruntime_web_like_the_gateway(tab: Tab) -> None:
    # The bundle's examples, added as a person would: text-classifier-lite (the same int8
    # model file as the gateway's, run by onnxruntime-web), notify and the spec's workflow.
    tab.open()
    added = tab.ok("addExamples")
    assert added == {"agents": ["text-classifier-lite", "notify"], "workflows": ["feedback-triage"]}
    sentences = {
        "the app keeps crashing and support never answers": "negative",
        "I love how fast the new update is, great work": "positive",
    }
    from edge_min.agents.onnx_session import OnnxSession  # the gateway's, on CPython

    gateway = OnnxSession({
        "model": str(ROOT / "models" / "out" / "text-classifier-lite.onnx"),
        "input_format": "text",
        "classes": ["positive", "negative", "neutral"],
    })  # fmt: skip
    for text, label in sentences.items():
        run = tab.ok("wait", tab.ok("run", "feedback-triage", {"text": text}))
        assert run["status"] == "succeeded", run
        steps = {s["step"]: s for s in run["steps"]}
        got = steps["classify"]["output"]
        assert got["label"] == label, (text, got)
        want = gateway(text, {})
        assert want["label"] == label
        for name, score in want["scores"].items():
            assert abs(got["scores"][name] - score) <= 2e-6, (name, got, want)
        if label == "negative":  # the alert step ran, through the Python notify agent
            assert steps["alert"]["status"] == "succeeded", steps
            assert steps["alert"]["output"]["sent"] is True
        else:
            assert steps["alert"]["status"] == "skipped", steps
    # 50 more, started together; after a reload all 52 are there with their steps.
    done = tab.page.evaluate(
        """async () => Promise.all(Array.from({length: 50}, (_, i) =>
             edgeMin.run("feedback-triage", {text: `the update broke sync again, take ${i}`})
               .then((id) => edgeMin.wait(id))))"""
    )
    assert [r["status"] for r in done] == ["succeeded"] * 50
    labels = {s["output"]["label"] for r in done for s in r["steps"] if s["step"] == "classify"}
    assert labels == {"negative"}, labels
    status = tab.reload()
    assert status["executions"]["succeeded"] == 52
    listed = {r["id"] for r in tab.ok("runs", {"status": "succeeded", "limit": 100})}
    assert {r["id"] for r in done} <= listed
    for run in done:
        assert tab.ok("get", run["id"]) == run
