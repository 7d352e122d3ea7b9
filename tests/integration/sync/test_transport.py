"""HttpTransport against a real central on 127.0.0.1: headers, keep-alive, reconnects,
cuts, stalls, TLS (mutual, from `init_certs`) and the plain-HTTP policy."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_min.central.server import CentralServer
from edge_min.central.store import open_central_store
from edge_min.config.security import CommunicationSecurity
from edge_min.errors import ConfigError
from edge_min.sync.protocol import decode_frame
from edge_min.sync.transport import HttpTransport, TlsRefused, TransportError
from tests.integration.sync.faultproxy import FaultProxy

PULL = "/api/sync/pull?entity=agents&after=0&limit=10"


@pytest.fixture()
def central(tmp_path: Path) -> Iterator[CentralServer]:
    server = CentralServer(open_central_store(str(tmp_path / "central.db")), "127.0.0.1", 0)
    server.start()
    yield server
    server.stop()


def test_pull_carries_the_node_and_the_accepted_compressions(central: CentralServer) -> None:
    t = HttpTransport(central.url, node="edge-7", accept="zlib, none")
    status, headers, body = t.request("GET", PULL)
    assert status == 200 and headers["content-type"].startswith("application/x-edge-min-sync")
    header, items = decode_frame(body)
    assert header["kind"] == "pull_result" and header["comp"] == "zlib" and items == []
    assert central.store.get_device("edge-7").last_seen is not None
    assert t.stats.requests == 1 and t.stats.bytes_received > len(body)
    t.close()


def test_requests_share_one_keep_alive_connection(central: CentralServer) -> None:
    proxy = FaultProxy(central.address).start()
    try:
        t = HttpTransport(proxy.url, node="edge-7")
        for _ in range(20):
            assert t.request("GET", PULL)[0] == 200
        assert proxy.stats.connections == 1
        t.close()
    finally:
        proxy.stop()


def test_a_connection_central_closed_while_idle_is_reopened(central: CentralServer) -> None:
    t = HttpTransport(central.url, node="edge-7")
    assert t.request("GET", PULL)[0] == 200
    # Wait until central has closed the idle connection (its idle timeout is 2 s).
    deadline = time.monotonic() + 15
    while central._api.open_connections and time.monotonic() < deadline:
        time.sleep(0.1)
    assert central._api.open_connections == 0
    assert t.request("GET", PULL)[0] == 200
    assert t.stats.reconnects == 1 and t.stats.failures == 0
    t.close()


def test_a_cut_connection_is_a_transport_error_and_the_next_request_works(
    central: CentralServer,
) -> None:
    proxy = FaultProxy(central.address, cut_rate=1.0, mean_cut_offset=60, seed=1).start()
    try:
        t = HttpTransport(proxy.url, node="edge-7", timeout=2)
        with pytest.raises(TransportError) as err:
            t.request("GET", PULL)
        assert err.value.code == "sync_transport"
        proxy.enabled = False
        assert t.request("GET", PULL)[0] == 200
        assert proxy.stats.cuts == 1
    finally:
        proxy.stop()


def test_a_stalled_link_times_out(central: CentralServer) -> None:
    proxy = FaultProxy(central.address, stall_rate=1.0, stall=1.5, mean_cut_offset=50).start()
    try:
        t = HttpTransport(proxy.url, node="edge-7", timeout=0.5)
        t0 = time.monotonic()
        with pytest.raises(TransportError, match=r"no progress within 0\.5 s"):
            t.request("GET", PULL)
        assert time.monotonic() - t0 < 1.4
    finally:
        proxy.stop()


def test_refused_connection_names_the_url() -> None:
    t = HttpTransport("http://127.0.0.1:9", node="edge-7", timeout=1)
    with pytest.raises(TransportError, match="connection refused"):
        t.request("GET", PULL)


def test_plain_http_only_to_loopback_unless_allowed(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ConfigError, match=r"sync\.central_url"):
        HttpTransport.for_url("http://192.0.2.10:8080", node="edge-7")
    with caplog.at_level(logging.WARNING):
        t = HttpTransport.for_url("http://192.0.2.10:8080", node="edge-7", allow_insecure=True)
    assert t.ssl_context is None and "plain HTTP" in caplog.text
    assert HttpTransport.for_url("http://127.0.0.1:1", node="edge-7").ssl_context is None


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from edge_min.security.certs import init_certs

    return init_certs(tmp_path_factory.mktemp("certs"), device_id="edge-7")


def _tls_central(tmp_path: Path, certs: dict[str, Path]) -> CentralServer:
    from edge_min.security.tls import server_context

    ctx = server_context(certs["central_cert"], certs["central_key"], certs["ca_cert"])
    store = open_central_store(str(tmp_path / "central.db"))
    return CentralServer(store, "127.0.0.1", 0, ssl_context=ctx).start()


def test_https_with_mutual_tls(tmp_path: Path, certs: dict[str, Path]) -> None:
    server = _tls_central(tmp_path, certs)
    try:
        comm = CommunicationSecurity(
            certificate_path=str(certs["device_cert"]),
            key_path=str(certs["device_key"]),
            ca_path=str(certs["ca_cert"]),
        )
        t = HttpTransport.for_url(server.url, node="edge-7", security_config=comm)
        status, _, body = t.request("GET", PULL)
        assert status == 200 and decode_frame(body)[0]["kind"] == "pull_result"
        # The device is known by its certificate's CN.
        assert server.store.get_device("edge-7").last_seen is not None
        t.close()
    finally:
        server.stop()


def test_https_refuses_a_central_signed_by_another_ca(
    tmp_path: Path, certs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> None:
    from edge_min.security.certs import init_certs

    rogue = init_certs(tmp_path_factory.mktemp("rogue"), device_id="edge-7")
    server = _tls_central(tmp_path, rogue)
    try:
        comm = CommunicationSecurity(
            certificate_path=str(certs["device_cert"]),
            key_path=str(certs["device_key"]),
            ca_path=str(certs["ca_cert"]),
        )
        t = HttpTransport.for_url(server.url, node="edge-7", security_config=comm)
        with pytest.raises(TlsRefused, match="did not verify"):
            t.request("GET", PULL)
    finally:
        server.stop()
