"""Running the central server: ``CentralServer`` (start/stop in-process) and ``serve`` (blocking).

The HTTP layer is the local API's ``ApiServer`` (a fixed pool of worker threads, one database
connection each) with a larger listen backlog (``LISTEN_BACKLOG``) and a short idle timeout
(``IDLE_TIMEOUT``), so a few hundred devices keeping connections open cannot hold every worker.
Under TLS each peer is checked right after its handshake: a certificate central revoked
(``edge_min.central.enrollment.refused_peer``) has its connection closed.
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
from edge_min.central.ca import CentralCA, FactoryCA
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


#: The largest update bundle an operator may upload (POST /api/bundles).
MAX_BUNDLE_BYTES = 256 * 1024 * 1024


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
        refuse_untrusted: bool = True,
        attestation_max_age: float | None = None,
        operator_key: bytes | None = None,
        ca: CentralCA | None = None,
        require_client_cert: bool = False,
        factory_ca: FactoryCA | None = None,
        allowed_origins: Sequence[str] = (),
    ) -> None:
        self.store = store
        self.app = CentralApp(
            store,
            require_provisioned=require_provisioned,
            shared_key=shared_key,
            max_frame_bytes=max_frame_bytes,
            refuse_untrusted=refuse_untrusted,
            attestation_max_age=attestation_max_age,
            operator_key=operator_key,
            ca=ca,
            require_client_cert=require_client_cert,
            factory_ca=factory_ca,
            allowed_origins=allowed_origins,
        )
        router = self.app.router()
        router.close_hooks.append(store.close)
        self._api = ApiServer(
            router,
            host,
            port,
            max_request_bytes=self.app.max_frame_bytes,
            # A bundle is a whole program or root file system (a gateway binary's is ~19 MB,
            # a firmware slot's ~22 MB): larger than any sync frame.
            body_limits={"/api/bundles": (MAX_BUNDLE_BYTES, "central's MAX_BUNDLE_BYTES")},
            workers=workers,
            backlog=LISTEN_BACKLOG,
            idle_timeout=IDLE_TIMEOUT,
            ssl_context=ssl_context,
            peer_check=self._peer_check if ssl_context is not None else None,
        )

    def _peer_check(self, tls: Any) -> str | None:
        from edge_min.central.enrollment import refused_peer

        return refused_peer(self.app, tls)

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
    refuse_untrusted: bool = True,
    attestation_max_age: float | None = None,
    operator_key_file: str | None = None,
    enroll_ca_key: str | None = None,
    factory_ca: str | None = None,
    allowed_origins: Sequence[str] = (),
) -> int:
    """Serve until SIGTERM or SIGINT; returns the exit code (call from the main thread).

    ``tls`` is (cert, key, ca): HTTPS with ``tls_protocol`` as the minimum, and devices must
    present a certificate signed by ``ca`` whose CN is their device id. ``enroll_ca_key`` (the
    key of that CA) turns enrollment on: a client without a certificate may then connect, and
    reach only the enrollment routes. ``operator_key_file``
    (made on first use) turns on operator tokens (``edge_min.central.operators``).
    """
    ssl_context = None
    ca = None
    if enroll_ca_key is not None:
        if tls is None:
            raise ConfigError(
                "enrollment signs device certificates with the CA of --tls-ca; serve HTTPS "
                "(--tls-cert, --tls-key, --tls-ca) to use --enroll-ca-key",
                path="--enroll-ca-key",
                value=enroll_ca_key,
            )
        ca = CentralCA(tls[2], enroll_ca_key)
    if factory_ca is not None and ca is None:
        raise ConfigError(
            "a factory certificate stands in for a claim token at enrollment; turn "
            "enrollment on with --enroll-ca-key to use --factory-ca",
            path="--factory-ca",
            value=factory_ca,
        )
    if tls is not None:
        from edge_min.security.tls import server_context

        ssl_context = server_context(*tls, require_client_cert=ca is None, protocol=tls_protocol)
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
    operator_key = None
    if operator_key_file:
        from edge_min.central.operators import load_operator_key

        operator_key = load_operator_key(operator_key_file)
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
                refuse_untrusted=refuse_untrusted,
                attestation_max_age=attestation_max_age,
                operator_key=operator_key,
                ca=ca,
                require_client_cert=ca is not None,
                factory_ca=FactoryCA(factory_ca) if factory_ca else None,
                allowed_origins=allowed_origins,
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
