"""The browser's XHR transport under ``network.max_bandwidth``, on CPython with a stand-in XHR.

``targets.browser.transport.XhrTransport`` moves whole bodies (a synchronous XMLHttpRequest
cannot be written or read in chunks), so it paces by request: over many requests the bytes
each way average out at the cap, as ``HttpTransport``'s chunked pacing does on a gateway.
The real XHR in a real Chromium is covered by tests/targets/test_web_sync.py.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from edge_min.clock import VirtualClock
from edge_min.sync.bandwidth import TokenBucket
from targets.browser.transport import BrowserSync, XhrTransport, xhr_transport_factory

KB = 1024


class FakeResponse:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def to_bytes(self) -> bytes:
        return self.data


class FakeXhr:
    """Answers every request with ``answer`` bytes; records when each was sent."""

    def __init__(self, clock: VirtualClock, answer: int, sent: list[tuple[float, int]]) -> None:
        self.clock = clock
        self.answer = answer
        self.sent = sent
        self.status = 0
        self.response: Any = None
        self.responseType = ""
        self.timeout = 0

    def open(self, method: str, url: str, asynchronous: bool) -> None:
        assert asynchronous is False

    def setRequestHeader(self, name: str, value: str) -> None:
        pass

    def send(self, body: Any) -> None:
        self.sent.append((self.clock.monotonic(), len(body) if body else 0))
        self.status = 200
        self.response = FakeResponse(b"x" * self.answer)

    def getAllResponseHeaders(self) -> str:
        return "content-type: application/cbor\r\n"


def paced(rate: int, answer: int) -> tuple[XhrTransport, VirtualClock, list[tuple[float, int]]]:
    clock = VirtualClock()
    sent: list[tuple[float, int]] = []
    transport = XhrTransport(
        "http://central.test:8765",
        node="tab-1",
        accept="none",
        make_xhr=lambda: FakeXhr(clock, answer, sent),
        to_js_bytes=lambda b: b,
        bucket=TokenBucket(rate, 4 * KB, clock, sleep=clock.advance),
    )
    return transport, clock, sent


def test_pushes_average_out_at_the_cap() -> None:
    transport, clock, sent = paced(64 * KB, answer=0)
    for _ in range(40):
        transport.request("POST", "/api/sync/push", b"p" * (16 * KB))
    # The first burst is free; the rest is paid at exactly the rate, before each send.
    assert clock.monotonic() == pytest.approx((40 * 16 * KB - 4 * KB) / (64 * KB))
    assert sent[-1][0] == pytest.approx(clock.monotonic())


def test_a_large_answer_is_slept_off_before_the_next_request_not_before_its_own_reply() -> None:
    transport, clock, sent = paced(10 * KB, answer=50 * KB)
    status, _, data = transport.request("GET", "/api/sync/pull")
    assert status == 200 and len(data) == 50 * KB
    assert clock.monotonic() == 0.0  # the answer itself is not held back
    transport.request("GET", "/api/sync/pull")
    assert sent[1][0] == pytest.approx((50 * KB - 4 * KB) / (10 * KB))


def test_the_runtime_factory_applies_max_bandwidth_and_zero_is_unlimited() -> None:
    from targets.browser.host import browser_config

    settings = BrowserSync.parse({"central_url": "http://central.test:8765", "device_id": "t"})
    base = browser_config()
    assert base.sync_config.network.max_bandwidth == 1024 * KB  # sync-config.yaml's 1MB
    for value in (256 * KB, 0):
        network = dataclasses.replace(base.sync_config.network, max_bandwidth=value)
        config = dataclasses.replace(
            base, sync_config=dataclasses.replace(base.sync_config, network=network)
        )
        transport = xhr_transport_factory(settings)(config, "t")
        assert (transport.bucket.rate if transport.bucket else 0) == value
