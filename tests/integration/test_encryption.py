"""Encryption at rest with a real `edge-min run` and the real CLI in subprocesses."""

from __future__ import annotations

import json
import sqlite3
import stat
import time
from pathlib import Path
from typing import Any

from tests.conftest import http, run_cli

MARK = "MARKER-c0ffee-51f2"
WORKFLOW = """
name: secret
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


def _files_with(root: Path, needle: str) -> list[str]:
    found = []
    for p in root.rglob("*"):
        if p.is_file() and needle.encode() in p.read_bytes():
            found.append(str(p.relative_to(root)))
    return found


def _run_once(rp: Any, payload: Any) -> str:
    status, body = http("POST", rp.url + "/workflows/secret/run", payload)
    assert status == 202, body
    eid = str(body["execution_id"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        _, run = http("GET", f"{rp.url}/executions/{eid}")
        if run["status"] in ("succeeded", "failed"):
            assert run["status"] == "succeeded", run
            return eid
        time.sleep(0.05)
    raise AssertionError(f"run {eid} did not finish")


def _cli(data: Path, *argv: str) -> Any:
    return run_cli("--data-dir", str(data), *argv)


def _show(data: Path, eid: str) -> dict[str, Any]:
    res = _cli(data, "exec", "show", eid)
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout))


def test_a_marker_in_a_runs_input_and_output_is_in_no_file_but_exec_show_has_it(
    runtime_process: Any, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    rp = runtime_process(data)
    status, body = http("POST", rp.url + "/workflows", WORKFLOW.encode())
    assert status == 201, body
    eid = _run_once(rp, {"secret": MARK})
    shown = _show(data, eid)
    assert shown["input"] == {"secret": MARK}
    assert MARK in json.dumps(shown["output"]) and MARK in json.dumps(shown["steps"])
    backup = _cli(data, "backup")
    assert backup.returncode == 0, backup.stderr
    # While running (database, WAL, shm, backups, keys, logs, tmp) and after a clean stop.
    assert _files_with(data, MARK) == []
    assert rp.stop() == 0
    assert _files_with(data, MARK) == []
    assert MARK not in rp.log.read_text(errors="replace")
    for p in (
        data / "meta-agent-edge.db",
        data / "keys" / "storage.key",
        Path(backup.stdout.strip()),
    ):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    assert _show(data, eid)["input"] == {"secret": MARK}


def test_keys_status_rotate_restore_and_decrypt_all(runtime_process: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    rp = runtime_process(data)
    assert http("POST", rp.url + "/workflows", WORKFLOW.encode())[0] == 201
    eids = [_run_once(rp, {"n": i, "secret": MARK}) for i in range(3)]
    assert rp.stop() == 0

    status = json.loads(_cli(data, "keys", "status").stdout)
    assert status["enabled"] is True and status["plaintext_values"] == 0
    (first,) = status["keys"]
    assert first["state"] == "current" and first["values"] > 6
    pre = _cli(data, "backup")
    assert pre.returncode == 0, pre.stderr

    rotated = _cli(data, "keys", "rotate")
    assert rotated.returncode == 0, rotated.stderr
    assert f"deleted {first['id']}" in rotated.stdout
    (second,) = json.loads(_cli(data, "keys", "status").stdout)["keys"]
    assert second["id"] != first["id"] and second["values"] == first["values"]
    assert _show(data, eids[0])["input"] == {"n": 0, "secret": MARK}

    # The backup made before the rotation holds the old key: it restores and reads.
    restored = _cli(data, "restore", pre.stdout.strip())
    assert restored.returncode == 0, restored.stderr
    assert json.loads(_cli(data, "keys", "status").stdout)["keys"][0]["id"] == first["id"]
    assert _show(data, eids[2])["input"] == {"n": 2, "secret": MARK}

    # Switching encryption off is refused while encrypted rows exist ...
    (data / "edge-config.yaml").write_text("security:\n  encryption_enabled: false\n")
    refused = _cli(data, "exec", "show", eids[0])
    assert refused.returncode != 0 and "keys decrypt-all" in refused.stderr
    assert "Traceback" not in refused.stderr
    # ... until decrypt-all stores them as plaintext and deletes the keys.
    done = _cli(data, "keys", "decrypt-all")
    assert done.returncode == 0, done.stderr
    status = json.loads(_cli(data, "keys", "status").stdout)
    assert status["keys"] == [] and status["enabled"] is False
    assert _show(data, eids[1])["input"] == {"n": 1, "secret": MARK}
    with sqlite3.connect(data / "meta-agent-edge.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        inputs = [r[0] for r in conn.execute("SELECT input FROM workflow_executions")]
    assert all(MARK in v for v in inputs)


def test_decrypt_all_is_refused_while_encryption_is_on(tmp_path: Path) -> None:
    data = tmp_path / "data"
    res = _cli(data, "keys", "decrypt-all")
    assert res.returncode == 2 and "set it to false" in res.stderr


def test_switching_encryption_on_seals_an_existing_plaintext_database(
    runtime_process: Any, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "edge-config.yaml").write_text("security:\n  encryption_enabled: false\n")
    rp = runtime_process(data)
    assert http("POST", rp.url + "/workflows", WORKFLOW.encode())[0] == 201
    eid = _run_once(rp, {"secret": MARK})
    assert rp.stop() == 0
    assert _files_with(data, MARK)  # plaintext in the database (or its WAL)
    assert not (data / "keys" / "storage.key").exists()

    (data / "edge-config.yaml").write_text("security:\n  encryption_enabled: true\n")
    # An operator's edit: accepted, or tamper detection would lock the device down.
    accepted = _cli(data, "security", "accept", "--check", "filesystem_integrity", "--by", "op")
    assert accepted.returncode == 0, accepted.stderr
    rp = runtime_process(data)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = json.loads(_cli(data, "keys", "status").stdout)
        if status["plaintext_values"] == 0 and status["keys"]:
            break
        time.sleep(0.2)
    assert status["plaintext_values"] == 0, status
    assert _run_once(rp, {"again": MARK})
    assert rp.stop() == 0
    assert _files_with(data, MARK) == []
    assert _show(data, eid)["input"] == {"secret": MARK}
