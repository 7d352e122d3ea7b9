"""The pure Scheduler: ordering, cancel, pools, jitter, catch-up, persistence, clock jumps."""

from __future__ import annotations

import logging
import random

import pytest

from edge_min.clock import VirtualClock
from edge_min.errors import SchedulerError
from edge_min.scheduler import (
    CATCH_UP_SKIP,
    MemoryStateStore,
    Scheduler,
    ScheduleState,
    StepRunner,
)

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def noop() -> None:
    return None


def make(**kw: object) -> tuple[VirtualClock, Scheduler]:
    clock = VirtualClock(START)
    return clock, Scheduler(clock, **kw)  # type: ignore[arg-type]


def test_tick_returns_due_work_without_running_it() -> None:
    _, s = make()
    calls: list[str] = []
    s.add_interval("a", 10, lambda: calls.append("a"))
    assert s.next_deadline() == 10
    assert s.tick(9.999) == []
    due = s.tick(10)
    assert [d.name for d in due] == ["a"]
    assert calls == []  # the core never runs a job
    assert due[0].scheduled_at == 10 and due[0].missed == 0
    s.release(due[0])
    assert s.get("a").runs == 1  # type: ignore[union-attr]
    assert s.next_deadline() == 20


def test_priority_orders_jobs_due_together() -> None:
    _, s = make()
    for name, prio in [("low", 5), ("high", -1), ("mid", 0), ("mid2", 0)]:
        s.add_once(name, noop, after=30, priority=prio)
    assert [d.name for d in s.tick(30)] == ["high", "mid", "mid2", "low"]


def test_priority_beats_earlier_deadline_within_one_tick() -> None:
    _, s = make()
    s.add_once("early-low", noop, after=1, priority=9)
    s.add_once("late-high", noop, after=2, priority=1)
    assert [d.name for d in s.tick(5)] == ["late-high", "early-low"]


def test_cancel_stops_future_runs_and_is_idempotent() -> None:
    _, s = make()
    runner = StepRunner(s)
    calls: list[str] = []
    s.add_interval("x", 60, lambda: calls.append("x"))
    s.add_interval("y", 60, lambda: calls.append("y"))
    runner.advance_to(120)
    assert calls.count("x") == 2
    assert s.cancel("x") is True
    assert s.cancel("x") is False
    assert s.cancel("never-added") is False
    runner.advance_to(600)
    assert calls.count("x") == 2
    assert calls.count("y") == 10
    assert [j.id for j in s.jobs()] == ["y"]


def test_cancel_many_keeps_heap_small() -> None:
    _, s = make()
    for i in range(1000):
        s.add_once(f"j{i}", noop, after=i + 1)
    for i in range(1000):
        if i % 5:
            s.cancel(f"j{i}")
    assert len(s._heap) < 500  # compacted once dead entries were the majority
    due = s.tick(10_000)
    assert sorted(int(d.name[1:]) for d in due) == list(range(0, 1000, 5))


def test_cancel_a_job_waiting_for_its_pool() -> None:
    _, s = make(pools={"p": 1})
    s.add_once("a", noop, after=1, pool="p")
    s.add_once("b", noop, after=1, pool="p")
    (a,) = s.tick(1)
    assert s.cancel("b")
    s.release(a)
    assert s.tick(2) == []
    assert s.next_deadline() is None


def test_pool_caps_concurrency_and_release_frees_a_slot() -> None:
    _, s = make(pools={"agents": 2})
    for i in range(5):
        s.add_once(f"w{i}", noop, after=10, pool="agents", priority=i)
    first = s.tick(10)
    assert [d.name for d in first] == ["w0", "w1"]
    assert s.pool_usage("agents") == (2, 2)
    assert s.next_deadline() is None  # waiting jobs cannot start until a release
    assert s.tick(11) == []
    s.release(first[1])
    assert s.next_deadline() == 10  # a waiter is ready now
    assert [d.name for d in s.tick(11)] == ["w2"]
    with pytest.raises(SchedulerError, match="already released"):
        s.release(first[1])


def test_pool_waiting_job_does_not_pile_up() -> None:
    _, s = make(pools={"one": 1})
    s.add_interval("slow", 10, noop, pool="one")
    (run,) = s.tick(10)
    assert s.tick(100) == []  # nine slots passed while the pool was held
    s.release(run)
    (late,) = s.tick(101)
    assert late.missed == 8  # ten slots passed, one run covers them
    assert s.tick(101) == []
    s.release(late)
    assert s.next_deadline() == 110


