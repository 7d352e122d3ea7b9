"""Where the monitor keeps what must survive a restart: a small port with two implementations.

- the metrics buffer (samples waiting for upload, oldest first by ``seq``);
- alert states (so a firing alert does not notify again after a reboot);
- the notification outbox (alerts for central, queued while offline, sent once);
- counters (samples dropped because the buffer was full), in the ``meta`` table.

``MemoryMonitorStore`` is for tests and hosts without a database; ``SqlMonitorStore`` works on
any ``edge_min.store.base.Storage`` backend; its tables come with migration 3
(``store/migrations.py``), described in ``store/tables.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Protocol

from edge_min.store.base import Lt, Storage

Row = dict[str, Any]

# The tables are described once, in store/tables.py (migration 3 in store/migrations.py).
MONITOR_TABLE_NAMES = ("metrics_buffer", "monitor_alerts", "monitor_outbox")


class MonitorStore(Protocol):
    """The monitor's persistence port."""

    def atomic(self) -> AbstractContextManager[Any]:
        """A transaction around several calls."""
        ...

    def add_sample(self, seq: int, collected_at: float, metrics: str) -> None:
        """Append one sample (``metrics`` is JSON text)."""
        ...

    def last_seq(self) -> int:
        """The highest ``seq`` stored, 0 if none."""
        ...

    def count_samples(self) -> int:
        """How many samples wait."""
        ...

    def oldest_samples(self, limit: int) -> list[Row]:
        """Up to ``limit`` samples, oldest first (``seq``, ``collected_at``, ``metrics``)."""
        ...

    def delete_samples(self, seqs: Sequence[int]) -> int:
        """Delete these samples; how many went."""
        ...

    def delete_samples_before(self, collected_at: float) -> int:
        """Delete samples collected before this time; how many went."""
        ...

    def get_counter(self, name: str) -> int:
        """A persisted counter, 0 if never set."""
        ...

    def set_counter(self, name: str, value: int) -> None:
        """Persist a counter."""
        ...

    def load_alerts(self) -> dict[str, Row]:
        """Every saved alert state by name."""
        ...

    def save_alert(self, row: Row) -> None:
        """Insert or replace one alert state (keyed by ``name``)."""
        ...

    def add_notification(self, row: Row) -> None:
        """Queue one notification (``id``, ``kind``, ``payload`` JSON text, ``created_at``)."""
        ...

    def unsent_notifications(self, limit: int) -> list[Row]:
        """Up to ``limit`` queued notifications not yet sent, oldest first."""
        ...

    def count_unsent(self) -> int:
        """How many queued notifications are not yet sent."""
        ...

    def update_notification(self, id: str, changes: Row) -> None:
        """Record an attempt (``attempts``, ``last_error``) or the delivery (``sent_at``)."""
        ...

    def delete_sent_before(self, sent_at: float) -> int:
        """Forget notifications delivered before this time; how many went."""
        ...


class MemoryMonitorStore:
    """The port in dicts: for tests and hosts without a database."""

    def __init__(self) -> None:
        self.samples: dict[int, Row] = {}
        self.counters: dict[str, int] = {}
        self.alerts: dict[str, Row] = {}
        self.outbox: dict[str, Row] = {}

    def atomic(self) -> AbstractContextManager[Any]:
        """No transactions in memory."""
        return nullcontext()

    def add_sample(self, seq: int, collected_at: float, metrics: str) -> None:
        """Append one sample."""
        self.samples[seq] = {"seq": seq, "collected_at": collected_at, "metrics": metrics}

    def last_seq(self) -> int:
        """The highest seq, 0 if none."""
        return max(self.samples, default=0)

    def count_samples(self) -> int:
        """How many samples wait."""
        return len(self.samples)

    def oldest_samples(self, limit: int) -> list[Row]:
        """Up to ``limit`` samples, oldest first."""
        return [dict(self.samples[s]) for s in sorted(self.samples)[:limit]]

    def delete_samples(self, seqs: Sequence[int]) -> int:
        """Delete these samples."""
        return sum(self.samples.pop(s, None) is not None for s in seqs)

    def delete_samples_before(self, collected_at: float) -> int:
        """Delete samples older than the time."""
        old = [s for s, r in self.samples.items() if r["collected_at"] < collected_at]
        return self.delete_samples(old)

    def get_counter(self, name: str) -> int:
        """A counter, 0 if never set."""
        return self.counters.get(name, 0)

    def set_counter(self, name: str, value: int) -> None:
        """Set a counter."""
        self.counters[name] = value

    def load_alerts(self) -> dict[str, Row]:
        """Every alert state."""
        return {k: dict(v) for k, v in self.alerts.items()}

    def save_alert(self, row: Row) -> None:
        """Replace one alert state."""
        self.alerts[row["name"]] = dict(row)

    def add_notification(self, row: Row) -> None:
        """Queue one notification."""
        self.outbox[row["id"]] = {"attempts": 0, "last_error": None, "sent_at": None, **row}

    def unsent_notifications(self, limit: int) -> list[Row]:
        """Queued notifications not yet sent, oldest first."""
        rows = [r for r in self.outbox.values() if r["sent_at"] is None]
        rows.sort(key=lambda r: (r["created_at"], r["id"]))
        return [dict(r) for r in rows[:limit]]

    def count_unsent(self) -> int:
        """How many notifications wait."""
        return sum(r["sent_at"] is None for r in self.outbox.values())

    def update_notification(self, id: str, changes: Row) -> None:
        """Record an attempt or a delivery."""
        if id in self.outbox:
            self.outbox[id].update(changes)

    def delete_sent_before(self, sent_at: float) -> int:
        """Forget old delivered notifications."""
        old = [
            k for k, r in self.outbox.items() if r["sent_at"] is not None and r["sent_at"] < sent_at
        ]
        for k in old:
            del self.outbox[k]
        return len(old)


