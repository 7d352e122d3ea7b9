"""Monitoring through a real runtime: /health and its checks, /alerts, /metrics, the CLI."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import http, run_cli

MONITORING = """
metrics: {collection_interval: 1, buffer_size: 50, upload_interval: 3600, upload_threshold: 40}
health_checks:
  - {name: database_check, interval: 1, command: "builtin:database", timeout: 1}
  - {name: slow, interval: 1, command: "sleep 5", timeout: 0.3}
alerts:
  - {name: always, condition: "free_storage > 0", actions: [log]}
  - {name: never, condition: "cpu_usage > 1000", actions: [log]}
"""


def _wait(url: str, pred: Any, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        status, body = http("GET", url)
        if pred(status, body) or time.monotonic() > deadline:
            return status, body
        time.sleep(0.2)


def test_health_alerts_metrics_and_cli(tmp_path: Path, runtime_process: Any) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "edge-monitoring.yaml").write_text(MONITORING)
    (data / "edge-config.yaml").write_text("runtime: {offline_mode: never}\n")
    rp = runtime_process(data)
    # The sleeping check is killed at its timeout and counted failed: unhealthy, 503.
    status, body = _wait(
        rp.url + "/health",
        lambda s, b: any(c["name"] == "slow" and c["status"] == "fail" for c in b["checks"]),
    )
    checks = {c["name"]: c for c in body["checks"]}
    assert checks["slow"]["last"]["timed_out"] is True
    assert checks["slow"]["last"]["duration"] < 3
    assert checks["database_check"]["status"] == "pass"
    assert (status, body["status"]) == (503, "unhealthy")
    # Alerts: one fires at once (no `for`), the other never.
    status, alerts = _wait(
        rp.url + "/alerts", lambda s, b: any(a.get("state") == "firing" for a in b)
    )
    states = {a["name"]: a["state"] for a in alerts}
    assert states["always"] == "firing" and states["never"] != "firing"
    # Prometheus text, read back by Prometheus' own parser.
    status, text = http("GET", rp.url + "/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert any("free_storage" in name for name in families)
    firing = [s for f in families.values() for s in f.samples if s.name.endswith("alert_firing")]
    assert {s.labels["alert"]: s.value for s in firing} == {"always": 1.0, "never": 0.0}
    # The CLI asks the running runtime and exits 1 while it is unhealthy.
    res = run_cli("--data-dir", str(data), "health")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "slow" in res.stdout and "fail" in res.stdout
    assert rp.stop() == 0