def test_unknown_pool_and_bad_capacity() -> None:
    _, s = make()
    with pytest.raises(SchedulerError, match="add_pool"):
        s.add_interval("a", 10, noop, pool="nope")
    with pytest.raises(SchedulerError, match="capacity"):
        s.add_pool("p", 0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"every": 0}, "every"),
        ({"every": -5}, "every"),
        ({"every": "soon"}, "every"),
        ({"every": 10, "jitter": 10}, "jitter"),
        ({"every": 10, "jitter": -1}, "jitter"),
        ({"every": 10, "catch_up": "all"}, "catch_up"),
        ({"every": 10, "priority": "high"}, "priority"),
    ],
)
def test_bad_interval_arguments_name_the_field(kwargs: dict[str, object], field: str) -> None:
    _, s = make()
    with pytest.raises(SchedulerError) as info:
        s.add_interval("job", fn=noop, **kwargs)  # type: ignore[arg-type]
    assert info.value.details["field"] == field
    assert field in str(info.value)


def test_duplicate_names_and_durations_as_text() -> None:
    _, s = make()
    job = s.add_interval("sync", "5m", noop)
    assert job.every == 300
    with pytest.raises(SchedulerError, match="already scheduled"):
        s.add_interval("sync", 60, noop)
    with pytest.raises(SchedulerError, match="exactly one"):
        s.add_once("o", noop)
    assert s.add_once(None, noop, after=1).id == "once-1"


def test_once_at_wall_time_and_after() -> None:
    clock, s = make()
    runner = StepRunner(s)
    calls: list[tuple[str, float]] = []
    s.add_once("at", lambda: calls.append(("at", clock.time())), at=START + 90)
    s.add_once("after", lambda: calls.append(("after", clock.time())), after=30)
    runner.run_until_idle()
    assert calls == [("after", START + 30), ("at", START + 90)]
    assert s.jobs() == []


def test_jitter_is_bounded_and_deterministic_with_a_seed() -> None:
    def deadlines(seed: int) -> list[float]:
        clock = VirtualClock(START)
        s = Scheduler(clock, rng=random.Random(seed))
        s.add_interval("j", 100, noop, jitter=20)
        got = []
        for _ in range(200):
            d = s.next_deadline()
            assert d is not None
            (run,) = s.tick(d)
            got.append(run.due_at)
            s.release(run)
        return got

    a, b, c = deadlines(7), deadlines(7), deadlines(8)
    assert a == b
    assert a != c
    offsets = [d - 100 * (i + 1) for i, d in enumerate(a)]
    assert all(0 <= o <= 20 for o in offsets)
    assert max(offsets) - min(offsets) > 10  # actually spread, not a constant


def test_catch_up_after_three_hour_sleep_runs_once_then_realigns() -> None:
    clock, s = make()
    runner = StepRunner(s)
    times: list[float] = []
    s.add_interval("sync", 300, lambda: times.append(clock.monotonic()))
    runner.advance_to(600)
    assert times == [300, 600]
    clock.advance(3 * 3600 + 100)  # the device slept; no ticks happened
    assert runner.tick() == 1
    assert times[-1] == 600 + 3 * 3600 + 100
    assert s.get("sync").missed_total == 35  # type: ignore[union-attr]
    assert s.next_deadline() == 600 + 3 * 3600 + 300  # back on the 300 s grid
    runner.advance_to(600 + 3 * 3600 + 300)
    assert len(times) == 4


def test_catch_up_skip_drops_the_late_run() -> None:
    clock, s = make()
    runner = StepRunner(s)
    times: list[float] = []
    s.add_interval("m", 60, lambda: times.append(clock.monotonic()), catch_up=CATCH_UP_SKIP)
    runner.advance_to(60)
    clock.advance(1000)
    assert runner.tick() == 0
    assert s.next_deadline() == 1080
    runner.advance_to(1080)
    assert times == [60, 1080]


def test_cron_catch_up_after_sleep_runs_once() -> None:
    clock, s = make()
    runner = StepRunner(s)
    walls: list[float] = []
    s.add_cron("five", "*/5 * * * *", lambda: walls.append(clock.time()))
    clock.advance(3 * 3600 + 7)
    runner.tick()
    assert walls == [START + 3 * 3600 + 7]
    assert s.get("five").next_run_at == START + 3 * 3600 + 300  # type: ignore[union-attr]


def test_state_store_carries_catch_up_across_a_reboot() -> None:
    store = MemoryStateStore()
    clock = VirtualClock(START)
    s = Scheduler(clock, store=store)
    runner = StepRunner(s)
    s.add_interval("backup", 3600, noop)
    s.add_cron("nightly", "0 2 * * *", noop)
    runner.advance_to(3 * 3600)
    assert store.states["backup"] == ScheduleState(START + 3 * 3600, START + 4 * 3600)
    assert store.states["nightly"] == ScheduleState(START + 2 * 3600, START + 26 * 3600)

    # Power off for a day and a half; monotonic time restarts at zero.
    clock2 = VirtualClock(START + 3 * 3600 + 36 * 3600)
    s2 = Scheduler(clock2, store=store)
    runner2 = StepRunner(s2)
    ran: list[str] = []
    s2.add_interval("backup", 3600, lambda: ran.append("backup"))
    s2.add_cron("nightly", "0 2 * * *", lambda: ran.append("nightly"))
    s2.add_interval("fresh", 3600, lambda: ran.append("fresh"))
    assert runner2.tick() == 2
    assert sorted(ran) == ["backup", "nightly"]  # each once, not 36 times
    assert s2.get("backup").next_run_at == START + 40 * 3600  # type: ignore[union-attr]
    assert s2.get("nightly").next_run_at == START + 50 * 3600  # type: ignore[union-attr]
    assert store.states["backup"].last_run_at == START + 39 * 3600


