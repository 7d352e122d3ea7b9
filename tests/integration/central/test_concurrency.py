"""Hundreds of devices pushing and pulling at once against two central processes on one PostgreSQL.

Afterwards: no version was handed out twice, pulling from 0 gives every row's latest accepted
write exactly once and in version order, every row's accepted writes form one unbroken
compare-and-set chain (no write lost or blindly overwritten), pullers running during the storm
never skipped a record, replays answered what the first attempt answered, and no request failed.
"""

from __future__ import annotations

import itertools
import random
import signal
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from edge_min.central.store import ENTITIES

from .conftest import Client, item, start_process, wait_health

DEVICES = 220
SQLITE_DEVICES = 60
ROUNDS = 4
OWN_ROWS = 4
SHARED_ROWS = 16
MAX_CAS_ATTEMPTS = 60


class Ledger:
    """What the devices were told, collected from every thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.accepted: list[tuple[str, str, int, int | None, dict[str, Any]]] = []
        self.errors: list[str] = []
        self.replays = 0
        self.shared_wins = 0
        self.conflicts = 0
        self.batches: set[str] = set()

    def accept(
        self, entity: str, results: list[dict[str, Any]], sent: list[dict[str, Any]]
    ) -> None:
        with self.lock:
            for result, sent_item in zip(results, sent, strict=True):
                assert result["id"] == sent_item["id"]
                if result["status"] == "accepted":
                    self.accepted.append(
                        (
                            entity,
                            result["id"],
                            result["version"],
                            sent_item["base_version"],
                            sent_item["row"],
                        )
                    )
                else:
                    self.conflicts += 1


def _device(index: int, urls: list[str], ledger: Ledger, start: threading.Barrier) -> None:
    node = f"dev-{index:04d}"
    rng = random.Random(index)
    own_entity = ENTITIES[index % len(ENTITIES)]
    known: dict[str, int | None] = {f"{node}-r{k}": None for k in range(OWN_ROWS)}
    shared_known: dict[str, int | None] = {}
    clients = [Client(url, node) for url in urls]

    def pick() -> Client:
        return rng.choice(clients)

    def push(client: Client, entity: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        batch = uuid.uuid4().hex
        results = client.push(entity, items, batch=batch)
        with ledger.lock:
            ledger.batches.add(batch)
        ledger.accept(entity, results, items)
        if rng.random() < 0.25:
            # The answer "was lost": send the same batch again, to either process.
            again = pick().push(entity, items, batch=batch)
            assert again == results, (node, batch, again, results)
            with ledger.lock:
                ledger.replays += 1
        return results

    start.wait()
    try:
        for rnd in range(ROUNDS):
            items = [
                item(rid, base, row={"id": rid, "by": node, "round": rnd})
                for rid, base in known.items()
            ]
            for result in push(pick(), own_entity, items):
                assert result["status"] == "accepted", result
                known[result["id"]] = result["version"]

            sid = f"shared-{rng.randrange(SHARED_ROWS)}"
            for _ in range(MAX_CAS_ATTEMPTS):
                edit = item(sid, shared_known.get(sid), row={"id": sid, "by": node, "round": rnd})
                [result] = push(pick(), "workflows", [edit])
                if result["status"] == "accepted":
                    shared_known[sid] = result["version"]
                    with ledger.lock:
                        ledger.shared_wins += 1
                    break
                current = result["current"]
                shared_known[sid] = current["version"] if current else None

            pick().pull(rng.choice(ENTITIES), rng.randrange(0, 50), limit=50)
    except Exception as exc:
        with ledger.lock:
            ledger.errors.append(f"{node}: {type(exc).__name__}: {exc}")


def _puller(
    entity: str,
    urls: list[str],
    done: threading.Event,
    seen: dict[str, dict[str, Any]],
    ledger: Ledger,
) -> None:
    """Pull continuously with a cursor, as an edge does, while the devices write."""
    clients = [Client(url, f"puller-{entity}") for url in urls]
    cursor = 0
    rng = random.Random(entity)
    try:
        while True:
            finishing = done.is_set()
            while True:
                page = rng.choice(clients).pull(entity, cursor, limit=100)
                if not page:
                    break
                versions = [r["version"] for r in page]
                assert versions == sorted(versions) and versions[0] > cursor, versions
                for record in page:
                    seen[record["id"]] = record
                cursor = versions[-1]
            if finishing:
                return
            time.sleep(0.01)
    except Exception as exc:
        with ledger.lock:
            ledger.errors.append(f"puller {entity}: {type(exc).__name__}: {exc}")


def _storm(db_url: str, tmp_path: Path, devices: int, count_rows: Any) -> None:
    """Run ``devices`` devices against two central processes on ``db_url`` and audit it all."""
    from tests.conftest import free_port

    ports = [free_port(), free_port()]
    logs = [tmp_path / f"central-{p}.log" for p in ports]
    procs = [
        start_process(db_url, port, log, "--workers", "48")
        for port, log in zip(ports, logs, strict=True)
    ]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        for url, proc, log in zip(urls, procs, logs, strict=True):
            wait_health(url, proc, log)
        ledger, seen, elapsed = _run_devices(urls, devices)
        _audit(urls, ledger, seen, devices)

        # Every device was registered and its contact recorded; every batch stored once.
        sample = Client(urls[1], "auditor").json("GET", "/api/devices/dev-0007")
        assert sample["status"] == "active" and sample["last_seen"]
        assert count_rows("SELECT count(*) FROM devices WHERE id LIKE 'dev-%'") == devices
        assert count_rows("SELECT count(*) FROM applied_batches") == len(ledger.batches)
        print(
            f"{devices} devices, {len(ledger.batches)} batches, {ledger.replays} replays, "
            f"{ledger.conflicts} conflicts in {elapsed:.1f}s"
        )

        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc, log in zip(procs, logs, strict=True):
            assert proc.wait(30) == 0, log.read_text()[-3000:]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _run_devices(
    urls: list[str], devices: int
) -> tuple[Ledger, dict[str, dict[str, dict[str, Any]]], float]:
    ledger = Ledger()
    start = threading.Barrier(devices)
    done = threading.Event()
    seen: dict[str, dict[str, dict[str, Any]]] = {e: {} for e in ENTITIES}
    pullers = [
        threading.Thread(target=_puller, args=(e, urls, done, seen[e], ledger)) for e in ENTITIES
    ]
    threads = [
        threading.Thread(target=_device, args=(i, urls, ledger, start)) for i in range(devices)
    ]
    began = time.monotonic()
    for t in pullers + threads:
        t.start()
    for t in threads:
        t.join(300)
    done.set()
    for t in pullers:
        t.join(120)
    assert not any(t.is_alive() for t in threads + pullers), "a device or puller hung"
    assert ledger.errors == [], ledger.errors[:10]
    return ledger, seen, time.monotonic() - began


def _audit(
    urls: list[str], ledger: Ledger, seen: dict[str, dict[str, dict[str, Any]]], devices: int
) -> None:
    # Every accepted write got its own version.
    versions = [v for _, _, v, _, _ in ledger.accepted]
    assert len(versions) == len(set(versions))
    shared_writes = sum(1 for _, i, *_ in ledger.accepted if i.startswith("shared-"))
    assert shared_writes == ledger.shared_wins
    own_writes = sum(1 for _, i, *_ in ledger.accepted if not i.startswith("shared-"))
    assert own_writes == devices * ROUNDS * OWN_ROWS
    assert ledger.replays > 0 and ledger.conflicts > 0

    # Per row: the accepted writes chain by base_version; the last one is what central has.
    chains: dict[tuple[str, str], list[tuple[int, int | None, dict[str, Any]]]] = defaultdict(list)
    for entity, rid, version, base, row in ledger.accepted:
        chains[(entity, rid)].append((version, base, row))
    for (_, rid), writes in chains.items():
        writes.sort(key=lambda w: w[0])
        assert writes[0][1] is None, (rid, writes[:2])
        for prev, nxt in itertools.pairwise(writes):
            assert nxt[1] == prev[0], f"{rid}: write {nxt} not based on {prev}"

    all_versions: list[int] = []
    for entity in ENTITIES:
        for url in urls:
            records = Client(url, "auditor").pull_all(entity, 0, limit=333)
            got = [r["version"] for r in records]
            assert got == sorted(got) and len(set(got)) == len(got)
            ids = [r["id"] for r in records]
            assert len(ids) == len(set(ids)), "a row pulled twice"
            assert set(ids) == {rid for (e, rid) in chains if e == entity}
            by_id = {r["id"]: r for r in records}
            for (e, rid), writes in chains.items():
                if e == entity:
                    last_version, _, last_row = writes[-1]
                    assert by_id[rid]["version"] == last_version
                    assert by_id[rid]["row"] == last_row
            # The pullers that ran during the storm ended where a fresh pull ends.
            assert {k: v["version"] for k, v in seen[entity].items()} == {
                k: v["version"] for k, v in by_id.items()
            }
        all_versions += got
    assert len(all_versions) == len(set(all_versions))


@pytest.mark.slow
def test_hundreds_of_devices_on_two_central_processes_sharing_postgresql(
    pg_url: str, tmp_path: Path
) -> None:
    import psycopg

    def count_rows(sql: str) -> int:
        with psycopg.connect(pg_url) as conn:
            row = conn.execute(sql).fetchone()
        assert row is not None
        return int(row[0])

    _storm(pg_url, tmp_path, DEVICES, count_rows)


@pytest.mark.slow
def test_many_devices_on_two_central_processes_sharing_one_sqlite_file(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "central.db"

    def count_rows(sql: str) -> int:
        with sqlite3.connect(path) as conn:
            return int(conn.execute(sql).fetchone()[0])

    _storm(f"sqlite:///{path}", tmp_path, SQLITE_DEVICES, count_rows)
