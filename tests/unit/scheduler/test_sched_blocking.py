"""BlockingRunner with real threads and the real clock."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import pytest

from edge_min.clock import SystemClock
from edge_min.platform.threads import ThreadWaiter, ThreadWorkerPool
from edge_min.scheduler import BlockingRunner, Scheduler


@pytest.fixture
def runner() -> Iterator[BlockingRunner]:
    scheduler = Scheduler(SystemClock(), pools={"agents": 1})
    r = BlockingRunner(scheduler, ThreadWorkerPool(4))
    yield r
    r.stop(timeout=1.0)


def wait_for(predicate: object, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.005)
    return False


def test_blocking_job_does_not_delay_another_due_job(runner: BlockingRunner) -> None:
    release_blocker = threading.Event()
    started: dict[str, float] = {}
    t0 = time.monotonic()

    def blocker() -> None:
        started["blocker"] = time.monotonic() - t0
        release_blocker.wait(5)  # an agent call that hangs

    def quick() -> None:
        started.setdefault("quick", time.monotonic() - t0)

    runner.call(lambda s: s.add_once("blocker", blocker, after=0.0))
    runner.call(lambda s: s.add_interval("quick", 0.2, quick))
    runner.start()
    assert wait_for(lambda: "quick" in started, 3.0)
    assert started["quick"] < 0.6  # due at 0.2 s while the blocker is still blocking
    assert not release_blocker.is_set()
    assert runner.inflight() >= 1
    release_blocker.set()


def test_stop_returns_promptly_with_work_in_flight(runner: BlockingRunner) -> None:
    hang = threading.Event()
    runner.call(lambda s: s.add_once("hang", lambda: hang.wait(10), after=0.0))
    runner.call(lambda s: s.add_interval("far", 3600, lambda: None))
    runner.start()
    assert wait_for(lambda: runner.inflight() == 1)
    began = time.monotonic()
    assert runner.stop(timeout=1.0) is True
    assert time.monotonic() - began < 1.0
    hang.set()


def test_wake_picks_up_jobs_added_from_another_thread(runner: BlockingRunner) -> None:
    runner.max_sleep = 30.0  # without a wake the loop would sleep 30 s
    runner.start()
    time.sleep(0.05)  # the loop is asleep with nothing scheduled
    fired = threading.Event()
    began = time.monotonic()
    threading.Thread(
        target=lambda: runner.call(lambda s: s.add_once("late", fired.set, after=0.0))
    ).start()
    assert fired.wait(2.0)
    assert time.monotonic() - began < 0.5


def test_pool_slot_frees_when_a_worker_finishes(runner: BlockingRunner) -> None:
    order: list[str] = []
    gate = threading.Event()

    def first() -> None:
        order.append("first-start")
        gate.wait(5)
        order.append("first-end")

    runner.call(lambda s: s.add_once("first", first, after=0.0, pool="agents"))
    runner.call(
        lambda s: s.add_once("second", lambda: order.append("second"), after=0.0, pool="agents")
    )
    runner.start()
    assert wait_for(lambda: "first-start" in order)
    time.sleep(0.1)
    assert "second" not in order  # the pool of one is held
    gate.set()
    assert wait_for(lambda: "second" in order)
    assert order == ["first-start", "first-end", "second"]
    assert runner.scheduler.pool_usage("agents") == (0, 1)


def test_failing_job_is_counted_and_loop_keeps_going(
    runner: BlockingRunner, caplog: pytest.LogCaptureFixture
) -> None:
    ok = threading.Event()

    def boom() -> None:
        raise RuntimeError("agent crashed")

    with caplog.at_level(logging.ERROR, logger="edge_min.scheduler"):
        runner.call(lambda s: s.add_interval("boom", 0.02, boom))
        runner.call(lambda s: s.add_once("ok", ok.set, after=0.1))
        runner.start()
        assert ok.wait(3.0)
        assert wait_for(lambda: runner.failures >= 2)
    job = runner.scheduler.get("boom")
    assert job is not None and job.failures >= 2
    assert "agent crashed" in caplog.text


def test_thread_primitives() -> None:
    pool = ThreadWorkerPool(2)
    done = ThreadWaiter()
    handle = pool.submit(lambda: 6 * 7, done.set)
    assert done.wait(2.0)
    assert handle.done() and handle.result() == 42 and handle.exception() is None
    bad = pool.submit(lambda: 1 / 0)
    assert isinstance(bad.exception(timeout=2.0), ZeroDivisionError)
    pool.shutdown(wait=True, timeout=1.0)
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit(lambda: None)
    with pytest.raises(ValueError, match="workers"):
        ThreadWorkerPool(0)