def test_state_store_future_slot_is_kept() -> None:
    store = MemoryStateStore()
    store.save("sync", ScheduleState(START - 100, START + 200))
    _, s = make(store=store)
    assert s.add_interval("sync", 300, noop).next_run_at == START + 200
    store.save("shortened", ScheduleState(None, START + 10_000))
    assert s.add_interval("shortened", 60, noop).next_run_at == START + 60


def test_an_explicit_first_run_is_not_postponed_by_a_stored_slot() -> None:
    """The monitor's checks (first=0) run at each start, whatever the last run stored."""
    store = MemoryStateStore()
    store.save("checks", ScheduleState(START - 10, START + 290))
    store.save("report", ScheduleState(START - 10, START + 290))
    _, s = make(store=store)
    assert s.add_interval("checks", 300, noop, first=0).next_run_at == START
    assert s.add_interval("report", 300, noop, first=400).next_run_at == START + 290


class BrokenStore:
    def load(self, job_id: str) -> ScheduleState | None:
        raise OSError("disk gone")

    def save(self, job_id: str, state: ScheduleState) -> None:
        raise OSError("disk gone")


def test_broken_store_is_logged_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    _, s = make(store=BrokenStore())
    runner = StepRunner(s)
    with caplog.at_level(logging.ERROR, logger="edge_min.scheduler"):
        s.add_interval("a", 10, noop)
        runner.advance_to(30)
    assert s.get("a").runs == 3  # type: ignore[union-attr]
    assert s.store_errors == 5  # one load, four saves
    assert "could not save" in caplog.text


def test_wall_clock_step_remaps_cron_but_not_intervals() -> None:
    clock, s = make()
    runner = StepRunner(s)
    ran: list[str] = []
    s.add_cron("two-am", "0 2 * * *", lambda: ran.append("cron"))
    s.add_interval("every-hour", 3600, lambda: ran.append("interval"))
    runner.advance_to(1800)
    clock.set_wall(START + 2 * 3600 + 60)  # NTP steps the wall clock forward 90 min
    runner.tick()
    assert ran == ["cron"]  # 02:00 passed in wall time: fires once
    assert s.next_deadline() == 3600  # the interval still counts real elapsed time
    runner.advance_to(3600)
    assert ran == ["cron", "interval"]
    clock.set_wall(START)  # stepped far back: cron waits for the next 02:00, no repeat
    runner.advance_to(7200)
    assert ran.count("cron") == 1


def test_job_failure_is_logged_counted_and_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    _, s = make()
    runner = StepRunner(s)

    def boom() -> None:
        raise ValueError("agent exploded")

    s.add_interval("bad", 10, boom)
    s.add_interval("good", 10, noop)
    with caplog.at_level(logging.ERROR, logger="edge_min.scheduler"):
        runner.advance_to(50)
    bad, good = s.get("bad"), s.get("good")
    assert bad is not None and good is not None
    assert (bad.runs, bad.failures, good.runs, good.failures) == (5, 5, 5, 0)
    assert runner.failures == 5 and s.failures == 5
    assert "agent exploded" in (bad.last_error or "")
    assert "job bad failed" in caplog.text


def test_jobs_listing_and_as_dict() -> None:
    _, s = make()
    s.add_interval("b", 20, noop)
    s.add_cron("a", "@hourly", noop, priority=-1)
    assert [j.id for j in s.jobs()] == ["b", "a"]
    info = s.get("a").as_dict()  # type: ignore[union-attr]
    assert info["cron"] == "@hourly" and info["next_run_at"] == START + 3600
    assert len(s) == 2


def test_tick_with_explicit_wall_time_reads_no_clock() -> None:
    class NoClock:
        """A clock that may be read only when the scheduler is made."""

        reads = 0

        def time(self) -> float:
            self.reads += 1
            return START

        def monotonic(self) -> float:
            self.reads += 1
            return 0.0

    clock = NoClock()
    s = Scheduler(clock)
    s.add_cron("hourly", "@hourly", noop, now=0.0)
    made = clock.reads
    assert s.tick(3599.0, wall=START + 3599.0) == []
    assert [d.name for d in s.tick(3600.0, wall=START + 3600.0)] == ["hourly"]
    # The host says wall time jumped an hour ahead: the next hourly slot is due at once.
    assert [d.name for d in s.tick(3601.0, wall=START + 7201.0)] == ["hourly"]
    assert clock.reads == made
