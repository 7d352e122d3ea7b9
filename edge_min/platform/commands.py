"""Short host commands with a hard timeout: what the monitor's command health checks run.

``run_command`` starts the command in a new session (its own process group), so at the
timeout the whole group is killed: ``sh -c "curl ... | grep -q ..."`` leaves no stray
``curl`` behind. Output (stdout and stderr together) is kept up to ``max_output`` bytes.

Only modules under ``edge_min.platform`` may import ``subprocess``; the monitor calls this.
A host that cannot start processes (Pyodide) gets ``returncode`` 127 and an explanation,
the same shape as a shell's "command not found".
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from typing import NamedTuple

NOT_FOUND = 127  # what a POSIX shell returns for "command not found"
DEFAULT_MAX_OUTPUT = 64 * 1024
_REAP_SECONDS = 1.0  # after the kill, how long to wait for pipes to close


class CommandResult(NamedTuple):
    """How a command ended: exit status (negative: killed by that signal), output, timeout."""

    returncode: int | None
    output: str
    timed_out: bool
    duration: float = 0.0


def run_command(
    command: str | Sequence[str],
    timeout: float,
    *,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    max_output: int = DEFAULT_MAX_OUTPUT,
) -> CommandResult:
    """Run ``command`` (a shell line as text, or an argv list) for at most ``timeout`` seconds.

    At the timeout the command's process group gets SIGKILL and ``timed_out`` is True.
    """
    shell = isinstance(command, str)
    argv: str | list[str] = command if isinstance(command, str) else list(command)
    began = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv,
            shell=shell,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            start_new_session=True,  # a process group of its own, killed as one
        )
    except FileNotFoundError:
        name = argv if isinstance(argv, str) else (argv[0] if argv else "")
        return CommandResult(NOT_FOUND, f"command not found: {name}", False, 0.0)
    except OSError as exc:  # e.g. no process support on this host
        return CommandResult(NOT_FOUND, f"cannot start command: {exc}", False, 0.0)
    timed_out = False
    try:
        out, _ = proc.communicate(timeout=max(0.0, timeout))
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc)
        try:
            out, _ = proc.communicate(timeout=_REAP_SECONDS)
        except subprocess.TimeoutExpired:
            # Something left the group and still holds the pipe: give up on its output.
            proc.kill()
            out = b""
            if proc.stdout is not None:
                proc.stdout.close()
            proc.wait()
    text = (out or b"")[-max_output:].decode("utf-8", errors="replace")
    return CommandResult(proc.returncode, text, timed_out, time.monotonic() - began)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
