"""The HTTP server of the local API (and of the central): a selector for idle connections
and a fixed pool of workers for requests; bounded bodies and a bounded number of connections.

One selector thread accepts connections and watches the idle ones. A connection goes to a
worker once a whole request head has arrived, is served one request (more if the client
pipelined them), and goes back to the selector; so a kept-alive client that says nothing, or
one dribbling its headers, costs a descriptor and not a worker, and hundreds of clients share
``workers`` threads (each keeps one database connection for life, hence a fixed pool).
Handlers never run on the scheduler's loop, so no client can stall workflows.

With an ``ssl_context`` the TLS handshake runs on a worker once the client's first bytes
arrive, never on the selector thread: with TLS 1.3 a bad client certificate only shows when
the server reads, and a handshake on the accepting thread would stall every other client.
The verified client certificate's CN reaches handlers as ``request.principal = "cert:<CN>"``
and its serial as ``request.cert_serial``. A ``peer_check`` (the central's revocation list)
sees each verified peer right after the handshake; a reason from it closes the connection
before any request is read.

A connection is closed when the client asks (``Connection: close``, HTTP/1.0), on errors,
after ``idle_timeout`` seconds without a request (or with a head still incomplete that long
after its first byte), and on stop. Beyond ``max_connections`` a new one gets 503.
"""

from __future__ import annotations

import contextlib
import io
import logging
import queue
import re
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

from edge_min.routing import Request, Response, Router, error_response

log = logging.getLogger("edge_min.api")

DEFAULT_MAX_REQUEST_BYTES = 1024 * 1024
DEFAULT_WORKERS = 16
DEFAULT_BACKLOG = 128  # socketserver's 5 drops SYNs when many clients connect at once
DEFAULT_MAX_CONNECTIONS = 1024  # each costs a descriptor and a little memory, not a thread
IDLE_CONNECTION_TIMEOUT = 15.0  # seconds a kept-alive connection may sit without a request
MAX_HEAD_BYTES = 128 * 1024  # request line + headers; a larger head is refused with 431
RECV_BYTES = 64 * 1024
# After an error answer that closes the connection (413, 411), how long the client may go
# on sending the body we will not read: closing on unread input resets the connection,
# and the reset can destroy the answer before the client has read it.
LINGER_SECONDS = 2.0
ACCEPTS_PER_WAKE = 64  # so a connection storm cannot starve the idle connections' reads

# The blank line ending a request head; http.server accepts bare LF line ends too.
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class _Connection:
    """One client: its socket, bytes read but not yet parsed, and when it is given up on."""

    __slots__ = ("address", "deadline", "handler", "handshaken", "inbuf", "lingering", "sock")

    def __init__(self, sock: socket.socket, address: Any, deadline: float) -> None:
        self.sock = sock
        self.address = address
        self.inbuf = bytearray()
        self.deadline = deadline
        self.handler: _Handler | None = None
        self.handshaken = False
        self.lingering = False  # answered with an error and closing: unread input is discarded

    def head_ready(self) -> bool:
        """Whether a whole request head is buffered, so serving it will not wait on the client."""
        return _HEAD_END.search(self.inbuf) is not None


class _Input:
    """The handler's ``rfile``: the bytes the selector already read, then the socket.

    Buffering here rather than in a ``makefile`` reader means every byte of a pipelined next
    request stays visible in ``inbuf``, so the server knows whether to serve on or go idle.
    """

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn

    def _fill(self) -> bool:
        data = self._conn.sock.recv(RECV_BYTES)
        self._conn.inbuf.extend(data)
        return bool(data)

    def _take(self, n: int) -> bytes:
        buf = self._conn.inbuf
        out = bytes(buf[:n])
        del buf[:n]
        return out

    def readline(self, limit: int = -1) -> bytes:
        """One line with its newline, at most ``limit`` bytes; shorter only at end of stream."""
        buf, scanned = self._conn.inbuf, 0
        while True:
            end = buf.find(b"\n", scanned)
            if end >= 0:
                n = end + 1
                break
            scanned = len(buf)
            if 0 <= limit <= scanned or not self._fill():
                n = scanned
                break
        return self._take(n if limit < 0 else min(n, limit))

    def read(self, size: int = -1) -> bytes:
        """``size`` bytes (all until end of stream if negative); shorter only at end of stream."""
        buf = self._conn.inbuf
        while (size < 0 or len(buf) < size) and self._fill():
            pass
        return self._take(len(buf) if size < 0 else min(size, len(buf)))


