"""The routes of the local API, each with the permission it needs.

=======  ==============================  ==========  =========================================
method   path                            permission  answer
=======  ==============================  ==========  =========================================
GET      /health                         read        ``{"status": "ok", "version": ...}`` + checks
GET      /alerts                         read        each alert rule and its state
GET      /sync/status                    read        ``status``: success|failed|running|never
POST     /sync/now                       execute     sync every entity now (edge-min sync)
GET      /metrics                        read        Prometheus text exposition
GET      /status                         read        runtime status (storage, runs, backups)
GET      /workflows                      read        stored workflows
POST     /workflows                      write       add or replace a definition (YAML/JSON)
GET      /workflows/{name}               read        one workflow with its definition
POST     /workflows/{name}/run           execute     queue a run; body is the input JSON
GET      /executions?status=S            read        runs, newest first
GET      /executions/{id}                read        one run with its steps
POST     /executions/{id}/cancel         execute     cancel a run
GET      /agents                         read        registered agents
POST     /agents                         configure   add an agent from its config (YAML/JSON)
GET      /agents/{name}                  read        one agent's config
POST     /agents/{name}/invoke           execute     run the agent once; body is its input
=======  ==============================  ==========  =========================================
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from edge_min import __version__
from edge_min.api.router import ApiError, Request, Response, Router
from edge_min.workflows.views import describe_execution, list_executions, workflow_view


def _text_or_json(request: Request) -> Any:
    """A body that is YAML or JSON text; JSON objects are passed on as mappings."""
    if not request.body:
        raise ApiError(400, "empty_body", "send the definition as YAML or JSON in the body")
    try:
        text = request.body.decode()
    except UnicodeDecodeError as exc:
        raise ApiError(400, "bad_body", "the body must be UTF-8 text") from exc
    return text


# How long a write handed to the loop thread may take before the client hears about it.
LOOP_CALL_TIMEOUT = 30.0


class _ThreadStores:
    """One read connection per API thread: SQLite connections stay on the thread that made them."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.local = threading.local()
        self.opened: list[Any] = []
        self.lock = threading.Lock()

    def get(self) -> Any:
        store = getattr(self.local, "store", None)
        if store is None:
            if not self.runtime.threaded:
                return self.runtime.store  # one thread only: share the runtime's connection
            from edge_min.store import open_store

            store = open_store(
                str(self.runtime.paths.db),
                synchronous=self.runtime.config.storage.synchronous,
                clock=self.runtime.clock,
            )
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


def _on_loop(runtime: Any, fn: Callable[[], Any]) -> Any:
    """Run a write on the runtime's loop thread (the only one touching the engine)."""
    if not runtime.threaded:
        return runtime.call(fn)
    future: Future[Any] = Future()
    runtime.call(fn, future)
    try:
        return future.result(timeout=LOOP_CALL_TIMEOUT)
    except TimeoutError as exc:
        raise ApiError(503, "busy", "the runtime did not take the request in time; retry") from exc


class _Reads:
    """Attribute access to the calling thread's store: ``reads.store.workflows``."""

    def __init__(self, stores: _ThreadStores) -> None:
        self._stores = stores

    @property
    def store(self) -> Any:
        return self._stores.get()


