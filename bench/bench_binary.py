"""``make bench-binary``: the gateway binary beside ``python -m edge_min`` from the source tree.

Measured in one run, on one machine, for each built binary (``dist/edge-min-linux-<arch>``
and, if built, its ``-onnx`` variant) and for the source tree:

- **file size**: the one file; for the source tree, what it needs from its venv (edge_min
  and the packages the binary carries), for scale.
- **first start**: ``run`` to the first ``200`` from ``GET /health``, with an empty unpack
  cache (a fresh ``XDG_CACHE_HOME``: the launcher unpacks) against the source tree with an
  empty bytecode cache (a fresh ``PYTHONPYCACHEPREFIX``: every module compiles).
- **cached start**: the same, with the unpack cache / bytecode cache of the first start.
  The OS page cache stays warm in both (nothing here drops it), so these are the starts a
  gateway sees after its first boot, not after a power cut.
- **idle RSS**: resident memory 60 s after ``/health`` answers, doing nothing: the runtime
  process itself, and the whole process tree.
- **RSS with 5 workflows**: the peak while 5 runs of a two-step workflow (a command agent
  sleeping 2 s, then the builtin ``echo``) run at once; the tree includes the isolated
  worker processes of the agents.

Every start gets a fresh data directory and a free port; starts alternate between binary
and source so that background load hits both. Medians of ``--repeat`` starts (5).
Goals (issue 7): cached start within 1.5x of the source tree's; idle RSS at most 40 MB
without onnxruntime loaded (the runtime process; onnxruntime only ever loads in an agent's
worker).

``python bench/bench_binary.py [--binary PATH ...] [--repeat N] [--idle SECONDS] [--no-write]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Row, machine, row, table, write_section

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "gateway-binary"
ARCH = {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine(), platform.machine())
START_GOAL = 1.5  # cached start: at most this many times the source tree's
IDLE_GOAL_MB = 40.0  # idle RSS of the runtime process without onnxruntime

SLEEPER = """\
name: sleeper
version: 1.0.0
type: edge
resources: {max_memory: 32MB, max_cpu: 0.5, max_storage: 1MB}
runtime:
  executor: command
  command: "sleep 2; echo '{\\"slept\\": 2}'"
input: {format: json}
output: {format: json}
"""

WORKFLOW = """\
name: bench-five
version: 1.0.0
trigger: {type: manual}
steps:
  - id: wait
    agent: sleeper
    input: {n: "${input.n}"}
  - id: echo
    agent: echo
    needs: [wait]
    input: "${steps.wait.output}"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def request(method: str, url: str, token: str = "", body: object = None) -> tuple[int, object]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


