"""The calls of ``window.edgeMin``, carried out on the runtime in the worker.

The page sends ``{"type": "call", "id": n, "method": ..., "params": {...}}``; the answer is
``{"type": "reply", "id": n, "ok": true, "value": ...}`` or ``{"type": "reply", "id": n,
"ok": false, "error": {"code", "message"}}`` with the runtime's error codes
(``edge_min.errors``). An exception that is not an ``EdgeError`` is a bug: its code is the
root's (``edge_error``), its message starts with ``internal error``, and the traceback goes to
the worker's console.

======================================  ===================================================
method (params)                         value
======================================  ===================================================
``status`` ()                           ``Runtime.status()`` with ``persistence`` (the
                                        storage backend, its state, persist timings) and
                                        ``platform``
``addAgent`` (yaml, files?)             ``{name, id, version}``; ``files`` (name -> text)
                                        are written beside the config, so a python agent's
                                        ``runtime.entry`` module can come with it
``addWorkflow`` (yaml)                  ``{id, name, version, ...}`` (the stored workflow)
``run`` (name, input)                   the run id, once the queued run is persisted
``wait`` (id)                           the run with its steps, once it has ended and that
                                        is persisted
``get`` (id)                            the run with its steps, now
``runs`` (status?, limit?)              runs, newest first
``workflows`` () / ``agents`` ()        the stored workflows / agents
``online`` (up)                         tells the platform whether the link is up
``storage`` (persisted, quota, usage)   tells the platform what the page knows of the
                                        origin's storage (for the report to central)
``configure`` (central_url, device_id?, the stored settings (token not echoed); stored in
token?, encryption?)                    the data dir, the runtime reopened on them
``syncNow`` ()                          the sync run's report, the sync status and how long
                                        it took, once what it pulled is persisted
======================================  ===================================================

Every reply is held by ``targets.browser.host`` until a persist that began after it was
computed: see there.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edge_min.errors import AgentError, EdgeError, UsageError
from edge_min.sync.transport import TransferStats
from targets.browser.transport import BrowserSync, sync_bridge

if TYPE_CHECKING:
    from edge_min.runtime import Runtime
    from targets.browser.host import BrowserHost

log = logging.getLogger("edge_min.browser")

TERMINAL = ("succeeded", "failed", "cancelled")
_FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def error_dict(exc: BaseException) -> dict[str, str]:
    """``{code, message}`` of an error, as the page sees it."""
    if isinstance(exc, EdgeError):
        return {"code": exc.code, "message": exc.message}
    return {"code": EdgeError.code, "message": f"internal error: {type(exc).__name__}: {exc}"}


@dataclass(frozen=True)
class Pending:
    """A reply computed in this turn, sent once the turn's changes are persisted.

    ``finish`` completes the message just before it is posted: what it says of the
    persistence must be the persist it waited on, not the one before.
    """

    message: dict[str, Any]
    finish: Callable[[dict[str, Any]], None] | None = None

    def posted(self) -> dict[str, Any]:
        """The message as it is posted."""
        if self.finish is not None:
            self.finish(self.message)
        return self.message

    def rejected(self, exc: BaseException) -> dict[str, Any]:
        """The reply turned into a rejection (the persist it waited on failed)."""
        return {
            "type": "reply",
            "id": self.message.get("id"),
            "ok": False,
            "error": error_dict(exc),
        }


def _reply(call_id: Any, value: Any) -> Pending:
    return Pending({"type": "reply", "id": call_id, "ok": True, "value": value})


def _failure(call_id: Any, exc: BaseException) -> Pending:
    return Pending({"type": "reply", "id": call_id, "ok": False, "error": error_dict(exc)})


def _text(params: dict[str, Any], key: str) -> str:
    value = params.get(key)
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{key} must be the YAML or JSON text, got {type(value).__name__}")
    return value


def _parse(text: str) -> Any:
    """YAML or JSON text as data."""
    try:
        return json.loads(text)
    except ValueError:
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise UsageError(f"not valid YAML or JSON: {exc}") from exc


class Calls:
    """The page's calls on one runtime, and the waits for runs to end."""

    def __init__(
        self, runtime: Runtime, host: BrowserHost, waits: dict[Any, str] | None = None
    ) -> None:
        self.runtime = runtime
        self.host = host
        self._waits: dict[Any, str] = waits if waits is not None else {}  # call -> execution
        #: Set by ``configure``: the host reopens the runtime before the next call.
        self.reopen = False
        self._methods: dict[str, Callable[[dict[str, Any]], Any]] = {
            "addAgent": self.add_agent,
            "addWorkflow": self.add_workflow,
            "run": self.run,
            "get": self.get,
            "runs": self.runs,
            "workflows": self.workflows,
            "agents": self.agents,
            "online": self.online,
            "storage": self.storage,
            "configure": self.configure,
            "syncNow": self.sync_now,
        }

    @property
    def waits(self) -> dict[Any, str]:
        """The waits not answered yet (carried over when the runtime is reopened)."""
        return self._waits

    def handle(self, message: dict[str, Any]) -> list[Pending]:
        """Carry out one call; its reply (none yet for a ``wait`` on a run still going)."""
        call_id = message.get("id")
        if message.get("type") != "call":
            log.error("dropped a message of type %r", message.get("type"))
            return []
        method = str(message.get("method"))
        params = message.get("params") or {}
        try:
            if not isinstance(params, dict):
                raise UsageError(f"params of {method} must be an object")
            if method == "wait":
                return self.wait(call_id, params)
            if method == "status":
                return [Pending(_reply(call_id, self.status(params)).message, self._persistence)]
            fn = self._methods.get(method)
            if fn is None:
                known = ", ".join(sorted([*self._methods, "status", "wait"]))
                raise UsageError(f"edgeMin has no method {method!r} (it has {known})")
            return [_reply(call_id, fn(params))]
        except Exception as exc:
            if not isinstance(exc, EdgeError):
                log.exception("edgeMin.%s failed", method)
            return [_failure(call_id, exc)]

    # -- the methods -----------------------------------------------------------------------

    def status(self, params: dict[str, Any]) -> dict[str, Any]:
        """The runtime's status, the persistence state and the platform."""
        info = self.runtime.status()
        info["persistence"] = self.host.storage.view()
        info["platform"] = {"name": self.runtime.platform.name, "online": self.host.platform.online}
        settings = self.host.settings
        info["central"] = settings.view() if settings is not None else None
        info["sync_bridge"] = sync_bridge()
        return info

    def _persistence(self, message: dict[str, Any]) -> None:
        message["value"]["persistence"] = self.host.storage.view()

    def add_agent(self, params: dict[str, Any]) -> dict[str, Any]:
        """Validate and store an agent config; ``files`` go beside it (its python module)."""
        from edge_min.config import parse_agent_config
        from edge_min.subsystem import remeasured

        data = _parse(_text(params, "yaml"))
        name = data.get("name") if isinstance(data, dict) else None
        if not isinstance(name, str) or not re.match(r"^[A-Za-z0-9_.-]+$", name):
            # parse_agent_config names every problem; a bad name must not reach the path below
            parse_agent_config(data, source="addAgent")
            raise AgentError(f"agent name {name!r} is not valid")
        folder = os.path.join(self.runtime.paths.root, "agents", name)
        config = parse_agent_config(data, os.path.join(folder, "agent.yaml"), base_dir=folder)
        files = params.get("files") or {}
        if not isinstance(files, dict):
            raise UsageError("files must map file names to their text")
        self.runtime.gate.check("an agent add")
        os.makedirs(folder, exist_ok=True)
        for file_name, text in files.items():
            if not isinstance(file_name, str) or not _FILE_NAME.match(file_name):
                raise UsageError(f"file name {file_name!r}: use letters, digits, '_', '.', '-'")
            if not isinstance(text, str):
                raise UsageError(f"file {file_name}: its content must be text")
            with open(os.path.join(folder, file_name), "w", encoding="utf-8") as handle:
                handle.write(text)
        with open(os.path.join(folder, "agent.yaml"), "w", encoding="utf-8") as handle:
            handle.write(params["yaml"])
        importlib.invalidate_caches()  # a module written now is importable now
        with self.runtime.store.atomic():  # the agent and its re-measured baseline together
            row = self.runtime.agents.add(config)
            remeasured(self.runtime, f"agent:{config.name}", "edgeMin.addAgent")
        return {"name": row["name"], "id": row["id"], "version": row["version"]}

    def add_workflow(self, params: dict[str, Any]) -> dict[str, Any]:
        """Validate and store a workflow definition; its trigger is scheduled."""
        from edge_min.workflows.views import workflow_view

        self.runtime.gate.check("a workflow add")
        row = self.runtime.engine.add_workflow(_text(params, "yaml"), origin="addWorkflow")
        self.runtime.refresh_triggers()
        return workflow_view(row, full=False)

    def run(self, params: dict[str, Any]) -> str:
        """Queue a run; its id."""
        name = params.get("name")
        if not isinstance(name, str):
            raise UsageError("run needs the workflow's name")
        return self.runtime.engine.submit(name, params.get("input"))

    def get(self, params: dict[str, Any]) -> dict[str, Any]:
        """One run with its steps."""
        from edge_min.workflows.views import describe_execution

        return describe_execution(self.runtime.store, str(params.get("id")))

    def runs(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Runs, newest first."""
        from edge_min.workflows.subsystem import RUN_STATUSES
        from edge_min.workflows.views import list_executions

        status = params.get("status")
        if status is not None and status not in RUN_STATUSES:
            raise UsageError(f"status must be one of {', '.join(RUN_STATUSES)}, got {status!r}")
        limit = params.get("limit", 100)
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise UsageError(f"limit must be a whole number above 0, got {limit!r}")
        return list_executions(self.runtime.store, status, limit)

    def workflows(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """The stored workflows."""
        from edge_min.workflows.views import workflow_view

        return [workflow_view(r, full=False) for r in self.runtime.store.workflows.list()]

    def agents(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """The stored agents."""
        return [
            {"name": a["name"], "type": a["type"], "version": a["version"], "id": a["id"]}
            for a in self.runtime.store.agents.list()
        ]

    def online(self, params: dict[str, Any]) -> bool:
        """The page says whether the link is up (``navigator.onLine``)."""
        self.host.platform.online = bool(params.get("up"))
        if self.runtime.config.runtime.offline_mode == "auto":
            self.runtime.probe_link()  # the sync manager hears of it now, not in 30 s
        return self.host.platform.online

    def storage(self, params: dict[str, Any]) -> dict[str, Any]:
        """The page says what it knows of the origin's storage (``navigator.storage``)."""
        facts: dict[str, Any] = {"backend": self.host.storage.backend}
        persisted = params.get("persisted")
        if not isinstance(persisted, bool):
            raise UsageError(f"storage: persisted must be true or false, not {persisted!r}")
        facts["persisted"] = persisted
        for name in ("quota", "usage"):
            value = params.get(name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or value < 0
            ):
                raise UsageError(f"storage: {name} must be a byte count or null, not {value!r}")
            facts[name] = None if value is None else int(value)
        self.host.platform.storage = facts
        return facts

    def configure(self, params: dict[str, Any]) -> dict[str, Any]:
        """Store the link to central; the runtime reopens on it (offline_mode auto)."""
        from edge_min.sync.commands import KEY_FILE, NODE_META_KEY

        settings = BrowserSync.parse(params)
        key = BrowserSync.parse_key(params)
        self.runtime.gate.check("a sync configuration")
        if key is not None:  # central's key for this device, where load_sync_key reads it
            path = self.runtime.paths.root / KEY_FILE
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            path.with_suffix(".tmp").write_bytes(key)
            os.chmod(path.with_suffix(".tmp"), 0o600)
            os.replace(path.with_suffix(".tmp"), path)
        if settings.device_id is not None:
            # read by the sync manager (``node_id``) when the runtime opens again
            self.runtime.store.meta.set(NODE_META_KEY, settings.device_id)
        settings.save(str(self.runtime.paths.root))
        self.reopen = True
        return settings.view()

    def sync_now(self, params: dict[str, Any]) -> dict[str, Any]:
        """Sync every entity now (backoff forgotten); the report, once it is persisted.

        A link failure is not an error: the report says which entities failed and why, and
        the work waits for the next sync. Offline (no central configured, or the page said
        the link is down) is ``sync_unavailable``.
        """
        import time

        from edge_min.sync.errors import SyncUnavailable

        link = self.runtime.sync
        if link is None or self.host.settings is None:
            raise SyncUnavailable(
                "no central is configured in this tab; call edgeMin.configure({central_url}) first"
            )
        reason = link.blocked()
        if reason is not None:
            raise SyncUnavailable(f"cannot sync now: {reason}")
        manager = link.manager
        started = time.monotonic()
        manager.restart()
        report = manager.sync_once(manager.tick(self.runtime.clock.monotonic()))
        took = round((time.monotonic() - started) * 1000, 1)
        transport = manager.transport
        link_view = {
            "accept": getattr(transport, "accept", None),
            **dataclasses.asdict(getattr(transport, "stats", TransferStats())),
        }
        return {
            "report": report.to_dict(),
            "status": link.status(),
            "took_ms": took,
            "transport": link_view,
        }

    # -- waits -----------------------------------------------------------------------------

    def wait(self, call_id: Any, params: dict[str, Any]) -> list[Pending]:
        """Answer once the run has ended (now, if it has)."""
        execution_id = str(params.get("id"))
        self.get({"id": execution_id})  # NotFound at once for an unknown id
        self._waits[call_id] = execution_id
        return self.ended_waits(only=call_id)

    def ended_waits(self, only: Any = None) -> list[Pending]:
        """Replies to the waits whose run has ended, with the run and its steps."""
        done: list[Pending] = []
        for call_id, execution_id in list(self._waits.items()):
            if only is not None and call_id != only:
                continue
            row = self.runtime.store.executions.get(execution_id)
            if row is None or row["status"] in TERMINAL:
                del self._waits[call_id]
                try:
                    done.append(_reply(call_id, self.get({"id": execution_id})))
                except Exception as exc:
                    done.append(_failure(call_id, exc))
        return done
