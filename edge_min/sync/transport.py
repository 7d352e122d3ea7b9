"""The sync transport port and its HTTP(S) implementation on ``http.client``.

The port is one method, ``request(method, path, body, headers) -> (status, headers, body)``
(as httpx's transports are), so the SyncManager is tested against a fake and runs against
``HttpTransport`` in production. Anything that keeps the answer from arriving whole (refused
connection, reset, timeout, a body cut short) raises ``TransportError``: a link failure the
manager retries with backoff. An HTTP error status is *not* an exception here; the caller
reads the error frame in the body.

``HttpTransport``:

- one keep-alive connection, reopened when central closed it; a request that fails on a
  reused connection before any answer byte came back is sent once more on a fresh one
  (every sync request is idempotent: a push carries its batch id);
- ``timeout`` seconds for connect and for each read/write, so a stalled link fails instead
  of hanging the sync worker;
- TLS from ``edge_min.security.tls.context_for_url``: https:// with the device certificate
  (mutual TLS) when ``encryption.communication`` is on; plain http:// only to loopback
  unless ``allow_insecure`` (which logs a warning);
- headers ``X-Edge-Node`` (the device id) and ``X-Edge-Sync-Accept`` (the compressions this
  process reads, best first);
- an optional ``TokenBucket`` (``network.max_bandwidth``): the body is written and read in
  small chunks and each chunk pays for its bytes, both ways;
- ``stats``: requests, bytes sent and received (request/status lines and headers
  included, TLS overhead not), reconnects.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

from edge_min.sync.bandwidth import TokenBucket, chunk_size
from edge_min.sync.errors import SyncError

log = logging.getLogger("edge_min.sync.transport")

NODE_HEADER = "X-Edge-Node"
ACCEPT_HEADER = "X-Edge-Sync-Accept"
DEFAULT_TIMEOUT = 30.0
# A frame is at most DEFAULT_MAX_BYTES; the slack covers nothing else but is cheap.
DEFAULT_MAX_RESPONSE = 16 * 1024 * 1024 + 64 * 1024

Answer = tuple[int, dict[str, str], bytes]


class TransportError(SyncError):
    """The request or its answer did not make it across: a link failure; retry later."""

    code = "sync_transport"
    http_status = 503
    retryable = True


class TlsRefused(SyncError):
    """The TLS handshake refused the peer's certificate; retrying will not help."""

    code = "sync_tls"
    http_status = 400
    retryable = False


