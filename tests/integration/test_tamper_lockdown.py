"""Tamper detection end to end: a real `edge-min run` subprocess, real files, real HTTP.

The program under test is a copy of the edge_min package with its own signed manifest (so a
test can change "the program" without touching the source tree); it runs from that copy
(``PYTHONPATH``, working directory outside the repository).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

import edge_min
from edge_min.config import load_config
from edge_min.runtime import Paths
from edge_min.security.atrest import open_device_store
from tests.conftest import free_port, http

INTERVAL = 1.0


class Device:
    """A copied program, its config and data dir; starts and stops `edge-min run`."""

    def __init__(self, tmp_path: Path, *, checks: tuple[str, ...]) -> None:
        self.tmp = tmp_path
        self.prog = tmp_path / "prog"
        shutil.copytree(
            Path(edge_min.__file__).parent,
            self.prog / "edge_min",
            ignore=shutil.ignore_patterns("__pycache__", "program-manifest.json"),
        )
        self.cfg = tmp_path / "cfg" / "edge-config.yaml"
        self.cfg.parent.mkdir()
        self.cfg.write_text("runtime:\n  offline_mode: never\n")
        listed = "".join(f"    - {c}\n" for c in checks)
        (self.cfg.parent / "edge-security.yaml").write_text(
            f"tamper_detection:\n  interval: {INTERVAL}\n  response: lockdown\n  checks:\n{listed}"
        )
        self.data = tmp_path / "data"
        self.env = {**os.environ, "PYTHONPATH": str(self.prog), "PYTHONUNBUFFERED": "1"}
        self.env.pop("EDGE_MIN_BUILD_KEYS", None)
        self.cli("security", "manifest", "--write", "--key", str(tmp_path / "build-key"))
        self.tokens = {
            role: self.cli("token", "issue", "--role", role).stdout.strip()
            for role in ("admin", "operator", "monitor")
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def cli(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "edge_min.cli", "--data-dir", str(self.data)]
        cmd += ["--config", str(self.cfg), *argv]
        done = subprocess.run(
            cmd, cwd=self.tmp, env=self.env, capture_output=True, text=True, timeout=60
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{argv} exited {done.returncode}: {done.stderr}")
        return done

    def start(self) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "edge_min.cli", "--data-dir", str(self.data)]
        cmd += ["--config", str(self.cfg), "run", "--port", str(port)]
        log = (self.tmp / "runtime.log").open("ab")
        self.proc = subprocess.Popen(
            cmd, cwd=self.tmp, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.tmp / "runtime.log").read_text()
            try:
                if self.call("GET", "/health", role="monitor")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("runtime not ready: " + (self.tmp / "runtime.log").read_text())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(20)

    def call(self, method: str, path: str, body: Any = None, role: str = "admin") -> Any:
        return http(method, self.url + path, body, token=self.tokens[role])

    def wait_state(self, state: str, within: float) -> float:
        started = time.monotonic()
        while time.monotonic() - started < within:
            status, view = self.call("GET", "/security/status", role="monitor")
            assert status == 200, view
            if view["state"] == state:
                return time.monotonic() - started
            time.sleep(0.05)
        raise AssertionError(f"not {state} within {within}s: {view}")


@pytest.fixture
def device(tmp_path: Path) -> Iterator[Any]:
    made: list[Device] = []

    def make(*checks: str) -> Device:
        made.append(Device(tmp_path, checks=checks))
        return made[-1]

    yield make
    for d in made:
        if d.proc is not None and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


WORKFLOW = "name: w\nversion: '1'\nsteps:\n  - {id: a, agent: echo}\n"


def test_a_changed_program_file_locks_down_across_a_restart_until_an_admin_unlocks(
    device: Any,
) -> None:
    d = device("boot_integrity", "filesystem_integrity", "hardware_integrity")
    d.start()
    assert d.call("GET", "/security/status", role="monitor")[1]["state"] == "ok"
    assert d.call("POST", "/workflows", WORKFLOW.encode())[0] == 201
    assert d.call("POST", "/workflows/w/run", {})[0] in (200, 201, 202)

    units = d.prog / "edge_min" / "units.py"
    original = units.read_text()
    units.write_text(original + "# patched\n")
    took = d.wait_state("locked_down", within=2 * INTERVAL + 1.5)
    assert took <= 2 * INTERVAL + 1.5
    status, view = d.call("GET", "/security/status", role="monitor")
    assert view["checks"]["boot_integrity"]["differences"] == ["changed: units.py"]
    assert view["lockdown"]["reason"].startswith("tamper detected: boot_integrity")

    status, body = d.call("POST", "/workflows/w/run", {}, role="operator")
    assert (status, body["error"]["code"]) == (423, "locked_down")
    assert d.call("POST", "/workflows", WORKFLOW.encode())[0] == 423
    # Nothing was running: the data keys are gone, so sealed reads are refused too.
    assert d.call("GET", "/security/status", role="monitor")[1]["keys_dropped"] is True
    status, body = d.call("GET", "/executions", role="monitor")
    assert (status, body["error"]["code"]) == (423, "keys_dropped")
    assert d.call("GET", "/status", role="monitor")[0] == 200  # plain reads still answer

    d.stop()
    d.start()  # a restart: still locked down
    assert d.call("GET", "/security/status", role="monitor")[1]["state"] == "locked_down"
    assert d.call("POST", "/workflows/w/run", {})[0] == 423

    for role in ("operator", "monitor"):
        status, body = d.call("POST", "/security/unlock", {}, role=role)
        assert (status, body["error"]["code"]) == (403, "forbidden")
    status, body = d.call("POST", "/security/unlock", {})  # the program still differs
    assert status == 400 and body["error"]["code"] == "tamper_error"
    units.write_text(original)  # reinstalled
    status, view = d.call("POST", "/security/unlock", {"by": "alice"})
    assert status == 200 and view["state"] == "ok" and view["lockdown"] is None
    assert d.call("POST", "/workflows/w/run", {})[0] in (200, 201, 202)
    d.stop()

    config = load_config(d.cfg)
    with open_device_store(config, Paths.resolve(config, d.data)) as store:
        rows = store.sync_log.list(entity_type="security")
    operations = [r["operation"] for r in rows]
    assert operations[:2] == ["tamper", "lockdown"]  # the restart logs the finding once more
    assert operations.count("lockdown") == 1 and operations[-1] == "unlock"
    assert "admin (token" in rows[-1]["details"]["by"] and "as alice" in rows[-1]["details"]["by"]


def test_a_changed_config_stops_a_running_run_at_its_step_boundary(device: Any) -> None:
    d = device("filesystem_integrity")
    agent = d.tmp / "slow.yaml"
    agent.write_text(
        "name: slow\nversion: 1.0.0\nruntime: {executor: command, command: 'sleep 2; cat'}\n"
        "input: {format: json}\noutput: {format: json}\n"
    )
    d.cli("agent", "add", str(agent))
    d.start()
    flow = "name: two\nversion: '1'\nsteps:\n  - {id: a, agent: slow}\n"
    flow += "  - {id: b, agent: echo, needs: [a]}\n"
    assert d.call("POST", "/workflows", flow.encode())[0] == 201
    status, run = d.call("POST", "/workflows/two/run", {"x": 1})
    assert status in (200, 201, 202), run
    time.sleep(0.5)  # step a is running
    d.cfg.write_text(d.cfg.read_text() + "# edited by hand, not accepted\n")
    d.wait_state("locked_down", within=2 * INTERVAL + 1.5)
    # Step a is in flight: the keys stay until it records its end and the run stops there.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        view = d.call("GET", "/security/status", role="monitor")[1]
        if view["keys_dropped"]:
            break
        time.sleep(0.1)
    assert view["keys_dropped"] is True, view
    status, body = d.call("GET", f"/executions/{run['execution_id']}", role="monitor")
    assert (status, body["error"]["code"]) == (423, "keys_dropped")
    locked_at = time.time()
    status, view = d.call("POST", "/security/unlock", {"by": "alice"})  # takes the new config
    assert status == 200 and view["state"] == "ok", view
    execution = d.call("GET", f"/executions/{run['execution_id']}", role="monitor")[1]
    assert execution["status"] == "cancelled", execution
    assert execution["output"]["reason"] == "locked_down"
    completed = datetime.fromisoformat(execution["completed_at"].replace("Z", "+00:00"))
    assert completed.timestamp() <= locked_at  # recorded during the lockdown, not after it
    steps = {s["step"]: s["status"] for s in execution["steps"]}
    assert steps == {"a": "succeeded", "b": "cancelled"}  # a finished; nothing after it


def test_agent_add_and_security_accept_remeasure_so_there_is_no_false_alarm(
    device: Any,
) -> None:
    d = device("filesystem_integrity", "hardware_integrity")
    d.start()
    script = d.tmp / "up.sh"
    script.write_text("cat\n")
    agent = d.tmp / "up.yaml"
    agent.write_text(
        "name: up\nversion: 1.0.0\nruntime: {executor: command, command: sh up.sh}\n"
        "input: {format: json}\noutput: {format: json}\n"
    )
    d.cli("agent", "add", str(agent))  # while the runtime checks every second
    time.sleep(3 * INTERVAL)
    view = d.call("GET", "/security/status", role="monitor")[1]
    assert view["state"] == "ok", view
    assert str(script) in view["checks"]["filesystem_integrity"]["measurement"]
    d.stop()

    d.cfg.write_text(d.cfg.read_text() + "# an operator's edit\n")
    d.cli("security", "accept", "--by", "operator bob")  # no runtime: under the data dir lock
    d.start()
    time.sleep(2 * INTERVAL)
    view = d.call("GET", "/security/status", role="monitor")[1]
    assert view["state"] == "ok" and view["baseline"]["by"] == "operator bob"
    shown = d.cli("security", "status")  # through the running runtime's API
    assert "tamper state: ok" in shown.stdout
