from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_min.units import format_duration, format_size, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512MB", 512 * 1024**2),
        ("2GB", 2 * 1024**3),
        ("100MB", 100 * 1024**2),
        ("128MB", 128 * 1024**2),
        ("1.5GiB", int(1.5 * 1024**3)),
        ("10KB", 10240),
        ("300", 300),
        ("300B", 300),
        (4096, 4096),
    ],
)
def test_sizes(text: object, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["512 MegaBytes", "-1MB", -5, True, None, "MB", [1]])
def test_bad_sizes_say_what_is_expected(bad: object) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(bad)


def test_rate_accepts_per_second_suffix() -> None:
    assert parse_size("1MB") == parse_size("1MB/s") == 1024**2


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30s", 30), ("5m", 300), ("1h", 3600), ("30 days", 30 * 86400), ("250ms", 0.25), (60, 60)],
)
def test_durations(text: object, expected: float) -> None:
    assert parse_duration(text) == pytest.approx(expected)


@pytest.mark.parametrize("bad", ["5 fortnights", "-3s", False, "", {"a": 1}])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


@given(st.integers(min_value=0, max_value=2**40))
def test_format_size_round_trips_whole_units(n: int) -> None:
    text = format_size(n)
    back = parse_size(text)
    assert abs(back - n) <= max(1, n * 0.05)


def test_format_duration() -> None:
    assert format_duration(300) == "5m"
    assert format_duration(86400) == "1d"
    assert format_duration(2.5) == "2.5s"
