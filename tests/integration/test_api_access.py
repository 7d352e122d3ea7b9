"""Access control on a real ApiServer over a real runtime: every route, role and token case.

The runtime runs its loop on its own thread (as ``edge-min run`` does), so API threads read
through their own SQLite connections and hand writes to the loop; revocations are written
by a separate connection, as ``edge-min token revoke`` does from another process.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from edge_min.api.auth import AuthError, TokenAuthorizer, install_authorizer
from edge_min.api.routes import build_router
from edge_min.api.server import ApiServer
from edge_min.clock import SystemClock
from edge_min.config import parse_config
from edge_min.config.security import (
    AccessControlConfig,
    AuthenticationConfig,
    AuthorizationConfig,
    SecurityConfig,
)
from edge_min.platform.threads import ThreadWaiter, thread_executors
from edge_min.routing import Request, Router
from edge_min.runtime import Paths, Runtime
from edge_min.security.tokens import RevocationList, decode, issue, key_path, load_key
from edge_min.store import open_store

# The spec's grants, written out here so the test checks the config rather than echoing it.
GRANTS = {
    "admin": {"read", "write", "execute", "configure"},
    "operator": {"read", "execute"},
    "monitor": {"read"},
}
ROLES = tuple(GRANTS)
CASES = ("none", "expired", "tampered", "revoked", "valid")
BAD_TOKEN_CODES = {
    "none": "unauthorized",
    "expired": "token_expired",
    "tampered": "token_invalid",
    "revoked": "token_revoked",
}


def _route_table() -> list[tuple[str, str, str | None]]:
    """The real route table: every subsystem's routes on a runtime opened in a scratch dir."""
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        config = parse_config({"runtime": {"offline_mode": "never"}}, source="routes")
        rt = Runtime(config, Paths.resolve(config, Path(scratch))).open()
        try:
            return [(r.method, r.pattern, r.permission) for r in build_router(rt).routes]
        finally:
            rt.close()


ROUTES = _route_table()
WORKFLOW = "name: matrix-wf\nversion: '1'\nsteps: [{id: s, agent: noop}]\n"
POSTED = "name: posted-wf\nversion: '1'\nsteps: [{id: s, agent: echo}]\n"


def call(
    method: str, url: str, token: str | None = None, body: bytes | None = None
) -> tuple[int, Any, dict[str, str]]:
    """A real HTTP request; (status, JSON body, headers)."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            status, raw, got = resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as err:
        status, raw, got = err.code, err.read(), dict(err.headers)
    is_json = got.get("Content-Type", "").startswith("application/json")
    return status, (json.loads(raw) if is_json else raw.decode()) if raw else None, got


def retag(token: str, role: str) -> str:
    """The token with its payload's role changed and the original signature kept."""
    prefix, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["role"] = role
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{prefix}.{forged}.{signature}"


@dataclass
class LiveApi:
    """A runtime on its loop thread and an ApiServer with the token authorizer."""

    root: Path
    health_open: bool
    runtime: Any = None
    router: Router = field(default_factory=Router)
    server: Any = None
    key: bytes = b""
    url: str = ""

    def start(self) -> LiveApi:
        config = parse_config(
            {"runtime": {"offline_mode": "never"}, "api": {"health_open": self.health_open}},
            source="test",
        )
        paths = Paths.resolve(config, self.root)
        ready, self._stop, waiter = threading.Event(), threading.Event(), ThreadWaiter()

        def loop() -> None:
            # The runtime's connection belongs to this thread: open, tick and close it here.
            rt = Runtime(config, paths, executors=thread_executors(waiter.set)).open()
            rt.wake = waiter.set
            self.runtime = rt
            ready.set()
            try:
                while not self._stop.is_set():
                    waiter.wait(min(rt.tick(), 0.1))
                    waiter.clear()
            finally:
                rt.close()

        self._loop = threading.Thread(target=loop, name="test-runtime-loop", daemon=True)
        self._loop.start()
        assert ready.wait(15), "the runtime did not open"
        build_router(self.runtime, self.router)
        install_authorizer(self.router, self.runtime)
        self.key = load_key(key_path(paths.root))
        self.server = ApiServer(self.router, "127.0.0.1", 0)
        self.server.start()
        host, port = self.server.address
        self.url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        self.server.stop()
        self._stop.set()
        self._loop.join(10)

    def revoke(self, token: str) -> None:
        """Revoke through a connection of our own, as the CLI does from another process."""
        store = open_store(str(self.runtime.paths.db))
        try:
            claims = decode(token, key=self.key)
            RevocationList(store.meta).revoke(claims.jti, claims.exp)
        finally:
            store.close()


