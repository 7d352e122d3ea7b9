"""The local HTTP API server on stdlib ``http.server``: one thread per client, bounded bodies.

Handlers run on the server's threads, never on the scheduler's loop, so a slow client cannot
stall workflows.
"""

from __future__ import annotations

import logging
import queue
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from edge_min.api.router import Request, Response, Router, error_response

log = logging.getLogger("edge_min.api")

DEFAULT_MAX_REQUEST_BYTES = 1024 * 1024
DEFAULT_WORKERS = 16
IDLE_CONNECTION_TIMEOUT = 15.0  # seconds a kept-alive connection may sit idle on a worker


class _Server(HTTPServer):
    """An HTTP server with a fixed pool of worker threads.

    A fixed pool (not a thread per request) bounds memory and lets each worker keep one
    database connection for its whole life.
    """

    allow_reuse_address = True
    router: Router
    max_request_bytes: int

    def __init__(self, address: tuple[str, int], workers: int) -> None:
        super().__init__(address, _Handler)
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
                self.finish_request(request, client_address)
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


class ApiServer:
    """Serves a Router on host:port in a background thread."""

    def __init__(
        self,
        router: Router,
        host: str = "127.0.0.1",
        port: int = 8000,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        workers: int = DEFAULT_WORKERS,
    ) -> None:
        self._server = _Server((host, port), workers)
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
