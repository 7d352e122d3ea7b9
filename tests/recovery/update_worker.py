"""A process that installs a payload, switches to it and supervises its first start: killed
with SIGKILL at a counted step.

Run as ``python -m tests.recovery.update_worker ROOT CONFIG DATA PAYLOAD VERSION``. Every
durable step the installer and the supervisor take (each chunk written to the slot, each
half of a state file write, each rename, the database backup, the child's start) first
counts itself in ``$UPDATE_KILL_COUNT`` (a file) and, at step ``$UPDATE_KILL_AT``, kills its
whole process group (itself and the runtime it started) with SIGKILL, as a power cut would.
``UPDATE_KILL_AT=0`` never kills: the run counts the steps, for the test to pick from.

``python -m tests.recovery.update_worker fetch ROOT CONFIG DATA CENTRAL_URL NODE`` is the
runtime's rollout follower instead (``edge_min.update.follow.Follower`` with
``install_bundle`` into the slots, as ``RolloutFollower`` wires them under the supervisor):
it downloads the assigned bundle from a real central in small ranges, verifies it, installs
it and switches, counting every range, every follow-state write, every chunk the verify
writes and the installer's steps; it exits 0 once the follower records ``installed``.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from edge_min.clock import SystemClock
from edge_min.config import load_config
from edge_min.runtime import Paths
from edge_min.update.installer import Installer, local_payload
from edge_min.update.supervisor import Supervisor

FETCH_CHUNK = 128 * 1024  # a range per 128 KiB: every one is a kill point


def _stepper() -> Callable[[str], None]:
    kill_at = int(os.environ.get("UPDATE_KILL_AT", "0"))
    count_file = Path(os.environ["UPDATE_KILL_COUNT"])
    names = os.environ.get("UPDATE_STEP_LOG")  # every step's number and name, for the test
    seen = [0]

    def step(name: str) -> None:
        seen[0] += 1
        count_file.write_text(f"{seen[0]} {name}\n")
        if names:
            with open(names, "a") as f:
                f.write(f"{seen[0]} {name}\n")
        if seen[0] == kill_at:
            os.killpg(0, signal.SIGKILL)

    return step


def fetch(root: str, config: str, data: str, central_url: str, node: str) -> int:
    """Follow central's rollout until the bundle is installed and on trial; killed at a step."""
    from edge_min.sync.transport import HttpTransport
    from edge_min.update.follow import Follower
    from edge_min.update.install import committed_version, install_bundle, trial_version

    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    step = _stepper()
    clock = SystemClock()
    cfg = load_config(config)
    slots, data_dir = Path(root), Paths.resolve(cfg, data).root
    link = HttpTransport.for_url(central_url, node=node, security_config=cfg.security_config)

    def install(path: Path) -> object:
        return install_bundle(path, root=slots, data_dir=data_dir, clock=clock, step=step)

    follower = Follower(
        data_dir,
        lambda: link,
        clock,
        install=install,
        committed_version=lambda: committed_version(slots),
        pending_report=Installer(slots, clock).pending_report,
        trial_version=lambda: trial_version(slots),
        step=step,
        chunk_bytes=FETCH_CHUNK,
    )
    for _ in range(100):
        status = follower.follow_once()
        current = follower.state.get("current") or {}
        if current.get("state") == "installed":
            return 0
        print("follow:", current.get("state"), status.get("last"), flush=True)
        time.sleep(0.05)
    return 1


def main(root: str, config: str, data: str, payload: str, version: str) -> int:
    """Install, switch, supervise; killed at step $UPDATE_KILL_AT."""
    step = _stepper()
    cfg = load_config(config)
    paths = Paths.resolve(cfg, data)
    installer = Installer(Path(root), SystemClock(), step)
    installer.install(local_payload(Path(payload), version))
    installer.switch()
    run_args = ["--config", config, "--data-dir", data, "run"]
    supervisor = Supervisor(
        installer,
        run_args,
        db=paths.db,
        health_timeout=cfg.update.health_timeout,
        log_file=paths.root / "logs" / "edge-min.out",
    )
    return supervisor.run()


if __name__ == "__main__":
    if sys.argv[1] == "fetch":
        sys.exit(fetch(*sys.argv[2:7]))
    sys.exit(main(*sys.argv[1:6]))
