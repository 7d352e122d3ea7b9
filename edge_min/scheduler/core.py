"""The pure scheduler: a timer heap that says what is due; it never runs anything itself.

``Scheduler.tick(now)`` returns the ``DueJob``s due at ``now`` and ``next_deadline()`` says
when to call it again; the caller runs them and hands each back with ``release``: the
runtime's own loop (``Runtime.tick``) in the product, ``StepRunner`` under a virtual clock in
tests and benchmarks. Time is passed in (huey's ``loop(now)``), so the core holds no threads,
reads the clock at most once per tick, and runs the same under CPython, Pyodide and
MicroPython.

Two time bases, on purpose:

- **Intervals use monotonic time.** "Every 300 s" is a duration; an NTP step of the wall
  clock (common on devices that boot with no RTC and sync later) must not make a sync run
  twice or skip an hour.
- **Cron and ``at`` jobs use wall time.** "02:00 UTC" only means something on the calendar.
  They are kept as wall targets and mapped onto the monotonic timeline with the current
  wall-minus-monotonic offset; when a tick sees that offset move by more than a second, they are
  re-mapped, so a clock that jumps forward past 02:00 fires the 02:00 job (once).

The heap is keyed by the monotonic deadline; ``now`` and ``next_deadline()`` are monotonic.

**Catch-up policy.** After a long sleep, a suspended VM or a reboot, a job that missed N runs
runs *once* (``catch_up="once"``, the default; ``DueJob.missed`` says how many runs were
folded into it), and its next run is aligned to the schedule after now — never N runs back
to back. ``catch_up="skip"`` drops a late run instead and waits for the next slot. With a
``StateStore`` the same holds across a reboot: the stored wall ``next_run_at`` tells the new
process that a run was missed.

**Ordering.** Among the jobs a tick returns, lower ``priority`` comes first, then the earlier
deadline, then the order jobs were added. This decides who gets a pool slot.

**Pools.** A named pool has a capacity; a due job whose pool is full waits (it is not
rescheduled and does not pile up) until ``release`` frees a slot. A job that must not
overlap itself gets a pool of capacity 1.

**Jitter.** A run fires at its slot plus a uniform draw from ``[0, jitter]`` from the injected
``random.Random``; the slots themselves do not drift.
"""

from __future__ import annotations

import heapq
import logging
import math
import random

from edge_min.clock import Clock
from edge_min.errors import SchedulerError
from edge_min.scheduler.cron import CronExpr
from edge_min.scheduler.jobs import (
    CATCH_UP_ONCE,
    CATCH_UP_POLICIES,
    CATCH_UP_SKIP,
    KIND_CRON,
    KIND_INTERVAL,
    KIND_ONCE,
    DueJob,
    Job,
    JobFn,
)
from edge_min.scheduler.state import ScheduleState, StateStore
from edge_min.units import parse_duration

log = logging.getLogger("edge_min.scheduler")

# An NTP slew moves the offset by milliseconds; re-mapping wall jobs is only worth it
# for a step.
WALL_JUMP_TOLERANCE = 1.0


def _seconds(value: float | int | str, what: str, job_id: str) -> float:
    # The hot path (a plain number) skips the text parser.
    if (type(value) is float or type(value) is int) and 0 <= value < math.inf:
        return float(value)
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise SchedulerError(
            f"job {job_id!r}: {what} {value!r} is not a duration; use seconds or '5m', '1h'",
            field=what,
            value=value,
        ) from exc
    if not math.isfinite(seconds):
        raise SchedulerError(
            f"job {job_id!r}: {what} {value!r} must be finite", field=what, value=value
        )
    return seconds


