"""Bytes on the wire: 1,000 realistic agent_executions rows against json.dumps of the same rows."""

from __future__ import annotations

import datetime as dt
import json
import random
import uuid
from typing import Any

import pytest

from edge_min.sync.protocol import decode_frame, encode_frame

KEY = bytes(range(32))
GOAL = 0.30  # issue 5: at most 30% of uncompressed JSON on the wire
AGENTS = ("sensor-classifier", "anomaly-detector", "text-summarizer", "image-tagger", "notify")


def agent_execution_rows(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """Rows shaped like the spec's agent_executions: UUIDs, ISO times, JSON text columns."""
    rnd = random.Random(seed)
    t0 = dt.datetime(2024, 5, 1, 8, 0, tzinfo=dt.UTC)
    rows: list[dict[str, Any]] = []
    run = ""
    for i in range(n):
        if i % 5 == 0:  # a workflow run of five steps
            run = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
        start = t0 + dt.timedelta(seconds=i * 7.3 + rnd.random())
        took = rnd.uniform(3, 250)
        ok = rnd.random() > 0.05
        reading = {
            "temperature": round(rnd.uniform(15, 35), 2),
            "humidity": round(rnd.uniform(20, 80), 1),
            "pressure": round(rnd.uniform(990, 1030), 1),
        }
        source = {"sensor_id": f"s-{rnd.randrange(64):03d}", "reading": reading}
        if ok:
            label = rnd.choice(("normal", "warning", "critical"))
            output = {"label": label, "score": round(rnd.random(), 4), "model": "classifier-int8"}
        else:
            output = {"error": f"agent exited with code {rnd.choice((1, 137))}: timeout after 30s"}
        metrics = {
            "duration_ms": round(took, 2),
            "memory_mb": round(rnd.uniform(20, 90), 1),
            "cpu_percent": round(rnd.uniform(1, 60), 1),
        }
        rows.append(
            {
                "id": str(uuid.UUID(int=rnd.getrandbits(128), version=4)),
                "agent_id": rnd.choice(AGENTS),
                "workflow_execution_id": run,
                "status": "completed" if ok else "failed",
                "input": json.dumps({**source, "ts": start.isoformat()}),
                "output": json.dumps(output),
                "started_at": start.isoformat(timespec="milliseconds"),
                "completed_at": (start + dt.timedelta(milliseconds=took)).isoformat(
                    timespec="milliseconds"
                ),
                "metrics": json.dumps(metrics),
            }
        )
    return rows


@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "aes"])
def test_compressed_frame_is_at_most_30_percent_of_json(key: bytes | None) -> None:
    rows = agent_execution_rows(1000)
    baseline = len(json.dumps(rows).encode())
    frame = encode_frame(
        {"kind": "push", "node": "edge-7", "entity": "agent_executions", "batch": "b"},
        rows,
        key=key,
        compression="zlib",
    )
    ratio = len(frame) / baseline
    print(f"\n1,000 rows: JSON {baseline:,} B, frame {len(frame):,} B, ratio {ratio:.1%}")
    assert ratio <= GOAL, f"{ratio:.1%} of JSON on the wire, goal {GOAL:.0%}"
    assert decode_frame(frame, key=key)[1] == rows


def test_uncompressed_cbor_alone_does_not_meet_the_goal() -> None:
    # The goal is met by compression, not by CBOR: keep the comparison honest.
    rows = agent_execution_rows(1000)
    frame = encode_frame({"kind": "push", "node": "e"}, rows, compression="none")
    assert len(frame) / len(json.dumps(rows).encode()) > 0.5
