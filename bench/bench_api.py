"""Local API latency under 200 concurrent keep-alive clients while workflows run.

Run it as ``python bench/bench_api.py``; ``run.py`` may import it and call ``run()``.

The server side is what ``edge-min run`` starts: a ``Runtime`` on a temp data directory
with thread executors, its loop on its own thread calling ``runtime.tick()``, the full
router (``build_router``) behind the token authorizer, served by ``ApiServer`` (16 workers).
While it is measured, a background thread submits a five-step ``noop`` workflow through
``POST /workflows/{name}/run`` (``RUN_RATE`` per second) and the engine runs them.

The load comes from a separate process (so its 200 threads do not share the server's
interpreter lock): 200 threads, each with one ``http.client.HTTPConnection`` kept alive
for the whole run, send ``GET /health``, ``/executions?limit=10`` and ``/workflows`` in turn
with a bearer token, as fast as answers come, for ``SECONDS``. Each client's first request
(connecting) is untimed. Latency is per request, from sending to the last body byte.

The baseline, measured in the same run with the same load process: the stdlib's
``ThreadingHTTPServer`` (a thread per connection, HTTP/1.1 keep-alive) answering every GET
with a fixed JSON body: what Python's own HTTP stack costs with no routing, no auth, no
database. Ratio = edge_min's speed ÷ the baseline's (for latency: baseline ms ÷ edge_min ms).
"""

from __future__ import annotations

import http.client
import json
import math
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Row, row, scratch_dir

CLIENTS = 200
SECONDS = 10.0
WORKERS = 16
RUN_RATE = 20.0  # workflow runs submitted per second while the clients read
PATHS = ("/health", "/executions?limit=10", "/workflows")
WORKFLOW = "name: bench-api-chain\nversion: '1'\nsteps:\n" + "".join(
    f"  - id: s{i}\n    agent: noop\n" + (f"    needs: [s{i - 1}]\n" if i > 1 else "")
    for i in range(1, 6)
)


# -- the load generator (runs in its own process) ----------------------------------------------


