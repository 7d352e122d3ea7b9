"""Runs due jobs inline and, under a ``VirtualClock``, walks time deadline by deadline.

The product does not use it: the runtime runs due jobs in its own loop (``Runtime.tick``).
It is how tests and ``bench/bench_monitor.py`` simulate hours or weeks of a schedule in
well under a second::

    runner = StepRunner(Scheduler(clock))
    runner.advance_by(3600)    # every deadline in the next hour, each at its own time

Jobs are plain callables run to completion in the caller's thread. A job that raises is
logged and counted (``failures``) and the runner carries on.
"""

from __future__ import annotations

import logging

from edge_min.clock import VirtualClock
from edge_min.scheduler.core import Scheduler
from edge_min.scheduler.jobs import DueJob

log = logging.getLogger("edge_min.scheduler")


def run_due(scheduler: Scheduler, due: DueJob) -> BaseException | None:
    """Run one due job, log a failure, release it; returns the error or None."""
    error: BaseException | None = None
    try:
        due.fn()
    except Exception as exc:
        error = exc
        log.exception("job %s failed", due.name)
    finally:
        scheduler.release(due, error)
    return error


class StepRunner:
    """Runs due jobs inline when told to; moves a virtual clock from deadline to deadline."""

    def __init__(self, scheduler: Scheduler, *, max_batches: int = 1000) -> None:
        self.scheduler = scheduler
        self.clock = scheduler.clock
        # Guards against a job that keeps adding already-due one-shots forever.
        self.max_batches = max_batches
        self.runs = 0
        self.failures = 0

    def tick(self, now: float | None = None) -> int:
        """Run every job due at monotonic ``now``; returns how many ran."""
        if now is None:
            now = self.clock.monotonic()
        ran = 0
        for _ in range(self.max_batches):
            batch = self.scheduler.tick(now)
            if not batch:
                break
            for due in batch:
                if run_due(self.scheduler, due) is not None:
                    self.failures += 1
                ran += 1
        self.runs += ran
        return ran

    def _move_clock(self, t: float) -> None:
        # Job functions read the clock too; under virtual time it must show the tick's time.
        if isinstance(self.clock, VirtualClock):
            gap = t - self.clock.monotonic()
            if gap > 0:
                self.clock.advance(gap)

    def advance_to(self, t: float) -> int:
        """Virtual time: run every deadline up to monotonic ``t`` in order, at its own time."""
        ran = 0
        while True:
            deadline = self.scheduler.next_deadline()
            if deadline is None or deadline > t:
                break
            self._move_clock(deadline)
            count = self.tick(max(deadline, self.clock.monotonic()))
            if count == 0 and self.scheduler.next_deadline() == deadline:
                break  # nothing could run (a pool held elsewhere); do not spin
            ran += count
        self._move_clock(t)
        ran += self.tick(t)
        return ran

    def advance_by(self, seconds: float) -> int:
        """Virtual time: ``advance_to(now + seconds)``."""
        return self.advance_to(self.clock.monotonic() + seconds)

    def run_until_idle(self, max_steps: int = 10_000) -> int:
        """Virtual time: jump deadline to deadline until none is left or ``max_steps`` ticks."""
        ran = 0
        for _ in range(max_steps):
            deadline = self.scheduler.next_deadline()
            if deadline is None:
                break
            self._move_clock(deadline)
            count = self.tick(max(deadline, self.clock.monotonic()))
            if count == 0 and self.scheduler.next_deadline() == deadline:
                break
            ran += count
        return ran
