"""The HTTP server of the local API (and of the central): a fixed worker pool, bounded bodies.

Handlers run on the server's threads, never on the scheduler's loop, so a slow client cannot
stall workflows. With an ``ssl_context`` each accepted connection is wrapped and handshaken
on its worker thread, not on the listening socket: with TLS 1.3 a bad client certificate
only shows when the server reads, and a handshake on the accepting thread would stall every
other client. The verified client certificate's CN reaches handlers as
``request.principal = "cert:<CN>"``.
"""

from __future__ import annotations

import logging
import queue
import ssl
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from edge_min.api.router import Request, Response, Router, error_response

log = logging.getLogger("edge_min.api")

DEFAULT_MAX_REQUEST_BYTES = 1024 * 1024
DEFAULT_WORKERS = 16
DEFAULT_BACKLOG = 128  # socketserver's 5 drops SYNs when many clients connect at once
IDLE_CONNECTION_TIMEOUT = 15.0  # seconds a kept-alive connection may sit idle on a worker


class _Server(HTTPServer):
    """An HTTP server with a fixed pool of worker threads.

    A fixed pool (not a thread per request) bounds memory and lets each worker keep one
    database connection for its whole life.
    """

    allow_reuse_address = True
    router: Router
    max_request_bytes: int
    ssl_context: ssl.SSLContext | None = None

    def __init__(
        self,
        address: tuple[str, int],
        workers: int,
        handler: type[BaseHTTPRequestHandler],
        backlog: int,
    ) -> None:
        self.request_queue_size = backlog
        super().__init__(address, handler)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._workers = [
            threading.Thread(target=self._work, name=f"edge-api-{i}", daemon=True)
            for i in range(workers)
        ]
        for t in self._workers:
            t.start()

    def process_request(self, request: Any, client_address: Any) -> None:
        self._queue.put((request, client_address))

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            request, client_address = item
            try:
                if self.ssl_context is not None:
                    request.settimeout(IDLE_CONNECTION_TIMEOUT)
                    request = self.ssl_context.wrap_socket(request, server_side=True)
                self.finish_request(request, client_address)
            except (ssl.SSLError, OSError) as exc:
                log.info("connection from %s refused: %s", client_address[0], exc)
            except Exception:
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)

    def stop_workers(self) -> None:
        for _ in self._workers:
            self._queue.put(None)
        for t in self._workers:
            t.join(timeout=2)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "edge-min"
    timeout = IDLE_CONNECTION_TIMEOUT

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (TimeoutError, ConnectionError):
            self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _handle(self) -> None:
        url = urlsplit(self.path)
        length_text = self.headers.get("Content-Length") or "0"
        try:
            length = int(length_text)
        except ValueError:
            self._send(error_response(400, "bad_request", f"bad Content-Length {length_text!r}"))
            return
        if length < 0:
            self._send(error_response(400, "bad_request", "negative Content-Length"))
            return
        if length > self.server.max_request_bytes:
            self.close_connection = True
            self._send(
                error_response(
                    413,
                    "payload_too_large",
                    f"request body of {length} bytes is over the limit of "
                    f"{self.server.max_request_bytes} bytes (api.max_request_bytes)",
                )
            )
            return
        body = self.rfile.read(length) if length else b""
        request = Request(
            method=self.command,
            path=url.path.rstrip("/") or "/",
            query=dict(parse_qsl(url.query)),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            client=str(self.client_address[0]),
            principal=_peer_principal(self.connection),
        )
        self._send(self.server.router.dispatch(request))

    def _send(self, response: Response) -> None:
        payload = response.encode()
        self.send_response(response.status)
        ctype = response.content_type
        if ctype == "application/json":
            ctype += "; charset=utf-8"
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        for key, value in response.headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle


def _peer_principal(conn: Any) -> str | None:
    """``cert:<CN>`` of a verified client certificate, or None."""
    if not isinstance(conn, ssl.SSLSocket):
        return None
    cert: dict[str, Any] = dict(conn.getpeercert() or {})
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return f"cert:{value}"
    return None


class ApiServer:
    """Serves a Router on host:port in a background thread."""

    def __init__(
        self,
        router: Router,
        host: str = "127.0.0.1",
        port: int = 8000,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        workers: int = DEFAULT_WORKERS,
        *,
        backlog: int = DEFAULT_BACKLOG,
        idle_timeout: float = IDLE_CONNECTION_TIMEOUT,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        handler = type("_Handler", (_Handler,), {"timeout": idle_timeout})
        self._server = _Server((host, port), workers, handler, backlog)
        self._server.ssl_context = ssl_context
        self.scheme = "https" if ssl_context is not None else "http"
        self._server.router = router
        self._server.max_request_bytes = max_request_bytes
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The bound host and port (the port is real even when 0 was asked for)."""
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="edge-min-api", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._server.stop_workers()
        self._server.router.close()
        if self._thread:
            self._thread.join(timeout=5)
