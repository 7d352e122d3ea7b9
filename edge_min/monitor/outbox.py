"""Notifications for central, queued in the store and sent once, in order, when online.

``enqueue`` writes the notification before anything tries to send it, so one raised while
offline (or just before a crash) is not lost. ``flush`` sends the queue oldest first through
the injected ``send`` callable and marks each delivered one; it stops at the first failure
and keeps the rest for the next flush. Every notification carries its ``id``: if the device
dies between central's answer and the mark, the one resend can be recognised by central.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

from edge_min.clock import iso
from edge_min.monitor.persist import MonitorStore

log = logging.getLogger("edge_min.monitor")

FLUSH_BATCH = 100
Sender = Callable[[dict[str, Any]], object]


class Outbox:
    """The notification queue: ``enqueue`` now, ``flush`` when the link is up."""

    def __init__(
        self,
        store: MonitorStore,
        send: Sender | None,
        *,
        is_online: Callable[[], bool] = lambda: True,
        keep_sent: float = 7 * 86400.0,
    ) -> None:
        self.store = store
        self.send = send
        self.is_online = is_online
        self.keep_sent = keep_sent
        self.sent = 0
        self.last_error: str | None = None
        # Kept in memory so views read from other threads never touch the store.
        self.unsent = store.count_unsent()
        self._seq = 0

    def enqueue(self, kind: str, payload: dict[str, Any], now: float) -> str:
        """Queue one notification; its id."""
        # Time first, then a per-process sequence: ids sort in the order they were queued.
        self._seq = (self._seq + 1) % 0x10000
        nid = f"{int(now * 1e6):014x}{self._seq:04x}{uuid.uuid4().hex[:14]}"
        body = {"id": nid, "kind": kind, "created_at": iso(now), **payload}
        self.store.add_notification(
            {
                "id": nid,
                "kind": kind,
                "payload": json.dumps(body, separators=(",", ":"), sort_keys=True),
                "created_at": now,
            }
        )
        self.unsent += 1
        return nid

    def flush(self, now: float) -> int:
        """Send what waits, oldest first, until one fails; how many were delivered."""
        if self.send is None or self.unsent == 0 or not self.is_online():
            return 0
        delivered = 0
        failed = False
        while not failed:
            rows = self.store.unsent_notifications(FLUSH_BATCH)
            for row in rows:
                try:
                    self.send(json.loads(row["payload"]))
                except Exception as exc:  # offline or refused: keep it and the rest for later
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    self.store.update_notification(
                        row["id"],
                        {"attempts": int(row["attempts"] or 0) + 1, "last_error": self.last_error},
                    )
                    log.info("notification %s not delivered: %s", row["id"], self.last_error)
                    failed = True
                    break
                self.store.update_notification(row["id"], {"sent_at": now})
                delivered += 1
            if len(rows) < FLUSH_BATCH:
                break
        self.sent += delivered
        self.unsent = max(0, self.unsent - delivered)
        if delivered and not failed:
            self.last_error = None
        return delivered

    def prune(self, now: float) -> int:
        """Forget notifications delivered more than ``keep_sent`` seconds ago."""
        return self.store.delete_sent_before(now - self.keep_sent)
