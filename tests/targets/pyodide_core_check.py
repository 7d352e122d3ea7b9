"""edge_min's portable core where it runs: config, a store round trip, CBOR, YAML, a monitor sample.

tests/targets/test_pyodide.py runs this file inside Pyodide under Node.js
(``node wasm/run_python.mjs tests/targets/pyodide_core_check.py``) and under CPython, so the
same check proves both targets. It raises on the first failure (a non-zero exit with a
traceback) and otherwise prints one JSON line, the facts the test asserts.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import sqlite3
import sys
import tempfile
from typing import Any

import cbor2
import yaml

import edge_min
import edge_min.clock
import edge_min.units
from edge_min.config import load_config, parse_config
from edge_min.config.monitoring import MonitoringConfig
from edge_min.errors import ConfigError
from edge_min.monitor import Monitor, default_resources
from edge_min.platform import get_platform
from edge_min.store import open_store

EDGE_CONFIG = """\
runtime:
  mode: edge
  max_concurrent_workflows: 3
  max_memory_usage: 256MB
  offline_mode: always
sync:
  sync_interval: 5m
  conflict_resolution: edge_wins
storage:
  type: sqlite
  path: {db_path}
"""

DEFINITION = {
    "steps": [
        {"id": "read", "agent": "sensor-reader", "input": {"unit": "°C"}},
        {"id": "score", "agent": "anomaly", "depends_on": ["read"], "threshold": 0.75},
    ],
    "retry": {"max_attempts": 3, "backoff": "5s"},
}


def check_config(folder: str) -> tuple[dict[str, Any], str]:
    """Load edge-config.yaml from the file system and from a string; return facts and db path."""
    db_path = os.path.join(folder, "data", "edge.db")
    config_path = os.path.join(folder, "edge-config.yaml")
    text = EDGE_CONFIG.format(db_path=db_path)
    with open(config_path, "w", encoding="utf-8") as handle:
        handle.write(text)

    loaded = load_config(config_path)
    parsed = parse_config(yaml.safe_load(text))
    assert loaded == parsed, f"load_config and parse_config disagree:\n{loaded}\n{parsed}"
    assert loaded.runtime.max_memory_usage == edge_min.units.parse_size("256MB")
    assert loaded.sync.sync_interval == 300.0, loaded.sync.sync_interval
    assert loaded.storage.path == db_path, loaded.storage.path

    try:
        parse_config({"runtime": {"max_concurrent_workflows": "many"}})
    except ConfigError as exc:
        bad_value_error = str(exc)
    else:
        raise AssertionError("parse_config accepted max_concurrent_workflows: many")
    assert "max_concurrent_workflows" in bad_value_error, bad_value_error

    facts = {
        "max_memory_usage": loaded.runtime.max_memory_usage,
        "max_concurrent_workflows": loaded.runtime.max_concurrent_workflows,
        "offline_mode": loaded.runtime.offline_mode,
        "sync_interval": loaded.sync.sync_interval,
        "conflict_resolution": loaded.sync.conflict_resolution,
        "storage_path": loaded.storage.path,
        "bad_value_rejected": True,
    }
    assert loaded.storage.path is not None
    return facts, loaded.storage.path


def check_store(db_path: str) -> tuple[dict[str, Any], str]:
    """Create a workflow, read it back, reopen the file and read it again; facts, journal mode."""
    clock = edge_min.clock.VirtualClock(1_700_000_000.0)
    store = open_store(db_path, clock=clock)
    try:
        created = store.workflows.create(
            name="pyodide-check", definition=DEFINITION, version="1.2.0"
        )
        # Reported, not asserted: WAL needs shared memory that some WebAssembly hosts lack.
        journal_mode = str(getattr(store.backend, "journal_mode", "unknown"))
        fetched = store.workflows.get(created["id"])
        assert fetched == created, f"read back differs:\n{fetched}\n{created}"
        assert fetched["definition"] == DEFINITION, fetched["definition"]
    finally:
        store.close()

    reopened = open_store(db_path, clock=clock)
    try:
        again = reopened.workflows.get_by_name("pyodide-check")
        assert again == created, f"after reopen:\n{again}\n{created}"
        count = len(reopened.workflows.list())
    finally:
        reopened.close()

    # The sync protocol ships rows as CBOR frames: the stored row must survive one.
    frame = cbor2.dumps(again)
    assert cbor2.loads(frame) == again
    return {
        "workflow_id": created["id"],
        "name": again["name"],
        "version": again["version"],
        "definition_equal": again["definition"] == DEFINITION,
        "created_at": again["created_at"],
        "rows": count,
        "db_file_bytes": os.path.getsize(db_path),
        "cbor_frame_bytes": len(frame),
    }, journal_mode


def check_monitor(folder: str) -> dict[str, Any]:
    """One monitor sample through the platform's resource reader; what each part gave."""
    platform = get_platform()
    reader = default_resources(folder)
    host = dict(reader.read(0.0))
    monitor = Monitor(
        MonitoringConfig(),
        edge_min.clock.VirtualClock(1_700_000_000.0),
        resources=reader,
        runtime_metrics=lambda: {"queue_depth": 1.0},
    )
    sample = monitor.collect()
    assert sample["queue_depth"] == 1.0, sample
    assert "edge_min_queue_depth 1" in monitor.prometheus()
    return {
        "platform": platform.name,
        "reader": type(reader).__name__,
        "host_metrics": sorted(host),
        "sample_metrics": sorted(sample),
    }


def main() -> None:
    """Run every check and print the facts as one JSON line."""
    folder = tempfile.mkdtemp(prefix="edge-min-check-")
    config_facts, db_path = check_config(folder)
    store_facts, journal_mode = check_store(db_path)
    monitor_facts = check_monitor(folder)
    result = {
        "platform": sys.platform,
        "python": "{}.{}.{}".format(*sys.version_info[:3]),
        "edge_min_file": edge_min.__file__,
        "sqlite_version": sqlite3.sqlite_version,
        "sqlite_journal_mode": journal_mode,
        "yaml_version": yaml.__version__,
        "yaml_libyaml": bool(yaml.__with_libyaml__),
        "cbor2_version": importlib.metadata.version("cbor2"),
        "config": config_facts,
        "store": store_facts,
        "monitor": monitor_facts,
    }
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