class Transport(Protocol):
    """Carries one request to central and brings back its whole answer."""

    def request(
        self, method: str, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> Answer:
        """Send ``body`` to ``path``; the answer's status, lower-cased headers and body."""
        ...

    def close(self) -> None:
        """Drop any open connection."""
        ...


@dataclass
class TransferStats:
    """What went over a transport."""

    requests: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    reconnects: int = 0
    failures: int = 0


class _StaleConnection(Exception):
    """A reused keep-alive connection failed before any answer byte: try a fresh one."""


class HttpTransport:
    """HTTP/1.1 (or HTTPS) to central's base URL over one keep-alive connection."""

    def __init__(
        self,
        base_url: str,
        *,
        node: str,
        ssl_context: Any = None,
        timeout: float = DEFAULT_TIMEOUT,
        bucket: TokenBucket | None = None,
        accept: str | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SyncError(
                f"central_url {base_url!r} is not an http:// or https:// URL; set "
                "sync.central_url in edge-config.yaml to e.g. https://central.example.com"
            )
        self.base_url = base_url.rstrip("/")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self.node = node
        self.ssl_context = ssl_context
        if self.scheme == "https" and ssl_context is None:
            raise SyncError(
                f"{base_url} is https:// but no TLS context was given; build the transport "
                "with HttpTransport.for_url(url, security_config=...)"
            )
        self.timeout = timeout
        self.bucket = bucket
        if accept is None:
            from edge_min.sync.protocol import available_compressions

            accept = ", ".join(available_compressions())
        self.accept = accept
        self.max_response_bytes = max_response_bytes
        self.chunk = chunk_size(bucket.rate if bucket else 0)
        self.stats = TransferStats()
        self._conn: http.client.HTTPConnection | None = None
        self._used = False

    @classmethod
    def for_url(
        cls,
        url: str,
        *,
        node: str,
        security_config: Any = None,
        allow_insecure: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
        bucket: TokenBucket | None = None,
        accept: str | None = None,
    ) -> HttpTransport:
        """A transport to ``url`` with the TLS context edge-security.yaml asks for.

        Plain http:// is refused unless the host is loopback or ``allow_insecure`` is set
        (a ConfigError names ``sync.central_url`` and the fix).
        """
        from edge_min.security.tls import context_for_url

        if security_config is None and urlsplit(url).scheme == "https":
            from edge_min.config.security import SecurityConfig

            security_config = SecurityConfig()
        ctx = context_for_url(url, security_config, allow_insecure=allow_insecure, logger=log)
        return cls(url, node=node, ssl_context=ctx, timeout=timeout, bucket=bucket, accept=accept)

    # -- the port ----------------------------------------------------------------------------

    def request(
        self, method: str, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> Answer:
        """Send one request and read its whole answer; TransportError if the link fails."""
        self.stats.requests += 1
        for fresh_try in (False, True):
            reused = self._conn is not None and self._used
            try:
                return self._exchange(method, path, body, headers or {}, reused and not fresh_try)
            except _StaleConnection:
                self.stats.reconnects += 1
                continue
            except TransportError:
                self.stats.failures += 1
                self.close()
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Close the keep-alive connection (the next request opens a new one)."""
        conn, self._conn, self._used = self._conn, None, False
        if conn is not None:
            with contextlib.suppress(OSError):  # already broken: nothing to release
                conn.close()

    # -- internals ---------------------------------------------------------------------------

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self.scheme == "https":
                self._conn = http.client.HTTPSConnection(
                    self.host, self.port, timeout=self.timeout, context=self.ssl_context
                )
            else:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self._used = False
        return self._conn

    def _pay(self, n: int) -> None:
        if self.bucket is not None:
            self.bucket.consume(n)

    def _exchange(
        self,
        method: str,
        path: str,
        body: bytes,
        headers: Mapping[str, str],
        may_be_stale: bool,
    ) -> Answer:
        conn = self._connection()
        target = self.prefix + path
        fixed = {
            NODE_HEADER: self.node,
            ACCEPT_HEADER: self.accept,
            "Content-Length": str(len(body)),
            **headers,
        }
        answered = False
        try:
            conn.putrequest(method, target, skip_accept_encoding=True)
            for name, value in fixed.items():
                conn.putheader(name, value)
            head_bytes = len(method) + len(target) + 11 + len(self.host) + 10
            head_bytes += sum(len(k) + len(v) + 4 for k, v in fixed.items()) + 2
            self._pay(head_bytes)
            conn.endheaders()
            self.stats.bytes_sent += head_bytes
            for start in range(0, len(body), self.chunk):
                piece = body[start : start + self.chunk]
                self._pay(len(piece))
                conn.send(piece)
                self.stats.bytes_sent += len(piece)
            resp = conn.getresponse()
            answered = True
            status = resp.status
            got_headers = {k.lower(): v for k, v in resp.getheaders()}
            head_in = (
                15 + len(resp.reason or "") + sum(len(k) + len(v) + 4 for k, v in resp.getheaders())
            )
            self.stats.bytes_received += head_in
            self._pay(head_in)
            if (
                "content-length" not in got_headers
                and not resp.chunked
                and status not in (204, 304)
            ):
                # http.client takes the end of the stream for the end of the headers, so a
                # cut inside them looks like an answer with no length and an empty body.
                raise http.client.IncompleteRead(b"", None)
            data = self._read_body(resp, got_headers)
            self._used = True
            if resp.will_close:
                self.close()
            return status, got_headers, data
        except (http.client.HTTPException, OSError) as exc:
            self.close()
            if may_be_stale and not answered and _looks_stale(exc):
                log.debug("keep-alive connection to %s was closed; reconnecting", self.host)
                raise _StaleConnection() from exc
            if isinstance(exc, ssl.SSLCertVerificationError):
                raise TlsRefused(
                    f"{method} {self.base_url}{path}: central's certificate did not verify "
                    f"({exc.verify_message}); check encryption.communication.ca_path and that "
                    "central's certificate was made by that CA (edge-min certs init DIR)"
                ) from exc
            raise TransportError(_describe(exc, self, method, path, answered)) from exc

    def _read_body(self, resp: http.client.HTTPResponse, headers: dict[str, str]) -> bytes:
        length_text = headers.get("content-length")
        expected = int(length_text) if length_text and length_text.isdigit() else None
        if expected is not None and expected > self.max_response_bytes:
            raise TransportError(
                f"central answered {expected:,} bytes, past the "
                f"{self.max_response_bytes:,} this device accepts; ask for smaller batches"
            )
        parts: list[bytes] = []
        total = 0
        while True:
            piece = resp.read(self.chunk)
            if not piece:
                break
            total += len(piece)
            self.stats.bytes_received += len(piece)
            if total > self.max_response_bytes:
                raise TransportError(
                    f"central's answer passed {self.max_response_bytes:,} bytes; "
                    "ask for smaller batches"
                )
            self._pay(len(piece))
            parts.append(piece)
        if expected is not None and total != expected:
            raise http.client.IncompleteRead(b"".join(parts), expected - total)
        return b"".join(parts)


def _looks_stale(exc: BaseException) -> bool:
    # What a keep-alive connection that the server already closed gives on reuse.
    return isinstance(
        exc,
        http.client.RemoteDisconnected
        | http.client.BadStatusLine
        | BrokenPipeError
        | ConnectionResetError
        | ConnectionAbortedError,
    )


def _describe(exc: BaseException, t: HttpTransport, method: str, path: str, answered: bool) -> str:
    where = f"{method} {t.base_url}{path}"
    if isinstance(exc, TimeoutError):
        return (
            f"{where}: no progress within {t.timeout:g} s (a stalled link); "
            "the batch is sent again later"
        )
    if isinstance(exc, http.client.IncompleteRead) and exc.expected is None:
        return f"{where}: the answer was cut inside its headers; the batch is sent again later"
    if isinstance(exc, http.client.IncompleteRead):
        return (
            f"{where}: the answer was cut after {len(exc.partial):,} bytes "
            f"({exc.expected:,} missing); the batch is sent again later"
        )
    if isinstance(exc, ConnectionRefusedError):
        return f"{where}: connection refused; is central running at {t.base_url}?"
    phase = "reading the answer" if answered else "sending the request"
    return f"{where}: the link failed while {phase}: {type(exc).__name__}: {exc}"


#: ``factory(config, node)``: the transport to central for an EdgeConfig and this device's id.
#: The runtime is given one (``Runtime(transport=...)``); ``http_transport`` is the default.
TransportFactory = Callable[[Any, str], Transport]


def http_transport(
    config: Any, node: str, *, allow_insecure: bool = False, timeout: float | None = None
) -> HttpTransport:
    """The default ``TransportFactory``: HTTP(S) to ``sync.central_url`` as the config says."""
    from edge_min.clock import SystemClock
    from edge_min.sync.bandwidth import bucket_for

    network = config.sync_config.network
    return HttpTransport.for_url(
        config.sync.central_url,
        node=node,
        security_config=config.security_config,
        allow_insecure=allow_insecure,
        timeout=timeout or DEFAULT_TIMEOUT,
        # The bucket paces real bytes, so it always runs on real time.
        bucket=bucket_for(network.max_bandwidth, SystemClock()),
        accept=None if network.compression else "none",
    )


class RouterTransport:
    """Hands each request to an in-process ``Router`` (a central's): no socket, the real
    request and response types. For tests, and for hosts that embed central beside the
    device (the loop of one process); the browser brings a fetch transport, the MCU a socket
    one, each implementing ``Transport``.
    """

    def __init__(self, router: Any, node: str, *, client: str = "127.0.0.1") -> None:
        self.router = router
        self.node = node
        self.client = client
        self.stats = TransferStats()

    def request(
        self, method: str, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> Answer:
        """Dispatch one request; its status, lower-cased headers and body."""
        from edge_min.routing import Request

        url = urlsplit(path)
        sent = {
            NODE_HEADER.lower(): self.node,
            **{k.lower(): v for k, v in (headers or {}).items()},
        }
        response = self.router.dispatch(
            Request(
                method=method,
                path=url.path.rstrip("/") or "/",
                query=dict(parse_qsl(url.query)),
                headers=sent,
                body=body,
                client=self.client,
            )
        )
        payload = response.encode()
        answer_headers = {k.lower(): v for k, v in response.headers.items()}
        answer_headers["content-type"] = response.content_type
        self.stats.requests += 1
        self.stats.bytes_sent += len(body)
        self.stats.bytes_received += len(payload)
        return response.status, answer_headers, payload

    def close(self) -> None:
        """Nothing to close."""
