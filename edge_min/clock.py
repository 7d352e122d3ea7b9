"""The clock port: wall time for records, monotonic time for timers.

Everything that waits or stamps takes a ``Clock`` so the scheduler, sync and alerts are
deterministic under test with ``VirtualClock``.
"""

from __future__ import annotations

import time as _time
from datetime import UTC, datetime
from functools import lru_cache
from typing import Protocol


class Clock(Protocol):
    """Wall time (seconds since the epoch) and monotonic time (seconds, arbitrary origin)."""

    def time(self) -> float:
        """Seconds since the Unix epoch."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin; never goes backwards."""
        ...


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        """Seconds since the Unix epoch."""
        return _time.time()

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin; never goes backwards."""
        return _time.monotonic()


class VirtualClock:
    """A clock that moves only when told to; for deterministic tests and simulation."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self._wall = float(start)
        self._mono = 0.0

    def time(self) -> float:
        """Seconds since the Unix epoch."""
        return self._wall

    def monotonic(self) -> float:
        """Seconds since this clock was made."""
        return self._mono

    def advance(self, seconds: float) -> None:
        """Move both clocks forward."""
        if seconds < 0:
            raise ValueError("a virtual clock cannot go backwards")
        self._wall += seconds
        self._mono += seconds

    def set_wall(self, wall: float) -> None:
        """Jump wall time (as an NTP correction would) without moving monotonic time."""
        self._wall = float(wall)


@lru_cache(maxsize=64)  # one poll stamps many rows with the same instant
def iso(ts: float) -> str:
    """An RFC 3339 UTC timestamp with microseconds, sortable as text (the store's format)."""
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def from_iso(text: str) -> float:
    """Seconds since the epoch from a timestamp written by ``iso``."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def now_iso(clock: Clock | None = None) -> str:
    """The clock's wall time as ``iso`` text."""
    return iso((clock or SystemClock()).time())
