"""edge-monitoring.yaml: metric buffering, health checks and alert rules.

Alert conditions stay text here (the monitor module evaluates them) but must have the shape
``METRIC OP VALUE [for DURATION]``, e.g. ``cpu_usage > 90 for 5m`` or ``free_storage < 100MB``;
``parse_condition`` splits one for any caller. A health check without ``interval`` runs every
``monitoring.health_check_interval`` of edge-config.yaml.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from edge_min.config._validate import Reader, join, show
from edge_min.units import parse_duration, parse_size

ALERT_ACTIONS = ("log", "notify_central", "cleanup_temp", "restart_sync")
OPERATORS = (">=", "<=", "==", "!=", ">", "<")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_CONDITION = re.compile(
    r"^\s*(?P<metric>[A-Za-z_][A-Za-z0-9_.]*)\s*(?P<op>>=|<=|==|!=|>|<)\s*"
    r"(?P<value>-?\d+(?:\.\d+)?\s*(?:%|[A-Za-z]+)?)"
    r"(?:\s+for\s+(?P<duration>\S+))?\s*$"
)


@dataclass(frozen=True)
class Condition:
    """An alert condition split into parts: ``value`` in base units, ``duration`` in seconds."""

    metric: str
    op: str
    value: float
    duration: float = 0.0


def parse_condition(text: str) -> Condition:
    """Split ``METRIC OP VALUE [for DURATION]``; ValueError says what shape is expected."""
    m = _CONDITION.match(text)
    if not m:
        raise ValueError(
            f"cannot read condition {text!r}: expected METRIC OP VALUE [for DURATION] "
            f"with OP one of {', '.join(OPERATORS)}, e.g. 'cpu_usage > 90 for 5m'"
        )
    raw = m.group("value").replace(" ", "")
    try:
        if raw.endswith("%"):
            value = float(raw[:-1])
        elif raw.lstrip("-").replace(".", "", 1).isdigit():
            value = float(raw)
        else:
            value = float(parse_size(raw))
    except ValueError:
        raise ValueError(
            f"cannot read the value {raw!r} in condition {text!r}: "
            f"expected a number, a percentage or a size such as 100MB"
        ) from None
    duration = 0.0
    if m.group("duration"):
        try:
            duration = parse_duration(m.group("duration"))
        except ValueError:
            raise ValueError(
                f"cannot read the duration {m.group('duration')!r} in condition {text!r}: "
                f"expected e.g. 30s, 5m or 1h"
            ) from None
    return Condition(m.group("metric"), m.group("op"), value, duration)


@dataclass(frozen=True)
class MetricsPolicy:
    """How metrics are sampled, buffered and uploaded."""

    collection_interval: float = 60.0
    buffer_size: int = 1000
    upload_interval: float = 3600.0
    upload_threshold: int = 800


@dataclass(frozen=True)
class HealthCheckSpec:
    """One health check: a shell command that must exit 0 within ``timeout`` seconds."""

    name: str
    interval: float
    command: str
    timeout: float = 10.0


@dataclass(frozen=True)
class AlertSpec:
    """One alert rule: a condition text and the actions to take when it holds."""

    name: str
    condition: str
    actions: tuple[str, ...] = ("log",)


def default_health_checks() -> tuple[HealthCheckSpec, ...]:
    """The spec's three health checks, as built-in checks that work on any device.

    The spec's shell commands (systemctl, sqlite3 on /data/..., curl) assume a packaged
    install; with no monitoring file the same checks run built in, so a fresh data
    directory is healthy when it is. A file may still name the spec's commands.
    """
    return (
        HealthCheckSpec("service_status", 300.0, "builtin:scheduler", 5.0),
        HealthCheckSpec("database_check", 600.0, "builtin:database", 5.0),
        HealthCheckSpec("sync_check", 1800.0, "builtin:sync", 10.0),
    )


def default_alerts() -> tuple[AlertSpec, ...]:
    """The spec's three alert rules."""
    return (
        AlertSpec("high_cpu", "cpu_usage > 90 for 5m", ("log", "notify_central")),
        AlertSpec("low_storage", "free_storage < 100MB", ("log", "notify_central", "cleanup_temp")),
        AlertSpec("sync_failure", "sync_failures > 3", ("log", "notify_central", "restart_sync")),
    )


@dataclass(frozen=True)
class MonitoringConfig:
    """The whole of edge-monitoring.yaml."""

    metrics: MetricsPolicy = field(default_factory=MetricsPolicy)
    health_checks: tuple[HealthCheckSpec, ...] = field(default_factory=default_health_checks)
    alerts: tuple[AlertSpec, ...] = field(default_factory=default_alerts)


