"""Health checks: real commands with real timeouts, built-ins, fallbacks, intervals."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from edge_min.clock import VirtualClock
from edge_min.config.monitoring import HealthCheckSpec
from edge_min.errors import ConfigError
from edge_min.monitor.health import (
    CheckFn,
    HealthChecks,
    database_check,
    scheduler_check,
    sync_check,
)
from edge_min.store import MemoryStore


def checks(*specs: HealthCheckSpec, builtins: dict[str, CheckFn] | None = None) -> HealthChecks:
    return HealthChecks(specs, builtins or {}, VirtualClock())


def test_a_command_passes_on_exit_0_and_fails_otherwise() -> None:
    hc = checks(
        HealthCheckSpec("ok", 60, "echo fine", 5),
        HealthCheckSpec("bad", 60, "echo broken >&2; exit 2", 5),
    )
    ok, bad = hc.run_due()
    assert (ok.status, ok.output, ok.via, ok.returncode) == ("pass", "fine", "command", 0)
    assert (bad.status, bad.output, bad.returncode) == ("fail", "broken", 2)
    assert hc.overall() == "unhealthy"
    assert hc.checks["bad"].consecutive_failures == 1


def test_a_check_past_its_timeout_is_killed_and_counted_failed() -> None:
    hc = checks(HealthCheckSpec("slow", 60, "sleep 5", 0.2))
    began = time.monotonic()
    (res,) = hc.run_due()
    assert time.monotonic() - began < 2.0, "sleep 5 was not killed at the 0.2 s timeout"
    assert res.status == "fail" and res.timed_out
    assert res.output.startswith("timed out after 0.2s")
    view = hc.views()[0]
    assert view["status"] == "fail" and view["last"]["timed_out"] is True


def test_checks_run_on_their_own_intervals() -> None:
    clock = VirtualClock()
    hc = HealthChecks(
        [HealthCheckSpec("fast", 60, "true", 5), HealthCheckSpec("slow", 300, "true", 5)],
        {},
        clock,
    )
    assert hc.overall() == "unknown" and hc.next_due() is None
    assert [r.name for r in hc.run_due()] == ["fast", "slow"]  # all at the first chance
    assert hc.run_due() == [] and hc.next_due() == clock.monotonic() + 60
    ran: list[str] = []
    for _ in range(5):
        clock.advance(60)
        ran += [r.name for r in hc.run_due()]
    assert ran == ["fast"] * 4 + ["fast", "slow"]
    assert hc.overall() == "healthy"


def test_builtin_checks_are_named_in_the_command() -> None:
    store = MemoryStore()
    hc = checks(
        HealthCheckSpec("db", 60, "builtin:database", 5),
        HealthCheckSpec("sync", 60, "builtin:sync", 5),
        builtins={"database": database_check(store), "sync": sync_check(lambda: 5)},
    )
    db, sync = hc.run_due()
    assert (db.status, db.via) == ("pass", "builtin:database")
    assert sync.status == "fail" and "5 consecutive sync failures" in sync.output
    store.close()  # a closed store is a failing database, not a crash
    assert hc.run("db").status == "fail"


def test_an_unknown_builtin_is_a_config_error_naming_the_check() -> None:
    with pytest.raises(ConfigError, match=r"'probe'.*unknown built-in 'disk'"):
        checks(HealthCheckSpec("probe", 60, "builtin:disk", 5))


def test_a_missing_builtin_fails_with_a_reason() -> None:
    (res,) = checks(HealthCheckSpec("s", 60, "builtin:sync", 5)).run_due()
    assert res.status == "fail" and "no built-in 'sync' check" in res.output


def test_the_spec_checks_fall_back_to_builtins_when_the_tool_is_missing() -> None:
    hc = checks(
        HealthCheckSpec("database_check", 600, "edge-min-no-sqlite3 /data/x.db 'SELECT 1;'", 5),
        HealthCheckSpec("sync_check", 1800, "edge-min-no-curl -s http://x | grep -q ok", 10),
        builtins={"database": lambda: (True, "db ok"), "sync": lambda: (True, "sync ok")},
    )
    db, sync = hc.run_due()
    assert (db.status, db.via) == ("pass", "builtin:database")
    assert "edge-min-no-sqlite3 not found" in db.output
    assert (sync.status, sync.via) == ("pass", "builtin:sync")


def test_exit_127_inside_a_pipeline_also_falls_back() -> None:
    hc = checks(
        HealthCheckSpec("service_status", 300, "true | edge-min-no-such-tool", 5),
        builtins={"scheduler": lambda: (True, "on time")},
    )
    (res,) = hc.run_due()
    assert (res.status, res.via) == ("pass", "builtin:scheduler")
    assert "exit 127" in res.output


def test_a_check_without_a_builtin_twin_reports_the_missing_tool() -> None:
    (res,) = checks(HealthCheckSpec("custom", 60, "edge-min-no-such-tool", 5)).run_due()
    assert res.status == "fail" and res.returncode == 127


def test_scheduler_liveness_fails_when_the_next_job_is_long_overdue() -> None:
    clock = VirtualClock()
    deadline: dict[str, float | None] = {"at": None}
    check = scheduler_check(lambda: deadline["at"], clock, grace=60)
    assert check()[0]
    deadline["at"] = clock.monotonic() + 10
    assert check()[0]
    clock.advance(70)
    assert check()[0]  # 60 s late: within grace
    clock.advance(1)
    ok, detail = check()
    assert not ok and "61s behind" in detail


def test_a_check_that_keeps_failing_is_logged_once_and_its_recovery_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    flag = tmp_path / "ok"
    clock = VirtualClock()
    hc = HealthChecks([HealthCheckSpec("flag", 60, f"test -e {flag}", 5)], {}, clock)
    with caplog.at_level(logging.INFO, logger="edge_min.monitor"):
        for _ in range(3):
            hc.run_due()
            clock.advance(60)
        flag.touch()
        hc.run_due()
    assert [r.getMessage() for r in caplog.records] == [
        "health check flag failed: no output",
        "health check flag passes again",
    ]