@dataclass
class Matrix:
    """The live API with health closed, a token per role and case, and real path values."""

    api: LiveApi
    tokens: dict[tuple[str, str], str | None]
    values: dict[str, str]


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Matrix]:
    api = LiveApi(tmp_path_factory.mktemp("access") / "data", health_open=False)
    api.router.add("GET", "/secret", lambda _: {"secret": True}, permission=None)
    api.start()
    try:
        now = time.time()
        tokens: dict[tuple[str, str], str | None] = {}
        for role in ROLES:
            tokens[role, "none"] = None
            tokens[role, "valid"] = issue(role, 3600, key=api.key, now=now)
            tokens[role, "expired"] = issue(role, 60, key=api.key, now=now - 3600)
            # Claim more than was granted (or, for admin, less): the signature must catch it.
            other = "monitor" if role == "admin" else "admin"
            tokens[role, "tampered"] = retag(issue(role, 3600, key=api.key, now=now), other)
            revoked = issue(role, 3600, key=api.key, now=now)
            api.revoke(revoked)
            tokens[role, "revoked"] = revoked
        admin = tokens["admin", "valid"]
        assert call("POST", api.url + "/workflows", admin, WORKFLOW.encode())[0] == 201
        status, body, _ = call("POST", api.url + "/workflows/matrix-wf/run", admin, b"{}")
        assert status == 202, body
        values = {"name": "matrix-wf", "id": body["execution_id"]}
        yield Matrix(api, tokens, values)
    finally:
        api.stop()


def fill(pattern: str, values: dict[str, str]) -> str:
    """The pattern with real values: the stored workflow and run; an unknown agent name."""
    if pattern.startswith("/agents/"):
        values = {**values, "name": "no-such-agent"}
    return re.sub(r"\{([a-z_]+)\}", lambda m: values[m.group(1)], pattern)


BODIES = {
    "/workflows": POSTED.encode(),
    "/workflows/{name}/run": b'{"n": 1}',
    "/agents": b"{}",
    "/agents/{name}/invoke": b'"hi"',
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("method", "pattern", "permission"), ROUTES)
def test_route_role_token_matrix(
    matrix: Matrix, method: str, pattern: str, permission: str, role: str, case: str
) -> None:
    url = matrix.api.url + fill(pattern, matrix.values)
    body = BODIES.get(pattern) if method == "POST" else None
    status, answer, _ = call(method, url, matrix.tokens[role, case], body)
    where = f"{method} {pattern} as {role} with {case} token: {status} {answer}"
    if case in BAD_TOKEN_CODES:
        assert status == 401, where
        assert answer["error"]["code"] == BAD_TOKEN_CODES[case], where
    elif permission not in GRANTS[role]:
        assert status == 403, where
        assert answer["error"]["code"] == "forbidden", where
        assert repr(permission) in answer["error"]["message"], where
    else:
        # Allowed: the handler answered (200/201/202, or 400/404 about the request itself).
        assert status not in (401, 403) and status < 500, where
        if status >= 400:
            assert answer["error"]["code"] not in ("forbidden", "unauthorized"), where
    if pattern == "/security/lockdown" and status == 200:
        # The device is locked now: lift it, so the routes after this one see a working
        # device (and the tests after the matrix read sealed rows with the keys read again).
        admin = matrix.tokens["admin", "valid"]
        lifted = call("POST", matrix.api.url + "/security/unlock", admin, b"{}")
        assert lifted[0] == 200 and lifted[1]["state"] == "ok", lifted


def test_matrix_covers_every_route_of_the_live_router(matrix: Matrix) -> None:
    live = [(r.method, r.pattern, r.permission) for r in matrix.api.router.routes]
    assert live == [("GET", "/secret", None), *ROUTES]  # /secret was added first
    assert len(ROUTES) >= 13
    assert all(permission is not None for _, _, permission in ROUTES)


def test_allowed_writes_really_happened(matrix: Matrix) -> None:
    status, body, _ = call(
        "GET", matrix.api.url + "/workflows/posted-wf", matrix.tokens["monitor", "valid"]
    )
    assert status == 200 and body["name"] == "posted-wf"
    status, runs, _ = call("GET", matrix.api.url + "/executions", matrix.tokens["monitor", "valid"])
    assert status == 200 and len(runs) >= 1 + 2  # the fixture's run, admin's and operator's


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("role", ROLES)
def test_route_without_permission_is_forbidden_for_everyone(
    matrix: Matrix, role: str, case: str
) -> None:
    status, answer, _ = call("GET", matrix.api.url + "/secret", matrix.tokens[role, case])
    assert status == 403 and answer["error"]["code"] == "forbidden"


def test_health_is_closed_when_health_open_is_false(matrix: Matrix) -> None:
    status, answer, _ = call("GET", matrix.api.url + "/health")
    assert status == 401 and answer["error"]["code"] == "unauthorized"
    status, answer, _ = call("GET", matrix.api.url + "/health", matrix.tokens["monitor", "valid"])
    assert status == 200 and answer["status"] == "ok"


