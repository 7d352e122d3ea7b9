"""The persistence port of the scheduler: ``last_run_at``/``next_run_at`` per job.

The runtime keeps these in a ``schedule_state`` table so that catch-up also works across a
reboot, when the monotonic clock restarts from zero and only wall time carries over. The
scheduler calls ``load`` once when a job is added and ``save`` each time it dispatches a
run; both use wall time (seconds since the epoch) and the job id, which is the job's name
and so stays the same from one boot to the next.

A suitable table::

    CREATE TABLE schedule_state (
        job_id TEXT PRIMARY KEY,
        last_run_at TEXT,      -- RFC 3339 UTC, when the last run was dispatched
        next_run_at TEXT,      -- RFC 3339 UTC, when the next run is due
        updated_at TEXT NOT NULL
    );
"""

from __future__ import annotations

from typing import Protocol


class ScheduleState:
    """When a job last ran and when it is next due, both wall time or None."""

    __slots__ = ("last_run_at", "next_run_at")

    def __init__(self, last_run_at: float | None = None, next_run_at: float | None = None) -> None:
        self.last_run_at = last_run_at
        self.next_run_at = next_run_at

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ScheduleState):
            return NotImplemented
        return (self.last_run_at, self.next_run_at) == (other.last_run_at, other.next_run_at)

    def __repr__(self) -> str:
        return f"ScheduleState(last_run_at={self.last_run_at}, next_run_at={self.next_run_at})"


class StateStore(Protocol):
    """Where the scheduler keeps each job's ``ScheduleState`` between boots."""

    def load(self, job_id: str) -> ScheduleState | None:
        """The stored state of a job, or None if it has never been saved."""
        ...

    def save(self, job_id: str, state: ScheduleState) -> None:
        """Store a job's state, replacing what was there."""
        ...


class MemoryStateStore:
    """A ``StateStore`` in a dict: for tests, and for hosts with nowhere to write."""

    def __init__(self) -> None:
        self.states: dict[str, ScheduleState] = {}
        self.saves = 0

    def load(self, job_id: str) -> ScheduleState | None:
        """The stored state of a job, or None."""
        state = self.states.get(job_id)
        return None if state is None else ScheduleState(state.last_run_at, state.next_run_at)

    def save(self, job_id: str, state: ScheduleState) -> None:
        """Store a copy of the state."""
        self.states[job_id] = ScheduleState(state.last_run_at, state.next_run_at)
        self.saves += 1
