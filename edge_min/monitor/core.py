"""The ``Monitor``: metrics, health checks and alerts of one runtime, driven by its scheduler.

The runtime registers ``Monitor.jobs()`` with its scheduler (``add_interval(name, every,
fn)``); each job is one method:

- ``collect()`` every ``collection_interval`` (``resource_check_interval`` when
  ``metrics_collection`` is off: resources are still read so alerts work, nothing is
  buffered): one sample into the buffer, prune by ``metrics_retention``, evaluate alerts,
  flush queued notifications, upload if ``upload_threshold`` samples wait;
- ``run_due_checks()`` as often as the most frequent check: runs the checks that are due;
- ``upload()`` every ``upload_interval``.

``status()`` (GET /health), ``alerts_view()`` (GET /alerts) and ``prometheus()``
(GET /metrics) read only memory, so the API's threads may call them while the loop runs.
Everything with a time takes it from the injected clock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from edge_min.clock import Clock, iso
from edge_min.config.monitoring import MonitoringConfig
from edge_min.config.runtime import MonitoringSettings
from edge_min.monitor.alerts import DEFAULT_TMP_MAX_AGE, AlertActions, Alerts, compile_rules
from edge_min.monitor.health import CheckFn, CheckResult, CommandRunner, HealthChecks
from edge_min.monitor.metrics import (
    METRICS,
    MetricInfo,
    MetricsBuffer,
    MetricsSender,
    RuntimeMetrics,
    Uploader,
    collect_sample,
)
from edge_min.monitor.outbox import Outbox, Sender
from edge_min.monitor.persist import MemoryMonitorStore, MonitorStore
from edge_min.monitor.prometheus import PREFIX, Family, render, sample_families
from edge_min.platform import NoResources, ResourceReader

log = logging.getLogger("edge_min.monitor")

HEALTHY, DEGRADED, UNHEALTHY, STARTING = "healthy", "degraded", "unhealthy", "starting"
# GET /health is served by other threads: if the loop stops sampling for this many collection
# intervals, it is stuck (a blocked job, a deadlock), whatever the last check results say.
STALL_TURNS = 3


class MonitorJob(NamedTuple):
    """One timed job: ``scheduler.add_interval(name, every, fn, first=first)``."""

    name: str
    every: float
    fn: Callable[[], object]
    first: float


class Monitor:
    """Metrics, health checks and alerts for one runtime."""

    def __init__(
        self,
        config: MonitoringConfig,
        clock: Clock,
        *,
        settings: MonitoringSettings | None = None,
        store: MonitorStore | None = None,
        resources: ResourceReader | None = None,
        runtime_metrics: RuntimeMetrics | None = None,
        builtins: Mapping[str, CheckFn] | None = None,
        send_metrics: MetricsSender | None = None,
        send_notification: Sender | None = None,
        is_online: Callable[[], bool] = lambda: True,
        cleanup_tmp: Callable[[float, float], int] | None = None,
        restart_sync: Callable[[], object] | None = None,
        command_runner: CommandRunner | None = None,
        tmp_max_age: float = DEFAULT_TMP_MAX_AGE,
        known_metrics: Mapping[str, MetricInfo] = METRICS,
    ) -> None:
        self.config = config
        self.settings = settings or MonitoringSettings()
        self.clock = clock
        self.store: MonitorStore = store if store is not None else MemoryMonitorStore()
        self.resources = resources or NoResources()
        self.runtime_metrics = runtime_metrics
        self.known_metrics = known_metrics
        policy = config.metrics
        # Rules first: a bad condition is a ConfigError before anything else is set up.
        rules = compile_rules(config.alerts, known_metrics)
        self.buffer = MetricsBuffer(self.store, policy.buffer_size, self.settings.metrics_retention)
        self.uploader = Uploader(
            self.buffer,
            send_metrics,
            policy.upload_interval,
            policy.upload_threshold,
            is_online=is_online,
            started=clock.time(),
        )
        self.outbox = Outbox(self.store, send_notification, is_online=is_online)
        self.alerts = Alerts(
            rules,
            self.store,
            AlertActions(
                self.outbox,
                cleanup_tmp=cleanup_tmp,
                restart_sync=restart_sync,
                tmp_max_age=tmp_max_age,
            ),
            clock,
        )
        self.checks = HealthChecks(config.health_checks, builtins or {}, clock, command_runner)
        self.latest: dict[str, float] = {}
        self.latest_at: float | None = None
        self.samples_taken = 0
        self._collected_mono: float | None = None

    # -- jobs ----------------------------------------------------------------------------

    @property
    def collection_interval(self) -> float:
        """How often ``collect`` runs."""
        if self.settings.metrics_collection:
            return self.config.metrics.collection_interval
        return self.settings.resource_check_interval

    def jobs(self) -> list[MonitorJob]:
        """The timed jobs for ``Scheduler.add_interval``.

        Sampling and checks start at once (``first=0``) so /health has results from the start.
        """
        jobs = [MonitorJob("monitor.collect", self.collection_interval, self.collect, 0.0)]
        intervals = [c.spec.interval for c in self.checks.checks.values()]
        if intervals:
            jobs.append(
                MonitorJob("monitor.health_checks", min(intervals), self.run_due_checks, 0.0)
            )
        if self.settings.metrics_collection and self.uploader.send is not None:
            every = self.config.metrics.upload_interval
            jobs.append(MonitorJob("monitor.upload", every, self.upload, every))
        return jobs

    def collect(self) -> dict[str, float]:
        """Take one sample, buffer it, evaluate alerts, send what is due; the sample."""
        now = self.clock.time()
        sample = collect_sample(self.resources, self.runtime_metrics, self.clock.monotonic())
        self.latest, self.latest_at = sample, now
        self._collected_mono = self.clock.monotonic()
        self.samples_taken += 1
        if self.settings.metrics_collection:
            self.buffer.add(now, sample)
            self.buffer.prune(now)
        self.evaluate_alerts(sample)
        self.outbox.flush(now)
        if self.settings.metrics_collection and self.uploader.due(now):
            self.uploader.upload(now)
        return sample

    def evaluate_alerts(self, sample: Mapping[str, float] | None = None) -> list[tuple[str, str]]:
        """Move alert states on ``sample`` (default: the latest); the transitions made."""
        return self.alerts.evaluate(self.latest if sample is None else sample)

    def run_due_checks(self) -> list[CheckResult]:
        """Run the health checks that are due (a command check blocks up to its timeout)."""
        return self.checks.run_due()

    def upload(self, force: bool = False) -> int:
        """Upload buffered samples if due (or ``force``) and flush notifications; samples sent."""
        now = self.clock.time()
        self.outbox.flush(now)
        self.outbox.prune(now)
        return self.uploader.upload(now, force=force)

    # -- views (memory only: safe from the API's threads) ----------------------------------

    def stalled(self) -> bool:
        """Whether ``collect`` has missed three of its turns: the runtime's loop is stuck."""
        if self._collected_mono is None:
            return False
        idle = self.clock.monotonic() - self._collected_mono
        return idle > STALL_TURNS * self.collection_interval

    def overall(self) -> str:
        """``unhealthy`` (a check failed or the loop stalled), ``degraded`` (an alert fires),
        ``starting`` (a check has not run yet) or ``healthy``."""
        checks = self.checks.overall()
        if checks == "unhealthy" or self.stalled():
            return UNHEALTHY
        if self.alerts.firing():
            return DEGRADED
        if checks == "unknown":
            return STARTING
        return HEALTHY

    def status(self) -> dict[str, Any]:
        """What GET /health and ``edge-min health`` show."""
        return {
            "status": self.overall(),
            "time": iso(self.clock.time()),
            "loop_stalled": self.stalled(),
            "checks": self.checks.views(),
            "alerts_firing": self.alerts.firing(),
            "metrics": {
                "collection": self.settings.metrics_collection,
                "last_sample_at": iso(self.latest_at) if self.latest_at is not None else None,
                "buffered": len(self.buffer),
                "buffer_size": self.buffer.buffer_size,
                "dropped": self.buffer.dropped,
                "uploaded": self.uploader.uploaded,
                "last_upload_at": iso(self.uploader.last_upload),
                "last_upload_error": self.uploader.last_error,
            },
            "notifications": {
                "pending": self.outbox.unsent,
                "sent": self.outbox.sent,
                "last_error": self.outbox.last_error,
            },
        }

    def alerts_view(self) -> list[dict[str, Any]]:
        """What GET /alerts lists: each alert's rule and state."""
        return self.alerts.views()

    def prometheus(self) -> str:
        """GET /metrics: the latest sample and the monitor's own state, in text format."""
        fams = sample_families(self.latest, self.known_metrics)
        checks = Family(PREFIX + "health_check_up", "gauge", "1 if the check's last run passed")
        for view in self.checks.views():
            if view["last"] is not None:
                checks.samples.append(({"check": view["name"]}, view["status"] == "pass"))
        firing = set(self.alerts.firing())
        alerts = Family(PREFIX + "alert_firing", "gauge", "1 while the alert fires")
        for rule in self.alerts.rules:
            alerts.samples.append(({"alert": rule.name}, rule.name in firing))
        own = [
            Family(
                PREFIX + "healthy",
                "gauge",
                "1 unless a health check failed",
                [({}, self.overall() != UNHEALTHY)],
            ),
            checks,
            alerts,
            Family(
                PREFIX + "metrics_buffered",
                "gauge",
                "Metric samples waiting for upload",
                [({}, len(self.buffer))],
            ),
            Family(
                PREFIX + "metrics_dropped_total",
                "counter",
                "Metric samples dropped because the buffer was full",
                [({}, self.buffer.dropped)],
            ),
            Family(
                PREFIX + "metrics_uploaded_total",
                "counter",
                "Metric samples uploaded to central by this process",
                [({}, self.uploader.uploaded)],
            ),
            Family(
                PREFIX + "notifications_pending",
                "gauge",
                "Alert notifications queued for central",
                [({}, self.outbox.unsent)],
            ),
        ]
        return render(fams + own)