class _Output:
    """The handler's ``wfile``: collects a response so it leaves in one ``sendall``."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        """Queue ``data``."""
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        """Send what is queued."""
        if self._parts:
            data = b"".join(self._parts)
            self._parts.clear()
            self._sock.sendall(data)


class _Handler(BaseHTTPRequestHandler):
    """Serves the requests of one connection, one ``handle_one_request`` at a time."""

    protocol_version = "HTTP/1.1"
    server_version = "edge-min"

    def __init__(
        self, conn: _Connection, api: ApiServer, principal: str | None, serial: str | None = None
    ) -> None:
        # Not BaseRequestHandler.__init__, which would serve the whole connection right here.
        self.api = api
        self.principal = principal
        self.cert_serial = serial
        self.request = self.connection = conn.sock
        self.client_address = conn.address
        self.rfile = cast(io.BufferedIOBase, _Input(conn))
        self.wfile = cast(io.BufferedIOBase, _Output(conn.sock))
        self.close_connection = True
        self.status = 0

    def handle_one_request(self) -> None:
        """Read and answer one request; afterwards ``close_connection`` says whether to go on."""
        # http.server leaves the previous request's value on its early exits (414, EOF).
        self.close_connection = True
        self.status = 0
        try:
            super().handle_one_request()
        except (TimeoutError, ConnectionError):
            self.close_connection = True

    def send_response(self, code: int, message: str | None = None) -> None:
        """Start the response (and remember its status)."""
        self.status = int(code)
        super().send_response(code, message)

    def handle_expect_100(self) -> bool:
        """Send ``100 Continue`` now: the client waits for it before sending the body."""
        ok = super().handle_expect_100()
        self.wfile.flush()
        return ok

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _handle(self) -> None:
        url = urlsplit(self.path)
        if self.headers.get("Transfer-Encoding"):
            # Bodies are framed by Content-Length only; anything else would be read as the
            # next request on a kept-alive connection.
            self.close_connection = True
            message = "send the body with a Content-Length header, not Transfer-Encoding"
            self._send(error_response(411, "length_required", message))
            return
        length_text = self.headers.get("Content-Length") or "0"
        try:
            length = int(length_text)
        except ValueError:
            self.close_connection = True  # where the body ends is unknown
            self._send(error_response(400, "bad_request", f"bad Content-Length {length_text!r}"))
            return
        if length < 0:
            self.close_connection = True
            self._send(error_response(400, "bad_request", "negative Content-Length"))
            return
        limit, setting = self.api.body_limits.get(
            url.path.rstrip("/"), (self.api.max_request_bytes, "api.max_request_bytes")
        )
        if length > limit:
            self.close_connection = True
            message = f"request body of {length} bytes is over the limit of {limit} bytes"
            message += f" ({setting})"
            self._send(error_response(413, "payload_too_large", message))
            return
        body = self.rfile.read(length) if length else b""
        if len(body) < length:
            self.close_connection = True  # the client went away mid-body
            return
        request = Request(
            method=self.command,
            path=url.path.rstrip("/") or "/",
            query=dict(parse_qsl(url.query)),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            client=str(self.client_address[0]),
            principal=self.principal,
            cert_serial=self.cert_serial,
        )
        self._send(self.api.router.dispatch(request))

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
        if self.close_connection:
            self.send_header("Connection", "close")  # so the client does not reuse it
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle


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


def _peer_serial(conn: Any) -> str | None:
    """The verified client certificate's serial as lower-case hex, or None."""
    if not isinstance(conn, ssl.SSLSocket):
        return None
    serial = (conn.getpeercert() or {}).get("serialNumber")
    return format(int(str(serial), 16), "x") if serial else None


def _refuse(sock: socket.socket, response: Response, extra: str = "") -> None:
    """Answer ``response`` without blocking (best effort) and close: for the selector thread."""
    payload = response.encode()
    head = (
        f"HTTP/1.1 {response.status} {HTTPStatus(response.status).phrase}\r\n"
        f"Content-Type: application/json; charset=utf-8\r\nContent-Length: {len(payload)}\r\n"
        f"{extra}Connection: close\r\n\r\n"
    ).encode()
    try:
        sock.setblocking(False)
        sock.send(head + payload)
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    finally:
        sock.close()


