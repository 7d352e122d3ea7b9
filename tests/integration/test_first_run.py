"""A first `edge-min run --local-central` (what `make run` does) syncs with nothing set up.

The runtime's default ``sync.central_url`` and ``edge-min central serve``'s default port are
the same address, and ``--local-central`` serves a central there, with this device's key, so
``/sync/status`` reaches ``success`` and a workflow added through the API arrives at central.
These tests bind the default central port 8765 itself: a test fails, naming the port, when
something else on this machine holds it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from edge_min.central.server import DEFAULT_PORT
from edge_min.config.runtime import DEFAULT_CENTRAL_URL
from tests.conftest import edge_min_cmd, free_port, http

WORKFLOW = "name: first\nversion: '1'\nsteps: [{id: s, agent: noop}]\n"


def test_the_runtime_and_central_defaults_meet() -> None:
    assert f"http://127.0.0.1:{DEFAULT_PORT}" == DEFAULT_CENTRAL_URL


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def default_port_free() -> None:
    assert _port_free(DEFAULT_PORT), (
        f"127.0.0.1:{DEFAULT_PORT} (the default central port) is taken on this machine; "
        "stop what listens there to run these tests"
    )


class FirstRun:
    """`edge-min --data-dir DATA run --local-central --port P` in a subprocess, with a token."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data.parent / "first-run.log"
        data.mkdir(parents=True, exist_ok=True)
        self.token = subprocess.run(
            [*edge_min_cmd(), "--data-dir", str(data), "token", "issue", "--role", "admin"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        self.proc = subprocess.Popen(
            [
                *edge_min_cmd(),
                "--data-dir",
                str(data),
                "run",
                "--local-central",
                "--port",
                str(self.port),
            ],
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def get(self, path: str) -> Any:
        return http("GET", self.url + path, token=self.token)

    def wait_sync(self, timeout: float, pending_zero: bool = False) -> dict[str, Any]:
        """Poll /sync/status until it says success (and nothing is pending, if asked)."""
        deadline = time.monotonic() + timeout
        doc: dict[str, Any] = {}
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                status, doc = self.get("/sync/status")
            except OSError:
                status = 0
            if status == 200 and doc.get("status") == "success":
                pending = sum(e["pending"] or 0 for e in doc["entities"].values())
                if not pending_zero or pending == 0:
                    return doc
            time.sleep(0.2)
        raise AssertionError(f"no successful sync in {timeout}s: {doc}\n{self.log.read_text()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


def _central_records(db: Path, entity: str) -> list[dict[str, Any]]:
    import sqlite3

    with sqlite3.connect(db) as conn:
        rows = conn.execute('SELECT "row" FROM records WHERE entity = ?', (entity,)).fetchall()
    return [json.loads(r[0]) for r in rows]


def test_a_first_run_syncs_within_a_minute(tmp_path: Path, default_port_free: None) -> None:
    run = FirstRun(tmp_path / "edge-data")
    try:
        started = time.monotonic()
        run.wait_sync(60)
        took = time.monotonic() - started
        print(f"first successful sync {took:.1f}s after start")
        log = run.log.read_text()
        assert f"local central on http://127.0.0.1:{DEFAULT_PORT}" in log
        # A workflow added through the API reaches the local central with the next sync.
        status, body = http("POST", run.url + "/workflows", WORKFLOW.encode(), token=run.token)
        assert status == 201, body
        status, body = http("POST", run.url + "/sync/now", b"", token=run.token)
        assert status == 202, body
        deadline = time.monotonic() + 30
        central_db = run.data / "central" / "central.db"
        while time.monotonic() < deadline:
            names = [r.get("name") for r in _central_records(central_db, "workflows")]
            if "first" in names:
                break
            time.sleep(0.2)
        assert names == ["first"], names
        # The central shares the device's key: the pushes were encrypted, and were accepted.
        assert (run.data / "keys" / "sync.key").stat().st_size in (32, 64)
    finally:
        assert run.stop() == 0, run.log.read_text()
    # The local central stops with the runtime.
    assert not _answers(DEFAULT_PORT)


def test_another_central_url_starts_no_local_central(
    tmp_path: Path, default_port_free: None
) -> None:
    data = tmp_path / "edge-data"
    data.mkdir()
    elsewhere = free_port()  # nothing listens there: the runtime is simply offline
    (data / "edge-config.yaml").write_text(
        f"sync: {{central_url: 'http://127.0.0.1:{elsewhere}'}}\n"
    )
    run = FirstRun(data)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if run.get("/health")[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        assert run.get("/health")[0] == 200, run.log.read_text()
        assert "no local central started" in run.log.read_text()
        assert not _answers(DEFAULT_PORT)
        assert not (data / "central").exists()
    finally:
        assert run.stop() == 0, run.log.read_text()


def test_a_taken_default_port_is_left_to_whoever_holds_it(
    tmp_path: Path, default_port_free: None
) -> None:
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", DEFAULT_PORT))
        holder.listen()
        run = FirstRun(tmp_path / "edge-data")
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    if run.get("/health")[0] == 200:
                        break
                except OSError:
                    time.sleep(0.1)
            assert run.get("/health")[0] == 200, run.log.read_text()
            assert f"127.0.0.1:{DEFAULT_PORT} is already in use" in run.log.read_text()
        finally:
            assert run.stop() == 0, run.log.read_text()


def test_make_run_asks_for_the_local_central() -> None:
    """The README's run command is the one these tests exercise."""
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    recipe = makefile.split("\nrun:", 1)[1].split("\n\n", 1)[0]
    assert "run --local-central" in recipe, recipe
