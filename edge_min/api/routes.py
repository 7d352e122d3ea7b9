"""The local API: every subsystem's routes on one router, with access control applied.

Each subsystem declares its routes next to its code (``Subsystem.routes``), each with the
permission it needs; ``build_router`` puts them on one ``Router`` with an ``ApiContext``:
reads on a connection of the serving thread, writes handed to the runtime's loop thread.
The runtime itself adds ``GET /status`` (read). While the runtime's gate is closed (a tamper
lockdown), every route needing more than ``read`` answers 423 ``locked_down``, except those
declared ``while_locked`` (``POST /security/unlock``). ``docs/configuration.md`` lists them all;
``tests/integration/test_api_access.py`` checks every route against every role.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from edge_min.routing import ApiError, Request, Router

if TYPE_CHECKING:
    from edge_min.gate import Gate
    from edge_min.routing import Handler
    from edge_min.runtime import Runtime
    from edge_min.store import Store


# How long a write handed to the loop thread may take before the client hears about it.
LOOP_CALL_TIMEOUT = 30.0


class _ThreadStores:
    """One read connection per API thread: SQLite connections stay on the thread that made them."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.local = threading.local()
        self.opened: list[Any] = []
        self.lock = threading.Lock()

    def get(self) -> Store:
        store: Store | None = getattr(self.local, "store", None)
        if store is None:
            if not self.runtime.threaded:
                return self.runtime.store  # one thread only: share the runtime's connection
            store = self.runtime.open_store()
            self.local.store = store
            with self.lock:
                self.opened.append(store)
        return store

    def close(self) -> None:
        with self.lock:
            for store in self.opened:
                # Closing from another thread may be refused; the OS reclaims it at exit.
                with contextlib.suppress(Exception):
                    store.close()
            self.opened.clear()


def _on_loop(runtime: Runtime, fn: Callable[[], Any]) -> Any:
    """Run a write on the runtime's loop thread (the only one touching the engine)."""
    if not runtime.threaded:
        return runtime.call(fn)
    future: Future[Any] = Future()
    runtime.call(fn, future)
    try:
        return future.result(timeout=LOOP_CALL_TIMEOUT)
    except TimeoutError as exc:
        raise ApiError(503, "busy", "the runtime did not take the request in time; retry") from exc


class _Context:
    """The ``ApiContext`` route handlers get: thread-local reads, writes on the loop."""

    def __init__(self, runtime: Runtime, stores: _ThreadStores) -> None:
        self._runtime = runtime
        self._stores = stores

    def reads(self) -> Store:
        """The calling thread's store connection."""
        return self._stores.get()

    def on_loop(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the loop thread and return its value (503 if it takes too long)."""
        return _on_loop(self._runtime, fn)


def build_router(runtime: Runtime, router: Router | None = None) -> Router:
    """Every subsystem's routes, and ``GET /status``, on one router."""
    r = router or Router()
    stores = _ThreadStores(runtime)
    r.close_hooks.append(stores.close)
    api = _Context(runtime, stores)

    def status(_: Request) -> dict[str, Any]:
        return dict(_on_loop(runtime, runtime.status))

    r.add("GET", "/status", status, permission="read")
    for sub in runtime.subsystems():
        for route in sub.routes(api):
            handler = route.handler
            if route.permission != "read" and not route.while_locked:
                handler = _gated(runtime.gate, route.method, route.pattern, handler)
            r.add(route.method, route.pattern, handler, permission=route.permission)
    return r


def _gated(gate: Gate, method: str, pattern: str, handler: Handler) -> Handler:
    """``handler`` behind the gate: 423 ``locked_down`` while the device is locked down.

    Checked after access control (the router authorizes before it calls the handler), so an
    unauthenticated caller learns nothing about the lockdown.
    """

    def gated(request: Request) -> Any:
        gate.check(f"{method} {pattern}")
        return handler(request)

    return gated
