"""Sync end to end over loopback: records/s, bytes on the wire per record, bytes resent per cut.

Run ``python bench/bench_sync.py``. A real central (SQLite, 127.0.0.1) and two real edges
(SQLite files): edge A pushes ``RECORDS`` agent_executions (with their parents), edge B pulls
them all; the rate counts records through both (A's push + B's pull), for TLS (mutual, dev
certificates from ``init_certs``) and payload encryption (AES-256-GCM) each on and off. There
is no baseline tool to run beside it, so those rows have no ratio.

Bytes on the wire: the push's request bytes (HTTP head + frame) per record against
``json.dumps`` of the same rows (issue 5's goal: at most 30%). Bytes resent per cut: the same
push through ``FaultProxy`` cutting every connection at a random byte, minus a clean push's
bytes, divided by the cuts: what a cut costs (at most one batch).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import Row, row, scratch_dir

from edge_min.config.security import CommunicationSecurity
from edge_min.sync.tracker import ChangeTracker
from edge_min.sync.transport import HttpTransport
from tests.integration.sync.faultproxy import FaultProxy
from tests.integration.sync.helpers import Edge, make_edge, seed, start_central

RECORDS = int(os.environ.get("EDGE_BENCH_SYNC_RECORDS", "5000"))


def _tls_transport(edge: Edge, url: str, certs: dict[str, Path]) -> None:
    comm = CommunicationSecurity(
        certificate_path=str(certs["device_cert"]),
        key_path=str(certs["device_key"]),
        ca_path=str(certs["ca_cert"]),
    )
    edge.manager.transport = HttpTransport.for_url(url, node=edge.name, security_config=comm)


def _end_to_end(tmp: Path, tls: bool, encrypt: bool) -> tuple[float, int]:
    """Seconds for A's push plus B's pull of RECORDS rows, and A's push request bytes."""
    from edge_min.security.certs import init_certs, issue_device_cert
    from edge_min.security.tls import server_context

    key = os.urandom(32) if encrypt else None
    ctx = None
    if tls:
        certs_a = init_certs(tmp / "certs", device_id="bench-a")
        certs_b = issue_device_cert(tmp / "certs", "bench-b")
        ctx = server_context(certs_a["central_cert"], certs_a["central_key"], certs_a["ca_cert"])
    central = start_central(tmp / "central.db", key=key, ssl_context=ctx)
    a = make_edge(tmp, "bench-a", central.url if not tls else "http://127.0.0.1:1", key=key)
    b = make_edge(tmp, "bench-b", central.url if not tls else "http://127.0.0.1:1", key=key)
    if tls:
        _tls_transport(a, central.url, certs_a)
        _tls_transport(b, central.url, certs_b)
    try:
        seed(a.store, "a", 50, RECORDS)
        began = time.perf_counter()
        push = a.manager.sync_once()
        pull = b.manager.sync_once()
        seconds = time.perf_counter() - began
        assert push.ok and pull.ok, (push.summary(), pull.summary())
        got = len(b.store.backend.select("agent_executions", {}))
        assert got == RECORDS, got
        return seconds, a.manager.transport.stats.bytes_sent
    finally:
        a.close()
        b.close()
        central.stop()


def _resent_per_cut(tmp: Path) -> tuple[float, int, int]:
    """(bytes resent per cut, cuts, clean bytes) for a push of RECORDS rows through cuts."""
    clean_dir, cut_dir = tmp / "clean", tmp / "cut"
    clean_dir.mkdir()
    cut_dir.mkdir()
    central = start_central(clean_dir / "central.db")
    a = make_edge(clean_dir, "bench-a", central.url)
    seed(a.store, "a", 50, RECORDS)
    a.manager.sync_once(["agent_executions"])
    clean = a.manager.transport.stats.bytes_sent
    a.close()
    central.stop()

    central = start_central(cut_dir / "central.db")
    proxy = FaultProxy(central.address, seed=3, cut_rate=1.0, mean_cut_offset=60_000).start()
    a = make_edge(cut_dir, "bench-a", proxy.url, timeout=5)
    try:
        seed(a.store, "a", 50, RECORDS)
        for _ in range(1000):
            if a.manager.sync_once(["agent_executions"]).ok:
                break
        sent = a.manager.transport.stats.bytes_sent
        cuts = max(1, proxy.stats.cuts)
        return (sent - clean) / cuts, proxy.stats.cuts, clean
    finally:
        a.close()
        proxy.stop()
        central.stop()


def _json_bytes() -> int:
    """Bytes of json.dumps of the rows edge A pushes (as the edge stores them)."""
    with scratch_dir() as d:
        from edge_min.store import open_store

        store = open_store(Path(d) / "rows.db", changes=ChangeTracker)
        seed(store, "a", 50, RECORDS)
        rows: list[Any] = []
        for entity in ("workflows", "agents", "workflow_executions", "agent_executions"):
            rows += store.backend.select(entity, {})
        store.close()
        return len(json.dumps(rows).encode())


def run() -> list[Row]:
    """The sync area's rows."""
    out: list[Row] = []
    wire: dict[tuple[bool, bool], int] = {}
    for tls in (False, True):
        for encrypt in (False, True):
            with scratch_dir() as d:
                seconds, sent = _end_to_end(Path(d), tls, encrypt)
            wire[(tls, encrypt)] = sent
            label = f"TLS {'on' if tls else 'off'}, payload encryption {'on' if encrypt else 'off'}"
            out.append(
                row(
                    f"sync: end to end over loopback ({label}), records/s (push + pull)",
                    f"{2 * RECORDS / seconds:,.0f} /s",
                    "—",
                    None,
                )
            )
    json_bytes = _json_bytes()
    n = RECORDS + 52
    for encrypt in (False, True):
        share = wire[(False, encrypt)] / json_bytes
        out.append(
            row(
                f"sync: bytes on the wire per record, push{' + AES-GCM' if encrypt else ''} "
                "vs uncompressed JSON",
                f"{wire[(False, encrypt)] / n:,.1f} B ({share:.1%})",
                f"{json_bytes / n:,.1f} B",
                None,
                "≤ 30% of JSON",
                share <= 0.30,
            )
        )
    with scratch_dir() as d:
        per_cut, cuts, clean = _resent_per_cut(Path(d))
    batch = clean / max(1, -(-RECORDS // 200))  # agent_executions: 200 rows per batch
    out.append(
        row(
            f"sync: bytes sent again per cut ({cuts} cuts, push of {RECORDS:,} records)",
            f"{per_cut:,.0f} B",
            f"{batch:,.0f} B per batch",
            None,
            "≤ one batch",
            per_cut <= 1.25 * batch,
        )
    )
    return out


if __name__ == "__main__":
    for r in run():
        ratio = "—" if r["ratio"] is None else f"{r['ratio']:.2f}"
        print(f"{r['benchmark']}: {r['edge_min']} vs {r['baseline']} (ratio {ratio}) {r['goal']}")
