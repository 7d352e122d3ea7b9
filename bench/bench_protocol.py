"""Sync frames: encode/decode speed and bytes on the wire against plain JSON of the same rows.

Run ``python bench/bench_protocol.py``. The records are 1,000 ``agent_executions``-like rows
(UUID ids, ISO timestamps, JSON text in input/output/metrics), made by the same generator as
``tests/unit/sync/test_protocol_size.py``. The baseline is what a naive sync would do:
``json.dumps(rows).encode()`` to send and ``json.loads`` to receive, no checksum, no
compression, no encryption. edge_min's side is ``encode_frame`` / ``decode_frame`` with each
combination of compression and AES-256-GCM; its cost includes the tag-refusing CBOR scan on
both sides, sha256 and the size checks. The size row compares bytes on the wire (issue 5's
goal: a frame at most 30% of the JSON).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    # The row generator lives with the size test, so both measure the same rows.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import Row, best, per_second, row, timed

from edge_min.sync.protocol import available_compressions, decode_frame, encode_frame
from tests.unit.sync.test_protocol_size import agent_execution_rows

ROWS = 1_000
REPEATS = 7
KEY = bytes(range(32))
HEADER = {"kind": "push", "node": "bench", "entity": "agent_executions", "batch": "b-1"}


def _speed(label: str, rows: list[dict[str, Any]], comp: str, key: bytes | None) -> list[Row]:
    frame = encode_frame(HEADER, rows, key=key, compression=comp)
    text = json.dumps(rows).encode()
    enc = best(
        [
            timed(lambda: encode_frame(HEADER, rows, key=key, compression=comp))
            for _ in range(REPEATS)
        ]
    )
    enc_base = best([timed(lambda: json.dumps(rows).encode()) for _ in range(REPEATS)])
    dec = best([timed(lambda: decode_frame(frame, key=key)) for _ in range(REPEATS)])
    dec_base = best([timed(lambda: json.loads(text)) for _ in range(REPEATS)])
    return [
        row(
            f"protocol: encode {label} vs json.dumps, records/s",
            per_second(len(rows), enc),
            per_second(len(rows), enc_base),
            enc_base / enc,
        ),
        row(
            f"protocol: decode {label} vs json.loads, records/s",
            per_second(len(rows), dec),
            per_second(len(rows), dec_base),
            dec_base / dec,
        ),
    ]


def run() -> list[Row]:
    """The protocol's rows in the shared shape."""
    rows = agent_execution_rows(ROWS)
    best_comp = available_compressions()[0]
    out: list[Row] = []
    for comp, key in (("none", None), (best_comp, None), (best_comp, KEY)):
        label = f"{comp}{' + AES-GCM' if key else ''}"
        out += _speed(label, rows, comp, key)
    json_bytes = len(json.dumps(rows).encode())
    for comp, key in ((best_comp, KEY), ("none", None)):
        frame = len(encode_frame(HEADER, rows, key=key, compression=comp))
        share = frame / json_bytes
        goal = comp != "none"
        out.append(
            row(
                f"protocol: bytes on the wire per record, {comp}{' + AES-GCM' if key else ''}"
                " vs uncompressed JSON",
                f"{frame / ROWS:,.1f} B ({share:.1%})",
                f"{json_bytes / ROWS:,.1f} B",
                None,
                "≤ 30% of JSON" if goal else "—",
                share <= 0.30 if goal else None,
            )
        )
    return out


if __name__ == "__main__":
    for r in run():
        ratio = "—" if r["ratio"] is None else f"{r['ratio']:.2f}"
        print(f"{r['benchmark']}: {r['edge_min']} vs {r['baseline']} (ratio {ratio}) {r['goal']}")