def load(url: str, token: str | None, clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` keep-alive threads hitting PATHS for ``seconds``; latencies and failures."""
    host, port = url.rsplit("//", 1)[1].split(":")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    latencies: list[list[float]] = [[] for _ in range(clients)]
    failures: list[str] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    ready = threading.Barrier(clients + 1)
    stop_at = [math.inf]

    def client(i: int) -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        mine = latencies[i]
        n = i
        try:
            conn.request("GET", PATHS[0], headers=headers)
            conn.getresponse().read()
            ready.wait()
            clock = time.perf_counter
            while True:
                began = clock()
                if began >= stop_at[0]:
                    break
                conn.request("GET", PATHS[n % len(PATHS)], headers=headers)
                resp = conn.getresponse()
                resp.read()
                mine.append(clock() - began)
                n += 1
                if resp.status != 200:
                    with lock:
                        statuses[resp.status] = statuses.get(resp.status, 0) + 1
        except Exception as exc:
            with lock:
                failures.append(f"{type(exc).__name__}: {exc}")
            ready.abort()
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    ready.wait(timeout=60)  # every client connected and answered once
    began = time.perf_counter()
    stop_at[0] = began + seconds
    for t in threads:
        t.join(seconds + 60)
    elapsed = time.perf_counter() - began
    flat = sorted(x for mine in latencies for x in mine)
    return {
        "requests": len(flat),
        "elapsed": elapsed,
        "p50": _percentile(flat, 0.50),
        "p99": _percentile(flat, 0.99),
        "statuses": statuses,
        "failures": failures[:5],
        "failed": len(failures),
    }


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    return values[min(len(values) - 1, int(q * len(values)))]


def measure(url: str, token: str | None = None) -> dict[str, Any]:
    """Run the load in a child process against ``url``; refuse results with failures."""
    args = json.dumps({"url": url, "token": token, "clients": CLIENTS, "seconds": SECONDS})
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--load", args],
        capture_output=True,
        text=True,
        timeout=SECONDS + 180,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the load process failed: {proc.stderr.strip()[-800:]}")
    result: dict[str, Any] = json.loads(proc.stdout)
    if result["failed"] or result["statuses"]:
        raise RuntimeError(
            f"{result['failed']} clients failed ({result['failures']}) and non-200 answers "
            f"{result['statuses']} against {url}; the numbers would mean nothing"
        )
    return result


# -- edge_min: a real runtime, its router and the token authorizer ----------------------------


class LiveRuntime:
    """A runtime on its loop thread, as ``edge-min run`` has it, with the API in front."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.runtime: Any = None
        self._stop = threading.Event()

    def start(self) -> tuple[str, str]:
        """Open the runtime, start the API; (base URL, an admin token)."""
        from edge_min.api.auth import install_authorizer
        from edge_min.api.routes import build_router
        from edge_min.api.server import ApiServer
        from edge_min.config import parse_config
        from edge_min.platform.threads import ThreadWaiter, thread_executors
        from edge_min.runtime import Paths, Runtime
        from edge_min.security.tokens import issue, key_path, load_key

        config = parse_config({"runtime": {"offline_mode": "never"}}, source="bench")
        paths = Paths.resolve(config, self.root)
        ready, waiter = threading.Event(), ThreadWaiter()

        def loop() -> None:
            # The runtime's connection belongs to its loop thread: open, tick and close there.
            rt = Runtime(config, paths, executors=thread_executors(waiter.set)).open()
            rt.wake = waiter.set
            self.runtime = rt
            ready.set()
            try:
                while not self._stop.is_set():
                    waiter.wait(rt.tick())
                    waiter.clear()
            finally:
                rt.close()  # shuts its executors down too

        self._waiter = waiter
        self._loop = threading.Thread(target=loop, name="bench-runtime-loop", daemon=True)
        self._loop.start()
        if not ready.wait(30):
            raise RuntimeError("the runtime did not open in 30 s")
        router = build_router(self.runtime)
        install_authorizer(router, self.runtime)
        self.server = ApiServer(router, "127.0.0.1", 0, workers=WORKERS, backlog=512)
        self.server.start()
        host, port = self.server.address
        token = issue("admin", 3600, key=load_key(key_path(paths.root)), now=time.time())
        return f"http://{host}:{port}", token

    def stop(self) -> None:
        """Stop the API and the loop."""
        self.server.stop()
        self._stop.set()
        self._waiter.set()
        self._loop.join(30)


class Submitter:
    """Submits workflow runs through the API at a steady rate on one keep-alive connection."""

    def __init__(self, url: str, token: str) -> None:
        host, port = url.rsplit("//", 1)[1].split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.submitted = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-submitter", daemon=True)

    def post(self, path: str, body: bytes) -> tuple[int, Any]:
        """One POST; (status, JSON answer)."""
        self.conn.request("POST", path, body=body, headers=self.headers)
        resp = self.conn.getresponse()
        return resp.status, json.loads(resp.read())

    def submit(self) -> None:
        """Queue one run of the workflow."""
        status, answer = self.post("/workflows/bench-api-chain/run", b'{"n": 1}')
        if status != 202:
            self.errors.append(f"{status} {answer}")
        self.submitted += 1

    def _run(self) -> None:
        while not self._stop.wait(1.0 / RUN_RATE):
            self.submit()

    def start(self) -> None:
        """Submit in the background until stopped."""
        self._thread.start()

    def stop(self) -> None:
        """Stop submitting."""
        self._stop.set()
        self._thread.join(10)
        self.conn.close()


def _count_runs(url: str, token: str) -> dict[str, int]:
    host, port = url.rsplit("//", 1)[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(
            "GET", "/executions?limit=100000", headers={"Authorization": f"Bearer {token}"}
        )
        runs = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    counts: dict[str, int] = {}
    for r in runs:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return counts


def _wait_runs_done(url: str, token: str, total: int, limit: float = 60.0) -> dict[str, int]:
    deadline = time.monotonic() + limit
    while True:
        counts = _count_runs(url, token)
        if counts.get("succeeded", 0) >= total or time.monotonic() > deadline:
            return counts
        time.sleep(0.1)


def edge_once() -> dict[str, Any]:
    """The load against the live runtime while runs are submitted; results and run counts."""
    with scratch_dir() as tmp:
        live = LiveRuntime(Path(tmp) / "data")
        url, token = live.start()
        try:
            sub = Submitter(url, token)
            status, answer = sub.post("/workflows", WORKFLOW.encode())
            if status != 201:
                raise RuntimeError(f"adding the workflow failed: {status} {answer}")
            for _ in range(30):  # some history, so /executions has rows to list
                sub.submit()
            _wait_runs_done(url, token, sub.submitted)
            sub.start()
            result = measure(url, token)
            sub.stop()
            if sub.errors:
                raise RuntimeError(f"submitting runs failed: {sub.errors[:3]}")
            counts = _wait_runs_done(url, token, sub.submitted)
            result["runs"] = counts.get("succeeded", 0)
            result["submitted"] = sub.submitted
            return result
        finally:
            live.stop()


# -- the baseline -------------------------------------------------------------------------------


class _Fixed(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    body = json.dumps({"status": "ok", "version": "baseline"}).encode() + b"\n"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def baseline_once() -> dict[str, Any]:
    """The same load against ThreadingHTTPServer answering a fixed JSON body."""

    class Server(ThreadingHTTPServer):
        request_queue_size = 512
        daemon_threads = True

    server = Server(("127.0.0.1", 0), _Fixed)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        return measure(f"http://{host!s}:{port}")
    finally:
        server.shutdown()
        server.server_close()


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.2f} ms"


def run() -> list[Row]:
    """p50, p99 and requests/s of the live API against the stdlib baseline."""
    edge = edge_once()
    base = baseline_once()
    what = (
        f"{CLIENTS} keep-alive clients, GET /health, /executions?limit=10, /workflows with a "
        f"bearer token, {WORKERS} workers, {edge['submitted']} workflow runs submitted and "
        f"{edge['runs']} succeeded meanwhile; vs ThreadingHTTPServer, fixed JSON"
    )
    edge_rate = edge["requests"] / edge["elapsed"]
    base_rate = base["requests"] / base["elapsed"]
    return [
        row(
            f"api: p50 latency, {what}",
            _ms(edge["p50"]),
            _ms(base["p50"]),
            base["p50"] / edge["p50"],
        ),
        row(
            f"api: p99 latency, {what}",
            _ms(edge["p99"]),
            _ms(base["p99"]),
            base["p99"] / edge["p99"],
        ),
        row(
            f"api: requests/s, {what}",
            f"{edge_rate:,.0f} /s",
            f"{base_rate:,.0f} /s",
            edge_rate / base_rate,
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    """Print the rows; ``--load JSON`` is the load generator's entry (prints JSON results)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "--load":
        spec = json.loads(args[1])
        print(json.dumps(load(spec["url"], spec["token"], spec["clients"], spec["seconds"])))
        return 0
    for r in run():
        print(r)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
