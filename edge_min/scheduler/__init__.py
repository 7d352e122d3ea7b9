"""The hand-rolled scheduler: a pure core that says what is due, and a runner for virtual time.

- ``Job``/``DueJob`` (jobs): what is scheduled, and one run of it that is due.
- ``Scheduler`` (core): one-shot, interval and cron jobs; priorities, pools, jitter,
  catch-up; ``tick(now) -> list[DueJob]`` and ``next_deadline()``.
- ``CronExpr`` (cron): 5-field cron parsing and ``next_after(ts)``.
- ``StepRunner`` (step): runs due jobs inline and walks a virtual clock from deadline to
  deadline (tests, ``bench/bench_monitor.py``); the runtime runs due jobs in its own loop.
- ``StateStore``/``ScheduleState`` (state): the persistence port for catch-up across reboots.
"""

from __future__ import annotations

from edge_min.scheduler.core import Scheduler
from edge_min.scheduler.cron import CronExpr, parse_utc_offset
from edge_min.scheduler.jobs import CATCH_UP_ONCE, CATCH_UP_SKIP, DueJob, Job
from edge_min.scheduler.state import MemoryStateStore, ScheduleState, StateStore
from edge_min.scheduler.step import StepRunner

__all__ = [
    "CATCH_UP_ONCE",
    "CATCH_UP_SKIP",
    "CronExpr",
    "DueJob",
    "Job",
    "MemoryStateStore",
    "ScheduleState",
    "Scheduler",
    "StateStore",
    "StepRunner",
    "parse_utc_offset",
]
