"""Wrap-around-safe tick arithmetic, as MicroPython's ``time.ticks_*`` does it.

A microcontroller's millisecond counter is a small integer that wraps (MicroPython's
``ticks_ms`` wraps at 2**30). Comparing two readings with ``<`` breaks at the wrap, so
differences are taken modulo the period and read as signed: valid while the two readings
are less than half a period apart (about 6.2 days at 2**30 ms). ``TickAccumulator`` turns
such a counter into the float seconds the scheduler wants, provided it is read at least
once every half period — a runner that wakes at least daily does.

Pure integer code with no imports, so a MicroPython runner can copy it as is.
"""

from __future__ import annotations

TICKS_PERIOD = 1 << 30
TICKS_MAX = TICKS_PERIOD - 1
TICKS_HALFPERIOD = TICKS_PERIOD >> 1


def ticks_add(ticks: int, delta: int, period: int = TICKS_PERIOD) -> int:
    """``ticks`` moved by ``delta`` (may be negative), wrapped into ``[0, period)``."""
    return (ticks + delta) % period


def ticks_diff(end: int, start: int, period: int = TICKS_PERIOD) -> int:
    """The signed distance ``end - start`` across a wrap, in ``[-period/2, period/2)``."""
    half = period >> 1
    return ((end - start + half) % period) - half


def ticks_less(a: int, b: int, period: int = TICKS_PERIOD) -> bool:
    """Whether reading ``a`` comes before reading ``b``."""
    return ticks_diff(a, b, period) < 0


def deadline_passed(now: int, deadline: int, period: int = TICKS_PERIOD) -> bool:
    """Whether ``now`` is at or past ``deadline``, both wrapping tick readings."""
    return ticks_diff(now, deadline, period) >= 0


class TickAccumulator:
    """Monotonic seconds from a wrapping tick counter (e.g. ``time.ticks_ms``)."""

    def __init__(
        self, read_ticks: object, ticks_per_second: int = 1000, period: int = TICKS_PERIOD
    ) -> None:
        self._read = read_ticks
        self._per_second = ticks_per_second
        self._period = period
        self._last = self._read_now()
        self._total = 0

    def _read_now(self) -> int:
        return int(self._read())  # type: ignore[operator]

    def monotonic(self) -> float:
        """Seconds since this accumulator was made; never goes backwards."""
        now = self._read_now()
        step = ticks_diff(now, self._last, self._period)
        # A negative step can only be a reading older than the last one (or a gap longer
        # than half a period); time must not go backwards, so it is dropped.
        if step > 0:
            self._total += step
            self._last = now
        return self._total / self._per_second
