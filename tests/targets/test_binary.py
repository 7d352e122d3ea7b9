"""The gateway binary (``make binary``) does the whole job, not just the source tree.

The tests marked ``binary`` run when ``EDGE_MIN_BIN`` names a built binary (``make
test-binary`` sets it) and are skipped otherwise. They check what only a compiled build can
get wrong: a module or data file left out (``__modules__`` imports every module of the
source tree inside the binary), the worker path (a compiled build has no ``python``: the
binary runs itself as ``__worker__``), the unpack cache, and that the process started is the
runtime itself (the launcher execs it). ``test_launcher.py`` tests the launcher on its own,
in every run. The shim's systemd notification (target hooks: READY=1 over plain HTTP and over
TLS, WATCHDOG=1, STOPPING=1) runs in both modes: through ``python targets/gateway/main.py``
from the source tree, and through the binary.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_min import __version__
from targets.gateway.modules import EXCLUDED, required_modules
from targets.gateway.shim import target_hooks
from targets.gateway.systemd import SystemdHooks, notify, watchdog_interval
from tests.conftest import ROOT, SPEC_CONFIGS, edge_min_cmd, free_port, http, run_cli

BIN = os.environ.get("EDGE_MIN_BIN")
needs_binary = pytest.mark.skipif(
    not BIN, reason="EDGE_MIN_BIN is not set (make test-binary sets it)"
)
ENTRY = ROOT / "targets" / "gateway" / "main.py"
#: The -onnx variant carries numpy and onnxruntime; the base binary leaves them out.
ONNX_BIN = bool(BIN) and str(BIN).endswith("-onnx")
LEFT_OUT = tuple(m for m in EXCLUDED if not (ONNX_BIN and m in ("numpy", "onnxruntime")))

SHELL_AGENT = """\
name: upper
version: 1.0.0
type: edge
resources: {max_memory: 64MB, max_cpu: 0.5, max_storage: 10MB}
runtime: {executor: command, command: "tr a-z A-Z"}
input: {format: json}
output: {format: json}
"""
PY_AGENT = """\
name: stats
version: 1.0.0
type: edge
resources: {max_memory: 128MB, max_cpu: 0.5, max_storage: 10MB}
runtime: {executor: python, entry: "stats_agent:run"}
input: {format: json}
output: {format: json}
"""
# Imports stdlib modules edge_min itself never uses: they must be inside the binary too.
PY_MODULE = """\
import csv, io, os, statistics, sys

def run(value, context):
    rows = list(csv.reader(io.StringIO(value["csv"])))
    return {"mean": statistics.mean(float(r[0]) for r in rows),
            "upper": value["text"],
            "frozen": "__compiled__" in globals() or hasattr(sys, "frozen"),
            "executable": os.path.realpath("/proc/self/exe")}
"""
PIPELINE = """\
name: pipeline
version: 1.0.0
steps:
  - {id: shout, agent: upper, input: "${input.text}"}
  - id: stats
    agent: stats
    needs: [shout]
    input: {csv: "${input.csv}", text: "${steps.shout.output}"}
"""
SLOW_AGENT = """\
name: slow
version: 1.0.0
type: edge
resources: {max_memory: 64MB, max_cpu: 0.5, max_storage: 10MB}
runtime: {executor: command, command: "sleep 2; cat"}
input: {format: json}
output: {format: json}
"""
SLOW_FLOW = """\
name: slowflow
version: 1.0.0
steps:
  - {id: one, agent: slow, input: "${input}"}
  - {id: two, agent: slow, needs: [one], input: "${steps.one.output}"}
