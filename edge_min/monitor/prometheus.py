"""The Prometheus text exposition format (version 0.0.4) for GET /metrics.

Each family is written as ``# HELP``, ``# TYPE`` and its samples; names follow Prometheus
conventions (``edge_min_`` prefix, base units as suffixes: ``_bytes``, ``_percent``,
``_seconds``, counters ending ``_total``). The catalogue's ``runs_<status>`` metrics become
one family with a ``status`` label. ``prometheus_client``'s text parser reads the output
(``tests/unit/monitor/test_prometheus.py``); nothing here needs it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from edge_min.monitor.metrics import BYTES, METRICS, PERCENT, SECONDS, MetricInfo

PREFIX = "edge_min_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_BAD_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_:]")
_SUFFIX = {BYTES: "_bytes", PERCENT: "_percent", SECONDS: "_seconds"}

Labels = Mapping[str, str]


@dataclass
class Family:
    """One metric family: name, type (gauge or counter), help and labelled samples."""

    name: str
    kind: str
    help: str
    samples: list[tuple[Labels, float]] = field(default_factory=list)


def metric_name(name: str, info: MetricInfo | None = None) -> str:
    """The exposition name of a catalogue metric: prefixed, unit-suffixed, sanitised."""
    base = PREFIX + _BAD_NAME_CHARS.sub("_", name)
    if base[len(PREFIX)].isdigit():
        base = PREFIX + "_" + base[len(PREFIX) :]
    suffix = _SUFFIX.get(info.unit, "") if info else ""
    if suffix and not base.endswith(suffix):
        base += suffix
    if info and info.counter and not base.endswith("_total"):
        base += "_total"
    return base


def sample_families(
    sample: Mapping[str, float], known: Mapping[str, MetricInfo] = METRICS
) -> list[Family]:
    """Families for one metrics sample; ``runs_<status>`` grouped under a ``status`` label."""
    runs = Family(PREFIX + "workflow_runs", "gauge", "Workflow runs by status")
    out: list[Family] = []
    for name in sorted(sample):
        value = sample[name]
        if name.startswith("runs_"):
            runs.samples.append(({"status": name[len("runs_") :]}, value))
            continue
        info = known.get(name)
        out.append(
            Family(
                metric_name(name, info),
                "counter" if info and info.counter else "gauge",
                info.help if info else f"Runtime metric {name}",
                [({}, value)],
            )
        )
    if runs.samples:
        out.append(runs)
    return out


def render(families: Sequence[Family]) -> str:
    """The text exposition of these families (a family without samples is left out)."""
    lines: list[str] = []
    for fam in families:
        if not fam.samples:
            continue
        lines.append(f"# HELP {fam.name} {_escape_help(fam.help)}")
        lines.append(f"# TYPE {fam.name} {fam.kind}")
        for labels, value in fam.samples:
            lines.append(f"{fam.name}{_labels(labels)} {format_value(value)}")
    return "\n".join(lines) + "\n" if lines else ""


def format_value(value: float) -> str:
    """A sample value as the format spells it (``+Inf``, ``NaN``, integers without ``.0``)."""
    v = float(value)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return repr(v)


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    parts = []
    for key in sorted(labels):
        val = str(labels[key]).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        parts.append(f'{_BAD_NAME_CHARS.sub("_", key)}="{val}"')
    return "{" + ",".join(parts) + "}"
