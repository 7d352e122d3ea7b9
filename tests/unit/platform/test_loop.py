"""The serving loop's waiter is safe to set from a signal handler (SIGTERM stops the runtime).

A ``threading.Event`` waiter deadlocked or crashed now and then: the handler runs on the main
thread, which may be inside the Event's own lock (in ``clear`` or ``wait``) when the signal
lands. The stress below sends signals to a main thread that clears and sets the waiter in a
tight loop; with an Event it dies (RecursionError, or it hangs), with the pipe waiter it
finishes.
"""

from __future__ import annotations

import subprocess
import sys
import time

from edge_min.platform.loop import PipeWaiter, PosixLoopHost

STRESS = """
import signal, sys, threading, time
from edge_min.platform.loop import PosixLoopHost
from edge_min.platform.threads import ThreadWaiter

waiter = ThreadWaiter() if sys.argv[1] == "event" else PosixLoopHost().waiter()
got = []

def handler(signum, frame):
    got.append(signum)
    waiter.set()

signal.signal(signal.SIGUSR1, handler)
main, stop = threading.get_ident(), []

def shoot():
    while not stop:
        signal.pthread_kill(main, signal.SIGUSR1)
        time.sleep(0.0002)

threading.Thread(target=shoot, daemon=True).start()
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    for _ in range(100):
        waiter.clear()
        waiter.set()
    waiter.wait(0)
stop.append(1)
print("ok", len(got))
"""


def _stress(kind: str, seconds: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [sys.executable, "-c", STRESS, kind, str(seconds)],
            capture_output=True,
            text=True,
            timeout=seconds + 20,
        )
    except subprocess.TimeoutExpired as exc:  # a deadlock
        return subprocess.CompletedProcess(exc.cmd, -9, "", "timed out")


def test_signals_landing_while_the_loop_clears_its_waiter_are_safe() -> None:
    done = _stress("pipe", 3.0)
    assert done.returncode == 0 and done.stdout.startswith("ok "), done.stderr[-500:]
    assert int(done.stdout.split()[1]) > 100  # many signals really landed


def test_the_stress_does_catch_an_event_waiter() -> None:
    """The check above can fail: the same stress breaks a threading.Event waiter."""
    done = _stress("event", 3.0)
    assert done.returncode != 0 or not done.stdout.startswith("ok ")


def test_the_pipe_waiter_wakes_sleeps_and_forgets() -> None:
    waiter = PosixLoopHost().waiter()
    assert isinstance(waiter, PipeWaiter)
    try:
        started = time.monotonic()
        assert waiter.wait(0.05) is False and time.monotonic() - started >= 0.04
        for _ in range(100_000):  # more than a pipe holds: still one wake-up, no error
            waiter.set()
        assert waiter.wait(5) is True
        waiter.clear()
        assert waiter.wait(0) is False
    finally:
        waiter.close()
