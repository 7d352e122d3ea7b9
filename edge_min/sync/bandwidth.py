"""A token bucket that holds sync traffic to ``network.max_bandwidth`` bytes per second.

The transport calls ``consume(n)`` before it writes or after it reads each chunk of at most a
few KiB, in both directions, on one shared bucket: a sync is a strict request/answer
exchange, so one bucket caps the link's total use at the configured rate.

The bucket may go into debt: ``consume(n)`` takes ``n`` tokens at once and then sleeps until
the balance is back at zero. A chunk larger than the burst is therefore allowed (it just
waits longer), and the long-run rate is exactly ``rate`` whatever the chunk size. The first
``burst`` bytes go out at once, so over ``N`` bytes the measured rate is at most
``rate * N / (N - burst)``; the default burst (1/16 s of traffic, at most 64 KiB) keeps
that within a few percent for transfers of a second or more.

Time comes from a ``Clock`` (monotonic) and waiting from an injected ``sleep``, so tests
drive the bucket with a ``VirtualClock`` and never actually wait.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from edge_min.clock import Clock, SystemClock
from edge_min.errors import ConfigError

MAX_DEFAULT_BURST = 64 * 1024
MIN_BURST = 1024
DEFAULT_CHUNK = 16 * 1024


def default_burst(rate: float) -> int:
    """The burst for ``rate`` bytes/s: 1/16 s of traffic, between 1 KiB and 64 KiB."""
    return int(max(MIN_BURST, min(MAX_DEFAULT_BURST, rate / 16)))


def chunk_size(rate: float) -> int:
    """A read/write chunk for ``rate`` (0 = unlimited): small enough to keep the pace even."""
    if rate <= 0:
        return 64 * 1024
    return int(max(1024, min(DEFAULT_CHUNK, rate / 32)))


class TokenBucket:
    """At most ``rate`` bytes per second on average, ``burst`` bytes at once."""

    def __init__(
        self,
        rate: float,
        burst: int | None = None,
        clock: Clock | None = None,
        *,
        sleep: Callable[[float], object] | None = None,
    ) -> None:
        if rate <= 0:
            raise ConfigError(
                f"a token bucket needs a rate above 0 bytes/s, got {rate!r}; "
                "use no bucket for an unlimited link (network.max_bandwidth: 0)",
                path="sync.network.max_bandwidth",
                value=rate,
            )
        self.rate = float(rate)
        self.burst = int(burst if burst is not None else default_burst(rate))
        if self.burst < 1:
            raise ConfigError(
                f"burst must be at least 1 byte, got {self.burst}", path="burst", value=burst
            )
        self.clock: Clock = clock or SystemClock()
        self._sleep = sleep or time.sleep
        self._tokens = float(self.burst)
        self._last = self.clock.monotonic()
        self.consumed = 0
        self.waited = 0.0

    def _refill(self) -> None:
        now = self.clock.monotonic()
        elapsed = max(0.0, now - self._last)
        self._last = now
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)

    @property
    def tokens(self) -> float:
        """The current balance (negative while in debt)."""
        self._refill()
        return self._tokens

    def delay_for(self, n: int) -> float:
        """Seconds ``consume(n)`` would sleep now, without taking anything."""
        self._refill()
        deficit = n - self._tokens
        return max(0.0, deficit / self.rate)

    def charge(self, n: int) -> None:
        """Take ``n`` tokens without sleeping: bytes already moved (a whole answer that came
        at once); the debt, if any, is slept off by the next ``consume``."""
        if n <= 0:
            return
        self._refill()
        self._tokens -= n
        self.consumed += n

    def settle(self) -> float:
        """Sleep until the balance is not negative (the debt of ``charge``); the seconds slept."""
        self._refill()
        if self._tokens >= 0:
            return 0.0
        wait = -self._tokens / self.rate
        self._sleep(wait)
        self.waited += wait
        # The sleep may have been longer than asked (a busy host): the refill counts it.
        self._refill()
        return wait

    def consume(self, n: int) -> float:
        """Take ``n`` tokens, sleeping as long as the debt needs; returns the seconds slept."""
        if n <= 0:
            return 0.0
        self.charge(n)
        return self.settle()


def bucket_for(
    max_bandwidth: float,
    clock: Clock | None = None,
    *,
    sleep: Callable[[float], object] | None = None,
) -> TokenBucket | None:
    """The bucket ``network.max_bandwidth`` asks for; None when it is 0 (unlimited)."""
    if max_bandwidth <= 0:
        return None
    return TokenBucket(max_bandwidth, clock=clock, sleep=sleep)
