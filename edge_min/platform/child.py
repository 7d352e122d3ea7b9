"""One long-running child program, started and watched: what the update supervisor runs.

``start_child(argv, env, log)`` starts the program with its output appended to ``log`` and
returns a ``Child``: ``poll()`` gives its exit status once it ended (negative: the signal),
``stop(grace)`` asks it to stop with SIGTERM and kills it after ``grace`` seconds. The child
stays in the caller's process group, so whatever stops the supervisor's group (systemd's
cgroup, a power cut, a test's SIGKILL of the group) stops the child with it; and with
PR_SET_PDEATHSIG on Linux a SIGKILL of the supervisor alone takes its child too.
Only modules under ``edge_min.platform`` may import ``subprocess``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


class Child:
    """A started child program."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.pid = proc.pid

    def poll(self) -> int | None:
        """The exit status once it ended (negative: killed by that signal), else None."""
        return self.proc.poll()

    def stop(self, grace: float = 30.0) -> int:
        """SIGTERM, then SIGKILL after ``grace`` seconds; the exit status."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + grace
            while self.proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
        return self.proc.wait()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass


def start_child(argv: Sequence[str], env: Mapping[str, str], log: Path) -> Child:
    """Start ``argv`` with ``env``, stdout and stderr appended to ``log``; raises OSError."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env),
            preexec_fn=_die_with_parent,  # the supervisor forks from its only thread
        )
    return Child(proc)


def current_environment() -> dict[str, str]:
    """This process's environment, for a child that should see the same."""
    return dict(os.environ)
