"""ApiServer over real sockets on 127.0.0.1: idle keep-alive connections wait on the selector,
not on a worker, so a few hundred clients share a small pool; pipelining, slow clients, idle
timeouts, the connection limit, 413 and mutual TLS."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from edge_min.api.server import ApiServer
from edge_min.routing import Request, Response, Router
from edge_min.security.certs import init_certs
from edge_min.security.tls import client_context, server_context


def make_router(closed: list[bool] | None = None) -> Router:
    router = Router()

    def ping(request: Request) -> dict[str, Any]:
        return {"ok": True, "principal": request.principal, "client": request.client}

    def echo(request: Request) -> Response:
        return Response(200, {"path": request.path, "body": request.body.decode()})

    router.add("GET", "/ping", ping, permission="read")
    router.add("GET", "/a", ping, permission="read")
    router.add("GET", "/b", ping, permission="read")
    router.add("POST", "/echo", echo, permission="write")
    if closed is not None:
        router.close_hooks.append(lambda: closed.append(True))
    return router


@pytest.fixture
def serve() -> Iterator[Callable[..., ApiServer]]:
    """Start ApiServers on free ports; all are stopped at the end of the test."""
    servers: list[ApiServer] = []

    def start(router: Router | None = None, **kwargs: Any) -> ApiServer:
        server = ApiServer(router or make_router(), "127.0.0.1", 0, **kwargs)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def read_response(f: BinaryIO) -> tuple[int, dict[str, str], bytes]:
    """One response from a raw stream: status, headers (lower-cased), body."""
    status_line = f.readline()
    if not status_line:
        raise ConnectionError("the server closed the connection")
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while True:
        line = f.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        key, _, value = line.decode().partition(":")
        headers[key.strip().lower()] = value.strip()
    return status, headers, f.read(int(headers.get("content-length", "0")))


def wait_until(predicate: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the peer closes ``sock`` within ``within`` seconds (reads nothing else)."""
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def get(conn: http.client.HTTPConnection, path: str = "/ping") -> tuple[int, Any]:
    conn.request("GET", path)
    resp = conn.getresponse()
    return resp.status, json.loads(resp.read())


def test_200_keepalive_clients_in_lockstep_share_16_workers(
    serve: Callable[..., ApiServer],
) -> None:
    # Every client holds its connection open while waiting for all the others at a barrier:
    # a server that parks each kept-alive connection on a worker serves only 16 of them and
    # the rest wait for idle_timeout (60 s) per round, which the barrier turns into a failure.
    clients, rounds = 200, 4
    server = serve(workers=16, idle_timeout=60.0, backlog=512)
    host, port = server.address
    barrier = threading.Barrier(clients, timeout=25)
    failures: list[str] = []
    statuses: list[int] = []
    peak = [0]
    lock = threading.Lock()

    def client(i: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=25)
        try:
            conn.connect()
            first = conn.sock
            for r in range(rounds):
                status, body = get(conn)
                with lock:
                    statuses.append(status)
                assert body["ok"] is True
                assert conn.sock is first, "the connection was not kept alive"
                if barrier.wait() == 0:
                    peak[0] = max(peak[0], server.open_connections)
                barrier.wait()  # everyone still connected while the peak is read
                del r
        except Exception as exc:
            with lock:
                failures.append(f"client {i}: {type(exc).__name__}: {exc}")
            barrier.abort()
        finally:
            conn.close()

    began = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(40)
    elapsed = time.monotonic() - began
    assert not failures, failures[:5]
    assert statuses == [200] * (clients * rounds)
    assert peak[0] == clients  # all 200 connections open at once, on 16 workers
    assert elapsed < 30, f"{clients} clients, {rounds} rounds took {elapsed:.1f}s"
    assert wait_until(lambda: server.open_connections == 0)


def test_idle_connections_are_closed_after_idle_timeout(serve: Callable[..., ApiServer]) -> None:
    server = serve(idle_timeout=0.5)
    kept = socket.create_connection(server.address)
    kept.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body = read_response(kept.makefile("rb"))
    assert status == 200 and json.loads(body)["ok"] is True
    silent = socket.create_connection(server.address)  # connects and never says anything
    began = time.monotonic()
    assert not closed_by_server(kept, 0.3)  # still open well inside the timeout
    assert closed_by_server(kept, 3.0)
    assert closed_by_server(silent, 3.0)
    assert 0.45 < time.monotonic() - began < 3.0
    assert wait_until(lambda: server.open_connections == 0)
    kept.close()
    silent.close()