"""


def _gateway_cmd() -> list[str]:
    """The gateway entry point: the binary, or main.py from the source tree."""
    return [BIN] if BIN else [sys.executable, str(ENTRY)]


def _cache_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}


# -- the shim, in both modes ---------------------------------------------------------------


def test_the_shim_registers_hooks_for_what_the_process_was_asked() -> None:
    assert target_hooks({}, compiled=False) == []
    (only,) = target_hooks({"NOTIFY_SOCKET": "/run/x.sock"}, compiled=False)
    assert isinstance(only, SystemdHooks) and only.watchdog is None
    assert len(target_hooks({"NOTIFY_SOCKET": "/run/x.sock"}, compiled=True)) == 2


def test_watchdog_interval_is_half_and_respects_the_pid() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "10000000"}) == 5.0
    assert watchdog_interval({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"}, pid=2) is None
    assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "8"}, pid=8) == 1.0
    assert watchdog_interval({}) is None and watchdog_interval({"WATCHDOG_USEC": "0"}) is None


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(30)
    yield sock, path
    sock.close()


def test_notify_sends_one_datagram(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    assert notify("STATUS=hello", path)
    assert sock.recv(4096) == b"STATUS=hello"
    assert not notify("READY=1", "relative/path") and not notify("READY=1", "")


def test_systemd_hooks_ping_the_watchdog_at_most_each_half_period(
    notify_socket: tuple[socket.socket, str],
) -> None:
    from edge_min.hooks import ServingAddress

    sock, path = notify_socket
    now = [100.0]
    hooks = SystemdHooks(path, 5.0, monotonic=lambda: now[0])
    hooks.alive()  # not serving yet: no ping
    hooks.serving(ServingAddress("127.0.0.1", 8443, tls=True))
    assert sock.recv(4096) == b"READY=1\nSTATUS=API on https://127.0.0.1:8443"
    now[0] += 4.9
    hooks.alive()
    now[0] += 0.2
    hooks.alive()
    hooks.stopping()
    hooks.fatal(RuntimeError("disk\nfull"))
    assert [sock.recv(4096) for _ in range(3)] == [
        b"WATCHDOG=1",
        b"STOPPING=1\nSTATUS=stopping",
        b"STATUS=failed: disk full",
    ]
    assert hooks.sent == ["READY=1", "WATCHDOG=1", "STOPPING=1", "STATUS=failed: disk full"]


def _tls_data_dir(data: Path) -> None:
    """A data directory whose API serves TLS 1.3 with development certificates made by the
    gateway itself (`certs init`: pycryptodome only, no cryptography in the binary)."""
    folder = data.parent / "certs"
    made = subprocess.run(
        [*_gateway_cmd(), "certs", "init", str(folder), "--device-id", "gw-1"],
        capture_output=True,
        text=True,
        env=_cache_env(data.parent),
        check=False,
    )
    assert made.returncode == 0, made.stderr
    certs = {
        "device_cert": folder / "device.crt",
        "device_key": folder / "device.key",
        "ca_cert": folder / "ca.crt",
    }
    data.mkdir(parents=True)
    (data / "edge-config.yaml").write_text("api: {tls: true}\n")
    (data / "edge-security.yaml").write_text(
        "encryption:\n  communication:\n    enabled: true\n    protocol: TLS 1.3\n"
        f"    certificate_path: {certs['device_cert']}\n    key_path: {certs['device_key']}\n"
        f"    ca_path: {certs['ca_cert']}\n"
    )


@pytest.mark.slow
@pytest.mark.parametrize("tls", [False, True], ids=["http", "tls"])
def test_run_reports_ready_watchdog_and_stopping_to_systemd(
    tmp_path: Path, notify_socket: tuple[socket.socket, str], tls: bool
) -> None:
    sock, path = notify_socket
    data = tmp_path / "d"
    if tls:
        _tls_data_dir(data)
    env = {**_cache_env(tmp_path), "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"}
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen(
        [*_gateway_cmd(), "--data-dir", str(data), "run", "--port", "0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        ready = sock.recv(4096).decode()
        scheme = "https" if tls else "http"
        assert ready.startswith(f"READY=1\nSTATUS=API on {scheme}://127.0.0.1:"), ready
        port = int(ready.rsplit(":", 1)[1])
        if tls:
            import ssl
            import urllib.request

            context = ssl.create_default_context(cafile=str(tmp_path / "certs" / "ca.crt"))
            try:
                urllib.request.urlopen(f"https://127.0.0.1:{port}/health", context=context)
            except urllib.error.HTTPError as err:
                assert err.code in (401, 503)
        else:
            assert http("GET", f"http://127.0.0.1:{port}/health")[0] in (200, 401)
        assert [sock.recv(4096) for _ in range(2)] == [b"WATCHDOG=1", b"WATCHDOG=1"]
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
        err = proc.stderr.read().decode() if proc.stderr else ""
    messages = []
    sock.settimeout(1)
    try:
        while True:
            messages.append(sock.recv(4096))
    except TimeoutError:
        pass
    assert rc == 0, err
    assert b"STOPPING=1\nSTATUS=stopping" in messages, messages


# -- the binary ----------------------------------------------------------------------------


def test_edge_min_cmd_is_the_binary_when_set() -> None:
    want = [str(Path(BIN).resolve())] if BIN else [sys.executable, "-m", "edge_min.cli"]
    assert edge_min_cmd() == want


@needs_binary
@pytest.mark.slow
def test_binary_version_and_cached_unpack(tmp_path: Path) -> None:
    env = _cache_env(tmp_path)
    t0 = time.monotonic()
    first = subprocess.run([BIN or "", "version"], env=env, capture_output=True, text=True)
    t1 = time.monotonic()
    unpacked = list((tmp_path / "cache" / "edge-min").iterdir())
    # One fixed directory named by version and build digest, complete, nothing partial.
    assert [p.name.split("-")[0] for p in unpacked] == [__version__], unpacked
    marker = unpacked[0] / ".complete"
    stamp = marker.stat().st_mtime_ns
    again = subprocess.run([BIN or "", "version"], env=env, capture_output=True, text=True)
    t2 = time.monotonic()
    assert first.stdout.strip() == again.stdout.strip() == f"edge-min {__version__}", first
    assert marker.stat().st_mtime_ns == stamp  # reused, not unpacked again
    assert list((tmp_path / "cache" / "edge-min").iterdir()) == unpacked
    print(f"\nversion: first start {t1 - t0:.2f}s (unpacks), cached {t2 - t1:.2f}s")


@needs_binary
@pytest.mark.slow
def test_binary_contains_every_module_of_the_source_tree() -> None:
    names = required_modules()
    assert len(names) > 100  # edge_min's own modules are in the list, found by walking it
    res = subprocess.run([BIN or "", "__modules__", *names], capture_output=True, text=True)
    missing = [line for line in res.stdout.splitlines() if not line.endswith(": ok")]
    assert res.returncode == 0 and not missing, "\n".join(missing) or res.stderr
    assert len(res.stdout.splitlines()) == len(names)


@needs_binary
@pytest.mark.slow
def test_binary_module_check_reports_what_it_leaves_out() -> None:
    # The check must be able to fail: the binary leaves these out on purpose.
    res = subprocess.run([BIN or "", "__modules__", *LEFT_OUT], capture_output=True, text=True)
    assert res.returncode == 1
    assert all(": missing: " in line for line in res.stdout.splitlines()), res.stdout
    if ONNX_BIN:
        res = subprocess.run(
            [BIN or "", "__modules__", "numpy", "onnxruntime"], capture_output=True, text=True
        )
        assert res.returncode == 0 and res.stdout.count(": ok") == 2, res.stdout + res.stderr


@pytest.mark.slow
def test_reads_its_package_data(tmp_path: Path) -> None:
    # defaults/*.yaml through importlib.resources, then checked by the YAML loader.
    assert run_cli("init", str(tmp_path / "cfg")).returncode == 0
    files = sorted(str(p) for p in (tmp_path / "cfg").iterdir())
    spec = sorted(str(p) for p in SPEC_CONFIGS.glob("*.yaml"))
    res = run_cli("config", "check", *files, *spec)
    assert res.returncode == 0 and res.stdout.count(": OK") == 10, res.stdout + res.stderr


@pytest.mark.slow
def test_runs_a_workflow_through_command_and_python_agents(
    tmp_path: Path, runtime_process: Any
) -> None:
    data = tmp_path / "data"
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "upper.yaml").write_text(SHELL_AGENT)
    (agents / "stats.yaml").write_text(PY_AGENT)
    (agents / "stats_agent.py").write_text(PY_MODULE)
    (tmp_path / "pipeline.yaml").write_text(PIPELINE)
    for argv in (
        ("agent", "add", str(agents / "upper.yaml")),
        ("agent", "add", str(agents / "stats.yaml")),
        ("workflow", "add", str(tmp_path / "pipeline.yaml")),
    ):
        done = run_cli("--data-dir", str(data), *argv)
        assert done.returncode == 0, done.stderr
    rp = runtime_process(data)
    status, body = http(
        "POST", rp.url + "/workflows/pipeline/run", {"text": "hi", "csv": "1\n2\n6\n"}
    )
    assert status == 202, body
    execution = body["execution_id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, view = http("GET", f"{rp.url}/executions/{execution}")
        if view.get("status") in ("succeeded", "failed"):
            break
        time.sleep(0.2)
    assert view["status"] == "succeeded", json.dumps(view, indent=1)
    stats = {s["step"]: s for s in view["steps"]}["stats"]["output"]
    assert (stats["mean"], stats["upper"], stats["frozen"]) == (3.0, "HI", False)
    # Under the binary the worker is the unpacked program itself: there is no python.
    worker = Path(stats["executable"])
    assert worker.name == (Path(BIN).name if BIN else Path(sys.executable).resolve().name)
    if BIN:
        assert worker != Path(BIN).resolve() and (worker.parent / ".complete").is_file()
        # And the process we started is the runtime: the launcher exec'd it, no parent stays.
        assert Path(os.readlink(f"/proc/{rp.proc.pid}/exe")) == worker
    assert rp.stop() == 0


@needs_binary
@pytest.mark.skipif(ONNX_BIN, reason="the -onnx binary has onnxruntime (test_feedback_triage)")
@pytest.mark.slow
def test_binary_onnx_agent_reports_the_missing_dependency(tmp_path: Path) -> None:
    config = json.loads((ROOT / "tests" / "fixtures" / "agents" / "onnx-agent.json").read_text())
    model = ROOT / "models" / "out" / "text-classifier-lite.onnx"  # make models builds it
    config["model"]["path"] = str(model)
    agent = tmp_path / "onnx-agent.json"
    agent.write_text(json.dumps(config))
    res = run_cli("--data-dir", str(tmp_path / "d"), "agent", "add", str(agent))
    assert res.returncode == 2, res.stdout + res.stderr
    # A binary can't pip install: it names the variant that carries onnxruntime.
    assert "onnxruntime" in res.stderr and "-onnx binary" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.slow
def test_kill9_of_the_started_process_then_restart_resumes(
    tmp_path: Path, runtime_process: Any
) -> None:
    data = tmp_path / "data"
    (tmp_path / "slow.yaml").write_text(SLOW_AGENT)
    (tmp_path / "slowflow.yaml").write_text(SLOW_FLOW)
    for kind, name in (("agent", "slow.yaml"), ("workflow", "slowflow.yaml")):
        done = run_cli("--data-dir", str(data), kind, "add", str(tmp_path / name))
        assert done.returncode == 0, done.stderr
    rp = runtime_process(data)
    status, body = http("POST", rp.url + "/workflows/slowflow/run", {"n": 1})
    assert status == 202, body
    execution = body["execution_id"]
    time.sleep(1.0)  # step one is running in its worker
    rp.kill9()
    # The started process is the runtime (under the binary too: the launcher exec'd it); its
    # worker dies with it, the data dir's lock is free at once, and a new runtime finishes
    # the run.
    rp2 = runtime_process(data)
    deadline = time.monotonic() + 60
    view: dict[str, Any] = {}
    while time.monotonic() < deadline:
        _, view = http("GET", f"{rp2.url}/executions/{execution}")
        if view.get("status") in ("succeeded", "failed"):
            break
        time.sleep(0.2)
    assert view.get("status") == "succeeded", view
    assert {s["step"]: s["output"] for s in view["steps"]} == {"one": {"n": 1}, "two": {"n": 1}}
    assert rp2.stop() == 0


@needs_binary
@pytest.mark.slow
def test_binary_cached_start_to_health(tmp_path: Path) -> None:
    env = _cache_env(tmp_path)
    times = []
    for attempt in range(2):
        port = free_port()
        t0 = time.monotonic()
        proc = subprocess.Popen(
            [BIN or "", "--data-dir", str(tmp_path / f"d{attempt}"), "run", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            while time.monotonic() - t0 < 30:
                try:
                    if http("GET", f"http://127.0.0.1:{port}/health", timeout=1)[0] in (200, 401):
                        break
                except OSError:
                    time.sleep(0.02)
            times.append(time.monotonic() - t0)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
    print(f"\nstart to /health: first {times[0]:.2f}s, cached {times[1]:.2f}s")
    assert times[1] < 10


# -- secure boot: the signed launcher (docs/security.md) -----------------------------------


def _wait_health(port: int, proc: subprocess.Popen[bytes], limit: float = 30) -> bool:
    started = time.monotonic()
    while time.monotonic() - started < limit and proc.poll() is None:
        try:
            if http("GET", f"http://127.0.0.1:{port}/health", timeout=1)[0] in (200, 401):
                return True
        except OSError:
            time.sleep(0.05)
    return False


@needs_binary
@pytest.mark.slow
def test_binary_signature_is_checked_on_every_start(tmp_path: Path) -> None:
    env = _cache_env(tmp_path)
    times = []
    for _ in range(5):
        t0 = time.monotonic()
        res = subprocess.run(
            [BIN or "", "version"], env={**env, "EDGE_MIN_VERIFY_ONLY": "1"}, capture_output=True
        )
        times.append(time.monotonic() - t0)
        assert res.returncode == 0 and b"signature good, signed by ed25519:" in res.stdout, res
    assert not (tmp_path / "cache").exists()  # verified only: nothing unpacked
    size = Path(BIN or "").stat().st_size
    print(f"\nsignature check of {size / 1e6:.1f} MB: best {min(times) * 1000:.0f} ms of 5")
    # The same file with one payload byte flipped: refused, nothing unpacked or run.
    data = bytearray(Path(BIN or "").read_bytes())
    data[len(data) // 2] ^= 0x01
    bad = tmp_path / "tampered"
    bad.write_bytes(bytes(data))
    bad.chmod(0o755)
    res = subprocess.run([str(bad), "version"], env=env, capture_output=True, text=True)
    assert res.returncode == 1 and "signature check failed" in res.stderr, res.stderr
    assert "download it again from" in res.stderr and res.stdout == ""
    assert not (tmp_path / "cache").exists()


@needs_binary
@pytest.mark.slow
def test_binary_starts_with_secure_boot_true_and_its_init_asks_for_it(tmp_path: Path) -> None:
    env = _cache_env(tmp_path)
    env.pop("EDGE_MIN_BOOT_VERIFIED", None)
    data = tmp_path / "d"
    assert subprocess.run([BIN or "", "init", str(data)], env=env).returncode == 0
    config = (data / "edge-config.yaml").read_text()
    assert "  secure_boot: true" in config, config  # the binary's init: its launcher verifies
    port = free_port()
    proc = subprocess.Popen(
        [BIN or "", "--data-dir", str(data), "run", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert _wait_health(port, proc), proc.stderr.read() if proc.stderr else ""
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    # The unpacked program started directly, not by the launcher: nothing verified it.
    unpacked = next((tmp_path / "cache" / "edge-min").iterdir()) / Path(BIN or "").name
    res = subprocess.run(
        [str(unpacked), "--data-dir", str(data), "run", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode != 0
    assert "security.secure_boot is true, but the boot chain cannot be verified" in res.stderr
    assert "no signed launcher" in res.stderr, res.stderr


# -- start-up pages given back (targets/gateway/memory.py) -------------------------------

MAPS = """\
55d0c0000000-55d0c0100000 r--p 00000000 08:01 42  /opt/edge/edge-min
55d0c0100000-55d0c0f00000 r-xp 00100000 08:01 42  /opt/edge/edge-min
55d0c0f00000-55d0c1000000 rw-p 00f00000 08:01 42  /opt/edge/edge-min
7f0000000000-7f0000100000 r-xp 00000000 08:01 43  /usr/lib/libc.so.6
7f0000200000-7f0000300000 r--p 00000000 08:01 44  /opt/edge/edge-min (deleted)
"""


def test_program_mappings_are_the_read_only_ones_of_that_file() -> None:
    from targets.gateway.memory import program_mappings

    # Writable data (rw-p) holds state and is never paged out; other files are not ours.
    assert program_mappings(MAPS.replace("  /", " /"), "/opt/edge/edge-min") == [
        (0x55D0C0000000, 0x100000),
        (0x55D0C0100000, 0xE00000),
    ]
    assert program_mappings("", "/x") == []


TRIM_CHILD = """\
import mmap, os, sys
sys.path.insert(0, sys.argv[1])
from targets.gateway.memory import trim

