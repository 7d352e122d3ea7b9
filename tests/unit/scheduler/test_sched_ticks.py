"""Wrap-around tick arithmetic for the MicroPython runner."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edge_min.scheduler.ticks import (
    TICKS_HALFPERIOD,
    TICKS_MAX,
    TICKS_PERIOD,
    TickAccumulator,
    deadline_passed,
    ticks_add,
    ticks_diff,
    ticks_less,
)

reading = st.integers(min_value=0, max_value=TICKS_MAX)
# -half and +half are the same reading apart; only one of them has a defined sign.
delta = st.integers(min_value=-TICKS_HALFPERIOD + 1, max_value=TICKS_HALFPERIOD - 1)


def test_diff_across_the_wrap() -> None:
    assert ticks_diff(5, TICKS_MAX - 4) == 10
    assert ticks_diff(TICKS_MAX - 4, 5) == -10
    assert ticks_add(TICKS_MAX, 1) == 0
    assert ticks_less(TICKS_MAX, 3)
    assert not ticks_less(3, TICKS_MAX)
    assert deadline_passed(2, ticks_add(TICKS_MAX, 2))
    assert not deadline_passed(ticks_add(TICKS_MAX, 1), 2)
    # The naive comparison gets it wrong, which is the point of the helpers.
    assert 5 - (TICKS_MAX - 4) != 10


@given(reading, delta)
def test_diff_undoes_add(start: int, d: int) -> None:
    end = ticks_add(start, d)
    assert 0 <= end < TICKS_PERIOD
    assert ticks_diff(end, start) == d
    assert ticks_less(start, end) == (d > 0)


@given(st.integers(0, 255), st.integers(-128, 127))
def test_small_period(start: int, d: int) -> None:
    assert ticks_diff(ticks_add(start, d, 256), start, 256) == d


def test_accumulator_survives_many_wraps() -> None:
    period = 1000
    raw = [990]

    def read() -> int:
        return raw[0] % period

    acc = TickAccumulator(read, ticks_per_second=100, period=period)
    assert acc.monotonic() == 0
    total = 0
    for step in [20, 400, 499, 1, 333] * 10:
        raw[0] += step
        total += step
        assert acc.monotonic() == total / 100
    raw[0] -= 3  # a stale reading never makes time go backwards
    assert acc.monotonic() == total / 100
