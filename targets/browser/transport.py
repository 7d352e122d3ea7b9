"""Sync from a tab: the core's ``Transport`` port over synchronous XMLHttpRequest.

The sync manager is synchronous (``Transport.request`` returns the whole answer), and so is
everything that calls it (``Runtime.tick`` -> ``SyncLink`` -> ``SyncManager.sync_once``). A
dedicated Web Worker may block: there a synchronous ``XMLHttpRequest`` with ``responseType``
``"arraybuffer"`` is allowed (a window forbids both), so the core calls this transport
unchanged. Pyodide's JSPI ``run_sync`` (an async ``fetch`` awaited from synchronous Python)
would need the whole loop entered through a suspending call; the XHR needs nothing and is
what Pyodide's own ``open_url`` uses. While a request is out the worker runs nothing else,
which is what the core expects of a blocking transport.

What goes over it is the core's protocol as is: the same version and CBOR frames, the
``X-Edge-Node`` and ``X-Edge-Sync-Accept`` headers (the tab has no ``zstandard``, so it
accepts ``zlib, none`` and central answers zlib), the per-entity policies of the manager.
``Content-Length`` is the browser's to set. ``network.max_bandwidth`` holds as on a gateway,
by request instead of by chunk (an XHR sends and receives whole bodies): a request's body is
taken from the token bucket before it is sent, the answer's after it came, and the worker
sleeps off the debt before the next request, so the average rate stays at the cap. A
refused connection, a timeout, a CORS refusal (central not allowing the page's origin
answers without the header the browser needs, and the browser hides the answer) are all
``TransportError`` (``sync_transport``): a link failure, retried with backoff while the work
queues.

``BrowserSync`` is what ``edgeMin.configure`` stores (``<data dir>/browser-sync.json``): the
central URL, the device id, an optional bearer token, and whether payloads are encrypted
(on unless configured off; ``sync_key``, central's 64 hex digits for this device, goes to
``<data dir>/keys/sync.key`` as on a gateway).

Payload encryption is the core's AES-256-GCM (``edge_min.security.aead``), whose libraries
(pycryptodome, cryptography) the tab lacks. ``provide_webcrypto`` hands it the browser's
WebCrypto instead: ``crypto.subtle`` is asynchronous, and Pyodide's JSPI ``run_sync``
(WebAssembly stack switching, on in Chromium 137 and later) blocks the synchronous core on
its Promise. The worker's loop is entered through a suspending call, so ``run_sync`` works
there; where it does not (a browser without JSPI) a seal raises ``missing_dependency``, as
with no AES at all: never plain text in silence. WebCrypto's AES-GCM output is the
ciphertext then the 16-byte tag, the very bytes of the other libraries, so either side reads
the other.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from edge_min.errors import UsageError
from edge_min.sync.bandwidth import TokenBucket
from edge_min.sync.transport import (
    ACCEPT_HEADER,
    DEFAULT_TIMEOUT,
    NODE_HEADER,
    Answer,
    TransferStats,
    TransportError,
)

SETTINGS_FILE = "browser-sync.json"
_DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

#: Makes one XMLHttpRequest (``js.XMLHttpRequest.new``); injectable for tests.
MakeXhr = Callable[[], Any]


@dataclass(frozen=True)
class BrowserSync:
    """The tab's link to central, as ``edgeMin.configure`` set it."""

    central_url: str
    device_id: str | None = None
    token: str | None = None
    encryption: bool = True

    @classmethod
    def parse(cls, params: Mapping[str, Any]) -> BrowserSync:
        """``configure``'s params, checked; a UsageError naming the field and the fix."""
        known = {"central_url", "device_id", "token", "encryption"}
        unknown = sorted(set(params) - known - {"sync_key"})
        if unknown:
            raise UsageError(
                f"configure does not know {', '.join(unknown)}; it takes {', '.join(sorted(known))}"
            )
        url = params.get("central_url")
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(
                f"central_url must be central's http(s) URL, e.g. https://central.example.com:8765,"
                f" got {url!r}"
            )
        device_id = params.get("device_id")
        if device_id is not None and (
            not isinstance(device_id, str) or not _DEVICE_ID.match(device_id)
        ):
            raise UsageError(
                f"device_id {device_id!r}: use 1-128 letters, digits, '_', '.', '-' "
                "(the id central knows this tab by)"
            )
        token = params.get("token")
        if token is not None and (not isinstance(token, str) or not token.strip()):
            raise UsageError("token must be the bearer token's text, or left out")
        encryption = params.get("encryption", True)
        if not isinstance(encryption, bool):
            raise UsageError(f"encryption must be true or false, got {encryption!r}")
        return cls(str(url).rstrip("/"), device_id, token, encryption)

    @staticmethod
    def parse_key(params: Mapping[str, Any]) -> bytes | None:
        """``configure``'s ``sync_key`` (64 hex digits) as 32 bytes, or None if not given."""
        text = params.get("sync_key")
        if text is None:
            return None
        try:
            key = bytes.fromhex(text) if isinstance(text, str) else b""
        except ValueError:
            key = b""
        if len(key) != 32:
            raise UsageError(
                "sync_key must be the 64 hex digits of the 32-byte key central holds for this "
                "device (POST /api/devices/{id}/provision with sync_key)"
            )
        return key

    @classmethod
    def load(cls, root: str) -> BrowserSync | None:
        """What was configured in the data dir ``root``, or None."""
        try:
            with open(os.path.join(root, SETTINGS_FILE), encoding="utf-8") as handle:
                data = json.load(handle)
        except FileNotFoundError:
            return None
        return cls.parse(data)

    def save(self, root: str) -> None:
        """Write it into the data dir (persisted with the database on the next turn)."""
        os.makedirs(root, exist_ok=True)
        path = os.path.join(root, SETTINGS_FILE)
        with open(path + ".tmp", "w", encoding="utf-8") as handle:
            json.dump(asdict(self), handle)
        os.replace(path + ".tmp", path)

    def view(self) -> dict[str, Any]:
        """For the page: the token is never sent back."""
        return {
            "central_url": self.central_url,
            "device_id": self.device_id,
            "token": "set" if self.token else None,
            "encryption": self.encryption,
        }