path = sys.argv[2]
def rss_of(path):
    total, ours = 0, False
    for line in open("/proc/self/smaps"):
        first = line.split()[0]
        if "-" in first and not first.endswith(":"):
            ours = line.rstrip().endswith(path)
        elif ours and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total

with open(path, "rb") as fh:
    mapped = mmap.mmap(fh.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)
touched = sum(mapped[i] for i in range(0, len(mapped), 4096))
before = rss_of(path)
advised = trim(path)
print(before, rss_of(path), advised)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise(MADV_PAGEOUT) is Linux")
def test_trim_pages_out_the_program_for_real(tmp_path: Path) -> None:
    # A real process maps a file read-only, touches every page, then trims that file's
    # pages (a file only it maps: the kernel never pages out pages other processes share).
    data = tmp_path / "program.bin"
    data.write_bytes(os.urandom(4 << 20))
    res = subprocess.run(
        [sys.executable, "-c", TRIM_CHILD, str(ROOT), str(data)], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    before, after, advised = (int(x) for x in res.stdout.split())
    assert advised == 4 << 20 and before >= 4000, res.stdout
    assert after < before / 4, res.stdout


@needs_binary
@pytest.mark.slow
def test_binary_run_gives_back_its_start_up_pages(tmp_path: Path) -> None:
    def program_rss(pid: int) -> int:
        exe = os.path.realpath(f"/proc/{pid}/exe")
        total, ours = 0, False
        for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
            if "-" in line.split()[0] and not line.endswith(":"):
                ours = line.endswith(exe)
            elif ours and line.startswith("Rss:"):
                total += int(line.split()[1])
        return total

    port = free_port()
    proc = subprocess.Popen(
        [BIN or "", "--data-dir", str(tmp_path / "d"), "run", "--port", str(port)],
        env={**_cache_env(tmp_path), "EDGE_MIN_TRIM": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if http("GET", f"http://127.0.0.1:{port}/health", timeout=1)[0] in (200, 401):
                    break
            except OSError:
                time.sleep(0.05)
        started = program_rss(proc.pid)
        time.sleep(8)  # trimmed 5 s after /health first answers
        trimmed = program_rss(proc.pid)
        assert http("GET", f"http://127.0.0.1:{port}/health")[0] == 200  # still serves
        print(f"\nprogram pages resident: {started} KB at start, {trimmed} KB after trim")
        assert trimmed < started / 2
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
