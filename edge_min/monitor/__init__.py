"""Monitoring: metrics, health checks, alert rules and actions, Prometheus exposition.

- ``Monitor`` (core): one runtime's monitor; ``jobs()`` for the scheduler, ``status()``,
  ``alerts_view()``, ``prometheus()`` for the API.
- metrics: the ``METRICS`` catalogue, ``default_resources`` (the platform's
  ``ResourceReader``: ``platform.resources(data_path)``), ``MetricsBuffer`` and ``Uploader``.
- health: ``HealthChecks`` (commands with a hard timeout; ``builtin:database|sync|scheduler``)
  and the built-in check factories.
- alerts: the condition language, ``Alerts`` (pending -> firing -> resolved) and actions.
- outbox: notifications for central, queued while offline and sent once.
- persist: the ``MonitorStore`` port (memory and SQL) and the tables it needs.
- prometheus: the text exposition format.
"""

from __future__ import annotations

from edge_min.monitor.alerts import AlertActions, AlertRule, Alerts, compile_rule, compile_rules
from edge_min.monitor.core import Monitor
from edge_min.monitor.health import (
    CheckResult,
    HealthChecks,
    database_check,
    scheduler_check,
    sync_check,
)
from edge_min.monitor.metrics import METRICS, MetricsBuffer, Uploader, default_resources
from edge_min.monitor.outbox import Outbox
from edge_min.monitor.persist import (
    MONITOR_TABLE_NAMES,
    MemoryMonitorStore,
    MonitorStore,
    SqlMonitorStore,
)
from edge_min.monitor.prometheus import CONTENT_TYPE as PROMETHEUS_CONTENT_TYPE
from edge_min.platform import NoResources, ResourceReader

__all__ = [
    "METRICS",
    "MONITOR_TABLE_NAMES",
    "PROMETHEUS_CONTENT_TYPE",
    "AlertActions",
    "AlertRule",
    "Alerts",
    "CheckResult",
    "HealthChecks",
    "MemoryMonitorStore",
    "MetricsBuffer",
    "Monitor",
    "MonitorStore",
    "NoResources",
    "Outbox",
    "ResourceReader",
    "SqlMonitorStore",
    "Uploader",
    "compile_rule",
    "compile_rules",
    "database_check",
    "default_resources",
    "scheduler_check",
    "sync_check",
]
