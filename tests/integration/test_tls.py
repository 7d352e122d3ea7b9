"""Transport security over real sockets on 127.0.0.1: an ssl-wrapped http.server and
http.client/urllib clients, with certificates from init_certs."""

from __future__ import annotations

import http.client
import json
import queue
import re
import socket
import ssl
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from edge_min.config.security import CommunicationSecurity
from edge_min.security.certs import init_certs, issue_device_cert
from edge_min.security.tls import (
    client_context,
    context_from_config,
    peer_identity,
    peer_subject,
    server_context,
)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        conn: Any = self.connection
        body = json.dumps(
            {"peer": peer_identity(conn), "subject": peer_subject(conn), "tls": conn.version()}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.server.handled.put(self.path)  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:
        pass


class TLSServer(ThreadingHTTPServer):
    """http.server with the TLS handshake done in each connection's thread."""

    daemon_threads = True

    def __init__(self, ctx: ssl.SSLContext) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.ctx = ctx
        self.failures: queue.Queue[BaseException] = queue.Queue()
        self.handled: queue.Queue[str] = queue.Queue()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def finish_request(self, request: Any, client_address: Any) -> None:
        try:
            tls = self.ctx.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            self.failures.put(exc)
            return
        try:
            super().finish_request(tls, client_address)
        finally:
            tls.close()

    def failure(self) -> str:
        """The server's handshake error for a refused client (waits for it)."""
        return str(self.failures.get(timeout=5))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return init_certs(
        tmp_path_factory.mktemp("pki"), device_id="gw-42", central_host="central.example"
    )


@pytest.fixture(scope="module")
def rogue(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Another CA's certificates, with the same device id."""
    return init_certs(tmp_path_factory.mktemp("rogue"), device_id="gw-42")


def _serve(ctx: ssl.SSLContext) -> Iterator[TLSServer]:
    server = TLSServer(ctx)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture()
def central(pki: dict[str, Path]) -> Iterator[TLSServer]:
    yield from _serve(server_context(pki["central_cert"], pki["central_key"], pki["ca_cert"]))


def _device(pki: dict[str, Path]) -> ssl.SSLContext:
    return client_context(pki["device_cert"], pki["device_key"], pki["ca_cert"])


def _get(url: str, ctx: ssl.SSLContext) -> dict[str, Any]:
    with urllib.request.urlopen(url, context=ctx, timeout=5) as resp:
        data: dict[str, Any] = json.loads(resp.read())
        return data


def _refused(url: str, ctx: ssl.SSLContext) -> str:
    """Make the request, which must fail; the client's error text."""
    with pytest.raises(OSError) as info:  # URLError, SSLError and resets are all OSErrors
        _get(url, ctx)
    exc: BaseException = info.value
    return str(getattr(exc, "reason", exc))


def test_mutual_tls13_and_the_server_sees_the_device_cn(
    central: TLSServer, pki: dict[str, Path]
) -> None:
    conn = http.client.HTTPSConnection("127.0.0.1", central.port, context=_device(pki), timeout=5)
    try:
        conn.request("GET", "/api/sync/pull")
        ssock = conn.sock  # the response (HTTP/1.0) takes the socket over and closes it
        assert isinstance(ssock, ssl.SSLSocket)
        assert ssock.version() == "TLSv1.3"
        # the client, too, knows who it talks to
        assert peer_identity(ssock) == "edge-min central"
        resp = conn.getresponse()
        data = json.loads(resp.read())
    finally:
        conn.close()
    assert resp.status == 200
    assert data["tls"] == "TLSv1.3"
    assert data["peer"] == "gw-42"
    assert data["subject"]["organizationalUnitName"] == "device"
    assert central.handled.get(timeout=5) == "/api/sync/pull"


def test_urllib_by_ip_and_by_localhost(central: TLSServer, pki: dict[str, Path]) -> None:
    for host in ("127.0.0.1", "localhost"):
        assert _get(f"https://{host}:{central.port}/x", _device(pki))["peer"] == "gw-42"


def test_client_without_a_certificate_is_refused(central: TLSServer, pki: dict[str, Path]) -> None:
    anonymous = client_context(None, None, pki["ca_cert"])
    error = _refused(f"https://127.0.0.1:{central.port}/x", anonymous)
    # TLS 1.3 sends the client certificate after the client's handshake is done, so the
    # client sees the server's alert or, racing it, the closed connection
    assert re.search(r"CERTIFICATE_REQUIRED|EOF|reset|Broken pipe", error, re.I), error
    assert "PEER_DID_NOT_RETURN_A_CERTIFICATE" in central.failure()
    assert central.handled.empty()


def test_client_certificate_from_another_ca_is_refused(
    central: TLSServer, pki: dict[str, Path], rogue: dict[str, Path]
) -> None:
    # same CN, trusts the right CA, but its certificate was signed by another CA
    impostor = client_context(rogue["device_cert"], rogue["device_key"], pki["ca_cert"])
    _refused(f"https://127.0.0.1:{central.port}/x", impostor)
    assert "CERTIFICATE_VERIFY_FAILED" in central.failure()
    assert central.handled.empty()


def test_central_certificate_cannot_pose_as_a_device(
    central: TLSServer, pki: dict[str, Path]
) -> None:
    # signed by the right CA, but only for serverAuth
    wrong_use = client_context(pki["central_cert"], pki["central_key"], pki["ca_cert"])
    _refused(f"https://127.0.0.1:{central.port}/x", wrong_use)
    assert "CERTIFICATE_VERIFY_FAILED" in central.failure()
    assert central.handled.empty()


def test_device_refuses_a_server_from_another_ca(
    pki: dict[str, Path], rogue: dict[str, Path]
) -> None:
    ctx = server_context(rogue["central_cert"], rogue["central_key"], rogue["ca_cert"])
    for server in _serve(ctx):
        error = _refused(f"https://127.0.0.1:{server.port}/x", _device(pki))
        assert "CERTIFICATE_VERIFY_FAILED" in error
        assert server.handled.empty()


def test_tls12_only_client_is_refused_when_13_is_the_minimum(
    central: TLSServer, pki: dict[str, Path]
) -> None:
    old = client_context(pki["device_cert"], pki["device_key"], pki["ca_cert"], protocol="TLS 1.2")
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    error = _refused(f"https://127.0.0.1:{central.port}/x", old)
    assert "PROTOCOL_VERSION" in error.upper(), error
    assert "UNSUPPORTED_PROTOCOL" in central.failure()


def test_tls12_works_only_when_configured(pki: dict[str, Path]) -> None:
    ctx = server_context(
        pki["central_cert"], pki["central_key"], pki["ca_cert"], protocol="TLS 1.2"
    )
    old = client_context(pki["device_cert"], pki["device_key"], pki["ca_cert"], protocol="TLS 1.2")
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    for server in _serve(ctx):
        data = _get(f"https://127.0.0.1:{server.port}/x", old)
        assert data == {
            "peer": "gw-42",
            "subject": {"commonName": "gw-42", "organizationalUnitName": "device"},
            "tls": "TLSv1.2",
        }


def test_hostname_mismatch_is_refused(central: TLSServer, pki: dict[str, Path]) -> None:
    def handshake(name: str) -> str | None:
        raw = socket.create_connection(("127.0.0.1", central.port), timeout=5)
        with _device(pki).wrap_socket(raw, server_hostname=name) as tls:
            return tls.version()

    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        handshake("wrong.example")
    # the name given as central_host is in the certificate
    assert handshake("central.example") == "TLSv1.3"


def test_server_without_required_client_certs_sees_no_identity(pki: dict[str, Path]) -> None:
    ctx = server_context(
        pki["central_cert"], pki["central_key"], pki["ca_cert"], require_client_cert=False
    )
    for server in _serve(ctx):
        url = f"https://127.0.0.1:{server.port}/x"
        assert _get(url, client_context(None, None, pki["ca_cert"]))["peer"] is None
        assert _get(url, _device(pki))["peer"] == "gw-42"


def test_contexts_from_config_talk_to_each_other(pki: dict[str, Path], tmp_path: Path) -> None:
    """A second device, issued later by the same CA, configured as edge-security.yaml says."""
    paths = issue_device_cert(pki["ca_cert"].parent, "gw-43", tmp_path / "gw-43")
    comm = CommunicationSecurity(
        enabled=True,
        protocol="TLS 1.3",
        certificate_path=str(paths["device_cert"]),
        key_path=str(paths["device_key"]),
        ca_path=str(paths["ca_cert"]),
    )
    client = context_from_config(comm, "client")
    assert client is not None
    # the device serving its own API with its device certificate, to a device client
    server_ctx = context_from_config(comm, "server")
    assert server_ctx is not None
    for server in _serve(server_ctx):
        data = _get(f"https://localhost:{server.port}/x", client)
        assert data["peer"] == "gw-43" and data["tls"] == "TLSv1.3"
