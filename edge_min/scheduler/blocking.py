"""The CPython runner: one loop thread that sleeps until the next deadline, and workers.

``BlockingRunner`` never runs a job on its loop: every due job goes to the injected worker
pool, so an agent call that blocks for minutes delays nothing else that is due. The loop
sleeps on a waiter until the next deadline, until a worker finishes (a pool slot may have
freed), or until ``wake()`` — call it after adding jobs from another thread. ``stop()``
sets the waiter, so it returns as soon as the loop notices, without waiting for jobs.

The scheduler is not thread-safe; the runner guards it with a lock. Change it from another
thread through ``runner.call(lambda s: s.add_interval(...))``, which takes the lock and
wakes the loop. Finished runs are released on the loop thread, never on a worker.

The threading primitives come from the ``workers`` object (``edge_min.platform.threads.
ThreadWorkerPool`` on CPython), so this module imports no ``threading`` and the rule that
only ``edge_min.platform`` touches threads holds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar

from edge_min.errors import SchedulerError
from edge_min.scheduler.core import Scheduler
from edge_min.scheduler.jobs import DueJob

log = logging.getLogger("edge_min.scheduler")

T = TypeVar("T")

# Re-read the clocks at least this often even with nothing due, so a wall-clock step is
# noticed (cron re-mapping) while the loop is otherwise asleep.
MAX_SLEEP = 30.0


class Handle(Protocol):
    """What ``submit`` returns: the state of one piece of work."""

    def done(self) -> bool:
        """Whether the work has finished."""
        ...

    def result(self, timeout: float | None = None) -> Any:
        """The work's return value (raises its exception)."""
        ...

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The exception the work raised, or None."""
        ...


class Waiter(Protocol):
    """An Event-like object the loop sleeps on."""

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep until set or timeout."""
        ...

    def set(self) -> None:
        """Wake the sleeper."""
        ...

    def clear(self) -> None:
        """Forget an earlier set."""
        ...


class Joinable(Protocol):
    """A started loop thread."""

    def join(self, timeout: float | None = None) -> bool:
        """Wait for it to end; True if it has."""
        ...


class WorkerPool(Protocol):
    """Worker threads plus the primitives a blocking runner needs."""

    def submit(self, fn: Callable[[], Any], on_done: Callable[[], object] | None = None) -> Handle:
        """Run ``fn`` on a worker; call ``on_done`` when it finishes."""
        ...

    def new_waiter(self) -> Waiter:
        """A fresh waiter."""
        ...

    def new_lock(self) -> AbstractContextManager[Any]:
        """A fresh mutex."""
        ...

    def spawn(self, target: Callable[[], object], name: str = ...) -> Joinable:
        """Run ``target`` in a new thread."""
        ...

    def shutdown(self, wait: bool = False, timeout: float | None = None) -> None:
        """Stop the workers."""
        ...


def _run_job(due: DueJob) -> BaseException | None:
    # Runs on a worker: the error is returned, not raised, so the loop releases it.
    try:
        due.fn()
    except Exception as exc:
        log.exception("job %s failed", due.name)
        return exc
    return None


class BlockingRunner:
    """Runs a ``Scheduler`` on a loop thread, handing due jobs to worker threads."""

    def __init__(
        self, scheduler: Scheduler, workers: WorkerPool, *, max_sleep: float = MAX_SLEEP
    ) -> None:
        self.scheduler = scheduler
        self.workers = workers
        self.max_sleep = max_sleep
        self._waiter = workers.new_waiter()
        self._lock = workers.new_lock()
        self._inflight: list[tuple[DueJob, Handle]] = []
        self._stopping = False
        self._running = False
        self._thread: Joinable | None = None
        self.runs = 0
        self.failures = 0
        self.loop_errors = 0

    def start(self) -> None:
        """Run the loop on its own thread and return."""
        if self._thread is not None:
            raise SchedulerError("this BlockingRunner is already started", field="runner")
        self._thread = self.workers.spawn(self.run, "edge-scheduler")

    def call(self, fn: Callable[[Scheduler], T]) -> T:
        """Change the scheduler from any thread: run ``fn(scheduler)`` under the lock, then wake."""
        with self._lock:
            result = fn(self.scheduler)
        self.wake()
        return result

    def wake(self) -> None:
        """Make the loop re-evaluate now (after jobs were added from another thread)."""
        self._waiter.set()

    def inflight(self) -> int:
        """How many runs are on workers now."""
        with self._lock:
            return len(self._inflight)

    def stop(self, timeout: float = 1.0, wait_jobs: bool = False) -> bool:
        """Stop the loop (jobs on workers are left to finish); True if it ended in time."""
        self._stopping = True
        self._waiter.set()
        ended = True
        if self._thread is not None:
            ended = self._thread.join(timeout)
        self.workers.shutdown(wait=wait_jobs, timeout=timeout)
        return ended

    def run(self) -> None:
        """The loop: runs in the calling thread until ``stop()``."""
        self._running = True
        try:
            while not self._stopping:
                # Clear before looking, so a set that lands while we work is not lost.
                self._waiter.clear()
                try:
                    delay = self._pass()
                except Exception:
                    # A broken store or a bug in one job's bookkeeping must not end
                    # the schedule for every other job.
                    self.loop_errors += 1
                    log.exception("scheduler loop pass failed")
                    delay = 1.0
                if self._stopping:
                    break
                self._waiter.wait(delay)
        finally:
            self._running = False

    def _pass(self) -> float:
        """Reap finished runs, hand out due ones; returns how long to sleep."""
        clock = self.scheduler.clock
        with self._lock:
            self._reap()
            now = clock.monotonic()
            for due in self.scheduler.tick(now):
                self._submit(due)
            deadline = self.scheduler.next_deadline()
        if deadline is None:
            return self.max_sleep
        return min(self.max_sleep, max(0.0, deadline - clock.monotonic()))

    def _submit(self, due: DueJob) -> None:
        try:
            handle = self.workers.submit(lambda: _run_job(due), self._waiter.set)
        except Exception as exc:
            log.exception("job %s could not be handed to a worker", due.name)
            self.failures += 1
            self.scheduler.release(due, exc)
            return
        self._inflight.append((due, handle))

    def _reap(self) -> None:
        still: list[tuple[DueJob, Handle]] = []
        for due, handle in self._inflight:
            if not handle.done():
                still.append((due, handle))
                continue
            error = handle.exception()
            if error is None:
                error = handle.result()
            self.runs += 1
            if error is not None:
                self.failures += 1
            self.scheduler.release(due, error)
        self._inflight = still