def _xhr() -> Any:
    import js  # Pyodide's bridge to the worker's globals

    return js.XMLHttpRequest.new()


def _to_js_bytes(body: bytes) -> Any:
    from pyodide.ffi import to_js

    return to_js(body)


class XhrTransport:
    """Central's sync API over synchronous XMLHttpRequest in a dedicated worker."""

    def __init__(
        self,
        base_url: str,
        *,
        node: str,
        accept: str | None = None,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        make_xhr: MakeXhr | None = None,
        to_js_bytes: Callable[[bytes], Any] | None = None,
        bucket: TokenBucket | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"central_url {base_url!r} is not an http:// or https:// URL")
        self.base_url = base_url.rstrip("/")
        self.node = node
        if accept is None:
            from edge_min.sync.protocol import available_compressions

            accept = ", ".join(available_compressions())
        self.accept = accept
        self.token = token
        self.timeout = timeout
        self._make_xhr = make_xhr or _xhr
        self._to_js_bytes = to_js_bytes or _to_js_bytes
        #: ``network.max_bandwidth``'s bucket; None for an unlimited link.
        self.bucket = bucket
        self.stats = TransferStats()
        #: Milliseconds of the last request, and whether it reached central.
        self.last_ms: float | None = None
        self.last_ok: bool | None = None

    def request(
        self, method: str, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> Answer:
        """One blocking request; its status, lower-cased headers and body."""
        url = self.base_url + path
        self.stats.requests += 1
        if self.bucket is not None:  # the last answer's debt and this body's, slept off first
            self.bucket.charge(len(body))
            self.bucket.settle()
        started = time.monotonic()
        try:
            xhr = self._make_xhr()
            xhr.open(method, url, False)
            xhr.responseType = "arraybuffer"
            xhr.timeout = int(self.timeout * 1000)
            sent = {NODE_HEADER: self.node, ACCEPT_HEADER: self.accept, **(headers or {})}
            if self.token:
                sent["Authorization"] = f"Bearer {self.token}"
            for name, value in sent.items():
                xhr.setRequestHeader(name, value)
            xhr.send(self._to_js_bytes(body) if body else None)
            status = int(xhr.status)
            raw_headers = str(xhr.getAllResponseHeaders() or "")
            response = xhr.response
            data = b"" if response is None else bytes(response.to_bytes())
        except Exception as exc:  # a JsException (NetworkError, TimeoutError) or a bridge fault
            self._failed(started)
            raise TransportError(
                f"{method} {url}: the request did not reach central ({_js_reason(exc)}); "
                "is central running, and does it allow this page's origin "
                "(edge-min central serve --allowed-origin ORIGIN)? The work waits for the "
                "next sync"
            ) from exc
        if status == 0:
            self._failed(started)
            raise TransportError(
                f"{method} {url}: no answer (the browser reports status 0: connection refused, "
                "a timeout, or central did not allow this page's origin); the work waits for "
                "the next sync"
            )
        self.last_ms = round((time.monotonic() - started) * 1000, 2)
        self.last_ok = True
        self.stats.bytes_sent += len(body)
        self.stats.bytes_received += len(data)
        if self.bucket is not None:
            # the answer is here already: its debt (if above the burst) is slept off before
            # the next request, not now, so this one's reply is not held back
            self.bucket.charge(len(data))
        return status, parse_headers(raw_headers), data

    def _failed(self, started: float) -> None:
        self.stats.failures += 1
        self.last_ms = round((time.monotonic() - started) * 1000, 2)
        self.last_ok = False

    def close(self) -> None:
        """Nothing held between requests: the browser pools the connections."""


def parse_headers(raw: str) -> dict[str, str]:
    """``getAllResponseHeaders()`` text as lower-cased names to values."""
    found: dict[str, str] = {}
    for line in raw.split("\r\n"):
        name, sep, value = line.partition(":")
        if sep and name.strip():
            found[name.strip().lower()] = value.strip()
    return found


def _js_reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[-1][:300]


def xhr_transport_factory(settings: BrowserSync) -> Callable[[Any, str], XhrTransport]:
    """The runtime's ``TransportFactory`` for ``settings`` (``Runtime(transport=...)``)."""

    def factory(config: Any, node: str) -> XhrTransport:
        from edge_min.clock import SystemClock
        from edge_min.sync.bandwidth import bucket_for

        network = config.sync_config.network
        return XhrTransport(
            config.sync.central_url,
            node=node,
            accept=None if network.compression else "none",
            token=settings.token,
            # the bucket paces real bytes, so it runs on real time, as http_transport's
            bucket=bucket_for(network.max_bandwidth, SystemClock()),
        )

    return factory


# -- payload encryption: WebCrypto through JSPI ---------------------------------------------


def can_run_sync() -> bool:
    """Whether Pyodide's ``run_sync`` can block on a Promise here (False off Pyodide)."""
    try:
        from pyodide.ffi import can_run_sync as can
    except ImportError:
        return False
    return bool(can())


def _await(promise: Any) -> Any:
    from pyodide.ffi import run_sync

    if not can_run_sync():
        from edge_min.errors import MissingDependency

        raise MissingDependency(
            "pycryptodome", "crypto", "AES-GCM here (WebCrypto needs JSPI run_sync, not available)"
        )
    return run_sync(promise)


def webcrypto_backend(key: bytes) -> tuple[Any, Any]:
    """``edge_min.security.aead.Backend`` on ``crypto.subtle``: (seal, open) for ``key``."""
    import js
    from pyodide.ffi import JsException, to_js

    from edge_min.security.aead import TAG_BYTES, TagMismatch

    subtle = js.crypto.subtle

    def obj(value: dict[str, Any]) -> Any:
        return to_js(value, dict_converter=js.Object.fromEntries)

    handle = _await(
        subtle.importKey(
            "raw", to_js(key), obj({"name": "AES-GCM"}), False, to_js(["encrypt", "decrypt"])
        )
    )

    def params(nonce: bytes, aad: bytes) -> Any:
        return obj(
            {"name": "AES-GCM", "iv": to_js(nonce), "additionalData": to_js(aad), "tagLength": 128}
        )

    def seal(nonce: bytes, data: bytes, aad: bytes) -> bytes:
        return bytes(_await(subtle.encrypt(params(nonce, aad), handle, to_js(data))).to_bytes())

    def open_(nonce: bytes, sealed: bytes, aad: bytes) -> bytes:
        if len(sealed) < TAG_BYTES:
            raise TagMismatch(f"{len(sealed)} bytes is shorter than the tag")
        try:
            plain = _await(subtle.decrypt(params(nonce, aad), handle, to_js(sealed)))
        except JsException:  # OperationError: the tag does not verify
            raise TagMismatch("AES-GCM tag does not verify") from None
        return bytes(plain.to_bytes())

    return seal, open_


def provide_webcrypto() -> bool:
    """Give the core's AES-GCM the browser's WebCrypto when JSPI can block on it here."""
    if not can_run_sync():
        return False
    from edge_min.security import aead

    aead.provide("webcrypto", webcrypto_backend)
    return True


def sync_bridge() -> dict[str, Any]:
    """For ``status()``: how the tab's sync blocks, and who does its AES."""
    from edge_min.security import aead

    try:
        implementation: str | None = aead.implementation()
    except Exception:  # MissingDependency: none here
        implementation = None
    return {"transport": "xhr", "run_sync": can_run_sync(), "aes": implementation}
