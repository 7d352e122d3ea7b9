"""Pages of other origins and a real central: preflights, allowed origins, refusals.

The browser target's page (another origin than central's) syncs with central from the
browser; central answers it only for the origins ``--allowed-origin`` names, and refuses
every other page before any route runs, so a page in an operator's browser cannot make a
loopback central act. Everything here goes over real HTTP to a real ``CentralServer``.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_min.api.cors import CorsPolicy, parse_origin
from edge_min.central.server import CentralServer
from edge_min.central.store import open_central_store
from edge_min.errors import UsageError

PAGE = "http://localhost:8080"
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def central(tmp_path: Path) -> Iterator[CentralServer]:
    store = open_central_store(str(tmp_path / "central.db"))
    server = CentralServer(store, "127.0.0.1", 0, allowed_origins=[PAGE + "/"]).start()
    yield server
    server.stop()


def ask(
    server: CentralServer, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> tuple[int, dict[str, str], Any]:
    host, port = server.address
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request(method, path, body=body or None, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, raw
    finally:
        conn.close()


def test_an_allowed_page_gets_its_preflight_and_reads_the_answers(central: CentralServer) -> None:
    status, headers, _ = ask(central, "OPTIONS", "/api/updates/assigned", {
        "Origin": PAGE,
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "X-Edge-Node, Content-Type",
    })  # fmt: skip
    assert status == 204
    assert headers["access-control-allow-origin"] == PAGE
    assert "GET" in headers["access-control-allow-methods"]
    assert "x-edge-node" in headers["access-control-allow-headers"]
    assert int(headers["access-control-max-age"]) > 0
    assert "Origin" in headers["vary"]

    status, headers, _ = ask(
        central, "GET", "/api/updates/assigned", {"Origin": PAGE, "X-Edge-Node": "web-1"}
    )
    assert status == 204  # the route answered (no assignment), and the page may read it
    assert headers["access-control-allow-origin"] == PAGE
    assert "Content-Range" in headers["access-control-expose-headers"]
    # Errors carry the headers too, so the page can read the reason.
    status, headers, raw = ask(central, "GET", "/api/nothing-here", {"Origin": PAGE})
    assert status == 404 and headers["access-control-allow-origin"] == PAGE
    assert json.loads(raw)["error"]["code"] == "not_found"


def test_another_page_is_refused_before_any_route_runs(central: CentralServer) -> None:
    evil = "http://evil.example"
    # A POST that needs no preflight (a form's content type) still never reaches the route.
    status, headers, raw = ask(
        central, "POST", "/api/rollouts", {"Origin": evil, "Content-Type": "text/plain"},
        json.dumps({"version": "9", "bundle": "x", "devices": "all", "phases": [100]}).encode(),
    )  # fmt: skip
    assert status == 403
    error = json.loads(raw)["error"]
    assert error["code"] == "origin_not_allowed"
    assert evil in error["message"] and "--allowed-origin" in error["message"]
    assert "access-control-allow-origin" not in headers
    status, _, raw = ask(central, "GET", "/api/rollouts", {})
    assert status == 200 and json.loads(raw)["rollouts"] == [], raw  # nothing was made
    status, _, raw = ask(central, "OPTIONS", "/api/rollouts", {
        "Origin": evil, "Access-Control-Request-Method": "POST",
    })  # fmt: skip
    assert status == 403 and json.loads(raw)["error"]["code"] == "origin_not_allowed"
    # The same rollout request without a page (an operator's script) is the route's to judge.
    status, _, raw = ask(central, "POST", "/api/rollouts", {"Content-Type": "application/json"},
                         b"{}")  # fmt: skip
    assert status == 400 and json.loads(raw)["error"]["code"] != "origin_not_allowed"


def test_a_preflight_for_a_header_or_method_central_does_not_take_is_refused(
    central: CentralServer,
) -> None:
    status, _, raw = ask(central, "OPTIONS", "/api/updates/assigned", {
        "Origin": PAGE, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "X-Secret-Thing",
    })  # fmt: skip
    assert status == 403
    error = json.loads(raw)["error"]
    assert error["code"] == "header_not_allowed" and "x-secret-thing" in error["message"]
    status, _, raw = ask(central, "OPTIONS", "/api/updates/assigned", {
        "Origin": PAGE, "Access-Control-Request-Method": "DELETE",
    })  # fmt: skip
    assert status == 405 and json.loads(raw)["error"]["code"] == "method_not_allowed"


def test_central_s_own_pages_are_same_origin(central: CentralServer) -> None:
    host, port = central.address
    own = f"http://{host}:{port}"
    status, headers, _ = ask(central, "GET", "/api/devices", {"Origin": own})
    assert status == 200  # the fleet page's own fetch calls
    assert "access-control-allow-origin" not in headers  # same origin: none needed


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://App.Example.com", "https://app.example.com"),
        ("https://app.example.com:443/", "https://app.example.com"),
        ("http://localhost:8080", "http://localhost:8080"),
        ("http://[::1]:8000", "http://[::1]:8000"),
    ],
)
def test_origins_are_normalized(value: str, expected: str) -> None:
    assert parse_origin(value) == expected
    assert CorsPolicy.of([value, expected]).origins == (expected,)


@pytest.mark.parametrize(
    ("value", "names"),
    [
        ("*", "any page"),
        ("app.example.com", "not an http(s) origin"),
        ("ftp://app.example.com", "not an http(s) origin"),
        ("https://app.example.com/sync", "no path"),
        ("https://user@app.example.com", "no path, query or user"),
        ("https://app.example.com:99999", "bad port"),
    ],
)
def test_a_bad_origin_is_named_with_the_fix(value: str, names: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_origin(value)
    assert names in err.value.message and "--allowed-origin" in err.value.message


def test_central_serve_refuses_a_bad_allowed_origin(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "edge_min.cli", "--data-dir", str(tmp_path), "central", "serve",
         "--port", "0", "--allowed-origin", "https://app.example.com/path"],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert done.returncode != 0
    assert "--allowed-origin = 'https://app.example.com/path'" in done.stderr
    assert "Traceback" not in done.stderr
