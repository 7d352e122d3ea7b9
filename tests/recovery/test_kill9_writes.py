"""kill -9 of a real `edge-min run` in the middle of writes loses nothing that was committed."""

from __future__ import annotations

import http.client as http_client
import random
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import http

WORKFLOW = """
name: churn
version: 1.0.0
steps:
  - id: a
    agent: noop
    input: "${input}"
  - id: b
    agent: echo
    needs: [a]
    input: "${steps.a.output}"
"""


@pytest.mark.slow
def test_kill9_during_writes_keeps_every_acknowledged_row(
    runtime_process: Any, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    acked: list[str] = []
    rng = random.Random(7)
    for round_no in range(3):
        rp = runtime_process(data)
        if round_no == 0:
            status, body = http("POST", rp.url + "/workflows", WORKFLOW.encode())
            assert status == 201, body
        stop = threading.Event()

        def writer(rp: Any = rp, stop: threading.Event = stop) -> None:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    status, body = http(
                        "POST", rp.url + "/workflows/churn/run", {"n": n}, timeout=5
                    )
                except (OSError, http_client.HTTPException):  # the kill cut the reply
                    return
                if status == 202:
                    acked.append(body["execution_id"])

        threads = [threading.Thread(target=writer) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.5 + rng.random())
        rp.kill9()
        stop.set()
        for t in threads:
            t.join(10)
    assert len(acked) > 20
    db = data / "meta-agent-edge.db"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        ids = {r[0] for r in conn.execute("SELECT id FROM workflow_executions")}
        assert set(acked) <= ids, f"{len(set(acked) - ids)} acknowledged runs lost"
        # Every step row that says succeeded carries its output (committed together).
        bad = conn.execute(
            "SELECT count(*) FROM agent_executions WHERE status='succeeded' AND output IS NULL"
        ).fetchone()[0]
        assert bad == 0
    # A final clean start resumes everything to completion.
    rp = runtime_process(data)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, running = http("GET", rp.url + "/executions?status=running&limit=1000")
        _, queued = http("GET", rp.url + "/executions?status=queued&limit=1000")
        if not running and not queued:
            break
        time.sleep(0.2)
    _, failed = http("GET", rp.url + "/executions?status=failed&limit=1000")
    assert failed == []
    _, done = http("GET", rp.url + "/executions?status=succeeded&limit=100000")
    assert {e["id"] for e in done} >= set(acked)
    assert rp.stop() == 0
