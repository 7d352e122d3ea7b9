"""kill -9 of a process in the middle of key rotation and re-encryption leaves every row readable.

A real subprocess (``reseal_worker``) rotates keys and re-seals every payload value in small
transactions, round and round; it is SIGKILLed at 120 points spread over its cycle. After
every kill the database is opened as the runtime would open it: every value reads back as
written, every sealed value names a key in the ring, exactly one key is current, and
``PRAGMA integrity_check`` is ok.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from edge_min.config import load_config
from edge_min.runtime import Paths
from edge_min.security.atrest import open_device_store
from edge_min.security.rotation import key_usage
from edge_min.store.sealed import PAYLOAD_COLUMNS

ROOT = Path(__file__).resolve().parents[2]
KILLS = 120


def _seed(paths: Paths) -> dict[str, Any]:
    config = load_config(None)
    expected: dict[str, Any] = {}
    with open_device_store(config, paths) as store:
        wf = store.workflows.create("wf", {"steps": ["a"], "secret": "s" * 50}, "1")["id"]
        for i in range(80):
            eid = store.executions.create(wf, input={"i": i, "pad": "x" * (i % 7) * 20})["id"]
            store.executions.set(eid, output={"o": i * i})
            expected[eid] = ({"i": i, "pad": "x" * (i % 7) * 20}, {"o": i * i})
        for n in range(40):
            store.backend.insert(
                "metrics_buffer", {"seq": n + 1, "collected_at": float(n), "metrics": f"[{n}]"}
            )
    return expected


def _check(paths: Paths, expected: dict[str, Any]) -> dict[str, int]:
    with sqlite3.connect(paths.db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    config = load_config(None)
    with open_device_store(config, paths) as store:
        for eid, (inp, out) in expected.items():
            row = store.executions.require(eid)
            assert (row["input"], row["output"]) == (inp, out), eid
        samples = store.backend.select("metrics_buffer", order_by=("seq",))
        assert [s["metrics"] for s in samples] == [f"[{n}]" for n in range(40)]
        usage = key_usage(store.raw)
        states = [k["state"] for k in usage["keys"]]
        assert states.count("current") == 1, usage
        total = sum(
            store.raw.count(t, {c: _not_null()})
            for t, cols in PAYLOAD_COLUMNS.items()
            for c in cols
        )
        # Every stored value is plaintext or sealed under a key the ring holds.
        assert usage["plaintext_values"] + sum(k["values"] for k in usage["keys"]) == total
        return {
            "keys": len(usage["keys"]),
            "plaintext": int(usage["plaintext_values"]),
            "total": total,
        }


def _not_null() -> Any:
    from edge_min.store import NotNull

    return NotNull()


@pytest.mark.slow
def test_kill9_at_120_points_of_rotation_and_resealing(tmp_path: Path) -> None:
    paths = Paths(root=tmp_path / "data", db=tmp_path / "data" / "meta-agent-edge.db")
    expected = _seed(paths)
    rng = random.Random(12)
    in_progress = 0
    for _ in range(KILLS):
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.recovery.reseal_worker", str(paths.root), "4"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.0, 0.35))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert proc.returncode == -signal.SIGKILL
        seen = _check(paths, expected)
        # Killed between a rotation and the end of the passes that follow it.
        if seen["keys"] > 1 or 0 < seen["plaintext"] < seen["total"]:
            in_progress += 1
    assert in_progress >= KILLS // 3, f"only {in_progress} kills landed mid re-encryption"
