"""Metrics: the catalogue of names, where samples come from, and the upload buffer.

A sample is ``{metric name: value}`` taken at one instant. Host metrics come from the
platform port's ``ResourceReader`` (``platform.resources(data_path)``: ``/proc`` on Linux,
nothing in a browser tab; ``default_resources`` asks for it) and the runtime's own metrics
from a callable the runtime injects. Samples wait in ``MetricsBuffer`` (persisted through
the ``MonitorStore`` port) until they are uploaded to central:

- at most ``buffer_size`` samples; when full the oldest go first and ``dropped`` counts them;
- samples older than ``metrics_retention`` are pruned, uploaded or not;
- an upload is due every ``upload_interval`` or as soon as ``upload_threshold`` samples wait;
  a failed upload (offline) keeps them for the next try.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_min.clock import iso
from edge_min.monitor.persist import MonitorStore
from edge_min.platform import Platform, ResourceReader, get_platform

log = logging.getLogger("edge_min.monitor")

PERCENT, BYTES, RATE, COUNT, SECONDS, FLAG = (
    "percent",
    "bytes",
    "bytes_per_second",
    "count",
    "seconds",
    "bool",
)
RUN_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class MetricInfo:
    """What one metric means: its unit and a one-line help text."""

    unit: str
    help: str
    counter: bool = False


METRICS: dict[str, MetricInfo] = {
    "cpu_usage": MetricInfo(PERCENT, "CPU busy time over all cores since the last sample"),
    "memory_total": MetricInfo(BYTES, "Total memory"),
    "memory_used": MetricInfo(BYTES, "Memory in use (total minus available)"),
    "memory_available": MetricInfo(BYTES, "Memory available for new work"),
    "memory_usage": MetricInfo(PERCENT, "Memory in use as a share of total"),
    "storage_total": MetricInfo(BYTES, "Size of the data volume"),
    "storage_used": MetricInfo(BYTES, "Bytes used on the data volume"),
    "free_storage": MetricInfo(BYTES, "Bytes free on the data volume for the runtime"),
    "storage_usage": MetricInfo(PERCENT, "Data volume in use as a share of its usable size"),
    "network_rx_bytes_per_second": MetricInfo(RATE, "Bytes received per second, all interfaces"),
    "network_tx_bytes_per_second": MetricInfo(RATE, "Bytes sent per second, all interfaces"),
    "battery_level": MetricInfo(PERCENT, "Battery charge (absent without a battery)"),
    "battery_charging": MetricInfo(FLAG, "1 while the battery charges (absent without one)"),
    "queue_depth": MetricInfo(COUNT, "Workflow runs waiting to start"),
    "sync_failures": MetricInfo(COUNT, "Consecutive failed sync attempts"),
    "step_latency": MetricInfo(SECONDS, "Mean duration of recently finished steps"),
    **{f"runs_{s}": MetricInfo(COUNT, f"Workflow runs with status {s}") for s in RUN_STATUSES},
}


def default_resources(data_path: str | Path, platform: Platform | None = None) -> ResourceReader:
    """The monitor's host readings: ``platform.resources(data_path)``, by default this host's."""
    return (platform if platform is not None else get_platform()).resources(str(data_path))


RuntimeMetrics = Callable[[], Mapping[str, float]]


def collect_sample(
    resources: ResourceReader, runtime: RuntimeMetrics | None, now_mono: float
) -> dict[str, float]:
    """One sample: host metrics then the runtime's own; a failing source is logged and skipped."""
    sample: dict[str, float] = {}
    for source, read in (("resources", lambda: resources.read(now_mono)), ("runtime", runtime)):
        if read is None:
            continue
        try:
            values = read()
        except Exception as exc:  # a broken source must not stop monitoring of the rest
            log.warning("metrics source %s failed: %s", source, exc)
            continue
        for name, value in values.items():
            if value is None:  # absent, e.g. no battery: leave it out, not 0
                continue
            try:
                sample[name] = float(value)
            except (TypeError, ValueError):
                log.warning("metric %s from %s is not a number: %r", name, source, value)
    return sample


