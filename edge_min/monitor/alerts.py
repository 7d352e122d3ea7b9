"""Alert rules: the condition language, each alert's state, and the actions it triggers.

A condition is ``METRIC OP VALUE [for DURATION]`` (``cpu_usage > 90 for 5m``,
``free_storage < 100MB``); ``compile_rules`` turns the configured ones into ``AlertRule``s and
rejects a bad condition, an unknown metric or a unit that does not suit the metric (a size
against a percentage) with a ``ConfigError`` naming the alert.

Each alert moves ``inactive -> pending -> firing -> resolved``: pending while the condition
holds for less than its ``for`` duration (an alert without ``for`` fires at once), firing once
it has held that long, resolved when it stops holding after firing (and pending again if it
holds again). A metric missing from a sample (no battery) means the condition does not hold.
Actions run once on the way into ``firing``: ``log``, ``notify_central`` (queued in the
outbox), ``cleanup_temp``, ``restart_sync``; on the way to ``resolved`` ``log`` and
``notify_central`` report the recovery. States are persisted on every change, so a reboot
does not fire a firing alert again; a pending one starts its ``for`` period over (the clock
that measured it, monotonic time, does not survive a reboot).
"""

from __future__ import annotations

import logging
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edge_min.clock import Clock, iso
from edge_min.config.monitoring import AlertSpec, Condition, parse_condition
from edge_min.errors import ConfigError
from edge_min.monitor.metrics import BYTES, METRICS, PERCENT, RATE, MetricInfo
from edge_min.monitor.outbox import Outbox
from edge_min.monitor.persist import MonitorStore
from edge_min.units import format_duration, format_size

log = logging.getLogger("edge_min.monitor")

INACTIVE, PENDING, FIRING, RESOLVED = "inactive", "pending", "firing", "resolved"
OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
# The unit written after the value, if any ("100MB", "90 %"), but not the word "for".
_VALUE_UNIT = re.compile(r"(?:>=|<=|==|!=|>|<)\s*-?\d+(?:\.\d+)?\s*(%|[A-Za-z]+(?=\s+for\s|\s*$))?")
DEFAULT_TMP_MAX_AGE = 3600.0  # cleanup_temp removes tmp/ files older than this


@dataclass(frozen=True)
class AlertRule:
    """A compiled alert: its condition and the actions to run when it fires."""

    name: str
    text: str
    condition: Condition
    actions: tuple[str, ...]

    def holds(self, sample: Mapping[str, float]) -> bool:
        """Whether the condition holds for this sample (a missing metric never does)."""
        value = sample.get(self.condition.metric)
        return value is not None and OPS[self.condition.op](value, self.condition.value)


def compile_rule(spec: AlertSpec, known: Mapping[str, MetricInfo] = METRICS) -> AlertRule:
    """One alert rule; ``ConfigError`` naming the alert for a bad condition or metric."""
    path = f"alerts.{spec.name}.condition"
    try:
        cond = parse_condition(spec.condition)
    except ValueError as exc:
        raise ConfigError(f"alert {spec.name!r}: {exc}", path=path, value=spec.condition) from None
    info = known.get(cond.metric)
    if info is None:
        raise ConfigError(
            f"alert {spec.name!r}: unknown metric {cond.metric!r} in {spec.condition!r}; "
            f"known metrics: {', '.join(sorted(known))}",
            path=path,
            value=spec.condition,
        )
    m = _VALUE_UNIT.search(spec.condition)
    unit = (m.group(1) if m else None) or ""
    if unit == "%" and info.unit != PERCENT:
        raise ConfigError(
            f"alert {spec.name!r}: {cond.metric} is in {info.unit}, not a percentage; "
            "compare it with a plain number"
            + (" or a size such as 100MB" if info.unit == BYTES else ""),
            path=path,
            value=spec.condition,
        )
    if unit not in ("", "%") and info.unit not in (BYTES, RATE):
        raise ConfigError(
            f"alert {spec.name!r}: {cond.metric} is in {info.unit}, so {unit!r} does not apply; "
            f"compare it with a plain number",
            path=path,
            value=spec.condition,
        )
    return AlertRule(spec.name, spec.condition, cond, tuple(spec.actions))


def compile_rules(
    specs: Sequence[AlertSpec], known: Mapping[str, MetricInfo] = METRICS
) -> list[AlertRule]:
    """Every configured rule; all errors together in one ``ConfigError``."""
    rules, errors = [], []
    for spec in specs:
        try:
            rules.append(compile_rule(spec, known))
        except ConfigError as exc:
            errors.append(exc)
    if errors:
        raise ConfigError.collect(errors)
    return rules


@dataclass
class AlertState:
    """Where one alert stands; wall times for records, monotonic ``pending_mono`` for ``for``."""

    name: str
    state: str = INACTIVE
    value: float | None = None
    since: float | None = None
    fired_at: float | None = None
    resolved_at: float | None = None
    pending_mono: float | None = None

    def row(self, now: float) -> dict[str, Any]:
        """The persisted form."""
        return {
            "name": self.name,
            "state": self.state,
            "value": self.value,
            "since": self.since,
            "fired_at": self.fired_at,
            "resolved_at": self.resolved_at,
            "updated_at": now,
        }


