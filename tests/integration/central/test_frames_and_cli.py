"""Bad frames are refused with their protocol code and change nothing; encryption; the CLI."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_min.central.server import CentralServer
from edge_min.sync.protocol import available_compressions, decode_frame, encode_frame

from .conftest import ROOT, Client, HttpError, item, start_process, wait_health

Start = Callable[..., CentralServer]


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """Frame handling does not depend on the backend: SQLite only here."""
    return f"sqlite:///{tmp_path / 'central.db'}"


def _frame(node: str = "dev-a", **kwargs: object) -> bytes:
    header = {"kind": "push", "entity": "workflows", "batch": "b-1", "node": node}
    return encode_frame(header, [item("w1")], **kwargs)  # type: ignore[arg-type]


def _post(server: CentralServer, body: bytes, node: str | None = "dev-a") -> HttpError:
    with pytest.raises(HttpError) as err:
        Client(server.url, node).send_frame("/api/sync/push", body)
    return err.value


def test_bad_frames_answer_their_protocol_code_and_apply_nothing(start_central: Start) -> None:
    server = start_central()
    good = _frame(compression="none")

    assert _post(server, b"GET / HTTP/1.0 garbage").code == "sync_bad_frame"
    assert _post(server, b"").code in ("sync_truncated", "sync_bad_frame")
    err = _post(server, good[: len(good) - 5])
    assert (err.status, err.code) == (400, "sync_truncated")

    tampered = bytearray(good)
    tampered[-3] ^= 0xFF
    assert _post(server, bytes(tampered)).code == "sync_checksum"

    newer = bytearray(good)
    newer[3] = 99
    err = _post(server, bytes(newer))
    assert err.code == "sync_version" and "99" in err.body["error"]["message"]

    huge_header = b"EMS\x01" + struct.pack(">I", 2**31) + b"\xa0"
    err = _post(server, huge_header)
    assert (err.status, err.code) == (413, "sync_too_large")

    assert _post(server, good + b"trailing").code == "sync_bad_frame"

    # Nothing of any of them was applied.
    assert Client(server.url, "dev-a").pull("workflows", 0) == []
    assert Client(server.url, "dev-a").push("workflows", [item("w1")])[0]["status"] == "accepted"


def test_well_formed_frames_with_bad_content_are_refused(start_central: Start) -> None:
    server = start_central()
    wrong_kind = encode_frame({"kind": "pull_result", "entity": "workflows", "node": "dev-a"}, [])
    assert _post(server, wrong_kind).code == "bad_batch"

    unknown = encode_frame(
        {"kind": "push", "entity": "secrets", "batch": "b", "node": "dev-a"}, [item("x")]
    )
    err = _post(server, unknown)
    assert err.code == "bad_batch" and "workflows" in err.body["error"]["message"]

    bad_item = dict(item("x"), base_version="seven")
    frame = encode_frame(
        {"kind": "push", "entity": "agents", "batch": "b", "node": "dev-a"}, [item("ok"), bad_item]
    )
    err = _post(server, frame)
    assert err.code == "bad_batch" and "item 1" in err.body["error"]["message"]
    assert "base_version" in err.body["error"]["message"]

    # A frame signed as another node than the one calling.
    err = _post(server, _frame(node="dev-b"))
    assert err.code == "bad_batch" and "dev-b" in err.body["error"]["message"]

    err = _post(server, _frame(), node=None)
    assert (err.status, err.code) == (400, "missing_node")
    assert "X-Edge-Node" in err.body["error"]["message"]
    err = _post(server, _frame(), node="bad node/../x")
    assert err.code == "bad_node"

    with pytest.raises(HttpError) as pulled:
        Client(server.url, "dev-a").pull("passwords", 0)
    assert pulled.value.code == "bad_entity"
    with pytest.raises(HttpError) as pulled:
        Client(server.url, "dev-a").send_frame("/api/sync/pull?entity=agents&after=-1", None, "GET")
    assert pulled.value.status == 400 and "after" in pulled.value.body["error"]["message"]

    # None of it was applied (the first item of the bad batch included).
    assert Client(server.url, "dev-a").pull("agents", 0) == []


def test_a_provisioned_key_is_required_and_used_both_ways(start_central: Start) -> None:
    server = start_central()
    key, other = os.urandom(32), os.urandom(32)
    admin = Client(server.url, None)
    dev = admin.json("POST", "/api/devices/sealed/provision", {"sync_key": key.hex()})
    assert dev["encryption_key"] is True and "sync_key" not in dev

    assert _post(server, _frame(node="sealed"), node="sealed").code == "sync_bad_frame"
    err = _post(server, _frame(node="sealed", key=other), node="sealed")
    assert err.code == "sync_decrypt"

    sealed = Client(server.url, "sealed", key=key)
    [ok] = sealed.push("workflows", [item("w1", row={"secret": "s3cr3t"})])
    assert ok["status"] == "accepted"
    [record] = sealed.pull("workflows", 0)
    assert record["row"] == {"secret": "s3cr3t"}

    # The pull answer is encrypted: without the key it cannot be read.
    status, _, raw = Client(server.url, "sealed").request("GET", "/api/sync/pull?entity=workflows")
    assert status == 200 and b"s3cr3t" not in raw
    with pytest.raises(Exception, match="key"):
        Client(server.url, "sealed").pull("workflows", 0)

    # Decommissioning drops the key along with the access.
    assert admin.json("DELETE", "/api/devices/sealed")["encryption_key"] is False


def test_a_shared_key_file_covers_devices_without_their_own(start_central: Start) -> None:
    key = os.urandom(32)
    server = start_central(shared_key=key)
    assert _post(server, _frame()).code == "sync_bad_frame"
    assert Client(server.url, "dev-a", key=key).push("workflows", [item("w1")])[0]["version"]


def test_cli_serves_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    from tests.conftest import free_port

    port = free_port()
    log = tmp_path / "central.log"
    proc = start_process(f"sqlite:///{tmp_path / 'c.db'}", port, log)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_health(url, proc, log)
        assert Client(url, "dev-a").push("agents", [item("a1")])[0]["status"] == "accepted"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "serving on http://127.0.0.1:" in log.read_text()
    # The data outlived the process.
    proc = start_process(f"sqlite:///{tmp_path / 'c.db'}", port, log)
    try:
        wait_health(url, proc, log)
        assert [r["id"] for r in Client(url, "dev-b").pull("agents", 0)] == ["a1"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)


def test_cli_refuses_plain_http_off_loopback(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_min.central",
            "serve",
            "--host",
            "0.0.0.0",
            "--db",
            f"sqlite:///{tmp_path / 'c.db'}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert "--insecure-http" in result.stderr and "0.0.0.0" in result.stderr


def test_answers_use_the_best_compression_the_device_accepts(start_central: Start) -> None:
    server = start_central()
    dev = Client(server.url, "dev-a")
    dev.push("workflows", [item(f"w{i}") for i in range(20)], compression="none")

    def answer_comp(method: str, path: str, body: bytes | None, accept: str | None) -> str:
        headers = {"X-Edge-Sync-Accept": accept} if accept is not None else None
        status, _, raw = dev.request(method, path, body, headers=headers)
        assert status == 200
        header, _ = decode_frame(raw)
        return str(header["comp"])

    pull = "/api/sync/pull?entity=workflows"
    assert answer_comp("GET", pull, None, None) == "none"
    assert answer_comp("GET", pull, None, "zlib, none") == "zlib"
    assert answer_comp("GET", pull, None, "brotli") == "none"
    assert answer_comp("GET", pull, None, "zstd, zlib") == available_compressions()[0]
    zlib_push = _frame(compression="zlib")
    assert answer_comp("POST", "/api/sync/push", zlib_push, None) == "zlib"
    assert answer_comp("POST", "/api/sync/push", zlib_push, "none") == "none"


def test_central_over_mutual_tls_names_the_device_by_its_certificate(tmp_path: Path) -> None:
    """HTTPS with TLS 1.3 both ways: the device's certificate CN is its identity."""
    import ssl
    import urllib.request

    from edge_min.central.server import CentralServer
    from edge_min.central.store import open_central_store
    from edge_min.security.certs import init_certs, issue_device_cert
    from edge_min.security.tls import client_context, server_context

    files = init_certs(tmp_path / "certs", device_id="gw-7")
    store = open_central_store(f"sqlite:///{tmp_path / 'c.db'}")
    ctx = server_context(files["central_cert"], files["central_key"], files["ca_cert"])
    server = CentralServer(store, "127.0.0.1", 0, ssl_context=ctx).start()
    try:
        assert server.url.startswith("https://")
        client = client_context(files["device_cert"], files["device_key"], files["ca_cert"])
        req = urllib.request.Request(server.url + "/api/sync/pull?entity=workflows&after=0")
        with urllib.request.urlopen(req, context=client, timeout=10) as resp:
            assert resp.status == 200
        device = store.get_device("gw-7")
        assert device is not None and device.ip_address == "127.0.0.1"
        # A header naming another device is refused under mTLS.
        req.add_header("X-Edge-Node", "someone-else")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, context=client, timeout=10)
        assert info.value.code == 403
        # No client certificate: no TLS session at all.
        bare = client_context(None, None, files["ca_cert"])
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(server.url + "/health", context=bare, timeout=10).read()
        # Another device from the same CA is a different identity.
        other = issue_device_cert(tmp_path / "certs", "gw-8")
        ctx8 = client_context(other["device_cert"], other["device_key"], other["ca_cert"])
        pull = server.url + "/api/sync/pull?entity=agents&after=0"
        with urllib.request.urlopen(pull, context=ctx8, timeout=10) as resp:
            assert resp.status == 200
        assert store.get_device("gw-8") is not None
    finally:
        server.stop()
