"""Running the central server: ``CentralServer`` (start/stop in-process) and ``serve`` (blocking).

The HTTP layer is the local API's ``ApiServer`` (a fixed pool of worker threads, one database
connection each) with a larger listen backlog (``LISTEN_BACKLOG``) and a short idle timeout
(``IDLE_TIMEOUT``), so a few hundred devices keeping connections open cannot hold every worker.
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edge_min.api.server import ApiServer
from edge_min.central.app import CentralApp
from edge_min.central.store import CentralStore, open_central_store
from edge_min.errors import ConfigError
from edge_min.hooks import Hooks, ServingAddress, TargetHooks

log = logging.getLogger("edge_min.central")

DEFAULT_HOST = "127.0.0.1"
# The port of the runtime's default sync.central_url (http://127.0.0.1:8765): the defaults meet.
DEFAULT_PORT = 8765
DEFAULT_WORKERS = 32
IDLE_TIMEOUT = 2.0
LISTEN_BACKLOG = 512


def is_loopback(host: str) -> bool:
    """Whether ``host`` binds only the local machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_key_file(path: str | Path) -> bytes:
    """A 32-byte sync key from a file (raw bytes, or 64 hex digits)."""
    data = Path(path).read_bytes()
    text = data.strip()
    if len(text) == 64:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            pass
    if len(data) != 32:
        raise ConfigError(
            f"a sync key file holds 32 raw bytes or 64 hex digits; this one has {len(data)} bytes",
            path="--sync-key-file",
            value=str(path),
        )
    return data


class CentralServer:
    """The central HTTP server over a store, served from background threads."""

    def __init__(
        self,
        store: CentralStore,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        *,
        workers: int = DEFAULT_WORKERS,
        require_provisioned: bool = False,
        shared_key: bytes | None = None,
        max_frame_bytes: int | None = None,
        ssl_context: Any = None,
    ) -> None:
        self.store = store
        self.app = CentralApp(
            store,
            require_provisioned=require_provisioned,
            shared_key=shared_key,
            max_frame_bytes=max_frame_bytes,
        )
        router = self.app.router()
        router.close_hooks.append(store.close)
        self._api = ApiServer(
            router,
            host,
            port,
            max_request_bytes=self.app.max_frame_bytes,
            workers=workers,
            backlog=LISTEN_BACKLOG,
            idle_timeout=IDLE_TIMEOUT,
            ssl_context=ssl_context,
        )

    @property
    def address(self) -> tuple[str, int]:
        """The bound host and port."""
        return self._api.address

    @property
    def url(self) -> str:
        """The base URL clients use."""
        host, port = self.address
        return f"{self._api.scheme}://{host}:{port}"

    def start(self) -> CentralServer:
        """Serve in background threads."""
        self._api.start()
        return self

    def stop(self) -> None:
        """Stop serving, finish in-flight requests, close the store."""
        self._api.stop()


def serve(
    db_url: str,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    workers: int = DEFAULT_WORKERS,
    require_provisioned: bool = False,
    sync_key_file: str | None = None,
    allow_insecure: bool = False,
    on_ready: Callable[[CentralServer], Any] | None = None,
    tls: tuple[str, str, str] | None = None,
    tls_protocol: str = "TLS 1.3",
    hooks: Sequence[TargetHooks] = (),
) -> int:
    """Serve until SIGTERM or SIGINT; returns the exit code (call from the main thread).

    ``tls`` is (cert, key, ca): HTTPS with ``tls_protocol`` as the minimum, and devices must
    present a certificate signed by ``ca`` whose CN is their device id.
    """
    ssl_context = None
    if tls is not None:
        from edge_min.security.tls import server_context

        ssl_context = server_context(*tls, require_client_cert=True, protocol=tls_protocol)
    elif not is_loopback(host):
        if not allow_insecure:
            raise ConfigError(
                f"{host} is not a loopback address and plain HTTP is only served on "
                "loopback; configure TLS, or pass "
                "--insecure-http to serve unencrypted HTTP on this address anyway",
                path="--host",
                value=host,
            )
        log.warning(
            "serving PLAIN HTTP on %s: sync traffic and device identities are exposed", host
        )
    told = Hooks(hooks)
    key = read_key_file(sync_key_file) if sync_key_file else None
    store = open_central_store(db_url)
    stop = threading.Event()
    stopped_by: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        stopped_by.append(signum)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    server: CentralServer | None = None
    try:
        with told.fatal_on_error():
            server = CentralServer(
                store,
                host,
                port,
                workers=workers,
                require_provisioned=require_provisioned,
                shared_key=key,
                ssl_context=ssl_context,
            ).start()
            print(f"edge-min central: {store.kind} store, serving on {server.url}", flush=True)
            if on_ready is not None:
                on_ready(server)
            bound_host, bound_port = server.address
            told.serving(ServingAddress(bound_host, bound_port, tls=ssl_context is not None))
            while not stop.wait(1.0):
                told.alive()
            log.info("central stopping on signal %s", stopped_by[0] if stopped_by else "?")
            told.stopping()
            return 0
    finally:
        if server is not None:
            server.stop()
        else:
            store.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
