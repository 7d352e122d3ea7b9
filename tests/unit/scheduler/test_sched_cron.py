"""Cron parsing and next_after, checked against datetime and a brute-force minute scan."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_min.errors import SchedulerError
from edge_min.scheduler.cron import (
    CronExpr,
    civil_from_days,
    days_from_civil,
    parse_utc_offset,
)

JAN1 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()


def ts(year: int, month: int, day: int, hour: int = 0) -> float:
    return datetime(year, month, day, hour, tzinfo=UTC).timestamp()


def brute_next(expr: CronExpr, after: float, limit_minutes: int) -> float | None:
    start = (int(after + expr.utc_offset) // 60 + 1) * 60 - expr.utc_offset
    for i in range(limit_minutes):
        t = start + 60 * i
        dt = datetime.fromtimestamp(t + expr.utc_offset, tz=UTC)
        dow = (dt.weekday() + 1) % 7  # Python: Monday 0; cron: Sunday 0
        dom_ok = dt.day in expr.days
        dow_ok = dow in expr.weekdays
        day_ok = (
            (dom_ok or dow_ok) if not expr.dom_any and not expr.dow_any else (dom_ok and dow_ok)
        )
        if (
            dt.minute in expr.minutes
            and dt.hour in expr.hours
            and dt.month in expr.months
            and day_ok
        ):
            return float(t)
    return None


def test_every_five_minutes() -> None:
    expr = CronExpr.parse("*/5 * * * *")
    assert expr.minutes == frozenset(range(0, 60, 5))
    assert expr.next_after(JAN1) == JAN1 + 300
    assert expr.next_after(JAN1 + 1) == JAN1 + 300
    assert expr.next_after(JAN1 + 299.9) == JAN1 + 300
    assert expr.next_after(JAN1 + 300) == JAN1 + 600


@pytest.mark.parametrize(
    ("text", "field", "values"),
    [
        ("1-10/2 * * * *", "minutes", set(range(1, 11, 2))),
        ("0,15,30,45 * * * *", "minutes", {0, 15, 30, 45}),
        ("5/20 * * * *", "minutes", {5, 25, 45}),
        ("* 9-17 * * *", "hours", set(range(9, 18))),
        ("* * * jan,Mar-may *", "months", {1, 3, 4, 5}),
        ("* * * * mon-fri", "weekdays", {1, 2, 3, 4, 5}),
        ("* * * * 7", "weekdays", {0}),
        ("* * * * sun,sat", "weekdays", {0, 6}),
        ("* * */10 * *", "days", {1, 11, 21, 31}),
    ],
)
def test_field_syntax(text: str, field: str, values: set[int]) -> None:
    assert getattr(CronExpr.parse(text), field) == frozenset(values)


@pytest.mark.parametrize(
    ("text", "field", "value"),
    [
        ("61 * * * *", "minute", "61"),
        ("* 24 * * *", "hour", "24"),
        ("* * 0 * *", "day-of-month", "0"),
        ("* * * 13 *", "month", "13"),
        ("* * * * 8", "day-of-week", "8"),
        ("*/0 * * * *", "minute", "*/0"),
        ("10-5 * * * *", "minute", "10-5"),
        ("* * * foo *", "month", "foo"),
        ("* * * * funday", "day-of-week", "funday"),
        ("1,,2 * * * *", "minute", "1,,2"),
        ("* * * *", "cron", "* * * *"),
        ("* * * * * *", "cron", "* * * * * *"),
        ("@fortnightly", "cron", "@fortnightly"),
        ("0 0 30 2 *", "day-of-month", "30"),
    ],
)
def test_bad_expressions_name_field_and_value(text: str, field: str, value: str) -> None:
    with pytest.raises(SchedulerError) as info:
        CronExpr.parse(text)
    assert info.value.details["field"] == field
    assert info.value.details["value"] == value
    assert value in str(info.value) or field in str(info.value)


def test_macros() -> None:
    assert CronExpr.parse("@hourly").next_after(JAN1 + 10) == JAN1 + 3600
    assert CronExpr.parse("@daily").next_after(JAN1) == JAN1 + 86400
    assert CronExpr.parse("@weekly").next_after(JAN1) == ts(2026, 1, 4)  # a Sunday
    assert CronExpr.parse("@monthly").next_after(JAN1) == ts(2026, 2, 1)
    assert CronExpr.parse("@yearly").next_after(JAN1) == ts(2027, 1, 1)


def test_dom_and_dow_both_restricted_is_or() -> None:
    expr = CronExpr.parse("0 0 1 * mon")
    got = []
    t = JAN1
    for _ in range(4):
        t = expr.next_after(t)
        got.append(datetime.fromtimestamp(t, tz=UTC).date().isoformat())
    assert got == ["2026-01-05", "2026-01-12", "2026-01-19", "2026-01-26"]
    assert expr.next_after(ts(2026, 1, 26)) == ts(2026, 2, 1)


def test_leap_day_and_31st() -> None:
    leap = CronExpr.parse("0 12 29 2 *")
    assert leap.next_after(JAN1) == ts(2028, 2, 29, 12)
    assert leap.next_after(ts(2028, 2, 29, 12)) == ts(2032, 2, 29, 12)
    last = CronExpr.parse("0 0 31 * *")
    assert last.next_after(ts(2026, 1, 31)) == ts(2026, 3, 31)


def test_utc_offset_shifts_local_time() -> None:
    expr = CronExpr.parse("0 2 * * *", utc_offset="+05:30")
    assert expr.next_after(JAN1) == ts(2026, 1, 1, 2) - 5.5 * 3600 + 86400
    assert datetime.fromtimestamp(expr.next_after(JAN1), tz=UTC).hour == 20
    west = CronExpr.parse("0 2 * * *", utc_offset=-3600)
    assert west.next_after(JAN1) == ts(2026, 1, 1, 3)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(3600, 3600), ("+01:00", 3600), ("-0530", -19800), ("Z", 0), ("+09", 32400)],
)
def test_parse_utc_offset(value: int | str, seconds: int) -> None:
    assert parse_utc_offset(value) == seconds


@pytest.mark.parametrize("value", ["+1:00", "abc", "+15:00", 99999])
def test_parse_utc_offset_rejects(value: int | str) -> None:
    with pytest.raises(SchedulerError, match="utc_offset"):
        parse_utc_offset(value)


@given(st.integers(min_value=-800_000, max_value=800_000))
def test_civil_round_trip(days: int) -> None:
    y, m, d = civil_from_days(days)
    assert days_from_civil(y, m, d) == days
    expected = datetime(1970, 1, 1) + timedelta(days=days) if -719_162 < days < 2_900_000 else None
    if expected is not None:
        assert (y, m, d) == (expected.year, expected.month, expected.day)


def _field(low: int, high: int) -> st.SearchStrategy[str]:
    single = st.integers(low, high).map(str)
    rng = st.tuples(st.integers(low, high), st.integers(low, high)).map(
        lambda p: f"{min(p)}-{max(p)}"
    )
    step = st.tuples(st.sampled_from(["*", f"{low}-{high}"]), st.integers(1, 7)).map(
        lambda p: f"{p[0]}/{p[1]}"
    )
    item = st.one_of(single, rng, step)
    return st.one_of(st.just("*"), st.lists(item, min_size=1, max_size=3).map(",".join))


cron_text = st.tuples(_field(0, 59), _field(0, 23), _field(1, 28), st.just("*"), _field(0, 6)).map(
    " ".join
)


@settings(max_examples=150, deadline=None)
@given(
    cron_text,
    st.floats(min_value=JAN1, max_value=JAN1 + 5 * 365 * 86400),
    st.sampled_from([0, 3600, -18000, 19800]),
)
def test_next_after_agrees_with_brute_force(text: str, after: float, offset: int) -> None:
    expr = CronExpr.parse(text, utc_offset=offset)
    got = expr.next_after(after)
    assert got > after
    assert got % 60 == (-offset) % 60
    assert expr.matches(got)
    # Minimality: the first matching minute a brute-force scan of two days finds is ours.
    window = 2 * 1440
    expect = brute_next(expr, after, window)
    if expect is not None:
        assert expect == got, (text, after)
    else:
        assert got >= after + window * 60
