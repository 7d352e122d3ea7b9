"""Hypothesis properties of the Scheduler on a VirtualClock."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_min.clock import VirtualClock
from edge_min.scheduler import Scheduler, StepRunner

START = 1_767_225_600.0


def recorder(into: list[float], clock: VirtualClock) -> Callable[[], None]:
    """A job that notes the monotonic time it ran at."""

    def run() -> None:
        into.append(clock.monotonic())

    return run


intervals = st.lists(st.integers(min_value=1, max_value=5000), min_size=1, max_size=6)


@settings(max_examples=60, deadline=None)
@given(intervals, st.integers(min_value=0, max_value=50_000))
def test_advance_to_fires_every_slot_exactly_once(everies: list[int], horizon: int) -> None:
    clock = VirtualClock(START)
    s = Scheduler(clock)
    runner = StepRunner(s)
    seen: dict[str, list[float]] = {}
    for i, every in enumerate(everies):
        name = f"j{i}"
        seen[name] = []
        s.add_interval(name, every, recorder(seen[name], clock))
    runner.advance_to(horizon)
    for i, every in enumerate(everies):
        assert seen[f"j{i}"] == [every * k for k in range(1, horizon // every + 1)]


@settings(max_examples=80, deadline=None)
@given(
    st.integers(min_value=1, max_value=1000),
    st.lists(st.floats(min_value=0, max_value=3000, allow_nan=False), max_size=40),
)
def test_arbitrary_ticks_fire_once_per_crossed_slot(every: int, gaps: list[float]) -> None:
    """With ticks at arbitrary times, a job runs on a tick iff a new slot passed since the last."""
    clock = VirtualClock(START)
    s = Scheduler(clock)
    runner = StepRunner(s)
    runs: list[float] = []
    s.add_interval("j", every, lambda: runs.append(clock.monotonic()))
    expected = 0
    last_slot = 0
    for gap in gaps:
        clock.advance(gap)
        now = clock.monotonic()
        ran = runner.tick(now)
        slot = math.floor(now / every)
        assert ran == (1 if slot > last_slot else 0)
        expected += ran
        last_slot = max(last_slot, slot)
        deadline = s.next_deadline()
        assert deadline is not None and now < deadline <= now + every
    assert len(runs) == expected


@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=0, max_value=2**32),
    st.integers(min_value=10, max_value=500),
    st.floats(min_value=0.0, max_value=0.99),
)
def test_jitter_stays_in_bounds_and_repeats_with_the_seed(
    seed: int, every: int, fraction: float
) -> None:
    jitter = every * fraction

    def due_times() -> list[float]:
        s = Scheduler(VirtualClock(START), rng=random.Random(seed))
        s.add_interval("j", every, lambda: None, jitter=jitter)
        got = []
        for _ in range(30):
            d = s.next_deadline()
            assert d is not None
            (run,) = s.tick(d)
            assert run.scheduled_at <= run.due_at <= run.scheduled_at + jitter
            got.append(run.due_at)
            s.release(run)
        return got

    first = due_times()
    assert first == due_times()
    # Slots do not drift: the k-th run is within jitter of k * every.
    assert all(every * (k + 1) <= t <= every * (k + 1) + jitter for k, t in enumerate(first))


@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=1, max_value=4),
    st.lists(
        st.tuples(st.integers(0, 200), st.integers(-3, 3), st.integers(0, 50)),
        min_size=1,
        max_size=25,
    ),
    st.lists(st.integers(0, 1), min_size=1, max_size=200),
)
def test_pools_never_exceed_capacity_and_everything_runs(
    capacity: int, specs: list[tuple[int, int, int]], release_plan: list[int]
) -> None:
    s = Scheduler(VirtualClock(START), pools={"p": capacity})
    for i, (after, prio, _) in enumerate(specs):
        s.add_once(f"o{i}", lambda: None, after=after, pool="p", priority=prio)
    holding: list[object] = []
    done = 0
    now = 0.0
    for step, release_first in enumerate(release_plan * 5):
        if release_first and holding:
            s.release(holding.pop(0))  # type: ignore[arg-type]
            done += 1
        now = float(step * 10)
        batch = s.tick(now)
        # Within a batch, lower priority numbers come first.
        prios = [d.priority for d in batch]
        assert prios == sorted(prios)
        holding.extend(batch)
        assert len(holding) <= capacity
        assert s.pool_usage("p") == (len(holding), capacity)
    holding.extend(s.tick(now + 1000))  # everything is due by now
    while holding:
        assert len(holding) <= capacity
        s.release(holding.pop())  # type: ignore[arg-type]
        done += 1
        holding.extend(s.tick(now + 1000))
    assert done == len(specs)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 300), min_size=2, max_size=8), st.integers(1, 5000))
def test_cancelled_jobs_never_fire_after_cancel(everies: list[int], cancel_at: int) -> None:
    clock = VirtualClock(START)
    s = Scheduler(clock)
    runner = StepRunner(s)
    fired: dict[str, list[float]] = {f"j{i}": [] for i in range(len(everies))}
    for i, every in enumerate(everies):
        s.add_interval(f"j{i}", every, recorder(fired[f"j{i}"], clock))
    runner.advance_to(cancel_at)
    for i in range(0, len(everies), 2):
        assert s.cancel(f"j{i}")
    runner.advance_to(cancel_at + 2000)
    for i, every in enumerate(everies):
        times = fired[f"j{i}"]
        if i % 2 == 0:
            assert all(t <= cancel_at for t in times)
            assert len(times) == cancel_at // every
        else:
            assert len(times) == (cancel_at + 2000) // every
