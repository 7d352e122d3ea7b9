"""The text exposition, read back by prometheus_client's own parser."""

from __future__ import annotations

import math

from prometheus_client import parser

from edge_min.monitor.metrics import METRICS
from edge_min.monitor.prometheus import Family, format_value, metric_name, render, sample_families


def parse(text: str) -> dict[str, tuple[str, str, list[tuple[dict[str, str], float]]]]:
    return {
        f.name: (f.type, f.documentation, [(dict(s.labels), s.value) for s in f.samples])
        for f in parser.text_string_to_metric_families(text)
    }


def test_a_sample_is_exposed_with_help_type_and_unit_suffixes() -> None:
    sample = {
        "cpu_usage": 12.5,
        "free_storage": 104857600.0,
        "network_rx_bytes_per_second": 10.25,
        "step_latency": 0.125,
        "queue_depth": 4.0,
        "runs_running": 2.0,
        "runs_failed": 1.0,
        "custom.thing": 3.0,
    }
    text = render(sample_families(sample))
    assert "# HELP edge_min_cpu_usage_percent " in text
    assert "# TYPE edge_min_cpu_usage_percent gauge" in text
    fams = parse(text)
    assert fams["edge_min_cpu_usage_percent"] == (
        "gauge",
        METRICS["cpu_usage"].help,
        [({}, 12.5)],
    )
    assert fams["edge_min_free_storage_bytes"][2] == [({}, 104857600.0)]
    assert fams["edge_min_network_rx_bytes_per_second"][2] == [({}, 10.25)]
    assert fams["edge_min_step_latency_seconds"][2] == [({}, 0.125)]
    assert fams["edge_min_queue_depth"][2] == [({}, 4.0)]
    assert sorted(fams["edge_min_workflow_runs"][2], key=lambda s: s[0]["status"]) == [
        ({"status": "failed"}, 1.0),
        ({"status": "running"}, 2.0),
    ]
    assert fams["edge_min_custom_thing"][0] == "gauge"  # sanitised name


def test_labels_help_and_special_values_are_escaped() -> None:
    fam = Family(
        "edge_min_odd_total",
        "counter",
        "help with \\ backslash\nand newline",
        [({"check": 'say "hi"\\n'}, 3.0), ({"check": "inf"}, math.inf)],
    )
    fams = parse(render([fam]))
    kind, doc, samples = fams["edge_min_odd"]
    assert kind == "counter" and doc == "help with \\ backslash\nand newline"
    assert samples == [({"check": 'say "hi"\\n'}, 3.0), ({"check": "inf"}, math.inf)]


def test_values_and_names() -> None:
    assert [format_value(v) for v in (3.0, 0.5, math.nan, -math.inf, 1e20)] == [
        "3", "0.5", "NaN", "-Inf", "1e+20",
    ]  # fmt: skip
    assert metric_name("memory_total", METRICS["memory_total"]) == "edge_min_memory_total_bytes"
    assert metric_name("9lives") == "edge_min__9lives"
    assert render([Family("edge_min_empty", "gauge", "nothing")]) == ""
