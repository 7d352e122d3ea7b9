"""A first `edge-min run --local-central` (what `make run` does) syncs with nothing set up.

The runtime's default ``sync.central_url`` and ``edge-min central serve``'s default port are
the same address, and ``--local-central`` serves a central at a ``central_url`` on this
machine, with this device's key, so ``/sync/status`` reaches ``success`` and a workflow added
through the API arrives at central. The tests put central_url on a free port (the default
8765 behaves the same, and ``make test-fresh`` runs ``make run`` on it), so parallel runs on
one machine do not meet.
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


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _edge_data(tmp_path: Path, central_url: str) -> Path:
    data = tmp_path / "edge-data"
    data.mkdir()
    (data / "edge-config.yaml").write_text(f"sync: {{central_url: '{central_url}'}}\n")
    return data


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


def test_a_first_run_syncs_within_a_minute(tmp_path: Path) -> None:
    central_port = free_port()
    run = FirstRun(_edge_data(tmp_path, f"http://127.0.0.1:{central_port}"))
    try:
        started = time.monotonic()
        run.wait_sync(60)
        took = time.monotonic() - started
        print(f"first successful sync {took:.1f}s after start")
        log = run.log.read_text()
        assert f"local central on http://127.0.0.1:{central_port}" in log
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
    assert not _answers(central_port)


@pytest.mark.parametrize(
    "url",
    ["https://127.0.0.1:{port}", "http://central.example.com:{port}", "http://127.0.0.1:{port}/x"],
)
def test_a_central_url_elsewhere_starts_no_local_central(tmp_path: Path, url: str) -> None:
    from edge_min.central.local import start_local_central
    from edge_min.config import parse_config

    port = free_port()
    config = parse_config({"sync": {"central_url": url.format(port=port)}}, source="t")
    assert start_local_central(config, tmp_path) is None
    assert not _answers(port)
    assert not (tmp_path / "central").exists()
    assert not (tmp_path / "keys").exists()


def test_a_taken_port_is_left_to_whoever_holds_it(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        run = FirstRun(_edge_data(tmp_path, f"http://127.0.0.1:{port}"))
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    if run.get("/health")[0] == 200:
                        break
                except OSError:
                    time.sleep(0.1)
            assert run.get("/health")[0] == 200, run.log.read_text()
            assert f"127.0.0.1:{port} is already in use" in run.log.read_text()
        finally:
            assert run.stop() == 0, run.log.read_text()


def test_make_run_asks_for_the_local_central() -> None:
    """The README's run command is the one these tests exercise."""
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    recipe = makefile.split("\nrun:", 1)[1].split("\n\n", 1)[0]
    assert "run --local-central" in recipe, recipe
