"""Shared fixtures: a CLI runner in-process, and a real `edge-min run` subprocess."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPEC_CONFIGS = ROOT / "tests" / "fixtures" / "spec_configs"


def pytest_sessionstart(session: pytest.Session) -> None:
    """Sign the source tree's program manifest (boot_integrity) as `make` does: it is edited."""
    if os.environ.get("EDGE_MIN_BIN"):
        return  # the binary's manifest is written by its build
    from edge_min import __version__
    from edge_min.clock import iso
    from edge_min.security.manifest import load_build_key, this_program, write_manifest

    seed = load_build_key(ROOT / ".cache" / "build-key.ed25519")
    write_manifest(this_program(), seed, version=__version__, created_at=iso(time.time()))


def edge_min_cmd() -> list[str]:
    """How to run edge-min: the built binary when $EDGE_MIN_BIN names one, else the source tree."""
    binary = os.environ.get("EDGE_MIN_BIN")
    if binary:
        return [str(Path(binary).resolve())]
    return [sys.executable, "-m", "edge_min.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Bearer tokens of the runtimes the tests started, by "host:port": http() sends the right one,
# so tests read as plain HTTP calls while the API keeps its default-deny access control.
TOKENS: dict[str, str] = {}


def http(
    method: str, url: str, body: Any = None, timeout: float = 10, token: str | None = None
) -> tuple[int, Any]:
    """A real HTTP request; returns (status, parsed JSON or text)."""
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    token = token or TOKENS.get(urllib.parse.urlsplit(url).netloc)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as err:
        raw, status = err.read(), err.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode()


class RuntimeProcess:
    """A real `edge-min run` in a subprocess on a free port."""

    def __init__(self, data_dir: Path, extra: list[str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data_dir.parent / f"runtime-{self.port}.log"
        data_dir.mkdir(parents=True, exist_ok=True)
        issued = subprocess.run(
            [
                *edge_min_cmd(),
                "--data-dir",
                str(data_dir),
                *(extra or []),
                "token",
                "issue",
                "--role",
                "admin",
                "--ttl",
                "1h",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        self.token = issued.stdout.strip()
        TOKENS[f"127.0.0.1:{self.port}"] = self.token
        self.proc = subprocess.Popen(
            [
                *edge_min_cmd(),
                "--data-dir",
                str(data_dir),
                *(extra or []),
                "run",
                "--port",
                str(self.port),
            ],
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def wait_ready(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"runtime exited {self.proc.returncode}: {self.log.read_text()}"
                )
            try:
                status, _ = http("GET", self.url + "/health", timeout=1)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"runtime not ready in {timeout}s: {self.log.read_text()}")

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        return int(self.proc.returncode)


@pytest.fixture
def runtime_process(tmp_path: Path) -> Iterator[Any]:
    started: list[RuntimeProcess] = []

    def start(data_dir: Path | None = None, extra: list[str] | None = None) -> RuntimeProcess:
        rp = RuntimeProcess(data_dir or tmp_path / "data", extra)
        started.append(rp)
        rp.wait_ready()
        return rp

    yield start
    for rp in started:
        if rp.proc.poll() is None:
            rp.proc.kill()
            rp.proc.wait()


def run_cli(
    *argv: str, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess."""
    return subprocess.run(
        [*edge_min_cmd(), *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )
