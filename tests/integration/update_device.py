"""A small device for the A/B slot tests: an install root, configs, data, real payloads.

A payload is a tiny ``edge-min`` script that runs this repository's ``edge_min.cli`` with
PYTHONPATH (a real runtime, the same code in both slots; the version lives in the state
file). ``bad_exit`` exits at once; ``bad_health`` runs a runtime whose health check fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

EDGE_CONFIG = """\
runtime:
  offline_mode: always
sync:
  central_url: http://127.0.0.1:9
api:
  port: 0
update:
  commit_after: {commit_after}
  health_timeout: {health_timeout}
includes:
  monitoring: {monitoring}
"""

MONITORING = """\
metrics:
  collection_interval: 1
health_checks:
  - name: database_check
    interval: 1
    command: "builtin:database"
    timeout: 1
{extra}alerts: []
"""

FAILING_CHECK = """\
  - name: broken_driver
    interval: 1
    command: "false"
    timeout: 1
"""


@dataclass
class Device:
    """One device's folders and how to run its supervisor."""

    base: Path

    @property
    def root(self) -> Path:
        return self.base / "opt"

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def config(self) -> Path:
        return self.base / "conf" / "edge-config.yaml"

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``edge-min --config C --data-dir D ARGS`` (``update`` commands get ``--root``)."""
        argv = [sys.executable, "-m", "edge_min.cli", "--config", str(self.config)]
        argv += ["--data-dir", str(self.data), *args]
        if args and args[0] == "update":
            argv += ["--root", str(self.root)]
        return subprocess.run(
            argv, capture_output=True, text=True, check=check, env=env(), cwd=REPO, timeout=120
        )

    def state(self) -> dict[str, Any]:
        """update-state.json."""
        return dict(json.loads((self.root / "update-state.json").read_text()))

    def supervise(self) -> subprocess.Popen[str]:
        """The supervisor in a session of its own (killed as one group: a power cut)."""
        argv = [sys.executable, "-m", "edge_min.cli", "--config", str(self.config)]
        argv += ["--data-dir", str(self.data), "update", "supervise", "--root", str(self.root)]
        log = open(self.base / "supervisor.log", "a")  # noqa: SIM115 - the child holds it
        return subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, text=True, env=env(), cwd=REPO,
            start_new_session=True,
        )  # fmt: skip


def env() -> dict[str, str]:
    """The environment for the CLI and payloads: this repo importable."""
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO)
    for name in ("EDGE_MIN_UPDATE_ROOT", "EDGE_MIN_UPDATE_SLOT", "EDGE_MIN_UPDATE_TRY"):
        e.pop(name, None)
    return e


def make_device(base: Path, *, commit_after: float = 1.0, health_timeout: float = 20.0) -> Device:
    """Configs for a device under ``base`` (nothing installed yet)."""
    dev = Device(base)
    dev.config.parent.mkdir(parents=True)
    (dev.config.parent / "edge-monitoring.yaml").write_text(MONITORING.format(extra=""))
    dev.config.write_text(
        EDGE_CONFIG.format(
            commit_after=commit_after,
            health_timeout=health_timeout,
            monitoring="edge-monitoring.yaml",
        )
    )
    bad = dev.config.parent / "bad"
    bad.mkdir()
    (bad / "edge-monitoring.yaml").write_text(MONITORING.format(extra=FAILING_CHECK))
    (bad / "edge-config.yaml").write_text(
        EDGE_CONFIG.format(
            commit_after=commit_after,
            health_timeout=health_timeout,
            monitoring="edge-monitoring.yaml",
        )
    )
    return dev


def payload(dir: Path, version: str, kind: str = "good", pad: int = 0) -> Path:
    """An ``edge-min`` script payload: ``good``, ``bad_exit``, ``bad_hang`` or ``bad_health``."""
    dir.mkdir(parents=True, exist_ok=True)
    path = dir / f"edge-min-{version}-{kind}"
    head = f"#!/bin/sh\n# payload {version} ({kind})\n"
    run = f'PYTHONPATH={REPO} exec {sys.executable} -m edge_min.cli "$@"\n'
    if kind == "bad_hang":  # starts, never serves: only update.health_timeout ends it
        body = "exec sleep 600\n"
    elif kind == "bad_exit":
        body = "echo 'this version cannot start' >&2\nexit 3\n"
    elif kind == "bad_health":
        # Its own config (a failing check) in place of the --config it is given.
        bad = "BAD_CONFIG"
        body = f'[ "$1" = --config ] && shift 2\nset -- --config "{bad}" "$@"\n{run}'
    else:
        body = run
    text = head + "".join(f"# {'x' * 78}\n" for _ in range(pad)) + body
    path.write_text(text)
    path.chmod(0o755)
    return path


def bad_health_payload(dev: Device, dir: Path, version: str) -> Path:
    """A payload whose runtime starts but fails its health checks."""
    path = payload(dir, version, "bad_health")
    path.write_text(
        path.read_text().replace("BAD_CONFIG", str(dev.config.parent / "bad" / "edge-config.yaml"))
    )
    return path


def health(dev: Device) -> dict[str, Any] | None:
    """GET /health of the runtime running now (from runtime.json), or None."""
    try:
        url = json.loads((dev.data / "runtime.json").read_text())["url"]
        with urllib.request.urlopen(url + "/health", timeout=5) as r:
            return dict(json.loads(r.read()))
    except (OSError, ValueError, KeyError):
        return None


def wait_for(what: Any, timeout: float = 60.0, every: float = 0.2) -> Any:
    """Poll ``what()`` until it returns something truthy; that value (AssertionError after)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def stop(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM) -> None:
    """Signal the supervisor's whole group (SIGKILL: a power cut) and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
