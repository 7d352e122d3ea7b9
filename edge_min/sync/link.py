"""The runtime's sync manager, on a worker of its own or inline.

A store connection belongs to the thread that opened it, so the manager is built on its
worker (with its own connection) and every sync run happens there; the loop thread only
asks ``tick`` which entities are due and hands the run over. Without a worker (Pyodide,
MicroPython, tests on a virtual clock) everything runs inline on the loop.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edge_min.errors import EdgeError
from edge_min.platform.executor import Executor, Handle

if TYPE_CHECKING:
    from edge_min.sync.manager import SyncManager

log = logging.getLogger("edge_min.sync")

BUILD_TIMEOUT = 30.0  # seconds to open the sync worker's store and transport
POST_TIMEOUT = 30.0  # seconds a metrics/alerts upload may take


class SyncLink:
    """What the runtime knows of sync: due runs, status, failures, restart, uploads."""

    def __init__(self, build: Callable[[], SyncManager], worker: Executor | None = None) -> None:
        self.worker = worker
        self._inflight: Handle | None = None
        # ``build`` opens the store and makes the manager; on the worker when there is one.
        self.manager: SyncManager = self._call(build, BUILD_TIMEOUT)

    def _call(self, fn: Callable[[], Any], timeout: float) -> Any:
        if self.worker is None:
            return fn()
        return self.worker.submit(fn).result(timeout=timeout)

    def tick(self, now: float) -> None:
        """Start the due entities' sync unless a run is still going (never blocks)."""
        if self._inflight is not None and not self._inflight.done():
            return
        self._inflight = None
        due = self.manager.tick(now)
        if not due:
            return
        if self.worker is None:
            self._run(due)
        else:
            self._inflight = self.worker.submit(lambda: self._run(due))

    def _run(self, due: list[str]) -> None:
        try:
            report = self.manager.sync_once(due)
            log.info("sync: %s", " | ".join(report.summary().splitlines()))
        except EdgeError as exc:  # reported in status; the next schedule tries again
            log.warning("sync failed: %s", exc)

    def next_deadline(self) -> float | None:
        """The monotonic time the next entity falls due."""
        deadline: float | None = self.manager.next_deadline()
        return deadline

    def status(self) -> dict[str, Any]:
        """GET /sync/status: per entity as of the last run; link and running state live."""
        return dict(self.manager.status())

    def failures(self) -> int:
        """Consecutive failed sync runs."""
        return int(self.manager.consecutive_failures)

    def link_changed(self, up: bool) -> None:
        """The runtime's link probe saw central come or go."""
        self.manager.link_changed(up)

    def blocked(self) -> str | None:
        """Why no sync can run now (offline mode, link down), or None."""
        reason: str | None = self.manager.may_sync()
        return reason

    def restart(self) -> None:
        """The monitor's restart_sync action."""
        self.manager.restart()

    def post_json(self, path: str, payload: Any) -> None:
        """POST JSON to central (metrics, alerts) over the sync transport; raise on failure."""
        body = json.dumps(payload, default=str).encode()

        def post() -> None:
            status, _headers, answer = self.manager.transport.request(
                "POST", path, body, {"Content-Type": "application/json"}
            )
            if status >= 300:
                raise EdgeError(f"central answered {status} to POST {path}: {answer[:200]!r}")

        self._call(post, POST_TIMEOUT)