def test_pipelined_requests_are_all_answered_in_order(serve: Callable[..., ApiServer]) -> None:
    server = serve(workers=2)
    sock = socket.create_connection(server.address)
    f = sock.makefile("rb")
    body = b'{"n": 1}'
    post = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    sock.sendall(
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n" + post + b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    answers = [read_response(f) for _ in range(3)]
    assert [a[0] for a in answers] == [200, 200, 200]
    assert json.loads(answers[1][2]) == {"path": "/echo", "body": '{"n": 1}'}
    # A second request split across writes: the tail arrives while the connection is idle.
    sock.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHo")
    assert read_response(f)[0] == 200
    time.sleep(0.2)
    sock.sendall(b"st: x\r\nConnection: close\r\n\r\n")
    status, headers, _ = read_response(f)
    assert status == 200 and headers.get("connection") == "close"
    assert closed_by_server(sock, 3.0)
    sock.close()


def test_http10_is_closed_after_its_answer_and_expect_100_gets_continue(
    serve: Callable[..., ApiServer],
) -> None:
    server = serve()
    old = socket.create_connection(server.address)
    old.sendall(b"GET /ping HTTP/1.0\r\n\r\n")
    status, headers, _ = read_response(old.makefile("rb"))
    assert status == 200 and headers["connection"] == "close"
    assert closed_by_server(old, 3.0)
    old.close()
    # The client holds its body back until the server says 100 Continue.
    sock = socket.create_connection(server.address)
    sock.settimeout(5)
    f = sock.makefile("rb")
    sock.sendall(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
    )
    assert f.readline().split()[1] == b"100"
    assert f.readline() == b"\r\n"
    sock.sendall(b"hi")
    status, _, body = read_response(f)
    assert status == 200 and json.loads(body)["body"] == "hi"
    sock.close()


def test_a_client_dribbling_its_headers_does_not_hold_the_only_worker(
    serve: Callable[..., ApiServer],
) -> None:
    server = serve(workers=1)
    slow = socket.create_connection(server.address)
    head = b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"y" * 20 + b"\r\n\r\n"
    stop = threading.Event()

    def dribble() -> None:
        for byte in head:
            if stop.wait(0.05):  # about 3 s for the whole head
                return
            slow.sendall(bytes([byte]))

    dribbler = threading.Thread(target=dribble)
    dribbler.start()
    try:
        conn = http.client.HTTPConnection(*server.address, timeout=5)
        for _ in range(20):
            began = time.monotonic()
            assert get(conn)[0] == 200
            assert time.monotonic() - began < 1.5
        conn.close()
        # The real check: all 20 were answered while the only worker could have been stuck.
        assert dribbler.is_alive(), "the dribbler finished before the fast client did"
        dribbler.join(10)
        status, _, body = read_response(slow.makefile("rb"))
        assert status == 200 and json.loads(body)["ok"] is True
    finally:
        stop.set()
        dribbler.join(10)
        slow.close()


def test_413_404_405_and_411_are_json_and_a_413_closes_the_connection(
    serve: Callable[..., ApiServer],
) -> None:
    server = serve(max_request_bytes=100)
    conn = http.client.HTTPConnection(*server.address, timeout=5)
    assert get(conn, "/nowhere")[0] == 404
    conn.request("DELETE", "/ping")
    resp = conn.getresponse()
    assert resp.status == 405 and json.loads(resp.read())["error"]["code"]
    conn.request("POST", "/echo", body=b"x" * 101)
    resp = conn.getresponse()
    answer = json.loads(resp.read())
    assert resp.status == 413 and answer["error"]["code"] == "payload_too_large"
    assert "100 bytes" in answer["error"]["message"]
    assert resp.getheader("Connection") == "close"
    conn.close()
    # A body far larger than the socket buffers: the server must not reset the connection
    # under the client's feet before it has read the 413.
    conn = http.client.HTTPConnection(*server.address, timeout=10)
    conn.request("POST", "/echo", body=b"x" * (8 * 1024 * 1024))
    resp = conn.getresponse()
    assert resp.status == 413 and json.loads(resp.read())["error"]["code"] == "payload_too_large"
    conn.close()
    conn = http.client.HTTPConnection(*server.address, timeout=5)
    conn.request("POST", "/echo", body=iter([b"abc"]), encode_chunked=True)
    resp = conn.getresponse()
    assert resp.status == 411 and json.loads(resp.read())["error"]["code"] == "length_required"
    conn.close()
    conn = http.client.HTTPConnection(*server.address, timeout=5)
    conn.request("POST", "/echo", body=b"x" * 100)
    resp = conn.getresponse()
    assert resp.status == 200 and json.loads(resp.read())["body"] == "x" * 100
    conn.close()


def test_beyond_max_connections_new_ones_get_503(serve: Callable[..., ApiServer]) -> None:
    server = serve(max_connections=3)
    held = [http.client.HTTPConnection(*server.address, timeout=5) for _ in range(3)]
    for conn in held:
        assert get(conn)[0] == 200
    extra = socket.create_connection(server.address)
    status, headers, body = read_response(extra.makefile("rb"))
    assert status == 503 and json.loads(body)["error"]["code"] == "busy"
    assert "max_connections" in json.loads(body)["error"]["message"]
    assert headers["connection"] == "close"
    extra.close()
    held.pop().close()
    assert wait_until(lambda: server.open_connections == 2)
    again = http.client.HTTPConnection(*server.address, timeout=5)
    assert get(again)[0] == 200
    again.close()
    for conn in held:
        assert get(conn)[0] == 200  # the held connections were never disturbed
        conn.close()


def test_stop_closes_idle_connections_and_the_router() -> None:
    closed: list[bool] = []
    server = ApiServer(make_router(closed), "127.0.0.1", 0)
    server.start()
    sock = socket.create_connection(server.address)
    sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_response(sock.makefile("rb"))[0] == 200
    server.stop()
    assert closed_by_server(sock, 3.0)
    assert closed == [True]
    with pytest.raises(OSError):
        socket.create_connection(server.address, timeout=2)
    sock.close()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return init_certs(tmp_path_factory.mktemp("certs"), device_id="gw-9")


def test_mutual_tls_keepalive_clients_are_named_by_their_certificate(
    serve: Callable[..., ApiServer], certs: dict[str, Path]
) -> None:
    ctx = server_context(certs["central_cert"], certs["central_key"], certs["ca_cert"])
    server = serve(workers=1, ssl_context=ctx, idle_timeout=5.0)
    assert server.scheme == "https"
    host, port = server.address
    # A client that connects and never starts its handshake must not hold the only worker.
    silent = socket.create_connection((host, port))
    client = client_context(certs["device_cert"], certs["device_key"], certs["ca_cert"])
    conns = [http.client.HTTPSConnection(host, port, context=client, timeout=5) for _ in range(5)]
    for _ in range(3):
        for conn in conns:
            status, body = get(conn)
            assert status == 200 and body["principal"] == "cert:gw-9"
            assert body["client"] == "127.0.0.1"
    socks = [conn.sock for conn in conns]
    for conn, first in zip(conns, socks, strict=True):
        get(conn)
        assert conn.sock is first  # kept alive across requests
        conn.close()
    # No client certificate: the handshake fails on a worker; the server keeps serving.
    bare = client_context(None, None, certs["ca_cert"])
    with pytest.raises((ssl.SSLError, ConnectionError)):
        refused = http.client.HTTPSConnection(host, port, context=bare, timeout=5)
        get(refused)
    ok = http.client.HTTPSConnection(host, port, context=client, timeout=5)
    assert get(ok)[0] == 200
    # Pipelined requests inside one TLS stream are all answered.
    raw = client.wrap_socket(socket.create_connection((host, port)), server_hostname=host)
    raw.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    f = raw.makefile("rb")
    assert [read_response(f)[0] for _ in range(2)] == [200, 200]
    raw.close()
    ok.close()
    silent.close()
