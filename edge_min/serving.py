"""The serving runtime: a runtime with its local API, loop, lock and hooks, until stopped.

``serve`` is what ``edge-min run`` does, and what every target that runs the runtime for
real uses with its own ``LoopHost`` (threads, signals) and ``TargetHooks``: the gateway's
systemd unit, the firmware image's init, a browser worker. It

1. takes the data directory's lock (one runtime per data directory),
2. opens the runtime with executors from the loop host, whose finished calls wake the loop,
3. serves the local API (over TLS with ``api.tls``) and writes ``<data>/runtime.json`` so
   CLI commands on the same data directory find it,
4. tells the hooks ``serving(address)``, then turns the loop (``alive()`` each turn) until
   the host asks it to stop, then ``stopping()``; ``fatal(error)`` if it cannot go on.

With ``local_central`` and the default ``sync.central_url``, a local reference central is
served beside it (``edge_min.central.local``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from edge_min import __version__
from edge_min.errors import RuntimeBusy
from edge_min.hooks import Hooks, ServingAddress, TargetHooks

if TYPE_CHECKING:
    from edge_min.config import EdgeConfig
    from edge_min.platform import Platform
    from edge_min.platform.loop import LoopHost
    from edge_min.runtime import Paths

log = logging.getLogger("edge_min.serving")


def serve(
    config: EdgeConfig,
    paths: Paths,
    *,
    host: str | None = None,
    port: int | None = None,
    hooks: Sequence[TargetHooks] = (),
    loop_host: LoopHost | None = None,
    platform: Platform | None = None,
    local_central: bool = False,
    allow_insecure_http: bool = False,
    restore_signals: bool = True,
    announce: Callable[[str], object] = lambda line: print(line, flush=True),
) -> int:
    """Serve until the loop host asks to stop; returns the exit code.

    A target passes its ``platform`` (workers, resources, link probe), its ``loop_host``
    (threads, stop signals) and its ``hooks``; the defaults are the POSIX ones. A process
    that exits right after (``edge-min run``) passes ``restore_signals=False``, so a second
    SIGTERM during the final cleanup is one more stop request, not a kill.
    ``allow_insecure_http`` lets sync (and what rides on its link: rollouts, metrics) use a
    plain-http central on another host, with a warning; it is refused otherwise.
    """
    from edge_min.platform.locks import DataDirLock

    told = Hooks(hooks)
    lock = DataDirLock(paths.lock)
    if not lock.acquire():
        raise RuntimeBusy(
            f"another edge-min run (pid {lock.holder()}) already holds {paths.root}; "
            "stop it first or use another --data-dir"
        )
    if loop_host is None:
        from edge_min.platform.loop import PosixLoopHost

        loop_host = PosixLoopHost()
    waiter = loop_host.waiter()
    stopping: list[int] = []

    def on_stop(signum: int) -> None:
        stopping.append(signum)
        waiter.set()

    undo_signals = loop_host.on_stop(on_stop)
    runtime = server = central = None
    try:
        with told.fatal_on_error():
            from edge_min.runtime import Runtime

            if local_central:
                from edge_min.central.local import start_local_central

                central = start_local_central(config, paths.root)
            transport = None
            if allow_insecure_http:
                import functools

                from edge_min.sync.transport import http_transport

                transport = functools.partial(http_transport, allow_insecure=True)
            runtime = Runtime(
                config,
                paths,
                platform=platform,
                executors=loop_host.executors(waiter.set),
                transport=transport,
            ).open()
            runtime.wake = waiter.set
            server = _start_api(
                runtime, host or config.api.host, config.api.port if port is None else port
            )
            bound_host, bound_port = server.address
            address = ServingAddress(bound_host, bound_port, tls=server.scheme == "https")
            # Where this runtime answers, for CLI commands on the same data directory.
            (paths.root / "runtime.json").write_text(
                json.dumps({"pid": os.getpid(), "url": address.url})
            )
            announce(f"edge-min {__version__}: data in {paths.root}, API on {address.url}")
            told.serving(address)
            while not stopping:
                delay = runtime.tick()
                told.alive()
                waiter.wait(delay)
                waiter.clear()
            log.info("stopping on signal %s", stopping[0])
            told.stopping()
            return 0
    finally:
        if not restore_signals:
            loop_host.ignore_stop()  # stopping already: a second SIGTERM changes nothing
        if server is not None:
            server.stop()
            (paths.root / "runtime.json").unlink(missing_ok=True)
        if runtime is not None:
            runtime.close()
        if central is not None:
            central.stop()
        if restore_signals:
            undo_signals()
        waiter.close()
        lock.release()


def _start_api(runtime: Any, host: str, port: int) -> Any:
    """The local API server for ``runtime``, started: every route, access control, TLS."""
    from edge_min.api.auth import install_authorizer
    from edge_min.api.routes import build_router
    from edge_min.api.server import ApiServer

    config = runtime.config
    router = build_router(runtime)
    authn = config.security_config.access_control.authentication
    install_authorizer(router, runtime, cert_roles=authn.certificate_roles)
    ssl_context = None
    if config.api.tls:
        from edge_min.security.tls import context_from_config

        # Callers may present a certificate (mapped to a role) or a bearer token.
        ssl_context = context_from_config(
            config.security_config, role="server", require_client_cert=False
        )
    server = ApiServer(router, host, port, config.api.max_request_bytes, ssl_context=ssl_context)
    server.start()
    return server
