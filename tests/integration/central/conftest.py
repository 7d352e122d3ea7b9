"""Fixtures for the central server: stores on real SQLite and real PostgreSQL, a sync client.

PostgreSQL tests need ``EDGE_MIN_TEST_PG``, a DSN that ``scripts/postgres.sh`` prints.
They fail, not skip, without it. Each test gets a fresh database, dropped afterwards.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from edge_min.central.server import CentralServer
from edge_min.central.store import open_central_store
from edge_min.sync.protocol import CONTENT_TYPE, decode_frame, encode_frame

PG_ENV = "EDGE_MIN_TEST_PG"
ROOT = Path(__file__).resolve().parents[3]


def pg_dsn() -> str:
    """The test cluster's DSN, or a failure that says how to start one."""
    dsn = os.environ.get(PG_ENV)
    if not dsn:
        pytest.fail(
            f"{PG_ENV} is not set; start the test PostgreSQL with "
            f'`export {PG_ENV}="$(scripts/postgres.sh)"` and run again'
        )
    return dsn


def with_database(dsn: str, name: str) -> str:
    """``dsn`` pointing at database ``name``."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test."""
    import psycopg

    dsn = pg_dsn()
    name = "central_" + uuid.uuid4().hex[:12]
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield with_database(dsn, name)
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each contract test runs on both backends."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'central.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def start_central(db_url: str) -> Iterator[Callable[..., CentralServer]]:
    """Start an in-process central server (real sockets on 127.0.0.1) on ``db_url``."""
    servers: list[CentralServer] = []

    def start(**options: Any) -> CentralServer:
        server = CentralServer(open_central_store(db_url), "127.0.0.1", 0, **options).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


class HttpError(Exception):
    """A non-2xx answer."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body

    @property
    def code(self) -> str:
        return str(self.body["error"]["code"])


class Client:
    """A minimal device-side client of the central API (one connection per request)."""

    def __init__(self, url: str, node: str | None, key: bytes | None = None) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.node = node
        self.key = key

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        ctype: str = CONTENT_TYPE,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, str, bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            sent = {"Content-Type": ctype, **(headers or {})}
            if self.node is not None:
                sent["X-Edge-Node"] = self.node
            conn.request(method, path, body=body, headers=sent)
            resp = conn.getresponse()
            return resp.status, resp.getheader("Content-Type") or "", resp.read()
        finally:
            conn.close()

    def json(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        status, _, raw = self.request(method, path, data, "application/json")
        parsed = json.loads(raw)
        if status >= 300:
            raise HttpError(status, parsed)
        return parsed

    def send_frame(self, path: str, frame: bytes | None, method: str = "POST") -> Any:
        status, ctype, raw = self.request(method, path, frame)
        assert ctype == CONTENT_TYPE, (status, ctype, raw[:200])
        if status >= 300:
            # Sync errors come as error frames; shaped here like the JSON errors.
            header, [err] = decode_frame(raw)
            assert header["kind"] == "error"
            raise HttpError(status, {"error": err})
        return decode_frame(raw, key=self.key)

    def push(
        self,
        entity: str,
        items: list[dict[str, Any]],
        batch: str | None = None,
        compression: str = "zlib",
    ) -> list[dict[str, Any]]:
        frame = encode_frame(
            {
                "kind": "push",
                "entity": entity,
                "batch": batch or uuid.uuid4().hex,
                "node": self.node or "",
            },
            items,
            key=self.key,
            compression=compression,
        )
        header, results = self.send_frame("/api/sync/push", frame)
        assert header["kind"] == "push_result"
        return results

    def pull(self, entity: str, after: int = 0, limit: int = 500) -> list[dict[str, Any]]:
        header, records = self.send_frame(
            f"/api/sync/pull?entity={entity}&after={after}&limit={limit}", None, "GET"
        )
        assert header["kind"] == "pull_result"
        return records

    def pull_all(self, entity: str, after: int = 0, limit: int = 500) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:
            page = self.pull(entity, after, limit)
            if not page:
                return out
            out += page
            after = page[-1]["version"]


def item(
    item_id: str,
    base: int | None = None,
    *,
    row: dict[str, Any] | None = None,
    hlc: str = "0001767225600000.00000.dev",
    deleted: bool = False,
) -> dict[str, Any]:
    """A push item."""
    row = row if row is not None else {"id": item_id, "name": f"name-{item_id}"}
    return {
        "id": item_id,
        "base_version": base,
        "hlc": hlc,
        "row": row,
        "field_hlcs": {k: hlc for k in row},
        "deleted": deleted,
    }


def start_process(db: str, port: int, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    """``python -m edge_min.central serve`` in a subprocess."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_min.central",
            "serve",
            "--db",
            db,
            "--port",
            str(port),
            *extra,
        ],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def wait_health(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until a central process answers /health."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if Client(url, None).json("GET", "/health")["status"] == "ok":
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"central did not start: {log.read_text()}")
