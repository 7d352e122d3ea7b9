"""The rollout routes over real HTTP on both backends (SQLite and PostgreSQL).

Bundles go up and come down in ranges (a resumed download), a rollout runs through its
phases with devices reporting from many threads at once (the phase that completes must be
seen by exactly the transaction that completes it), a bad one halts, and two central
processes on one database serve the same rollout.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge_min.central.server import CentralServer
from tests.conftest import free_port
from tests.integration.central.conftest import (
    Client,
    HttpError,
    start_process,
    wait_health,
)

BUNDLE = os.urandom(300_000)


def get(
    url: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    client = Client(url, None)
    conn = http.client.HTTPConnection(client.host, client.port, timeout=30)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def upload(url: str, data: bytes, version: str) -> dict[str, Any]:
    status, _, raw = Client(url, None).request(
        "POST", f"/api/bundles?version={version}", data, "application/octet-stream"
    )
    assert status == 201, raw
    return dict(json.loads(raw))


def test_a_bundle_larger_than_a_sync_frame_uploads_and_other_bodies_keep_their_limit(
    start_central: Callable[..., CentralServer],
) -> None:
    """A full gateway binary's bundle is ~19 MB, a firmware slot's ~22 MB: over the 16 MiB
    a sync frame (and any other request) may be."""
    from edge_min.sync.protocol import DEFAULT_MAX_BYTES

    server = start_central()
    big = os.urandom(DEFAULT_MAX_BYTES + 5_000_000)
    info = upload(server.url, big, "9.0")
    assert info["length"] == len(big)
    status, _, raw = Client(server.url, None).request(
        "POST", "/api/rollouts", b"x" * (DEFAULT_MAX_BYTES + 1), "application/json"
    )
    assert status == 413 and b"api.max_request_bytes" in raw, raw


def test_bundles_download_in_ranges_and_resume(start_central: Callable[..., CentralServer]) -> None:
    server = start_central()
    info = upload(server.url, BUNDLE, "2.0")
    assert info["sha256"] == hashlib.sha256(BUNDLE).hexdigest() and info["length"] == len(BUNDLE)
    # A download cut after 100 000 bytes, resumed in 64 KiB ranges.
    got = bytearray(BUNDLE[:100_000])
    while len(got) < len(BUNDLE):
        status, headers, body = get(
            server.url, info["url"], {"Range": f"bytes={len(got)}-{len(got) + 65_535}"}
        )
        assert status == 206, body
        assert headers["content-range"].startswith(f"bytes {len(got)}-")
        assert headers["content-type"] == "application/octet-stream"
        got += body
    assert bytes(got) == BUNDLE
    status, headers, _ = get(server.url, info["url"], {"Range": f"bytes={len(BUNDLE)}-"})
    assert status == 416 and headers["content-range"] == f"bytes */{len(BUNDLE)}"
    status, _, body = get(server.url, info["url"])
    assert status == 200 and body == BUNDLE


def test_a_rollout_through_its_phases_with_devices_reporting_at_once(
    start_central: Callable[..., CentralServer],
) -> None:
    server = start_central()
    op = Client(server.url, None)
    ids = [f"dev-{i:02d}" for i in range(30)]
    for d in ids:
        op.json("POST", f"/api/devices/{d}/provision", {})
    bundle = upload(server.url, BUNDLE, "2.0")
    with pytest.raises(HttpError) as bad:
        op.json(
            "POST",
            "/api/rollouts",
            {"version": "2.0", "bundle": bundle["id"], "devices": "all", "phases": [50, 40]},
        )
    assert bad.value.status == 400 and bad.value.code == "bad_rollout"
    assert "phases" in bad.value.body["error"]["message"]
    doc = op.json(
        "POST",
        "/api/rollouts",
        {"version": "2.0", "bundle": bundle["id"], "devices": "all", "phases": [30, 100]},
    )
    rid = doc["id"]

    def device(node: str, state: str) -> None:
        dev = Client(server.url, node)
        got = dev.json("GET", "/api/updates/assigned")
        assert got["rollout"] == rid and got["length"] == len(BUNDLE)
        for s in ("downloading", "downloaded", "installing", "installed", state):
            dev.json("POST", "/api/updates/state", {"rollout": rid, "state": s, "version": "2.0"})

    for phase in (1, 2):
        members = [d["id"] for d in doc["device_states"] if d["phase"] == phase]
        threads = [threading.Thread(target=device, args=(d, "committed")) for d in members]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        doc = op.json("GET", f"/api/rollouts/{rid}")
        assert doc["progress"][phase - 1]["committed"] == len(members)
    assert doc["status"] == "completed", doc["progress"]
    # Nobody is assigned anything more: an empty 204.
    status, _, body = Client(server.url, ids[0]).request("GET", "/api/updates/assigned")
    assert (status, body) == (204, b"")


def test_a_bad_rollout_halts_in_its_first_phase(
    start_central: Callable[..., CentralServer],
) -> None:
    server = start_central()
    op = Client(server.url, None)
    for i in range(20):
        op.json("POST", f"/api/devices/dev-{i:02d}/provision", {"details": {"tags": ["field"]}})
    bundle = upload(server.url, b"bad" + BUNDLE, "2.1-bad")
    doc = op.json(
        "POST",
        "/api/rollouts",
        {
            "version": "2.1-bad",
            "bundle": bundle["id"],
            "devices": {"tag": "field"},
            "phases": [10, 50, 100],
            "max_failure_percent": 20,
            "min_devices": 2,
        },
    )
    first = [d["id"] for d in doc["device_states"] if d["phase"] == 1]
    assert len(first) == 2
    for node in first:
        dev = Client(server.url, node)
        dev.json("GET", "/api/updates/assigned")
        dev.json(
            "POST",
            "/api/updates/state",
            {"rollout": doc["id"], "state": "rolled_back", "reason": "health", "version": "1.0"},
        )
    doc = op.json("GET", f"/api/rollouts/{doc['id']}")
    assert doc["status"] == "halted" and doc["phase"] == 1
    assert [d["running_version"] for d in doc["device_states"] if d["phase"] == 1] == ["1.0"] * 2
    assert all(d["state"] == "pending" for d in doc["device_states"] if d["phase"] > 1)
    with pytest.raises(HttpError) as conflict:
        op.json("POST", f"/api/rollouts/{doc['id']}/resume")
    assert conflict.value.status == 409


def test_two_central_processes_share_bundles_and_rollouts(db_url: str, tmp_path: Path) -> None:
    ports = [free_port(), free_port()]
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [start_process(db_url, p, log) for p, log in zip(ports, logs, strict=True)]
    try:
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        for url, proc, log in zip(urls, procs, logs, strict=True):
            wait_health(url, proc, log)
        op = Client(urls[0], None)
        for i in range(4):
            op.json("POST", f"/api/devices/dev-{i}/provision", {})
        bundle = upload(urls[0], BUNDLE, "2.0")
        doc = op.json(
            "POST", "/api/rollouts", {"version": "2.0", "bundle": bundle["id"], "devices": "all"}
        )
        # The other process answers the assignment and serves the bytes.
        got = Client(urls[1], "dev-0").json("GET", "/api/updates/assigned")
        assert got["rollout"] == doc["id"]
        status, _, body = get(urls[1], got["bundle_url"], {"Range": "bytes=0-9"})
        assert (status, body) == (206, BUNDLE[:10])
        for i in range(4):
            dev = Client(urls[i % 2], f"dev-{i}")
            dev.json("GET", "/api/updates/assigned")
            dev.json("POST", "/api/updates/state", {"rollout": doc["id"], "state": "committed"})
        assert Client(urls[1], None).json("GET", f"/api/rollouts/{doc['id']}")["status"] == (
            "completed"
        )
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
