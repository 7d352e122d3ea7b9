"""The aarch64 gateway binary (``make binary-arm64``) runs: under qemu-aarch64-static, here.

Runs when ``EDGE_MIN_BIN_ARM64`` names ``dist/edge-min-linux-aarch64`` (``make
test-binary-arm64`` sets it) and is skipped otherwise. The binary is an arm64 program linked
against Debian 12's glibc, so qemu loads its dynamic loader and libc from the arm64 root that
built it (``QEMU_LD_PREFIX``: ``$EDGE_MIN_ARM64_ROOT`` or ``.cache/arm64-root``). The
launcher execs the unpacked program, and the runtime starts each agent's worker from that
program again; those are new arm64 processes, which the kernel hands to qemu through
binfmt_misc (``build/arm64/binfmt.sh`` registers it). Everything here is emulated, so each
start costs seconds and the timeouts are generous.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_min import __version__
from targets.gateway.modules import EXCLUDED, required_modules
from tests.conftest import ROOT, free_port, http

BIN = os.environ.get("EDGE_MIN_BIN_ARM64")
ARM64_ROOT = Path(os.environ.get("EDGE_MIN_ARM64_ROOT") or ROOT / ".cache" / "arm64-root")
BINFMT = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
EM_AARCH64 = 183  # e_machine of an ELF file for arm64
#: dist/edge-min-linux-aarch64-onnx (make test-binary-arm64-onnx) carries onnxruntime 1.27.
ONNX_BIN = bool(BIN) and str(BIN).endswith("-onnx")
MODEL_AGENT = ROOT / "models" / "text-classifier-lite.yaml"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not BIN, reason="EDGE_MIN_BIN_ARM64 is not set (make test-binary-arm64 sets it)"
    ),
]

UPPER_AGENT = """\
name: upper
version: 1.0.0
type: edge
resources: {max_memory: 256MB, max_cpu: 1.0, max_storage: 10MB}
runtime: {executor: command, command: "tr a-z A-Z", env: {QEMU_LD_PREFIX: "%s"}}
input: {format: json}
output: {format: json}
"""
FLOW = """\
name: shout
version: 1.0.0
steps:
  - {id: up, agent: upper, input: "${input.text}"}
"""


@pytest.fixture(scope="module")
def emulated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment that runs the binary under qemu; fails with the fix if it can't."""
    if shutil.which("qemu-aarch64-static") is None:
        pytest.fail("qemu-aarch64-static not found: apt-get install qemu-user-static")
    if not BINFMT.exists() or not BINFMT.read_text().startswith("enabled"):
        pytest.fail(f"{BINFMT} is not enabled: run build/arm64/binfmt.sh (as root)")
    if not (ARM64_ROOT / "lib" / "ld-linux-aarch64.so.1").exists():
        pytest.fail(f"no arm64 root at {ARM64_ROOT}: run build/arm64/make_root.sh")
    cache = tmp_path_factory.mktemp("xdg-cache")
    # One unpack cache for the module: the first start unpacks, the others reuse it.
    return {**os.environ, "QEMU_LD_PREFIX": str(ARM64_ROOT), "XDG_CACHE_HOME": str(cache)}


