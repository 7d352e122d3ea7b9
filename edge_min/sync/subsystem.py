"""The sync subsystem: the two-way sync with central on its own worker.

Contributes the sync manager's turn of the loop (the due entities), the ``sync`` health
check and ``sync_failures`` metric, the ``restart_sync`` alert action, the uplink the
monitor sends metrics and alerts through, ``GET /sync/status`` and ``POST /sync/now``, and
the ``sync`` commands. While the host's gate is closed (a lockdown) no sync run starts and
the uplink carries nothing but the tamper report (``kind: tamper``). The transport is
injected: ``Sync.transport_factory`` (the HTTP one by default) makes it from the config, so a
browser passes a fetch transport and an MCU a socket one.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from edge_min.routing import ApiError, Request, Response
from edge_min.subsystem import (
    ApiContext,
    ApiRoute,
    CheckFn,
    Command,
    CommandContext,
    Subsystem,
    Uplink,
)

if TYPE_CHECKING:
    from edge_min.sync.link import SyncLink


class Sync(Subsystem):
    """The sync manager for ``sync.central_url``, behind a ``SyncLink``."""

    name = "sync"
    needs = ("storage",)

    link: SyncLink

    def open(self) -> None:
        """Build the manager on the sync worker, with a store connection of its own."""
        from edge_min.store.subsystem import Storage
        from edge_min.sync.commands import build_manager
        from edge_min.sync.link import SyncLink

        host = self.host
        worker = host.executor("sync", 1) if host.threaded else None

        def build() -> Any:
            store = host.open_store() if worker is not None else host.get(Storage).store
            manager = build_manager(
                host.config, host.paths, store, clock=host.clock, transport=host.transport
            )
            manager.link_changed(host.online)
            return manager

        self.link = SyncLink(build, worker)

    def tick(self, now: float) -> float | None:
        """Start the due entities' sync on the worker; when the next one falls due."""
        if self.host.gate.closed is not None:
            return None  # locked down: nothing moves to or from central
        self.link.tick(now)
        return self.link.next_deadline()

    def link_changed(self, up: bool) -> None:
        """Tell the manager (sync_on_connect)."""
        self.link.link_changed(up)

    def metrics(self) -> Mapping[str, float]:
        """``sync_failures``: consecutive failed sync runs."""
        return {"sync_failures": float(self.link.failures())}

    def health_checks(self) -> Mapping[str, CheckFn]:
        """``sync``: passes while consecutive failures stay at most 3."""
        from edge_min.monitor.health import sync_check

        return {"sync": sync_check(self.link.failures)}

    def alert_actions(self) -> Mapping[str, Callable[..., Any]]:
        """``restart_sync``: every entity due now, backoff forgotten."""
        return {"restart_sync": self.link.restart}

    def uplink(self) -> Uplink | None:
        """POST JSON to central over the sync transport (only the tamper report when locked)."""
        from edge_min.gate import TAMPER_REPORT_KIND

        gate, post = self.host.gate, self.link.post_json

        def send(path: str, payload: Any) -> None:
            tamper = isinstance(payload, dict) and payload.get("kind") == TAMPER_REPORT_KIND
            if not tamper:
                gate.check(f"POST {path} to central")
            post(path, payload)

        return send

    def routes(self, api: ApiContext) -> Sequence[ApiRoute]:
        """``GET /sync/status`` and ``POST /sync/now``."""
        link = self.link

        def sync_status(_: Request) -> dict[str, Any]:
            return dict(link.status())

        def sync_now(_: Request) -> Response:
            reason = link.blocked()
            if reason is not None:
                raise ApiError(409, "sync_unavailable", f"cannot sync now: {reason}")
            api.on_loop(link.restart)  # every entity due now, backoff forgotten
            return Response(202, dict(link.status()))

        return [
            ApiRoute("GET", "/sync/status", "read", sync_status),
            ApiRoute("POST", "/sync/now", "execute", sync_now),
        ]

    @classmethod
    def commands(cls) -> Sequence[Command]:
        """``sync [now|status|conflicts|resolve]`` (``edge_min.sync.commands``)."""
        from edge_min.sync import commands as c

        return [
            Command(
                ("sync",),
                "sync with central now (push and pull), with progress and a summary",
                "edge-min sync --now",
                sync_now_command,
                c.add_run_arguments,
            ),
            Command(
                ("sync", "now"),
                "sync with central now (push and pull), with progress and a summary",
                "edge-min sync now --entity workflows",
                sync_now_command,
                c.add_run_arguments,
            ),
            Command(
                ("sync", "status"),
                "show each entity's last sync attempt, success, pending count and error",
                "edge-min sync status",
                _offline(c.sync_status),
                c.add_status_arguments,
            ),
            Command(
                ("sync", "conflicts"),
                "list conflicts waiting for a decision (manual policy)",
                "edge-min sync conflicts",
                _offline(c.sync_conflicts),
                c.add_conflicts_arguments,
            ),
            Command(
                ("sync", "resolve"),
                "settle a conflict by taking the edge's or central's version",
                "edge-min sync resolve 3f2a... --take central",
                _offline(c.sync_resolve),
                c.add_resolve_arguments,
            ),
        ]


def _offline(
    fn: Callable[[argparse.Namespace, Any, Any], int],
) -> Callable[[CommandContext], int]:
    def run(ctx: CommandContext) -> int:
        config, paths = ctx.context()
        return int(fn(ctx.args, config, paths))

    run.__doc__ = fn.__doc__
    return run


def sync_now_command(ctx: CommandContext) -> int:
    """Sync now: through the running runtime when one holds the data dir, else from here."""
    from edge_min.errors import UsageError
    from edge_min.sync import commands

    config, paths = ctx.context()
    with ctx.holding() as here:
        if here:
            _refuse_when_locked(config, paths)
            return int(commands.sync_run(ctx.args, config, paths))
    url = ctx.running_url()
    if url is None:
        raise UsageError(f"a runtime holds {paths.root} but left no runtime.json")
    return commands.sync_via_runtime(config, paths, url)


def _refuse_when_locked(config: Any, paths: Any) -> None:
    """A lockdown stops sync for the CLI too (the runtime's gate is not open here)."""
    from edge_min.gate import Gate, lockdown_record
    from edge_min.store import open_store

    if not paths.db.exists():
        return
    with open_store(str(paths.db), synchronous=config.storage.synchronous) as store:
        record = lockdown_record(store.meta)
    if record is not None:
        gate = Gate()
        gate.close(str(record.get("reason")))
        gate.check("sync with central")
