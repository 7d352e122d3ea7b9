"""The token bucket: exact pacing on a virtual clock, and the cap measured on a real link."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from edge_min.clock import VirtualClock
from edge_min.errors import ConfigError
from edge_min.sync.bandwidth import TokenBucket, bucket_for, default_burst
from edge_min.sync.transport import HttpTransport

KB = 1024


def virtual_bucket(rate: float, burst: int | None = None) -> tuple[TokenBucket, VirtualClock]:
    clock = VirtualClock()
    return TokenBucket(rate, burst, clock, sleep=clock.advance), clock


def test_long_run_rate_is_the_configured_rate() -> None:
    bucket, clock = virtual_bucket(100 * KB, burst=4 * KB)
    for _ in range(1000):
        bucket.consume(2 * KB)
    elapsed = clock.monotonic()
    # The first burst is free; everything after it is paid at exactly the rate.
    assert elapsed == pytest.approx((2000 * KB - 4 * KB) / (100 * KB), rel=1e-9)


def test_a_chunk_bigger_than_the_burst_goes_into_debt_and_waits_it_off() -> None:
    bucket, clock = virtual_bucket(10 * KB, burst=1 * KB)
    waited = bucket.consume(21 * KB)
    assert waited == pytest.approx(2.0)
    assert bucket.tokens == pytest.approx(0.0)
    clock.advance(100)
    assert bucket.tokens == 1 * KB  # refills only up to the burst


def test_idle_time_refills_up_to_the_burst_only() -> None:
    bucket, clock = virtual_bucket(1000, burst=500)
    bucket.consume(500)
    assert bucket.delay_for(100) == pytest.approx(0.1)
    clock.advance(0.05)
    assert bucket.consume(50) == 0.0
    assert bucket.consume(100) == pytest.approx(0.1)


def test_a_charge_never_sleeps_and_settle_sleeps_its_debt_off() -> None:
    # What a whole-body transport does (a browser's XHR): an answer that came at once is
    # charged, and the next request settles the debt first.
    bucket, clock = virtual_bucket(10 * KB, burst=1 * KB)
    bucket.charge(31 * KB)
    assert clock.monotonic() == 0.0 and bucket.tokens == pytest.approx(-30 * KB)
    assert bucket.settle() == pytest.approx(3.0)
    assert clock.monotonic() == pytest.approx(3.0) and bucket.settle() == 0.0
    assert bucket.consumed == 31 * KB


def test_zero_means_unlimited_and_bad_values_are_refused() -> None:
    assert bucket_for(0) is None
    assert bucket_for(1024) is not None
    with pytest.raises(ConfigError, match="max_bandwidth"):
        TokenBucket(0)
    assert default_burst(10) >= 1024 and default_burst(100 * 1024 * 1024) == 64 * KB


class _Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    download = b""

    def do_POST(self) -> None:
        n = int(self.headers["Content-Length"])
        remaining = n
        while remaining:
            remaining -= len(self.rfile.read(min(remaining, 65536)))
        self._answer(b"ok")

    def do_GET(self) -> None:
        self._answer(self.download)

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def sink() -> Iterator[str]:
    _Sink.download = b"d" * (1024 * KB)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_measured_rate_on_a_real_link_is_within_10_percent_of_the_cap(sink: str) -> None:
    cap = 512 * KB
    transport = HttpTransport(sink, node="edge-1", bucket=TokenBucket(cap))
    body = b"u" * (1024 * KB)
    t0 = time.perf_counter()
    status, _, _ = transport.request("POST", "/up", body)
    up = time.perf_counter() - t0
    assert status == 200
    t0 = time.perf_counter()
    status, _, data = transport.request("GET", "/down")
    down = time.perf_counter() - t0
    transport.close()
    assert status == 200 and len(data) == 1024 * KB
    up_rate, down_rate = len(body) / up, len(data) / down
    assert 0.9 * cap <= up_rate <= 1.1 * cap, f"upload {up_rate / KB:.0f} KiB/s"
    assert 0.9 * cap <= down_rate <= 1.1 * cap, f"download {down_rate / KB:.0f} KiB/s"


def test_without_a_bucket_the_same_transfer_is_not_throttled(sink: str) -> None:
    transport = HttpTransport(sink, node="edge-1")
    t0 = time.perf_counter()
    transport.request("GET", "/down")
    assert time.perf_counter() - t0 < 1.0
    transport.close()