def run(env: dict[str, str], *argv: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """The aarch64 binary, run under qemu-aarch64-static."""
    return subprocess.run(
        ["qemu-aarch64-static", str(BIN), *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def runtime(tmp_path: Path, emulated: dict[str, str]) -> Iterator[Any]:
    """Start ``edge-min run`` under qemu on ``data``; yields (start, url, token)."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(data: Path) -> tuple[str, str]:
        issued = run(emulated, "--data-dir", str(data), "token", "issue", "--role", "admin")
        assert issued.returncode == 0, issued.stderr
        port = free_port()
        log_path = tmp_path / f"runtime-{port}.log"
        log = log_path.open("wb")
        proc = subprocess.Popen(
            ["qemu-aarch64-static", str(BIN), "--data-dir", str(data), "run", "--port", str(port)],
            env=emulated,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert proc.poll() is None, log_path.read_text()
            try:
                if http("GET", url + "/health", timeout=2)[0] == 200:
                    return url, issued.stdout.strip()
            except OSError:
                time.sleep(0.2)
        raise AssertionError("no /health in 180s: " + log_path.read_text())

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_binary_is_an_aarch64_elf_executable() -> None:
    header = Path(BIN or "").read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and header[4] == 2, "not a 64-bit ELF file"
    assert int.from_bytes(header[18:20], "little") == EM_AARCH64, header


def test_version_under_qemu(emulated: dict[str, str]) -> None:
    res = run(emulated, "version")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"edge-min {__version__}"


def test_contains_every_module_of_the_source_tree(emulated: dict[str, str]) -> None:
    names = required_modules()
    res = run(emulated, "__modules__", *names, timeout=600)
    missing = [line for line in res.stdout.splitlines() if not line.endswith(": ok")]
    assert res.returncode == 0 and not missing, "\n".join(missing) or res.stderr
    assert len(res.stdout.splitlines()) == len(names)


def test_runs_a_workflow_with_a_command_agent_and_answers_health(
    tmp_path: Path, emulated: dict[str, str], runtime: Any
) -> None:
    data = tmp_path / "data"
    # A worker gets a minimal environment, not the runtime's; on a real arm64 gateway the
    # loader is in /lib, here qemu finds it through the agent's own runtime.env.
    (tmp_path / "upper.yaml").write_text(UPPER_AGENT % ARM64_ROOT)
    (tmp_path / "shout.yaml").write_text(FLOW)
    for kind, name in (("agent", "upper.yaml"), ("workflow", "shout.yaml")):
        done = run(emulated, "--data-dir", str(data), kind, "add", str(tmp_path / name))
        assert done.returncode == 0, done.stderr
    url, token = runtime(data)
    status, health = http("GET", url + "/health", token=token)
    assert status == 200, health
    status, body = http("POST", url + "/workflows/shout/run", {"text": "arm64 ok"}, token=token)
    assert status == 202, body
    view: dict[str, Any] = {}
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        _, view = http("GET", f"{url}/executions/{body['execution_id']}", token=token)
        if view.get("status") in ("succeeded", "failed"):
            break
        time.sleep(0.5)
    assert view.get("status") == "succeeded", view
    # The output went through the command agent: a worker process started by the binary.
    assert {s["step"]: s["output"] for s in view["steps"]} == {"up": "ARM64 OK"}, view


def test_module_check_reports_what_this_variant_leaves_out(emulated: dict[str, str]) -> None:
    left_out = [m for m in EXCLUDED if not (ONNX_BIN and m in ("numpy", "onnxruntime"))]
    res = run(emulated, "__modules__", *left_out)
    assert res.returncode == 1, res.stdout + res.stderr
    assert all(": missing: " in line for line in res.stdout.splitlines()), res.stdout
    if ONNX_BIN:
        res = run(emulated, "__modules__", "numpy", "onnxruntime", timeout=600)
        assert res.returncode == 0 and res.stdout.count(": ok") == 2, res.stdout + res.stderr


@pytest.mark.skipif(not ONNX_BIN, reason="the base binary has no onnxruntime (the -onnx one has)")
def test_onnx_agent_classifies_under_qemu(tmp_path: Path, emulated: dict[str, str]) -> None:
    # text-classifier-lite (int8, make models) through the -onnx binary's own worker process.
    import yaml

    config = yaml.safe_load(MODEL_AGENT.read_text())
    config["model"]["path"] = str(MODEL_AGENT.parent / config["model"]["path"])
    config["runtime"]["env"] = {"QEMU_LD_PREFIX": str(ARM64_ROOT)}
    config["resources"]["max_memory"] = "1GB"  # qemu's own mappings count against the limit
    agent = tmp_path / "classifier.yaml"
    agent.write_text(yaml.safe_dump(config))
    data = tmp_path / "data"
    added = run(emulated, "--data-dir", str(data), "agent", "add", str(agent))
    assert added.returncode == 0, added.stderr
    res = run(
        emulated,
        "--data-dir",
        str(data),
        "agent",
        "run",
        "text-classifier-lite",
        "--input",
        '"terrible update, the gateway keeps crashing"',
        timeout=600,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    out = json.loads(res.stdout)
    assert out["label"] == "negative", out
    assert set(out["scores"]) == {"positive", "negative", "neutral"}
