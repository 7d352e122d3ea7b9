"""Calling this device's own running API from its CLI, with the credentials the config takes.

The CLI on the box administers the runtime that holds the same data directory: whoever can
read the data directory's keys is its administrator. So a command that asks the running
runtime (``edge-min sync --now``, ``edge-min health``) authenticates as admin with what
``access_control.authentication.method`` accepts:

- ``token`` or ``any``: a one-minute admin token signed with the data directory's key;
- ``certificate``: the device's own certificate and key (``encryption.communication``),
  which the API maps to admin.

Over TLS the server must present this device's own certificate (pinned: the bytes of
``certificate_path``); the address is loopback, so there is no host name to check.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edge_min.errors import EdgeError


class LocalApiError(EdgeError):
    """The running runtime's API could not be called, or answered with an error."""

    code = "local_api_error"

    def __init__(self, message: str, status: int | None = None, answer: Any = None) -> None:
        super().__init__(message)
        self.status = status
        #: The JSON the runtime answered with, when it answered.
        self.answer = answer


def call_local_api(
    config: Any,
    root: str | os.PathLike[str],
    base: str,
    method: str,
    path: str,
    *,
    body: Any = None,
    timeout: float = 10.0,
    authenticate: bool = True,
) -> Any:
    """``method path`` on the runtime at ``base``; its JSON answer (LocalApiError if not 2xx)."""
    import http.client

    parts = urlsplit(base)
    host, port = parts.hostname or "127.0.0.1", parts.port
    headers = {"Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    comm = config.security_config.encryption.communication
    method_name = config.security_config.access_control.authentication.method
    if authenticate and method_name != "certificate":
        from edge_min.security.tokens import issue, key_path, load_key

        token = issue("admin", 60, key=load_key(key_path(Path(root))), now=time.time())
        headers["Authorization"] = f"Bearer {token}"
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(
            host, port, timeout=timeout, context=_pinned_context(comm, authenticate)
        )
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=data, headers=headers)
        if parts.scheme == "https":
            _check_pin(conn, comm.certificate_path, base)
        resp = conn.getresponse()
        raw = resp.read()
    except OSError as exc:
        raise LocalApiError(f"cannot reach the runtime at {base}: {exc}") from exc
    finally:
        conn.close()
    try:
        answer = json.loads(raw) if raw else {}
    except ValueError:
        answer = {"raw": raw.decode("utf-8", "replace")}
    if resp.status >= 300:
        message = f"{resp.status} {resp.reason}"
        if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
            message = str(answer["error"].get("message", message))
        raise LocalApiError(message, resp.status, answer)
    return answer


def _pinned_context(comm: Any, client_cert: bool) -> Any:
    import ssl

    from edge_min.security.tls import DEFAULT_PROTOCOL, PROTOCOLS

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = PROTOCOLS.get(comm.protocol, PROTOCOLS[DEFAULT_PROTOCOL])
    ctx.check_hostname = False  # loopback, and the certificate itself is pinned below
    ctx.verify_mode = ssl.CERT_REQUIRED
    if comm.ca_path:
        ctx.load_verify_locations(cafile=os.fspath(comm.ca_path))
    if client_cert and comm.certificate_path and comm.key_path:
        ctx.load_cert_chain(os.fspath(comm.certificate_path), os.fspath(comm.key_path))
    return ctx


def _check_pin(conn: Any, certificate_path: str | None, base: str) -> None:
    import ssl

    sock = conn.sock
    presented = sock.getpeercert(binary_form=True) if sock is not None else None
    if not certificate_path or presented is None:
        raise LocalApiError(f"{base} presented no certificate")
    own = ssl.PEM_cert_to_DER_cert(Path(certificate_path).read_text())
    if presented != own:
        raise LocalApiError(
            f"{base} is not this device's runtime: it presented a certificate other than "
            f"{certificate_path}"
        )