class Subject:
    """One way of running edge-min: a binary, or the source tree's Python."""

    def __init__(self, name: str, argv: list[str], cache_env: str) -> None:
        self.name = name
        self.argv = argv
        self.cache_env = cache_env  # XDG_CACHE_HOME (binary) or PYTHONPYCACHEPREFIX (source)
        self.cache = Path(tempfile.mkdtemp(prefix="edge-bench-cache-"))

    def env(self) -> dict[str, str]:
        skip = ("PYTHONPYCACHEPREFIX", "PYTHONDONTWRITEBYTECODE", "XDG_CACHE_HOME")
        env = {k: v for k, v in os.environ.items() if k not in skip}
        env[self.cache_env] = str(self.cache)
        return env

    def reset_cache(self) -> None:
        shutil.rmtree(self.cache, ignore_errors=True)
        self.cache.mkdir()

    def cli(self, data: Path, *args: str) -> str:
        done = subprocess.run(
            [*self.argv, "--data-dir", str(data), *args],
            capture_output=True,
            text=True,
            env=self.env(),
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{self.name} {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout.strip()

    def start(self, data: Path) -> tuple[subprocess.Popen[bytes], str, float]:
        """Start ``run``; return the process, its URL and seconds to the first /health 200."""
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        began = time.perf_counter()
        proc = subprocess.Popen(
            [*self.argv, "--data-dir", str(data), "run", "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=self.env(),
        )
        deadline = began + 60
        while time.perf_counter() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {proc.returncode} before /health")
            try:
                with urllib.request.urlopen(url + "/health", timeout=1) as resp:
                    if resp.status == 200:
                        return proc, url, time.perf_counter() - began
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.005)
        stop(proc)
        raise RuntimeError(f"{self.name}: /health did not answer in 60 s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def children() -> dict[int, list[int]]:
    """Parent pid -> child pids, from /proc."""
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def descendants(pid: int) -> list[int]:
    tree = children()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(tree.get(p, []))
    return out


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def memory(proc: subprocess.Popen[bytes]) -> tuple[float, float]:
    """(RSS of the runtime process, RSS summed over the whole tree), in MB.

    The started process is the runtime in both cases: the binary's launcher execs it.
    """
    return rss_mb(proc.pid), sum(rss_mb(p) for p in descendants(proc.pid))


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def measure_starts(subjects: list[Subject], repeat: int, scratch: Path) -> dict[str, dict]:
    """First and cached start times per subject, interleaved."""
    times: dict[str, dict[str, list[float]]] = {
        s.name: {"first": [], "cached": []} for s in subjects
    }
    for i in range(repeat):
        for s in subjects:
            s.reset_cache()
            for kind in ("first", "cached"):
                data = scratch / f"{s.name}-{kind}-{i}"
                proc, _, seconds = s.start(data)
                stop(proc)
                times[s.name][kind].append(seconds)
    return {n: {k: median(v) for k, v in t.items()} for n, t in times.items()}


def measure_memory(
    subjects: list[Subject], idle: float, scratch: Path, log: Callable[[str], None]
) -> dict[str, dict[str, float]]:
    """Idle RSS after ``idle`` seconds, then the peak while 5 workflows run, per subject."""
    (scratch / "sleeper.yaml").write_text(SLEEPER)
    (scratch / "bench-five.yaml").write_text(WORKFLOW)
    running = []
    for s in subjects:
        data = scratch / f"{s.name}-memory"
        s.cli(data, "agent", "add", str(scratch / "sleeper.yaml"))
        s.cli(data, "workflow", "add", str(scratch / "bench-five.yaml"))
        token = s.cli(data, "token", "issue", "--role", "admin", "--ttl", "1h")
        proc, url, _ = s.start(data)
        running.append((s, proc, url, token))
    try:
        log(f"idle for {idle:.0f}s")
        time.sleep(idle)
        out: dict[str, dict[str, float]] = {}
        for s, proc, _, _ in running:
            own, tree = memory(proc)
            out[s.name] = {"idle": own, "idle_tree": tree}
        for s, proc, url, token in running:
            ids = []
            for n in range(5):
                status, body = request("POST", f"{url}/workflows/bench-five/run", token, {"n": n})
                if status >= 300 or not isinstance(body, dict):
                    raise RuntimeError(f"{s.name}: run bench-five: {status} {body}")
                ids.append(str(body.get("execution_id") or body.get("id")))
            peak_own = peak_tree = 0.0
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                own, tree = memory(proc)
                peak_own, peak_tree = max(peak_own, own), max(peak_tree, tree)
                states = [request("GET", f"{url}/executions/{i}", token)[1] for i in ids]
                if all(isinstance(b, dict) and b.get("status") in DONE for b in states):
                    bad = [b for b in states if isinstance(b, dict) and b["status"] != "succeeded"]
                    if bad:
                        why = bad[0].get("output")
                        raise RuntimeError(f"{s.name}: {len(bad)} of 5 runs failed: {why}")
                    break
                time.sleep(0.05)
            else:
                raise RuntimeError(f"{s.name}: 5 workflows did not finish in 120 s")
            out[s.name].update(busy=peak_own, busy_tree=peak_tree)
        return out
    finally:
        for _, proc, _, _ in running:
            stop(proc)


DONE = {"succeeded", "failed", "cancelled"}


def source_size() -> float:
    """MB on disk of edge_min and the packages the binary carries, in this venv."""
    import importlib.util

    total = 0
    for name in ("edge_min", "yaml", "cbor2", "zstandard", "Crypto"):
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            continue
        for folder in spec.submodule_search_locations:
            for path in Path(folder).rglob("*"):
                if path.is_file() and "__pycache__" not in path.parts:
                    total += path.stat().st_size
    return total / 1e6


def rows_for(
    binary: Subject, source: Subject, path: Path, starts: dict, mem: dict, onnx: bool
) -> list[Row]:
    b, s = binary.name, source.name
    bs, ss = starts[b], starts[s]
    label = path.name
    out = [
        row(
            f"{label}: file size vs edge_min + its packages in the venv",
            f"{path.stat().st_size / 1e6:.1f} MB",
            f"{source_size():.1f} MB",
            None,
        ),
        row(
            f"{label}: first start to /health (unpacks) vs source, empty bytecode cache",
            f"{bs['first']:.2f} s",
            f"{ss['first']:.2f} s",
            ss["first"] / bs["first"],
        ),
        row(
            f"{label}: cached start to /health vs source",
            f"{bs['cached']:.2f} s",
            f"{ss['cached']:.2f} s",
            ss["cached"] / bs["cached"],
            f"≤ {START_GOAL}x source",
            bs["cached"] <= START_GOAL * ss["cached"],
        ),
    ]
    bm, sm = mem[b], mem[s]
    out += [
        row(
            f"{label}: idle RSS after the idle wait, runtime process (tree)",
            f"{bm['idle']:.1f} MB ({bm['idle_tree']:.1f})",
            f"{sm['idle']:.1f} MB ({sm['idle_tree']:.1f})",
            sm["idle"] / bm["idle"],
            f"≤ {IDLE_GOAL_MB:g} MB" if not onnx else "—",
            bm["idle"] <= IDLE_GOAL_MB if not onnx else None,
        ),
        row(
            f"{label}: peak RSS, 5 workflows at once, runtime process (tree with workers)",
            f"{bm['busy']:.1f} MB ({bm['busy_tree']:.1f})",
            f"{sm['busy']:.1f} MB ({sm['busy_tree']:.1f})",
            sm["busy"] / bm["busy"],
        ),
    ]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", action="append", type=Path, help="default: dist/ builds")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--idle", type=float, default=60.0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    binaries = args.binary or [
        p
        for p in (
            ROOT / "dist" / f"edge-min-linux-{ARCH}",
            ROOT / "dist" / f"edge-min-linux-{ARCH}-onnx",
        )
        if p.exists()
    ]
    missing = [p for p in binaries if not p.is_file()]
    if not binaries or missing:
        what = f"{missing[0]} does not exist" if missing else "no binary in dist/"
        print(f"{what}: run `make binary` first (or pass --binary PATH)", file=sys.stderr)
        return 2

    def log(msg: str) -> None:
        print(f"[bench-binary] {msg}", file=sys.stderr)

    host = machine()
    source = Subject("source", [sys.executable, "-m", "edge_min"], "PYTHONPYCACHEPREFIX")
    subjects = [Subject(p.name, [str(p.resolve())], "XDG_CACHE_HOME") for p in binaries]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="edge-bench-binary-") as tmp:
        scratch = Path(tmp)
        log(
            f"starts: {args.repeat} first + cached each, of "
            + ", ".join(s.name for s in subjects)
            + " and the source tree"
        )
        starts = measure_starts([*subjects, source], args.repeat, scratch)
        mem = measure_memory([*subjects, source], args.idle, scratch, log)
        for subject, path in zip(subjects, binaries, strict=True):
            rows += rows_for(subject, source, path, starts, mem, path.name.endswith("-onnx"))
    for s in [*subjects, source]:
        shutil.rmtree(s.cache, ignore_errors=True)
    head = (
        f"Measured {host['date']} on {host['machine']} ({host['processor']}), "
        f"{host['cpus']} CPUs, {host['os']}; load before: {host['load']}, after: "
        f"{machine()['load']}. Source tree: {host['python']}. Medians of {args.repeat} starts; "
        f"idle wait {args.idle:.0f} s. Ratio = source ÷ binary (above 1: the binary is "
        "faster or smaller)."
    )
    output = f"{head}\n\n{table(rows)}\n"
    print(output)
    if not args.no_write:
        write_section(
            DOC, SECTION, "## Gateway binary (`make bench-binary`)\n\n" + output + "\n" + METHOD
        )
        log(f"wrote {DOC.relative_to(ROOT)}")
    return 0


METHOD = (
    "What each row measures is in `bench/bench_binary.py`'s docstring. Starts are timed from "
    "`Popen` to the first `200` of `GET /health`, polled every 5 ms, with a fresh data "
    "directory each time; RSS is `VmRSS` from `/proc`. The binary pages out its start-up "
    "pages 5 s after `/health` first answers (`targets/gateway/memory.py`); with "
    "`EDGE_MIN_TRIM=0` its idle RSS was 48 MB.\n"
)


if __name__ == "__main__":
    raise SystemExit(main())
