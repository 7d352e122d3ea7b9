"""The records the scheduler hands around: a ``Job`` (what is scheduled) and a ``DueJob``
(one run of it that is due now and holds its pool slot until released).

Plain classes rather than dataclasses, so a MicroPython port can keep them as they are.
"""

from __future__ import annotations

from collections.abc import Callable

from edge_min.scheduler.cron import CronExpr

CATCH_UP_ONCE = "once"
CATCH_UP_SKIP = "skip"
CATCH_UP_POLICIES = (CATCH_UP_ONCE, CATCH_UP_SKIP)

KIND_ONCE = "once"
KIND_INTERVAL = "interval"
KIND_CRON = "cron"

JobFn = Callable[[], object]


class Job:
    """A scheduled job; read its fields, change it only through the ``Scheduler``."""

    def __init__(
        self,
        job_id: str,
        kind: str,
        fn: JobFn,
        *,
        priority: int,
        jitter: float,
        pool: str | None,
        catch_up: str,
        every: float | None = None,
        cron: CronExpr | None = None,
        order: int = 0,
    ) -> None:
        self.id = job_id
        self.kind = kind
        self.fn = fn
        self.priority = priority
        self.jitter = jitter
        self.pool = pool
        self.catch_up = catch_up
        self.every = every
        self.cron = cron
        self.order = order
        self.scheduled = 0.0  # the slot, monotonic (intervals) — no jitter
        self.wall_target: float | None = None  # the slot, wall time (cron, once-at)
        self.jitter_drawn = 0.0
        self.deadline = 0.0  # monotonic, slot + jitter: the heap key
        self.entry_seq = -1  # seq of this job's live heap entry; -1 when not in the heap
        self.waiting = False  # due, but its pool is full
        self.cancelled = False
        self.active = 0
        self.runs = 0
        self.failures = 0
        self.missed_total = 0
        self.last_error: str | None = None
        self.last_run_at: float | None = None  # wall
        self.next_run_at: float | None = None  # wall

    @property
    def name(self) -> str:
        """The job's name, which is also its id."""
        return self.id

    def as_dict(self) -> dict[str, object]:
        """The job as JSON-ready data for the API and monitoring."""
        return {
            "id": self.id,
            "kind": self.kind,
            "every": self.every,
            "cron": None if self.cron is None else self.cron.text,
            "priority": self.priority,
            "pool": self.pool,
            "catch_up": self.catch_up,
            "jitter": self.jitter,
            "next_run_at": self.next_run_at,
            "last_run_at": self.last_run_at,
            "runs": self.runs,
            "failures": self.failures,
            "missed": self.missed_total,
            "active": self.active,
            "last_error": self.last_error,
        }

    def __repr__(self) -> str:
        return f"Job({self.id!r}, {self.kind}, next_run_at={self.next_run_at})"


class DueJob:
    """One run of a job that is due now; run ``fn`` then hand it back with ``release``."""

    __slots__ = ("due_at", "fn", "job", "missed", "now", "released", "scheduled_at", "wall_at")

    def __init__(self, job: Job, now: float, wall_at: float, missed: int) -> None:
        self.job = job
        self.fn = job.fn
        self.scheduled_at = job.scheduled  # monotonic slot
        self.due_at = job.deadline  # monotonic, with jitter
        self.now = now  # monotonic time of the tick that returned it
        self.wall_at = wall_at
        self.missed = missed
        self.released = False

    @property
    def name(self) -> str:
        """The job's name."""
        return self.job.id

    @property
    def priority(self) -> int:
        """The job's priority (lower first)."""
        return self.job.priority

    @property
    def pool(self) -> str | None:
        """The pool whose slot this run holds, if any."""
        return self.job.pool

    def __repr__(self) -> str:
        return f"DueJob({self.job.id!r}, due_at={self.due_at}, missed={self.missed})"
