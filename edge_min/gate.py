"""The runtime's gate: open, or closed with a reason (a tamper lockdown).

One small object on the host that every part which writes or runs consults: the local API
answers every non-read route with HTTP 423 and code ``locked_down`` while it is closed, the
workflow engine admits no run and cancels the running ones at their next step boundary,
sync moves nothing but the tamper report. Who closes and opens it is the tamper subsystem's
business (``edge_min.security.tamper``); the gate itself only holds the reason.

Reads from other threads (the API's) need no lock: the reason is one attribute, replaced
whole. A lockdown survives a restart: its record is kept in the ``meta`` table under
``LOCKDOWN_KEY`` (``lockdown_record`` reads it, for commands that run without a runtime).
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from edge_min.errors import EdgeError

__all__ = ["Gate", "LockedDown"]

#: The reason a run cancelled by a lockdown is recorded with, and the API's error code.
LOCKED_DOWN = "locked_down"
#: The meta key holding the lockdown in force (JSON: reason, at, checks), absent when none.
LOCKDOWN_KEY = "security.lockdown"
#: The ``kind`` of the one payload sync still sends to central while locked down.
TAMPER_REPORT_KIND = "tamper"


class Meta(Protocol):
    """The store's ``meta`` table (``edge_min.store.repos.MetaRepo``)."""

    def get(self, key: str, default: str | None = None) -> str | None:
        """The value of ``key``."""
        ...


def lockdown_record(meta: Meta) -> dict[str, Any] | None:
    """The lockdown in force in a database (reason, at, checks), or None."""
    raw = meta.get(LOCKDOWN_KEY)
    if not raw:
        return None
    try:
        record = json.loads(raw)
    except ValueError:  # unreadable is still locked: never fail open
        return {"reason": "lockdown record unreadable", "raw": raw}
    return record if isinstance(record, dict) else {"reason": str(record)}


class LockedDown(EdgeError):
    """The device is locked down: no writes, no runs, until an admin unlocks it."""

    code = "locked_down"


class Gate:
    """Whether the runtime takes writes and runs: ``closed`` is None, or why not."""

    def __init__(self) -> None:
        self.closed: str | None = None

    def close(self, reason: str) -> None:
        """Refuse writes and runs from now on, giving ``reason``."""
        self.closed = reason

    def open(self) -> None:
        """Take writes and runs again."""
        self.closed = None

    def check(self, what: str) -> None:
        """Raise ``LockedDown`` naming ``what`` was refused while the gate is closed."""
        reason = self.closed
        if reason is not None:
            raise LockedDown(
                f"{what} refused: the device is locked down ({reason}); an admin lifts it "
                "with `edge-min security unlock` or POST /security/unlock"
            )