def build_router(runtime: Any, router: Router | None = None) -> Router:
    """Every route of the runtime's API on one router.

    Reads use a connection of the serving thread; writes run on the runtime's loop thread.
    """
    r = router or Router()
    stores = _ThreadStores(runtime)
    reads = _Reads(stores)
    r.close_hooks.append(stores.close)

    def health(_: Request) -> Response:
        # "ok" while healthy (or before the first checks ran); 503 once unhealthy, so a
        # load balancer or systemd watchdog sees it without parsing the body.
        view = dict(runtime.monitor.status()) if runtime.monitor is not None else {}
        overall = view.pop("status", "healthy")
        status = "ok" if overall in ("healthy", "starting") else overall
        body = {"status": status, "health": overall, "version": __version__, **view}
        return Response(503 if overall == "unhealthy" else 200, body)

    def sync_status(_: Request) -> dict[str, Any]:
        if runtime.sync is None:
            return {"status": "never", "entities": {}, "enabled": False}
        return dict(runtime.sync.status())

    def sync_now(_: Request) -> Response:
        if runtime.sync is None:
            raise ApiError(409, "sync_disabled", "this runtime has no sync manager")
        reason = runtime.sync.blocked()
        if reason is not None:
            raise ApiError(409, "sync_unavailable", f"cannot sync now: {reason}")
        _on_loop(runtime, runtime.sync.restart)  # every entity due now, backoff forgotten
        return Response(202, dict(runtime.sync.status()))

    def alerts(_: Request) -> list[dict[str, Any]]:
        return list(runtime.monitor.alerts_view())

    def metrics(_: Request) -> Response:
        from edge_min.monitor import PROMETHEUS_CONTENT_TYPE

        return Response(200, runtime.monitor.prometheus(), content_type=PROMETHEUS_CONTENT_TYPE)

    def status(_: Request) -> dict[str, Any]:
        return dict(_on_loop(runtime, runtime.status))

    def workflows(_: Request) -> list[dict[str, Any]]:
        return [workflow_view(row, full=False) for row in reads.store.workflows.list()]

    def add_workflow(request: Request) -> Response:
        text = _text_or_json(request)

        def add() -> Any:
            row = runtime.engine.add_workflow(text, origin="request body")
            runtime.refresh_triggers()
            return row

        return Response(201, workflow_view(_on_loop(runtime, add), full=True))

    def workflow(request: Request) -> dict[str, Any]:
        row = reads.store.workflows.get_by_name(request.params["name"])
        if row is None:
            raise ApiError(404, "not_found", f"no workflow named {request.params['name']!r}")
        return workflow_view(row, full=True)

    def run_workflow(request: Request) -> Response:
        name, value = request.params["name"], request.json()
        execution_id = _on_loop(runtime, lambda: runtime.engine.submit(name, value))
        return Response(202, {"execution_id": execution_id})

    def executions(request: Request) -> list[dict[str, Any]]:
        limit_text = request.query.get("limit", "100")
        if not limit_text.isdigit():
            raise ApiError(400, "bad_query", f"limit must be a whole number, got {limit_text!r}")
        status = request.query.get("status")
        return list_executions(reads.store, status, int(limit_text))

    def execution(request: Request) -> dict[str, Any]:
        return describe_execution(reads.store, request.params["id"])

    def cancel(request: Request) -> dict[str, Any]:
        execution_id = request.params["id"]
        _on_loop(runtime, lambda: runtime.engine.cancel(execution_id))
        return describe_execution(reads.store, execution_id)

    def agents(_: Request) -> list[dict[str, Any]]:
        return [
            {"name": a["name"], "type": a["type"], "version": a["version"], "id": a["id"]}
            for a in reads.store.agents.list()
        ]

    def add_agent(request: Request) -> Response:
        from edge_min.config import parse_agent_config

        text = _text_or_json(request)
        try:
            data = json.loads(text)
        except ValueError:
            import yaml

            data = yaml.safe_load(text)
        config = parse_agent_config(data, source="request body")
        row = _on_loop(runtime, lambda: runtime.agents.add(config))
        return Response(201, {"name": row["name"], "id": row["id"], "version": row["version"]})

    def invoke(request: Request) -> Any:
        name, value = request.params["name"], request.json()
        # The executor is made on the loop thread; the (blocking) call runs on this one.
        _on_loop(runtime, lambda: runtime.agents.prepare(name))
        return runtime.agents.run_once(name, value)

    def agent(request: Request) -> dict[str, Any]:
        row = reads.store.agents.get_by_name(request.params["name"])
        if row is None:
            raise ApiError(404, "not_found", f"no agent named {request.params['name']!r}")
        return dict(row)

    r.add("GET", "/health", health, permission="read")
    r.add("GET", "/status", status, permission="read")
    r.add("GET", "/alerts", alerts, permission="read")
    r.add("GET", "/sync/status", sync_status, permission="read")
    r.add("POST", "/sync/now", sync_now, permission="execute")
    r.add("GET", "/metrics", metrics, permission="read")
    r.add("GET", "/workflows", workflows, permission="read")
    r.add("POST", "/workflows", add_workflow, permission="write")
    r.add("GET", "/workflows/{name}", workflow, permission="read")
    r.add("POST", "/workflows/{name}/run", run_workflow, permission="execute")
    r.add("GET", "/executions", executions, permission="read")
    r.add("GET", "/executions/{id}", execution, permission="read")
    r.add("POST", "/executions/{id}/cancel", cancel, permission="execute")
    r.add("GET", "/agents", agents, permission="read")
    r.add("POST", "/agents", add_agent, permission="configure")
    r.add("GET", "/agents/{name}", agent, permission="read")
    r.add("POST", "/agents/{name}/invoke", invoke, permission="execute")
    return r