def test_health_is_open_when_health_open_is_true(tmp_path: Path) -> None:
    api = LiveApi(tmp_path / "data", health_open=True).start()
    try:
        assert call("GET", api.url + "/health")[0] == 200
        expired = issue("monitor", 60, key=api.key, now=time.time() - 3600)
        assert call("GET", api.url + "/health", expired)[0] == 200  # open means unchecked
        status, answer, _ = call("GET", api.url + "/status")
        assert status == 401 and answer["error"]["code"] == "unauthorized"
        assert call("POST", api.url + "/health")[0] == 405
    finally:
        api.stop()


def test_revocation_takes_effect_on_a_running_server(matrix: Matrix) -> None:
    url = matrix.api.url + "/workflows"
    token = issue("operator", 3600, key=matrix.api.key, now=time.time())
    assert call("GET", url, token)[0] == 200
    matrix.api.revoke(token)
    status, answer, _ = call("GET", url, token)
    assert status == 401 and answer["error"]["code"] == "token_revoked"


def test_malformed_authorization_headers_are_401(matrix: Matrix) -> None:
    url = matrix.api.url + "/workflows"
    for header in ("Basic YWRtaW46YWRtaW4=", "Bearer", "Bearer    ", "em1.a.b"):
        req = urllib.request.Request(url, headers={"Authorization": header})
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, timeout=10)
        assert info.value.code == 401, header
        assert json.loads(info.value.read())["error"]["code"] in ("unauthorized", "token_invalid")


def test_401_carries_www_authenticate_bearer(matrix: Matrix) -> None:
    _, _, headers = call("GET", matrix.api.url + "/workflows")
    assert headers.get("WWW-Authenticate") == 'Bearer realm="edge-min"'
    _, _, headers = call("GET", matrix.api.url + "/workflows", matrix.tokens["admin", "expired"])
    assert 'error="invalid_token"' in headers.get("WWW-Authenticate", "")


# -- the authorizer on its own: challenge headers, certificates, default_policy ----------


def authorizer(
    method: str = "any", policy: str = "deny", cert_roles: dict[str, str] | None = None
) -> tuple[TokenAuthorizer, bytes]:
    key = bytes(range(32))
    security = SecurityConfig(
        access_control=AccessControlConfig(
            authentication=AuthenticationConfig(method=method),
            authorization=AuthorizationConfig(default_policy=policy),
        )
    )
    auth = TokenAuthorizer(
        security, key, SystemClock(), lambda _: False, False, cert_roles=cert_roles
    )
    return auth, key


def probe_router(auth: TokenAuthorizer) -> Router:
    router = Router(auth)
    for permission in ("read", "write", "execute", "configure"):
        router.add("GET", f"/{permission}", lambda _: {"ok": True}, permission=permission)
    return router


def test_authorizer_errors_carry_the_bearer_challenge() -> None:
    auth, key = authorizer()
    with pytest.raises(AuthError) as info:
        auth.authorize(Request("GET", "/x"), "read")
    assert (info.value.status, info.value.code) == (401, "unauthorized")
    assert info.value.headers == {"WWW-Authenticate": 'Bearer realm="edge-min"'}
    expired = issue("admin", 60, key=key, now=time.time() - 3600)
    with pytest.raises(AuthError) as info:
        auth.authorize(Request("GET", "/x", headers={"Authorization": f"bearer {expired}"}), "read")
    assert info.value.code == "token_expired"
    assert info.value.headers["WWW-Authenticate"] == (
        'Bearer realm="edge-min", error="invalid_token", error_description="token_expired"'
    )
    monitor = issue("monitor", 60, key=key, now=time.time())
    with pytest.raises(AuthError) as info:
        auth.authorize(
            Request("GET", "/x", headers={"authorization": f"Bearer {monitor}"}), "write"
        )
    assert (info.value.status, info.value.headers) == (403, {})


def test_client_certificate_maps_to_a_role() -> None:
    auth, _ = authorizer(cert_roles={"device-1": "operator", "ops-console": "admin"})
    router = probe_router(auth)

    def status(path: str, principal: str | None) -> int:
        return router.dispatch(Request("GET", path, principal=principal)).status

    assert status("/read", "cert:device-1") == 200
    assert status("/execute", "cert:device-1") == 200
    assert status("/write", "cert:device-1") == 403
    assert status("/configure", "cert:ops-console") == 200
    unmapped = router.dispatch(Request("GET", "/read", principal="cert:stranger"))
    assert unmapped.status == 403 and "certificate_roles" in unmapped.body["error"]["message"]
    assert status("/read", None) == 401


