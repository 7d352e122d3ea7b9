"""run_command: real processes, real timeouts, the whole process group killed."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from edge_min.platform.commands import NOT_FOUND, run_command

pytestmark = pytest.mark.skipif(not hasattr(os, "killpg"), reason="POSIX process groups")


def test_a_shell_line_gives_exit_status_and_output() -> None:
    ok = run_command("echo hello; echo oops >&2", 5)
    assert ok.returncode == 0 and not ok.timed_out
    assert ok.output.split() == ["hello", "oops"]
    bad = run_command("exit 3", 5)
    assert (bad.returncode, bad.timed_out) == (3, False)


def test_an_argv_list_is_not_run_through_a_shell() -> None:
    res = run_command([sys.executable, "-c", "import sys; print(sys.argv[1])", "$HOME;x"], 10)
    assert res.returncode == 0 and res.output.strip() == "$HOME;x"


def test_a_missing_program_is_exit_127() -> None:
    assert run_command(["/nonexistent/edge-min-tool"], 5).returncode == NOT_FOUND
    assert run_command("edge-min-no-such-tool --flag", 5).returncode == NOT_FOUND


def test_a_command_past_its_timeout_is_killed() -> None:
    began = time.monotonic()
    res = run_command("sleep 5", 0.2)
    took = time.monotonic() - began
    assert res.timed_out
    assert res.returncode is not None and res.returncode < 0  # ended by a signal
    assert took < 2.0, f"took {took:.2f}s: the timeout did not kill sleep"


def test_the_timeout_kills_the_whole_pipeline(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    res = run_command(f"sleep 30 & echo $! > {pidfile}; wait", 0.3)
    assert res.timed_out
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        # A killed child may linger as a zombie until its parent is reaped; /proc says which.
        stat = Path(f"/proc/{pid}/stat")
        if stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z":
            break
        time.sleep(0.02)
    else:
        pytest.fail(f"background sleep {pid} survived the timeout")


def test_output_is_capped_to_its_tail() -> None:
    res = run_command("head -c 100000 /dev/zero | tr '\\0' a; echo END", 5, max_output=100)
    assert len(res.output) == 100 and res.output.endswith("END\n")
