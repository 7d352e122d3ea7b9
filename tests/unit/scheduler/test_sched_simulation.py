"""Long stretches of virtual time: the spec's intervals over seven days, cron over a day."""

from __future__ import annotations

import functools
import time
from collections import Counter
from datetime import UTC, datetime

from edge_min.clock import VirtualClock
from edge_min.scheduler import Scheduler, StepRunner

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z
WEEK = 7 * 86400

# The spec's periodic work (sync-config.yaml schedule, edge-monitoring.yaml health checks
# and metrics, edge-config.yaml backup_interval).
SPEC_JOBS = {
    "sync.workflows": 300,
    "sync.workflow_executions": 600,
    "sync.agent_executions": 1800,
    "sync.agents": 3600,
    "health.service_status": 300,
    "health.database_check": 600,
    "health.sync_check": 1800,
    "metrics.collect": 60,
    "storage.backup": 86400,
}


def test_seven_days_of_spec_intervals_fire_exactly_and_fast() -> None:
    clock = VirtualClock(START)
    scheduler = Scheduler(clock, pools={"sync": 1})
    runner = StepRunner(scheduler)
    fired: Counter[str] = Counter()
    late: list[tuple[str, float]] = []

    def job(name: str, every: int) -> None:
        def run() -> None:
            fired[name] += 1
            # Each run happens exactly on its slot in virtual time.
            if clock.monotonic() != fired[name] * every:
                late.append((name, clock.monotonic()))

        pool = "sync" if name.startswith("sync.") else None
        scheduler.add_interval(name, every, run, pool=pool, priority=0 if pool else 1)

    for name, every in SPEC_JOBS.items():
        job(name, every)

    began = time.perf_counter()
    ran = runner.advance_to(WEEK)
    elapsed = time.perf_counter() - began

    expected = {name: WEEK // every for name, every in SPEC_JOBS.items()}
    assert dict(fired) == expected
    assert expected["metrics.collect"] == 10080 and expected["storage.backup"] == 7
    assert ran == sum(expected.values())
    assert late == []
    assert scheduler.failures == 0
    assert elapsed < 2.0, f"seven simulated days took {elapsed:.2f} s"


def test_cron_every_five_minutes_over_a_day() -> None:
    clock = VirtualClock(START)
    scheduler = Scheduler(clock)
    runner = StepRunner(scheduler)
    walls: list[float] = []
    scheduler.add_cron("five", "*/5 * * * *", lambda: walls.append(clock.time()))
    runner.advance_to(86400)
    assert len(walls) == 288
    minutes = [datetime.fromtimestamp(w, tz=UTC) for w in walls]
    assert all(m.minute % 5 == 0 and m.second == 0 for m in minutes)
    assert walls == [START + 300 * (i + 1) for i in range(288)]


def test_cron_in_an_offset_zone_over_a_week() -> None:
    clock = VirtualClock(START)
    scheduler = Scheduler(clock)
    runner = StepRunner(scheduler)
    walls: list[float] = []
    scheduler.add_cron(
        "weekday-9am", "0 9 * * mon-fri", lambda: walls.append(clock.time()), utc_offset="+02:00"
    )
    runner.advance_to(WEEK)
    local = [datetime.fromtimestamp(w + 7200, tz=UTC) for w in walls]
    # 2026-01-01 is a Thursday: Thu, Fri, Mon, Tue, Wed in the first week.
    assert [d.strftime("%a %H:%M") for d in local] == [
        "Thu 09:00",
        "Fri 09:00",
        "Mon 09:00",
        "Tue 09:00",
        "Wed 09:00",
    ]


def test_sparse_ticks_still_fire_each_interval_once_per_tick() -> None:
    """A host that wakes late (a busy JS loop) never gets a burst of duplicate runs."""
    clock = VirtualClock(START)
    scheduler = Scheduler(clock)
    runner = StepRunner(scheduler)
    fired: Counter[str] = Counter()
    for name, every in SPEC_JOBS.items():
        scheduler.add_interval(name, every, functools.partial(fired.update, [name]))
    for _ in range(100):
        clock.advance(4000)  # longer than every interval but the backup
        runner.tick()
    for name, every in SPEC_JOBS.items():
        assert fired[name] == (100 if every <= 4000 else 400_000 // every)