class SqlMonitorStore:
    """The port on a storage backend (``Store.backend``) with the monitor tables of migration 3."""

    def __init__(self, backend: Storage) -> None:
        self.db = backend

    def atomic(self) -> AbstractContextManager[Any]:
        """The backend's transaction."""
        return self.db.atomic()

    def add_sample(self, seq: int, collected_at: float, metrics: str) -> None:
        """Append one sample."""
        self.db.insert(
            "metrics_buffer", {"seq": seq, "collected_at": collected_at, "metrics": metrics}
        )

    def last_seq(self) -> int:
        """The highest seq, 0 if none."""
        rows = self.db.select("metrics_buffer", order_by=("-seq",), limit=1)
        return int(rows[0]["seq"]) if rows else 0

    def count_samples(self) -> int:
        """How many samples wait."""
        return self.db.count("metrics_buffer")

    def oldest_samples(self, limit: int) -> list[Row]:
        """Up to ``limit`` samples, oldest first."""
        return self.db.select("metrics_buffer", order_by=("seq",), limit=limit)

    def delete_samples(self, seqs: Sequence[int]) -> int:
        """Delete these samples."""
        return self.db.delete("metrics_buffer", {"seq": list(seqs)}) if seqs else 0

    def delete_samples_before(self, collected_at: float) -> int:
        """Delete samples older than the time."""
        return self.db.delete("metrics_buffer", {"collected_at": Lt(collected_at)})

    def get_counter(self, name: str) -> int:
        """A counter from ``meta``, 0 if never set."""
        row = self.db.get("meta", {"key": f"monitor.{name}"})
        return int(row["value"]) if row else 0

    def set_counter(self, name: str, value: int) -> None:
        """Set a counter in ``meta``."""
        self.db.upsert("meta", {"key": f"monitor.{name}", "value": str(value)}, key=("key",))

    def load_alerts(self) -> dict[str, Row]:
        """Every alert state."""
        return {r["name"]: r for r in self.db.select("monitor_alerts")}

    def save_alert(self, row: Row) -> None:
        """Replace one alert state."""
        self.db.upsert("monitor_alerts", row, key=("name",))

    def add_notification(self, row: Row) -> None:
        """Queue one notification."""
        self.db.insert("monitor_outbox", row)

    def unsent_notifications(self, limit: int) -> list[Row]:
        """Queued notifications not yet sent, oldest first."""
        return self.db.select(
            "monitor_outbox", {"sent_at": None}, order_by=("created_at", "id"), limit=limit
        )

    def count_unsent(self) -> int:
        """How many notifications wait."""
        return self.db.count("monitor_outbox", {"sent_at": None})

    def update_notification(self, id: str, changes: Row) -> None:
        """Record an attempt or a delivery."""
        self.db.update("monitor_outbox", {"id": id}, changes)

    def delete_sent_before(self, sent_at: float) -> int:
        """Forget old delivered notifications."""
        # Lt never matches NULL, so queued (unsent) notifications are kept.
        return self.db.delete("monitor_outbox", {"sent_at": Lt(sent_at)})