class MetricsBuffer:
    """Samples waiting for upload, bounded, pruned by age, persisted through ``MonitorStore``."""

    def __init__(self, store: MonitorStore, buffer_size: int, retention: float) -> None:
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be at least 1, got {buffer_size}")
        self.store = store
        self.buffer_size = buffer_size
        self.retention = retention
        self._seq = store.last_seq()
        self._count = store.count_samples()
        self.dropped = store.get_counter("metrics_dropped")

    def __len__(self) -> int:
        return self._count

    def add(self, collected_at: float, sample: Mapping[str, float]) -> int:
        """Append a sample; drop the oldest to stay within ``buffer_size``; how many dropped."""
        text = json.dumps(dict(sample), separators=(",", ":"), sort_keys=True)
        with self.store.atomic():
            self._seq += 1
            self.store.add_sample(self._seq, collected_at, text)
            self._count += 1
            over = self._count - self.buffer_size
            dropped = 0
            if over > 0:
                oldest = [r["seq"] for r in self.store.oldest_samples(over)]
                dropped = self.store.delete_samples(oldest)
                self._count -= dropped
                self.dropped += dropped
                self.store.set_counter("metrics_dropped", self.dropped)
        if dropped:
            log.warning("metrics buffer full (%d): dropped %d oldest", self.buffer_size, dropped)
        return dropped

    def prune(self, now: float) -> int:
        """Delete samples older than the retention; how many went."""
        gone = self.store.delete_samples_before(now - self.retention)
        self._count -= gone
        return gone

    def oldest(self, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` samples, oldest first, as ``{seq, collected_at, metrics}``."""
        return [
            {
                "seq": r["seq"],
                "collected_at": r["collected_at"],
                "metrics": json.loads(r["metrics"]),
            }
            for r in self.store.oldest_samples(limit)
        ]

    def remove(self, seqs: list[int]) -> int:
        """Delete uploaded samples."""
        gone = self.store.delete_samples(seqs)
        self._count -= gone
        return gone


MetricsSender = Callable[[dict[str, Any]], object]


class Uploader:
    """Sends buffered samples to central (``POST /api/metrics`` through ``send``) when due."""

    def __init__(
        self,
        buffer: MetricsBuffer,
        send: MetricsSender | None,
        upload_interval: float,
        upload_threshold: int,
        *,
        is_online: Callable[[], bool] = lambda: True,
        started: float = 0.0,
    ) -> None:
        self.buffer = buffer
        self.send = send
        self.upload_interval = upload_interval
        self.upload_threshold = upload_threshold
        self.is_online = is_online
        self.last_upload = started  # last success (or start): the interval counts from here
        self.uploaded = 0
        self.failures = 0
        self.last_error: str | None = None

    def due(self, now: float) -> bool:
        """Whether an upload should be tried now."""
        if len(self.buffer) == 0 or self.send is None:
            return False
        return (
            len(self.buffer) >= self.upload_threshold
            or now - self.last_upload >= self.upload_interval
        )

    def upload(self, now: float, *, force: bool = False) -> int:
        """Send every buffered sample if due (or ``force``); how many were sent (0 on failure)."""
        if not (force or self.due(now)) or self.send is None or len(self.buffer) == 0:
            return 0
        if not self.is_online():
            return 0
        batch = self.buffer.oldest(self.buffer.buffer_size)
        payload = {
            "samples": [
                {"collected_at": iso(s["collected_at"]), "metrics": s["metrics"]} for s in batch
            ],
            "dropped": self.buffer.dropped,
            "sent_at": iso(now),
        }
        try:
            self.send(payload)
        except Exception as exc:  # offline or central refused: keep the samples, try again later
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.info("metrics upload of %d sample(s) failed: %s", len(batch), self.last_error)
            return 0
        self.buffer.remove([s["seq"] for s in batch])
        self.last_upload = now
        self.uploaded += len(batch)
        self.last_error = None
        return len(batch)