class ApiServer:
    """Serves a Router on host:port from a selector thread and a fixed pool of workers."""

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
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        peer_check: Callable[[ssl.SSLSocket], str | None] | None = None,
        body_limits: Mapping[str, tuple[int, str]] | None = None,
    ) -> None:
        if workers < 1 or max_connections < 1 or idle_timeout <= 0:
            raise ValueError(
                f"workers ({workers}) and max_connections ({max_connections}) must be at "
                f"least 1 and idle_timeout ({idle_timeout}) above 0"
            )
        self.router = router
        self.max_request_bytes = max_request_bytes
        #: Paths whose bodies may be larger (central's bundle upload): path -> (limit, the
        #: setting's name for the 413 message).
        self.body_limits = dict(body_limits or {})
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.ssl_context = ssl_context
        #: Told each TLS peer after its handshake; a reason it returns refuses the connection.
        self.peer_check = peer_check
        self.scheme = "https" if ssl_context is not None else "http"
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.create_server((host, port), family=family, backlog=backlog)
        self._listener.setblocking(False)
        self._workers = workers
        self._jobs: queue.SimpleQueue[_Connection | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._open = 0  # connections accepted and not yet closed
        self._returning: list[_Connection] = []  # served, waiting for the selector to take
        self._wake_pending = False
        self._stopping = False
        self._selector_done = False
        self._threads: list[threading.Thread] = []
        self._selector_thread: threading.Thread | None = None
        self._sweep_every = min(1.0, max(0.02, idle_timeout / 4))

    @property
    def address(self) -> tuple[str, int]:
        """The bound host and port (the port is real even when 0 was asked for)."""
        host, port = self._listener.getsockname()[:2]
        return str(host), int(port)

    @property
    def open_connections(self) -> int:
        """How many client connections are open now."""
        return self._open

    def start(self) -> None:
        """Serve in background threads."""
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, self._wake_r)
        self._threads = [
            threading.Thread(target=self._work, name=f"edge-api-{i}", daemon=True)
            for i in range(self._workers)
        ]
        for t in self._threads:
            t.start()
        self._selector_thread = threading.Thread(
            target=self._select_loop, name="edge-min-api", daemon=True
        )
        self._selector_thread.start()

    def stop(self) -> None:
        """Stop accepting, close idle connections, finish in-flight requests, close the router."""
        self._stopping = True
        if self._selector_thread is not None:
            self._wake()
            self._selector_thread.join(timeout=5)
        else:
            self._listener.close()
        for _ in self._threads:
            self._jobs.put(None)
        for t in self._threads:
            t.join(timeout=2)
        self.router.close()

    # -- the selector thread ----------------------------------------------------------------

    def _select_loop(self) -> None:
        sel = self._selector
        next_sweep = time.monotonic() + self._sweep_every
        try:
            while not self._stopping:
                events = sel.select(max(0.0, next_sweep - time.monotonic()))
                now = time.monotonic()
                registered = sel.get_map()
                for key, _ in events:
                    if registered.get(key.fd) is not key:
                        continue  # closed earlier in this batch (its descriptor may be reused)
                    if key.data is None:
                        self._accept(now)
                    elif key.data is self._wake_r:
                        self._take_returning(now)
                    else:
                        try:
                            self._on_readable(key.data, now)
                        except Exception:  # one connection's trouble must not end this loop
                            log.exception("reading from %s failed", key.data.address[0])
                            if sel.get_map().get(key.fd) is key:
                                sel.unregister(key.fileobj)
                                self._close(key.data)
                if now >= next_sweep:
                    self._sweep(now)
                    next_sweep = now + self._sweep_every
        except Exception:
            log.exception("the API's selector thread failed; no new requests will be served")
        finally:
            self._close_all()

    def _accept(self, now: float) -> None:
        for _ in range(ACCEPTS_PER_WAKE):
            try:
                sock, address = self._listener.accept()
            except _WOULD_BLOCK:
                return
            except OSError as exc:  # out of descriptors, or the peer gave up already
                log.warning("accepting a connection failed: %s", exc)
                return
            if self._open >= self.max_connections:
                log.warning("refusing %s: %d connections open", address[0], self._open)
                if self.ssl_context is not None:
                    sock.close()  # a TLS client could not read a plain-text answer
                    continue
                message = (
                    f"the server has {self._open} connections open, its limit "
                    f"(max_connections); retry shortly"
                )
                _refuse(sock, error_response(503, "busy", message), "Retry-After: 1\r\n")
                continue
            with self._lock:
                self._open += 1
            sock.setblocking(False)
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                # Responses leave in one send; waiting for an ACK would only add latency.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(sock, address, now + self.idle_timeout)
            # Plain connections start handshaken; TLS ones go to a worker at their first byte.
            conn.handshaken = self.ssl_context is None
            self._selector.register(sock, selectors.EVENT_READ, conn)

    def _on_readable(self, conn: _Connection, now: float) -> None:
        if conn.lingering:
            self._discard(conn)
            return
        if not conn.handshaken:
            self._selector.unregister(conn.sock)
            self._jobs.put(conn)
            return
        sock = conn.sock
        try:
            while True:
                data = sock.recv(RECV_BYTES)
                if not data:
                    self._selector.unregister(sock)
                    self._close(conn)
                    return
                if not conn.inbuf:
                    conn.deadline = now + self.idle_timeout  # the head must arrive in time
                conn.inbuf.extend(data)
                # Decrypted bytes held by the TLS layer would never wake the selector.
                if not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                    break
        except _WOULD_BLOCK:
            pass
        except OSError:
            self._selector.unregister(sock)
            self._close(conn)
            return
        if conn.head_ready():
            self._selector.unregister(sock)
            self._jobs.put(conn)
        elif len(conn.inbuf) > MAX_HEAD_BYTES:
            self._selector.unregister(sock)
            message = f"the request head is over {MAX_HEAD_BYTES} bytes"
            _refuse(sock, error_response(431, "head_too_large", message))
            self._close(None)

    def _discard(self, conn: _Connection) -> None:
        try:
            if conn.sock.recv(RECV_BYTES):
                return
        except _WOULD_BLOCK:
            return
        except OSError:
            pass
        self._selector.unregister(conn.sock)
        self._close(conn)

    def _take_returning(self, now: float) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except _WOULD_BLOCK:
            pass
        with self._lock:
            back, self._returning = self._returning, []
            self._wake_pending = False
        for conn in back:
            conn.deadline = now + (LINGER_SECONDS if conn.lingering else self.idle_timeout)
            self._selector.register(conn.sock, selectors.EVENT_READ, conn)

    def _sweep(self, now: float) -> None:
        for key in list(self._selector.get_map().values()):
            conn = key.data
            if isinstance(conn, _Connection) and conn.deadline <= now:
                self._selector.unregister(conn.sock)
                self._close(conn)

    def _close_all(self) -> None:
        with self._lock:
            self._selector_done = True
            back, self._returning = self._returning, []
        for key in list(self._selector.get_map().values()):
            if isinstance(key.data, _Connection):
                self._close(key.data)
        for conn in back:
            self._close(conn)
        self._selector.close()
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()

    def _wake(self) -> None:
        # A full pipe already wakes the selector; a closed one means it is gone.
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    # -- the workers --------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            conn = self._jobs.get()
            if conn is None:
                return
            self._serve(conn)

    def _serve(self, conn: _Connection) -> None:
        """Serve the requests ``conn`` has buffered, then hand it back (or close it)."""
        try:
            conn.sock.settimeout(self.idle_timeout)
            if conn.handler is None:
                principal = serial = None
                if not conn.handshaken:
                    tls = self._handshake(conn)
                    if tls is None:
                        return
                    conn.sock = tls
                    principal, serial = _peer_principal(tls), _peer_serial(tls)
                    refused = self.peer_check(tls) if self.peer_check is not None else None
                    if refused is not None:
                        log.info("connection from %s refused: %s", conn.address[0], refused)
                        self._close(conn)
                        return
                conn.handler = _Handler(conn, self, principal, serial)
            handler = conn.handler
            while True:
                if isinstance(conn.sock, ssl.SSLSocket):
                    while conn.sock.pending():
                        conn.inbuf.extend(conn.sock.recv(conn.sock.pending()))
                if not conn.head_ready():
                    break
                handler.handle_one_request()
                handler.wfile.flush()  # http.server returns before flushing on its errors
                if handler.close_connection or self._stopping:
                    if handler.status >= 400 and not self._stopping:
                        self._linger(conn)
                    else:
                        self._close(conn)
                    return
        except OSError as exc:  # timed out, reset, or a TLS error: this client is done
            log.debug("closing %s: %s", conn.address[0], exc)
            self._close(conn)
            return
        except Exception:
            log.exception("serving %s failed", conn.address[0])
            self._close(conn)
            return
        self._park(conn)

    def _handshake(self, conn: _Connection) -> ssl.SSLSocket | None:
        """The TLS socket after a handshake on this worker, or None (connection closed)."""
        assert self.ssl_context is not None
        try:
            tls = self.ssl_context.wrap_socket(conn.sock, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            log.info("connection from %s refused: %s", conn.address[0], exc)
            self._close(conn)
            return None
        conn.handshaken = True
        return tls

    def _linger(self, conn: _Connection) -> None:
        """Close our side now; let the selector discard the client's input for a while."""
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        conn.lingering = True
        conn.inbuf.clear()
        self._park(conn)

    def _park(self, conn: _Connection) -> None:
        """Give an idle connection back to the selector."""
        conn.sock.setblocking(False)
        with self._lock:
            if self._selector_done:
                closing = True
            else:
                closing = False
                self._returning.append(conn)
                wake, self._wake_pending = not self._wake_pending, True
        if closing:
            self._close(conn)
        elif wake:
            self._wake()

    def _close(self, conn: _Connection | None) -> None:
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.sock.close()
        with self._lock:
            self._open -= 1
