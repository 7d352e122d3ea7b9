"""A real `edge-min run` syncs with a real `edge-min central serve` on its schedule."""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.conftest import free_port, http

WORKFLOW = "name: synced\nversion: '1'\nsteps: [{id: s, agent: noop}]\n"


def test_the_runtime_pushes_on_schedule_and_reports_success(
    tmp_path: Path, runtime_process: Any
) -> None:
    key = tmp_path / "sync.key"
    key.write_bytes(secrets.token_bytes(32))
    port = free_port()
    central = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_min.cli",
            "--data-dir",
            str(tmp_path / "central"),
            "central",
            "serve",
            "--port",
            str(port),
            "--sync-key-file",
            str(key),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert central.stdout is not None and "serving on" in central.stdout.readline()
        data = tmp_path / "edge"
        (data / "keys").mkdir(parents=True)
        (data / "keys" / "sync.key").write_bytes(key.read_bytes())
        (data / "edge-config.yaml").write_text(
            f"sync: {{central_url: 'http://127.0.0.1:{port}'}}\n"
        )
        (data / "sync-config.yaml").write_text(
            "sync:\n  schedule: {workflows: 1, workflow_executions: 1, agents: 1, "
            "agent_executions: 1}\n"
        )
        rp = runtime_process(data)
        status, body = http("POST", rp.url + "/workflows", WORKFLOW.encode())
        assert status == 201, body
        run = http("POST", rp.url + "/workflows/synced/run", {"x": 1})[1]["execution_id"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            # /sync/status is open like /health: the spec's own check curls it without a token.
            with urllib.request.urlopen(rp.url + "/sync/status", timeout=5) as resp:
                doc = json.loads(resp.read())
            pending = sum(e["pending"] or 0 for e in doc["entities"].values())
            if doc["status"] == "success" and pending == 0:
                break
            time.sleep(0.3)
        assert doc["status"] == "success", doc
        assert pending == 0, doc
        # Central holds the workflow and the run (pulled back over the wire, decrypted).
        from edge_min.sync.protocol import decode_frame

        def pull(entity: str) -> list[dict[str, Any]]:
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/api/sync/pull?entity={entity}&after=0&limit=100",
                headers={"X-Edge-Node": "observer"},
            )
            with urllib.request.urlopen(req, timeout=5) as resp:
                return list(decode_frame(resp.read(), key=key.read_bytes())[1])

        assert [r["row"]["name"] for r in pull("workflows")] == ["synced"]
        assert run in {r["id"] for r in pull("workflow_executions")}
        # edge-min sync --now asks the running runtime to sync at once and reports.
        from tests.conftest import run_cli

        res = run_cli("--data-dir", str(data), "sync", "--now")
        assert res.returncode == 0, res.stdout + res.stderr
        assert "sync: success" in res.stdout
        assert rp.stop() == 0
    finally:
        central.send_signal(signal.SIGTERM)
        central.wait(15)