class AlertActions:
    """What alerts can do: each action's side effect, injected by the runtime."""

    def __init__(
        self,
        outbox: Outbox | None = None,
        *,
        cleanup_tmp: Callable[[float, float], int] | None = None,
        restart_sync: Callable[[], object] | None = None,
        tmp_max_age: float = DEFAULT_TMP_MAX_AGE,
    ) -> None:
        self.outbox = outbox
        self.cleanup_tmp = cleanup_tmp
        self.restart_sync = restart_sync
        self.tmp_max_age = tmp_max_age

    def run(self, rule: AlertRule, state: AlertState, now: float) -> list[str]:
        """Run the rule's actions for this transition; what each did, for the log."""
        done = []
        for action in rule.actions:
            try:
                done.append(f"{action}: {self._one(action, rule, state, now)}")
            except Exception as exc:  # one failing action must not stop the others
                log.error("alert %s: action %s failed: %s", rule.name, action, exc)
                done.append(f"{action}: failed: {exc}")
        return done

    def _one(self, action: str, rule: AlertRule, state: AlertState, now: float) -> str:
        cond = rule.condition
        if action == "log":
            where = cond.metric
            if state.value is not None:
                unit = METRICS[cond.metric].unit if cond.metric in METRICS else ""
                shown = format_size(state.value) if unit == BYTES else f"{state.value:g}"
                where = f"{cond.metric}={shown}"
            if state.state == FIRING:
                log.warning("alert %s firing: %s (%s)", rule.name, where, rule.text)
            else:
                log.info("alert %s resolved: %s (%s)", rule.name, where, rule.text)
            return "logged"
        if action == "notify_central":
            if self.outbox is None:
                return "skipped (no outbox)"
            nid = self.outbox.enqueue(
                "alert",
                {
                    "alert": rule.name,
                    "state": state.state,
                    "condition": rule.text,
                    "metric": cond.metric,
                    "value": state.value,
                },
                now,
            )
            return f"queued {nid}"
        if state.state != FIRING:  # the remedies run only on the way in
            return "not on resolve"
        if action == "cleanup_temp":
            if self.cleanup_tmp is None:
                return "skipped (no file store)"
            freed = self.cleanup_tmp(self.tmp_max_age, now)
            log.warning(
                "alert %s: cleanup_temp freed %d bytes (tmp/ files older than %s)",
                rule.name,
                freed,
                format_duration(self.tmp_max_age),
            )
            return f"freed {freed} bytes"
        if action == "restart_sync":
            if self.restart_sync is None:
                return "skipped (no sync manager)"
            self.restart_sync()
            log.warning("alert %s: sync manager restarted", rule.name)
            return "sync restarted"
        return f"unknown action {action!r}"


class Alerts:
    """Every alert rule and its state; ``evaluate`` moves them on one sample."""

    def __init__(
        self, rules: Sequence[AlertRule], store: MonitorStore, actions: AlertActions, clock: Clock
    ) -> None:
        self.rules = list(rules)
        self.store = store
        self.actions = actions
        self.clock = clock
        saved = store.load_alerts()
        self.states: dict[str, AlertState] = {}
        for rule in self.rules:
            row = saved.get(rule.name)
            st = AlertState(rule.name)
            if row is not None and row["state"] in (FIRING, RESOLVED):
                st.state, st.value, st.since = row["state"], row["value"], row["since"]
                st.fired_at, st.resolved_at = row["fired_at"], row["resolved_at"]
            self.states[rule.name] = st

    def evaluate(self, sample: Mapping[str, float]) -> list[tuple[str, str]]:
        """Move every alert on this sample; the ``(name, new state)`` transitions made."""
        now, mono = self.clock.time(), self.clock.monotonic()
        moved: list[tuple[str, str]] = []
        for rule in self.rules:
            st = self.states[rule.name]
            value = sample.get(rule.condition.metric)
            st.value = value
            before = st.state
            if rule.holds(sample):
                if st.state in (INACTIVE, RESOLVED):
                    st.state, st.since, st.pending_mono = PENDING, now, mono
                if st.state == PENDING:
                    assert st.pending_mono is not None
                    if mono - st.pending_mono >= rule.condition.duration:
                        st.state, st.fired_at, st.since = FIRING, now, now
            elif st.state == PENDING:
                st.state, st.since, st.pending_mono = INACTIVE, now, None
            elif st.state == FIRING:
                st.state, st.resolved_at, st.since, st.pending_mono = RESOLVED, now, now, None
            if st.state != before:
                moved.append((rule.name, st.state))
                self.store.save_alert(st.row(now))
                # Only firing leads to resolved, so each firing runs the actions once and
                # each recovery reports once.
                if st.state in (FIRING, RESOLVED):
                    self.actions.run(rule, st, now)
        return moved

    def firing(self) -> list[str]:
        """Names of the alerts firing now."""
        return [n for n, s in self.states.items() if s.state == FIRING]

    def views(self) -> list[dict[str, Any]]:
        """Each alert's rule and state, for GET /alerts."""
        out = []
        for rule in self.rules:
            st = self.states[rule.name]
            out.append(
                {
                    "name": rule.name,
                    "condition": rule.text,
                    "actions": list(rule.actions),
                    "state": st.state,
                    "value": st.value,
                    "since": iso(st.since) if st.since is not None else None,
                    "fired_at": iso(st.fired_at) if st.fired_at is not None else None,
                    "resolved_at": iso(st.resolved_at) if st.resolved_at is not None else None,
                }
            )
        return out
