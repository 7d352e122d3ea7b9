"""Operator tokens on central: device paths by identity, every other route by role."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_min.central import parts
from edge_min.central.app import CentralApp
from edge_min.central.cli import main as central_main
from edge_min.central.operators import issue_operator_token, load_operator_key
from edge_min.central.store import CentralStore, open_central_store
from edge_min.clock import VirtualClock
from edge_min.routing import Request, Router

KEY = bytes(range(32))


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def store(tmp_path: Path, clock: VirtualClock) -> Iterator[CentralStore]:
    # central's clock is its store's: tokens expire on the test's clock
    store = open_central_store(f"sqlite:///{tmp_path / 'central.db'}", clock)
    yield store
    store.close()


@pytest.fixture
def router(store: CentralStore) -> Router:
    return CentralApp(store, operator_key=KEY).router()


def call(
    router: Router,
    method: str,
    path: str,
    *,
    token: str | None = None,
    node: str | None = None,
    body: object = None,
) -> tuple[int, dict[str, object]]:
    headers = {}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    if node is not None:
        headers["x-edge-node"] = node
    query = {}
    if "?" in path:
        path, _, q = path.partition("?")
        query = dict(pair.split("=") for pair in q.split("&"))
    raw = b"" if body is None else json.dumps(body).encode()
    response = router.dispatch(Request(method, path, query, headers, raw, client="127.0.0.1"))
    return response.status, response.body if isinstance(response.body, dict) else {}


def token(role: str, clock: VirtualClock, ttl: float = 3600) -> str:
    return issue_operator_token(KEY, role, now=clock.time(), ttl_seconds=ttl)


def error_code(answer: dict[str, object]) -> object:
    error = answer.get("error")
    return error.get("code") if isinstance(error, dict) else None


def test_without_a_token_operator_routes_are_401_naming_the_command(router: Router) -> None:
    for method, path in (("GET", "/api/devices"), ("GET", "/api/alerts"), ("GET", "/api/metrics")):
        status, answer = call(router, method, path)
        assert status == 401, (method, path, answer)
        assert error_code(answer) == "unauthorized"
        assert "edge-min central token" in json.dumps(answer)


def test_a_device_still_calls_its_own_routes_by_identity(
    router: Router, clock: VirtualClock
) -> None:
    status, answer = call(
        router, "POST", "/api/alerts", node="gw-1", body={"name": "disk", "severity": "critical"}
    )
    assert (status, answer) == (200, {"stored": 1})
    # ... but reading them back is an operator's business
    assert call(router, "GET", "/api/alerts", node="gw-1")[0] == 401
    status, answer = call(router, "GET", "/api/alerts", token=token("monitor", clock))
    assert status == 200 and [a["name"] for a in answer["alerts"]] == ["disk"]  # type: ignore[union-attr]


def test_roles_hold_the_local_apis_permissions(router: Router, clock: VirtualClock) -> None:
    monitor, admin = token("monitor", clock), token("admin", clock)
    assert call(router, "GET", "/api/devices", token=monitor)[0] == 200
    status, answer = call(router, "POST", "/api/devices/gw-9/provision", token=monitor, body={})
    assert status == 403 and error_code(answer) == "forbidden"
    assert "roles with it: admin" in json.dumps(answer)
    assert call(router, "POST", "/api/devices/gw-9/provision", token=admin, body={})[0] == 200


def test_a_wrong_altered_or_expired_token_is_401_with_its_reason(
    router: Router, clock: VirtualClock
) -> None:
    good = token("monitor", clock, ttl=60)
    foreign = issue_operator_token(bytes(32), "admin", now=clock.time())
    for bad, code in (("nonsense", "token_invalid"), (foreign, "token_invalid")):
        status, answer = call(router, "GET", "/api/devices", token=bad)
        assert (status, error_code(answer)) == (401, code)
    altered = good[:-2] + ("A" if good[-2] != "A" else "B") + good[-1]
    assert error_code(call(router, "GET", "/api/devices", token=altered)[1]) == "token_invalid"
    clock.advance(61)
    status, answer = call(router, "GET", "/api/devices", token=good)
    assert (status, error_code(answer)) == (401, "token_expired")
    assert "edge-min token issue" not in json.dumps(answer)  # the device's command: not here


def test_the_page_and_health_are_open_and_carry_no_data(router: Router) -> None:
    for path in ("/fleet", "/fleet/fleet.js", "/fleet/fleet.css", "/health"):
        assert call(router, "GET", path)[0] == 200, path
    assert call(router, "GET", "/fleet/secrets.txt")[0] == 404


def test_without_an_operator_key_every_route_stays_open(store: CentralStore) -> None:
    assert call(CentralApp(store).router(), "GET", "/api/devices")[0] == 200


def test_every_device_path_is_a_declared_route(store: CentralStore) -> None:
    app = CentralApp(store)
    declared = {(r.method, r.pattern) for r in app.router().routes}
    for kind in parts.CENTRAL_PARTS:
        assert kind.device_paths <= declared, kind.name


def test_central_token_prints_a_token_the_key_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import time

    key_file = tmp_path / "operator.key"
    assert central_main(["token", "--operator-key-file", str(key_file), "--role", "admin"]) == 0
    printed = capsys.readouterr().out.strip()
    assert key_file.stat().st_mode & 0o777 == 0o600
    from edge_min.security.tokens import verify

    claims = verify(
        printed, key=load_operator_key(key_file), now=time.time(), revoked=set().__contains__
    )
    assert claims.role == "admin"
    assert central_main(["token", "--operator-key-file", str(key_file), "--role", "root"]) == 2
    assert "role 'root' is not defined" in capsys.readouterr().err
