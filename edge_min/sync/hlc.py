"""The hybrid logical clock: timestamps that sort in causal order across devices.

An HLC is text ``f"{wall_ms:013d}.{counter:05d}.{node}"``: comparing two as strings compares
(wall milliseconds, counter, node id), so the greater one is the later event and equal
times are broken by node id. ``now()`` stamps a local event; ``observe()`` takes in a
timestamp received from elsewhere, so every later local stamp is greater than everything this
node has seen, whatever the wall clocks say. Hours of clock skew therefore cannot make a
causally later edit lose under ``last_modified``.

The clock itself is pure (no I/O). ``changes.ChangeTracker`` persists its last value in the
store's ``meta`` table (key ``sync.hlc``) in the same transaction as every change, and
restores it with ``restore()`` before stamping, so the clock never goes back across a reboot
or an NTP step.

Because the wall part is in milliseconds and the counter has five digits, ``hlc_int`` maps an
HLC to one increasing integer per node; the change log uses it as its sequence number.
"""

from __future__ import annotations

import re

from edge_min.clock import Clock
from edge_min.errors import EdgeError

COUNTER_LIMIT = 100_000  # five digits; on overflow the logical wall time moves 1 ms ahead
_HLC_RE = re.compile(r"^(\d{13})\.(\d{5})\.(.*)$", re.S)


class HlcError(EdgeError):
    """A hybrid logical clock timestamp is malformed."""

    code = "sync_bad_hlc"


def format_hlc(wall_ms: int, counter: int, node: str) -> str:
    """The text form of an HLC."""
    return f"{wall_ms:013d}.{counter:05d}.{node}"


def parse_hlc(text: str) -> tuple[int, int, str]:
    """(wall_ms, counter, node) of an HLC; ``HlcError`` naming the value if malformed."""
    m = _HLC_RE.match(text) if isinstance(text, str) else None
    if m is None:
        raise HlcError(
            f"bad HLC {text!r}: expected 13-digit milliseconds, a dot, a 5-digit counter, "
            "a dot and the node id (e.g. '1767225600000.00000.edge-1')",
            value=text,
        )
    return int(m.group(1)), int(m.group(2)), m.group(3)


def hlc_int(text: str) -> int:
    """The HLC's (wall_ms, counter) as one integer that grows with it (its node dropped)."""
    wall, counter, _node = parse_hlc(text)
    return wall * COUNTER_LIMIT + counter


class HybridClock:
    """A hybrid logical clock for one node over a wall ``Clock``."""

    def __init__(self, clock: Clock, node: str, last: str | None = None) -> None:
        self.clock = clock
        self.node = node
        self._wall = 0
        self._counter = -1
        if last:
            self.restore(last)

    @property
    def last(self) -> str:
        """The greatest HLC this clock has issued or observed (its own node id appended)."""
        return format_hlc(self._wall, max(self._counter, 0), self.node)

    def restore(self, hlc: str) -> None:
        """Never issue anything at or below ``hlc`` again (a persisted or observed value)."""
        wall, counter, _node = parse_hlc(hlc)
        if (wall, counter) > (self._wall, self._counter):
            self._wall, self._counter = wall, counter

    def _tick(self, wall: int, counter: int) -> str:
        if counter >= COUNTER_LIMIT:
            wall, counter = wall + 1, 0
        self._wall, self._counter = wall, counter
        return format_hlc(wall, counter, self.node)

    def now(self) -> str:
        """A new timestamp for a local (or send) event, greater than every earlier one."""
        physical = int(self.clock.time() * 1000)
        if physical > self._wall:
            return self._tick(physical, 0)
        return self._tick(self._wall, self._counter + 1)

    def stamp(self) -> tuple[str, int]:
        """``now()`` and the same timestamp as ``hlc_int`` gives it (a change's sequence number)."""
        text = self.now()
        return text, self._wall * COUNTER_LIMIT + self._counter

    def observe(self, remote: str) -> None:
        """Take in a timestamp received from another node (receive event)."""
        r_wall, r_counter, _node = parse_hlc(remote)
        physical = int(self.clock.time() * 1000)
        wall = max(self._wall, r_wall, physical)
        if wall == self._wall and wall == r_wall:
            counter = max(self._counter, r_counter) + 1
        elif wall == self._wall:
            counter = self._counter + 1
        elif wall == r_wall:
            counter = r_counter + 1
        else:
            counter = 0
        self._tick(wall, counter)

    def __repr__(self) -> str:
        return f"HybridClock(node={self.node!r}, last={self.last!r})"
