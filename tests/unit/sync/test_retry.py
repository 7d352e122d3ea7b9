"""Exponential backoff with jitter: bounds, growth, cap, determinism, give-up."""

from __future__ import annotations

import random

import pytest

from edge_min.config.sync import RetryPolicy
from edge_min.errors import ConfigError
from edge_min.sync.errors import ProtocolVersionError, SyncError, TruncatedFrame
from edge_min.sync.retry import (
    RetryTracker,
    backoff_delay,
    base_delay,
    is_retryable,
)
from edge_min.sync.transport import TransportError

POLICY = RetryPolicy(max_attempts=5, initial_delay=30, max_delay=3600, backoff_factor=2.0)


def test_base_delay_grows_by_the_factor_and_stops_at_max_delay() -> None:
    assert [base_delay(POLICY, n) for n in range(1, 9)] == [30, 60, 120, 240, 480, 960, 1920, 3600]


def test_jittered_delay_stays_within_half_and_whole_of_the_base() -> None:
    rng = random.Random(1)
    for attempt in range(1, 12):
        for _ in range(200):
            d = backoff_delay(POLICY, attempt, rng)
            base = base_delay(POLICY, attempt)
            assert base / 2 <= d <= base
    spread = {round(backoff_delay(POLICY, 1, rng), 6) for _ in range(50)}
    assert len(spread) > 40  # jitter really varies


def test_the_same_seed_gives_the_same_delays() -> None:
    a = [backoff_delay(POLICY, n, random.Random(42)) for n in range(1, 6)]
    b = [backoff_delay(POLICY, n, random.Random(42)) for n in range(1, 6)]
    assert a == b


def test_jitter_out_of_range_is_refused() -> None:
    with pytest.raises(ConfigError, match="jitter"):
        backoff_delay(POLICY, 1, random.Random(), jitter=1.5)


def test_tracker_retries_until_max_attempts_then_gives_up_and_starts_over() -> None:
    t = RetryTracker(POLICY, random.Random(3))
    nexts = [t.failed("agents", 1000.0) for _ in range(4)]
    assert all(n is not None for n in nexts)
    gaps = [n - 1000.0 for n in nexts if n is not None]
    assert 15 <= gaps[0] <= 30 and 120 <= gaps[3] <= 240
    assert t.failed("agents", 1000.0) is None  # the fifth failure: wait for the schedule
    assert t.attempts("agents") == 0
    assert t.failed("agents", 1000.0) is not None  # a new run of attempts


def test_tracker_success_and_non_retryable_failures() -> None:
    t = RetryTracker(POLICY, random.Random(3))
    t.failed("a", 0.0)
    t.succeeded("a")
    assert t.attempts("a") == 0
    assert t.failed("a", 0.0, retryable=False) is None


def test_what_is_retryable() -> None:
    assert is_retryable(TransportError("cut"))
    assert is_retryable(TruncatedFrame("cut"))
    assert is_retryable(ConnectionResetError())
    assert not is_retryable(ProtocolVersionError("v2"))
    assert not is_retryable(SyncError("gone", remote_code="device_decommissioned"))
    assert not is_retryable(ValueError("bug"))