MONITORING_KEYS = ("metrics", "health_checks", "alerts")
_METRICS_KEYS = ("collection_interval", "buffer_size", "upload_interval", "upload_threshold")
_CHECK_KEYS = ("name", "interval", "command", "timeout")
_ALERT_KEYS = ("name", "condition", "actions")


def parse_monitoring_config(
    r: Reader, data: dict[str, Any], health_check_interval: float = 60.0
) -> MonitoringConfig:
    """Read edge-monitoring.yaml's data; checks without interval use ``health_check_interval``."""
    r.check_keys(data, "", MONITORING_KEYS)
    dflt = MonitoringConfig()
    return MonitoringConfig(
        metrics=_metrics(r, data),
        health_checks=(
            _health_checks(r, data, health_check_interval)
            if "health_checks" in data
            else dflt.health_checks
        ),
        alerts=_alerts(r, data) if "alerts" in data else dflt.alerts,
    )


def _metrics(r: Reader, data: dict[str, Any]) -> MetricsPolicy:
    p = "metrics"
    d = r.section(data, "metrics", "", _METRICS_KEYS)
    dflt = MetricsPolicy()
    policy = MetricsPolicy(
        collection_interval=r.duration(d, "collection_interval", p, dflt.collection_interval),
        buffer_size=r.integer(d, "buffer_size", p, dflt.buffer_size, minimum=1),
        upload_interval=r.duration(d, "upload_interval", p, dflt.upload_interval),
        upload_threshold=r.integer(d, "upload_threshold", p, dflt.upload_threshold, minimum=1),
    )
    if policy.upload_threshold > policy.buffer_size:
        r.fail(
            join(p, "upload_threshold"),
            f"must not exceed buffer_size ({policy.buffer_size}), got {policy.upload_threshold}",
            policy.upload_threshold,
        )
    return policy


def _name(r: Reader, d: dict[str, Any], p: str, seen: set[str], what: str) -> str:
    name = r.required_string(d, "name", p, f"every {what} needs a name")
    if not name:
        return ""
    if not _NAME.match(name):
        r.fail(
            join(p, "name"),
            f"{show(name)} is not a valid name: use letters, digits, '_', '.' and '-'",
            name,
        )
    elif name in seen:
        r.fail(join(p, "name"), f"duplicate {what} name {show(name)}", name)
    seen.add(name)
    return name


def _health_checks(
    r: Reader, data: dict[str, Any], default_interval: float
) -> tuple[HealthCheckSpec, ...]:
    out: list[HealthCheckSpec] = []
    seen: set[str] = set()
    for i, raw in enumerate(r.items(data, "health_checks", "")):
        p = join("health_checks", i)
        d = r.mapping(raw, p)
        r.check_keys(d, p, _CHECK_KEYS)
        check = HealthCheckSpec(
            name=_name(r, d, p, seen, "health check"),
            interval=r.duration(d, "interval", p, default_interval),
            command=r.required_string(d, "command", p, "a shell command that exits 0 when healthy"),
            timeout=r.duration(d, "timeout", p, 10.0),
        )
        if check.timeout > check.interval:
            r.fail(
                join(p, "timeout"),
                f"must not exceed interval ({check.interval:g} s), got {check.timeout:g} s",
                check.timeout,
            )
        out.append(check)
    return tuple(out)


def _alerts(r: Reader, data: dict[str, Any]) -> tuple[AlertSpec, ...]:
    out: list[AlertSpec] = []
    seen: set[str] = set()
    for i, raw in enumerate(r.items(data, "alerts", "")):
        p = join("alerts", i)
        d = r.mapping(raw, p)
        r.check_keys(d, p, _ALERT_KEYS)
        name = _name(r, d, p, seen, "alert")
        condition = r.required_string(d, "condition", p, "e.g. 'cpu_usage > 90 for 5m'")
        if condition:
            try:
                parse_condition(condition)
            except ValueError as exc:
                r.fail(join(p, "condition"), str(exc), condition)
        if d.get("actions") is None:
            r.fail(join(p, "actions"), "is required: a list of " + ", ".join(ALERT_ACTIONS))
        actions = r.string_list(d, "actions", p, (), choices=ALERT_ACTIONS)
        if "actions" in d and isinstance(d["actions"], list) and not d["actions"]:
            r.fail(join(p, "actions"), "must name at least one of " + ", ".join(ALERT_ACTIONS))
        out.append(AlertSpec(name=name, condition=condition, actions=actions))
    return tuple(out)