class Scheduler:
    """Timer heap for one-shot, interval and cron jobs with priorities, pools and catch-up."""

    def __init__(
        self,
        clock: Clock,
        *,
        rng: random.Random | None = None,
        store: StateStore | None = None,
        pools: dict[str, int] | None = None,
    ) -> None:
        self.clock = clock
        self.rng = rng if rng is not None else random.Random()
        self.store = store
        self._jobs: dict[str, Job] = {}
        self._heap: list[tuple[float, int, int, Job]] = []
        self._dead = 0  # heap entries left behind by cancel/reschedule (lazy deletion)
        self._seq = 0
        self._order = 0
        self._once_names = 0
        self._waiting: list[Job] = []
        self._pools: dict[str, list[int]] = {}  # name -> [active, capacity]
        self._offset = clock.time() - clock.monotonic()
        self.dispatched = 0
        self.failures = 0
        self.store_errors = 0
        for name, capacity in (pools or {}).items():
            self.add_pool(name, capacity)

    # -- pools -------------------------------------------------------------------------

    def add_pool(self, name: str, capacity: int) -> None:
        """Declare (or resize) a named concurrency pool."""
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise SchedulerError(
                f"pool {name!r}: capacity {capacity!r} must be a whole number of at least 1",
                field="capacity",
                value=capacity,
            )
        slot = self._pools.setdefault(name, [0, capacity])
        slot[1] = capacity

    def pool_usage(self, name: str) -> tuple[int, int]:
        """(runs holding a slot, capacity) of a pool."""
        active, capacity = self._pools[name]
        return active, capacity

    # -- adding jobs ---------------------------------------------------------------------

    def _new_job(
        self,
        job_id: str,
        kind: str,
        fn: JobFn,
        priority: int,
        jitter: float | int | str,
        pool: str | None,
        catch_up: str,
    ) -> Job:
        if not isinstance(job_id, str) or not job_id:
            raise SchedulerError(
                f"a job name must be non-empty text, got {job_id!r}", field="name", value=job_id
            )
        if job_id in self._jobs:
            raise SchedulerError(
                f"a job named {job_id!r} is already scheduled; "
                "cancel it first or pick another name",
                field="name",
                value=job_id,
            )
        if not callable(fn):
            raise SchedulerError(f"job {job_id!r}: fn {fn!r} is not callable", field="fn", value=fn)
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise SchedulerError(
                f"job {job_id!r}: priority {priority!r} must be a whole number (lower runs first)",
                field="priority",
                value=priority,
            )
        if pool is not None and pool not in self._pools:
            known = ", ".join(sorted(self._pools)) or "none"
            raise SchedulerError(
                f"job {job_id!r}: pool {pool!r} is not declared (known: {known}); "
                "call add_pool(name, capacity) first",
                field="pool",
                value=pool,
            )
        if catch_up not in CATCH_UP_POLICIES:
            raise SchedulerError(
                f"job {job_id!r}: catch_up {catch_up!r} is unknown; use 'once' or 'skip'",
                field="catch_up",
                value=catch_up,
            )
        self._order += 1
        return Job(
            job_id,
            kind,
            fn,
            priority=priority,
            jitter=_seconds(jitter, "jitter", job_id),
            pool=pool,
            catch_up=catch_up,
            order=self._order,
        )

    def add_interval(
        self,
        name: str,
        every: float | int | str,
        fn: JobFn,
        *,
        priority: int = 0,
        jitter: float | int | str = 0,
        pool: str | None = None,
        catch_up: str = CATCH_UP_ONCE,
        first: float | int | str | None = None,
        now: float | None = None,
    ) -> Job:
        """Run ``fn`` every ``every`` seconds; the first run ``first`` seconds from now (at the
        latest, also after a restart whose stored slot is later: ``first=0`` runs at start)."""
        job = self._new_job(name, KIND_INTERVAL, fn, priority, jitter, pool, catch_up)
        job.every = _seconds(every, "every", name)
        if job.every <= 0:
            raise SchedulerError(
                f"job {name!r}: every {every!r} must be more than 0 seconds",
                field="every",
                value=every,
            )
        if job.jitter >= job.every:
            raise SchedulerError(
                f"job {name!r}: jitter {jitter!r} must be less than every ({job.every:g} s)",
                field="jitter",
                value=jitter,
            )
        now = self._now(now)
        delay = job.every if first is None else _seconds(first, "first", name)
        job.scheduled = now + delay
        state = self._load(name)
        if state is not None and state.next_run_at is not None:
            # Stored wall time survives a reboot; a slot in the past makes the job due now
            # and the usual catch-up applies. A far-future slot (the interval was shortened
            # since) is clamped, and so is one later than an explicit ``first``: the monitor's
            # checks (first=0) must run at every start, or /health says "starting" for up to
            # their interval after a restart and an A/B trial cannot commit.
            job.scheduled = min(state.next_run_at - self._offset, now + delay)
            job.last_run_at = state.last_run_at
        self._schedule(job, job.scheduled)
        self._jobs[name] = job
        self._save(job)
        return job

    def add_cron(
        self,
        name: str,
        expr: str | CronExpr,
        fn: JobFn,
        *,
        priority: int = 0,
        jitter: float | int | str = 0,
        pool: str | None = None,
        catch_up: str = CATCH_UP_ONCE,
        utc_offset: float | int | str = 0,
        now: float | None = None,
    ) -> Job:
        """Run ``fn`` at the wall times of a 5-field cron expression (UTC unless ``utc_offset``)."""
        job = self._new_job(name, KIND_CRON, fn, priority, jitter, pool, catch_up)
        job.cron = (
            expr if isinstance(expr, CronExpr) else CronExpr.parse(expr, utc_offset=utc_offset)
        )
        now = self._now(now)
        wall_now = now + self._offset
        target = job.cron.next_after(wall_now)
        state = self._load(name)
        if state is not None:
            job.last_run_at = state.last_run_at
            if state.next_run_at is not None and state.next_run_at <= wall_now:
                target = state.next_run_at  # missed while down: due now
        self._schedule_wall(job, target)
        self._jobs[name] = job
        self._save(job)
        return job

    def add_once(
        self,
        name: str | None,
        fn: JobFn,
        *,
        at: float | None = None,
        after: float | int | str | None = None,
        priority: int = 0,
        jitter: float | int | str = 0,
        pool: str | None = None,
        now: float | None = None,
    ) -> Job:
        """Run ``fn`` once, at wall time ``at`` or ``after`` seconds; not persisted."""
        if name is None:
            self._once_names += 1
            name = f"once-{self._once_names}"
        job = self._new_job(name, KIND_ONCE, fn, priority, jitter, pool, CATCH_UP_ONCE)
        if (at is None) == (after is None):
            raise SchedulerError(
                f"job {name!r}: give exactly one of at= (wall time) or after= (seconds)",
                field="at",
                value=at,
            )
        now = self._now(now)
        if at is not None:
            self._schedule_wall(job, float(at))
        else:
            assert after is not None
            self._schedule(job, now + _seconds(after, "after", name))
        self._jobs[name] = job
        return job

    # -- removing and listing -----------------------------------------------------------

    def cancel(self, job_id: str) -> bool:
        """Stop a job from running again (a run in progress is not interrupted)."""
        job = self._jobs.pop(job_id, None)
        if job is None:
            return False
        job.cancelled = True
        if job.entry_seq >= 0:
            job.entry_seq = -1
            self._dead += 1
            self._compact()
        if job.waiting:
            job.waiting = False
            self._waiting.remove(job)
        return True

    def jobs(self) -> list[Job]:
        """The scheduled jobs, soonest first."""
        return sorted(self._jobs.values(), key=lambda j: (j.deadline, j.priority, j.order))

    def get(self, job_id: str) -> Job | None:
        """The job with that id, or None."""
        return self._jobs.get(job_id)

    def __len__(self) -> int:
        return len(self._jobs)

    # -- the loop -----------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """The monotonic time of the next tick with work, or None if nothing is scheduled."""
        heap = self._heap
        while heap and heap[0][3].entry_seq != heap[0][2]:
            heapq.heappop(heap)
            self._dead -= 1
        best = heap[0][0] if heap else None
        for job in self._waiting:
            free = job.pool is None or self._has_slot(job.pool)
            if free and (best is None or job.deadline < best):
                best = job.deadline
        return best

    def tick(self, now: float | None = None, wall: float | None = None) -> list[DueJob]:
        """The runs due at monotonic ``now``, best first; they hold pool slots until released.

        ``wall`` is the wall time at ``now``; without it the clock is read once for the
        wall-minus-monotonic offset that places cron jobs.
        """
        now = self._now(now)
        if wall is None:
            self._check_wall_jump(self.clock.time() - self.clock.monotonic())
        else:
            self._check_wall_jump(float(wall) - now)
        heap = self._heap
        ready: list[Job] = []
        while heap and heap[0][0] <= now:
            _, _, seq, job = heapq.heappop(heap)
            if job.entry_seq != seq:
                self._dead -= 1
                continue
            job.entry_seq = -1
            ready.append(job)
        if self._waiting:
            ready.extend(self._waiting)
            self._waiting = []
        if not ready:
            return []
        if len(ready) > 1:
            ready.sort(key=lambda j: (j.priority, j.deadline, j.order))
        due: list[DueJob] = []
        wall_now = now + self._offset
        for job in ready:
            if job.cancelled:
                continue
            if job.pool is not None and not self._has_slot(job.pool):
                job.waiting = True
                self._waiting.append(job)
                continue
            job.waiting = False
            run = self._dispatch(job, now, wall_now)
            if run is not None:
                due.append(run)
        return due

    def release(self, due: DueJob, error: BaseException | str | None = None) -> None:
        """Hand back a finished run: free its pool slot and count its outcome."""
        if due.released:
            raise SchedulerError(
                f"run of job {due.job.id!r} due at {due.due_at} was already released",
                field="due",
                value=due.job.id,
            )
        due.released = True
        job = due.job
        job.active -= 1
        if job.pool is not None and job.pool in self._pools:
            self._pools[job.pool][0] -= 1
        job.runs += 1
        if error is not None:
            job.failures += 1
            self.failures += 1
            job.last_error = error if isinstance(error, str) else repr(error)

    # -- internals ----------------------------------------------------------------------

    def _now(self, now: float | None) -> float:
        return self.clock.monotonic() if now is None else float(now)

    def _has_slot(self, pool: str) -> bool:
        active, capacity = self._pools[pool]
        return active < capacity

    def _push(self, job: Job, deadline: float) -> None:
        if job.entry_seq >= 0:
            self._dead += 1  # the old entry stays in the heap until it surfaces
        self._seq += 1
        job.deadline = deadline
        job.entry_seq = self._seq
        heapq.heappush(self._heap, (deadline, job.priority, self._seq, job))
        job.next_run_at = (
            job.scheduled + self._offset if job.wall_target is None else job.wall_target
        )

    def _draw_jitter(self, job: Job) -> float:
        return self.rng.uniform(0.0, job.jitter) if job.jitter > 0 else 0.0

    def _schedule(self, job: Job, slot: float) -> None:
        job.scheduled = slot
        job.wall_target = None
        job.jitter_drawn = self._draw_jitter(job)
        self._push(job, slot + job.jitter_drawn)

    def _schedule_wall(self, job: Job, target: float) -> None:
        job.wall_target = target
        job.scheduled = target - self._offset
        job.jitter_drawn = self._draw_jitter(job)
        self._push(job, job.scheduled + job.jitter_drawn)

    def _dispatch(self, job: Job, now: float, wall_now: float) -> DueJob | None:
        """Hand out one run of a due job (or skip it) and schedule its next slot."""
        missed = 0
        if job.kind == KIND_INTERVAL:
            assert job.every is not None
            nxt = job.scheduled + job.every
            if nxt <= now:
                # Missed slots fold into this run; the next is the first slot after now.
                missed = int((now - job.scheduled) // job.every)
                nxt = job.scheduled + (missed + 1) * job.every
                if nxt <= now:  # float rounding at an exact multiple
                    nxt += job.every
        elif job.kind == KIND_CRON:
            assert job.cron is not None and job.wall_target is not None
            nxt = job.cron.next_after(job.wall_target)
            if nxt <= wall_now:
                missed = 1
                probe = nxt
                while missed < 1000:  # count cheaply; the number is only informative
                    probe = job.cron.next_after(probe)
                    if probe > wall_now:
                        break
                    missed += 1
                nxt = job.cron.next_after(wall_now)
        else:
            nxt = math.nan
        job.missed_total += missed
        run = None
        if missed and job.catch_up == CATCH_UP_SKIP:
            log.info("job %s: skipped a late run (%d slots missed)", job.id, missed)
        else:
            run = DueJob(job, now, wall_now, missed)
            job.active += 1
            if job.pool is not None:
                self._pools[job.pool][0] += 1
            job.last_run_at = wall_now
            self.dispatched += 1
            if missed:
                log.info("job %s: %d missed runs folded into one", job.id, missed)
        if job.kind == KIND_INTERVAL:
            self._schedule(job, nxt)
        elif job.kind == KIND_CRON:
            self._schedule_wall(job, nxt)
        else:
            job.next_run_at = None
            self._jobs.pop(job.id, None)
        if job.kind != KIND_ONCE:
            self._save(job)
        return run

    def _check_wall_jump(self, offset: float) -> None:
        if abs(offset - self._offset) <= WALL_JUMP_TOLERANCE:
            return
        log.info("wall clock moved by %.3f s; re-mapping cron and at= jobs", offset - self._offset)
        self._offset = offset
        for job in self._jobs.values():
            if job.wall_target is not None and job.entry_seq >= 0:
                job.scheduled = job.wall_target - offset
                self._push(job, job.scheduled + job.jitter_drawn)
            elif job.wall_target is None:
                job.next_run_at = job.scheduled + offset
        self._compact()

    def _compact(self) -> None:
        # Lazy deletion keeps cancel O(1); rebuilding once dead entries are the majority
        # keeps the heap O(live jobs) in size, amortised O(1) per cancel.
        if self._dead > 64 and self._dead * 2 > len(self._heap):
            self._heap = [e for e in self._heap if e[3].entry_seq == e[2]]
            heapq.heapify(self._heap)
            self._dead = 0

    def _load(self, job_id: str) -> ScheduleState | None:
        if self.store is None:
            return None
        try:
            return self.store.load(job_id)
        except Exception:
            self.store_errors += 1
            log.exception("job %s: could not load its schedule state; starting fresh", job_id)
            return None

    def _save(self, job: Job) -> None:
        if self.store is None:
            return
        try:
            self.store.save(job.id, ScheduleState(job.last_run_at, job.next_run_at))
        except Exception:
            # A full or broken disk must not stop the schedule; the cost is one extra
            # catch-up run after the next reboot.
            self.store_errors += 1
            log.exception("job %s: could not save its schedule state", job.id)