def test_certificates_are_ignored_when_the_method_is_token() -> None:
    router = probe_router(authorizer(method="token", cert_roles={"device-1": "admin"})[0])
    assert router.dispatch(Request("GET", "/read", principal="cert:device-1")).status == 401


def test_method_certificate_refuses_bearer_tokens_by_name() -> None:
    auth, key = authorizer(method="certificate", cert_roles={"device-1": "admin"})
    router = probe_router(auth)
    token = {"Authorization": "Bearer " + issue("admin", 60, key=key, now=time.time())}
    refused = router.dispatch(Request("GET", "/read", headers=token))
    assert refused.status == 401
    assert refused.body["error"]["code"] == "token_not_accepted"
    assert "method is certificate" in refused.body["error"]["message"]
    # a token next to a good certificate is still a token the method refuses
    both = router.dispatch(Request("GET", "/read", headers=token, principal="cert:device-1"))
    assert both.status == 401
    assert router.dispatch(Request("GET", "/configure", principal="cert:device-1")).status == 200
    anonymous = router.dispatch(Request("GET", "/read"))
    assert anonymous.status == 401 and "client certificate" in anonymous.body["error"]["message"]


def test_method_any_takes_a_token_or_a_certificate() -> None:
    auth, key = authorizer(method="any", cert_roles={"device-1": "monitor"})
    router = probe_router(auth)
    token = {"Authorization": "Bearer " + issue("admin", 60, key=key, now=time.time())}
    assert router.dispatch(Request("GET", "/configure", headers=token)).status == 200
    assert router.dispatch(Request("GET", "/read", principal="cert:device-1")).status == 200
    assert router.dispatch(Request("GET", "/write", principal="cert:device-1")).status == 403


def test_certificate_roles_must_exist() -> None:
    from edge_min.errors import ConfigError

    with pytest.raises(ConfigError, match=r"certificate_roles\.device-1.*'root'"):
        authorizer(cert_roles={"device-1": "root"})


def test_default_policy_allow_lets_any_authenticated_role_through() -> None:
    auth, key = authorizer(policy="allow")
    router = probe_router(auth)
    monitor = {"Authorization": "Bearer " + issue("monitor", 60, key=key, now=time.time())}
    for permission in ("read", "write", "execute", "configure"):
        assert router.dispatch(Request("GET", f"/{permission}", headers=monitor)).status == 200
    assert router.dispatch(Request("GET", "/write")).status == 401  # still not anonymous


def test_a_role_dropped_from_the_config_is_forbidden() -> None:
    auth, key = authorizer()
    token = issue("auditor", 60, key=key, now=time.time(), roles=["auditor"])
    answer = probe_router(auth).dispatch(
        Request("GET", "/read", headers={"Authorization": f"Bearer {token}"})
    )
    assert answer.status == 403 and "'auditor'" in answer.body["error"]["message"]


# -- `edge-min token issue|revoke` ----------------------------------------------------------


def token_cli(data_dir: Path, *argv: str) -> int:
    """`edge-min token ...` through the real parser, raising what the command raises."""
    from edge_min.cli import build_parser
    from edge_min.cli.context import CliContext

    args = build_parser().parse_args(["--data-dir", str(data_dir), "token", *argv])
    return int(args.command_fn(CliContext(args)))


def test_token_issue_prints_only_the_token_and_revoke_revokes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge_min.security.tokens import TokenRevoked, UnknownRole, verify

    data = tmp_path / "data"
    assert token_cli(data, "issue", "--role", "operator", "--ttl", "1h") == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("em1.")
    token = out.strip()
    key = load_key(key_path(data), create=False)
    now = time.time()
    claims = verify(token, key=key, now=now, revoked=lambda _: False)
    assert claims.role == "operator" and 3599 <= claims.exp - now <= 3601

    assert token_cli(data, "issue", "--role", "monitor", "--subject", "grafana") == 0
    default = verify(capsys.readouterr().out.strip(), key=key, now=now, revoked=lambda _: False)
    assert default.sub == "grafana" and 86399 <= default.exp - now <= 86401  # token_expiry

    with pytest.raises(UnknownRole, match="'root'"):
        token_cli(data, "issue", "--role", "root")
    assert capsys.readouterr().out == ""

    assert token_cli(data, "revoke", token) == 0
    assert capsys.readouterr().out.startswith(f"revoked {claims.jti}; it would have expired at")
    assert token_cli(data, "revoke", default.jti) == 0
    store = open_store(str(Paths.resolve(parse_config({}, source="t"), data).db))
    try:
        with pytest.raises(TokenRevoked):
            verify(token, key=key, now=now, revoked=RevocationList(store.meta))
        assert RevocationList(store.meta).is_revoked(default.jti)
    finally:
        store.close()
