"""The runtime: store, files, agents, engine and timed jobs, assembled from one config.

``Runtime.tick(now)`` does whatever is due and returns how long the host may sleep, so the
same runtime is driven by the gateway's blocking loop, by Pyodide's event loop, or by a test
with a virtual clock. Where things live under the storage root (the data directory)::

    <root>/meta-agent-edge.db    the database (unless storage.path says otherwise)
    <root>/backups/              online backups, rotated (storage.backup_keep)
    <root>/models|data|tmp|logs  file storage, all under runtime.max_storage_usage
    <root>/tmp/agents/<name>/    each agent's private work directory
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_min import __version__
from edge_min.clock import Clock, SystemClock, iso
from edge_min.config import EdgeConfig
from edge_min.errors import EdgeError

log = logging.getLogger("edge_min.runtime")

DEFAULT_DATA_DIR = "edge-data"
LINK_PROBE_SECONDS = 30.0  # how often offline_mode auto re-checks the link to central
LINK_PROBE_TIMEOUT = 3.0
QUEUE_POLL_SECONDS = 1.0  # how soon a run queued by another process (the CLI) is noticed
TRIGGER_REFRESH_SECONDS = 5.0  # how soon a workflow added by another process gets its trigger


@dataclass(frozen=True)
class Paths:
    """Where one runtime keeps its files."""

    root: Path
    db: Path

    @property
    def backups(self) -> Path:
        """Online backups."""
        return self.root / "backups"

    @property
    def lock(self) -> Path:
        """Held by the one ``edge-min run`` that owns this data directory."""
        return self.root / "runtime.lock"

    @property
    def agents_work(self) -> Path:
        """Agents' private work directories (inside tmp/, so under the storage quota)."""
        return self.root / "tmp" / "agents"

    @classmethod
    def resolve(cls, config: EdgeConfig, data_dir: str | Path | None = None) -> Paths:
        """The root from ``--data-dir``, else ``storage.root``, else ``./edge-data``.

        The database is ``storage.path`` (relative paths are taken from the root), else
        ``<root>/meta-agent-edge.db``.
        """
        root = Path(data_dir or config.storage.root or DEFAULT_DATA_DIR).expanduser()
        db = Path(config.storage.path) if config.storage.path else Path("meta-agent-edge.db")
        if not db.is_absolute():
            db = root / db
        return cls(root=root.absolute(), db=db.absolute())


class StoreScheduleState:
    """The scheduler's catch-up state in the ``schedule_state`` table, so it survives reboots."""

    def __init__(self, db: Any) -> None:
        self.db = db

    def load(self, job_id: str) -> Any:
        """The saved state of a job, or None."""
        from edge_min.scheduler.state import ScheduleState

        row = self.db.get(job_id)
        if row is None:
            return None
        return ScheduleState(row["last_run_at"], row["next_run_at"])

    def save(self, job_id: str, state: Any) -> None:
        """Record when a job last ran and is next due."""
        self.db.save(job_id, state.last_run_at, state.next_run_at)


class Runtime:
    """One device's runtime: opened, ticked, closed."""

    def __init__(
        self,
        config: EdgeConfig,
        paths: Paths,
        *,
        clock: Clock | None = None,
        platform: Any = None,
        dispatcher: Any = None,
        sync_worker: Any = None,
        sync: bool = True,
    ) -> None:
        self.config = config
        self.paths = paths
        self.clock = clock or SystemClock()
        self.platform = platform
        self._dispatcher = dispatcher
        self.store: Any = None
        self.files: Any = None
        self.agents: Any = None
        self.engine: Any = None
        self.scheduler: Any = None
        self.monitor: Any = None
        self.sync: Any = None  # the sync manager, when one is attached
        self._trigger_jobs: dict[str, tuple[str, Any]] = {}
        self.started_at = self.clock.time()
        # Work handed over by other threads (the API): run on the loop thread, the only one
        # that touches the engine. deque append/popleft are atomic, so no lock is needed.
        self._calls: deque[tuple[Callable[[], Any], Any]] = deque()
        self.wake: Callable[[], object] = lambda: None
        self.threaded = dispatcher is not None
        self._sync_worker = sync_worker
        self._sync_enabled = sync
        # Whether central answered the last link probe; offline_mode decides what it means.
        self.online = config.runtime.offline_mode != "always"

    # -- lifecycle -----------------------------------------------------------------------

    def open(self) -> Runtime:
        """Open the store and file storage, resume unfinished runs, schedule timed jobs."""
        from edge_min.agents.registry import AgentRegistry
        from edge_min.scheduler import Scheduler
        from edge_min.store import open_store
        from edge_min.store.files import FileStore
        from edge_min.workflows.engine import Engine, Limits

        self.paths.root.mkdir(parents=True, exist_ok=True)
        self.store = open_store(
            str(self.paths.db), synchronous=self.config.storage.synchronous, clock=self.clock
        )
        self.files = FileStore(
            self.paths.root,
            self.config.runtime.max_storage_usage,
            db_size=self.store.size_bytes,
        )
        self.agents = AgentRegistry(
            self.store, work_root=self.paths.agents_work, platform=self.platform
        )
        rt = self.config.runtime
        self.engine = Engine(
            self.store,
            self.agents,
            dispatcher=self._dispatcher,
            clock=self.clock,
            limits=Limits(rt.max_concurrent_workflows, rt.max_memory_usage, rt.offline_mode),
            is_online=lambda: self.online,
        )
        resumed = self.engine.recover()
        if resumed:
            log.info("resumed %d unfinished run(s)", resumed)
        self.scheduler = Scheduler(self.clock, store=StoreScheduleState(self.store.schedule))
        self.monitor = self._make_monitor()
        if self._sync_enabled:
            self.sync = self._make_sync()
        self._schedule_core_jobs()
        self.refresh_triggers()
        return self

    def close(self) -> None:
        """Stop agents and close the store."""
        if self.agents is not None:
            self.agents.close()
        if self.store is not None:
            self.store.close()
            self.store = None

    # -- the loop ------------------------------------------------------------------------

    def tick(self, now: float | None = None) -> float:
        """Run what is due; returns the seconds the host may sleep before the next tick."""
        mono = self.clock.monotonic() if now is None else now
        self._run_calls()
        for due in self.scheduler.tick(mono):
            error: BaseException | None = None
            try:
                due.fn()
            except EdgeError as exc:  # a failed job is logged; the loop and the runtime go on
                log.error("job %s failed: %s", due.name, exc)
                error = exc
            finally:
                self.scheduler.release(due, error)
        self.engine.poll()
        if self.sync is not None:
            self.sync.tick(mono)
        wait = QUEUE_POLL_SECONDS
        nxt = self.scheduler.next_deadline()
        if nxt is not None:
            wait = min(wait, max(0.0, nxt - mono))
        if self.sync is not None and (due := self.sync.next_deadline()) is not None:
            wait = min(wait, max(0.0, due - mono))
        retry = self.engine.next_wakeup()
        if retry is not None:
            wait = min(wait, max(0.0, retry - self.clock.time()))
        return wait

    def call(self, fn: Callable[[], Any], future: Any = None) -> Any:
        """Run ``fn`` on the loop thread; ``future`` (set_result/set_exception) gets the outcome.

        Without a future (or without threads, as under Pyodide) ``fn`` runs at once, here.
        """
        if future is None:
            return fn()
        self._calls.append((fn, future))
        self.wake()
        return None

    def _run_calls(self) -> None:
        while self._calls:
            fn, future = self._calls.popleft()
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the caller, who reports it
                future.set_exception(exc)

    def _schedule_core_jobs(self) -> None:
        interval = self.config.storage.backup_interval
        if interval > 0:
            self.scheduler.add_interval("storage.backup", interval, self.backup)
        self.scheduler.add_interval(
            "workflows.refresh_triggers", TRIGGER_REFRESH_SECONDS, self.refresh_triggers
        )
        for job in self.monitor.jobs():
            self.scheduler.add_interval(job.name, job.every, job.fn, first=job.first)
        if self.config.runtime.offline_mode == "auto":
            self.probe_link()
            self.scheduler.add_interval("network.probe_link", LINK_PROBE_SECONDS, self.probe_link)

    def _make_monitor(self) -> Any:
        from edge_min.monitor import (
            Monitor,
            SqlMonitorStore,
            database_check,
            default_resources,
            scheduler_check,
            sync_check,
        )

        return Monitor(
            self.config.monitoring_config,
            self.clock,
            settings=self.config.monitoring,
            store=SqlMonitorStore(self.store.backend),
            resources=default_resources(self.paths.root, self.platform),
            runtime_metrics=self.runtime_metrics,
            builtins={
                "database": database_check(self.store.backend),
                "scheduler": scheduler_check(self.scheduler.next_deadline, self.clock),
                "sync": sync_check(self.sync_failures),
            },
            send_metrics=self._send_to_central("metrics"),
            send_notification=self._send_to_central("alerts"),
            is_online=lambda: self.online,
            cleanup_tmp=self.files.cleanup_tmp,
            restart_sync=self.restart_sync,
        )

    def _make_sync(self) -> Any:
        """The sync manager for sync.central_url, on the sync worker with its own store."""
        from edge_min.store import open_store
        from edge_min.sync.commands import build_manager
        from edge_min.sync.link import SyncLink

        def build() -> Any:
            store = self.store
            if self._sync_worker is not None:  # a connection of the worker's own
                store = open_store(
                    str(self.paths.db),
                    synchronous=self.config.storage.synchronous,
                    clock=self.clock,
                )
            manager = build_manager(self.config, self.paths, store, clock=self.clock)
            manager.link_changed(self.online)
            return manager

        return SyncLink(build, self._sync_worker)

    def _send_to_central(self, what: str) -> Any:
        def send(payload: Any) -> None:
            if self.sync is None:
                # Nothing is lost: the monitor keeps it queued until a sync manager sends it.
                raise EdgeError(f"no sync manager attached; {what} stay queued")
            self.sync.post_json(f"/api/{what}", payload)

        return send

    def sync_failures(self) -> int:
        """Consecutive failed sync attempts (the monitor's sync_failures metric)."""
        return int(self.sync.failures()) if self.sync is not None else 0

    def restart_sync(self) -> None:
        """The restart_sync alert action."""
        if self.sync is not None:
            self.sync.restart()

    def runtime_metrics(self) -> dict[str, float]:
        """The runtime's own metrics for the monitor."""
        counts = {
            f"runs_{status}": float(self.store.backend.count("workflow_executions", {"status": s}))
            for status, s in (
                ("queued", "queued"),
                ("running", "running"),
                ("succeeded", "succeeded"),
                ("failed", "failed"),
                ("cancelled", "cancelled"),
            )
        }
        counts["queue_depth"] = counts["runs_queued"]
        counts["sync_failures"] = float(self.sync_failures())
        counts["step_latency"] = self.engine.step_latency()
        return counts

    def probe_link(self) -> bool:
        """Check whether central (sync.central_url) is reachable; sets ``online``."""
        from urllib.parse import urlsplit

        url = urlsplit(self.config.sync.central_url)
        port = url.port or (443 if url.scheme == "https" else 80)
        platform = self.platform
        if platform is None:
            from edge_min.platform import get_platform

            platform = self.platform = get_platform()
        was, self.online = (
            self.online,
            platform.can_reach(url.hostname or "127.0.0.1", port, LINK_PROBE_TIMEOUT),
        )
        if was != self.online:
            log.info("link to central %s is %s", url.netloc, "up" if self.online else "down")
            if self.sync is not None:
                self.sync.link_changed(self.online)
        return self.online

    def refresh_triggers(self) -> None:
        """Give each interval or cron workflow a job that queues its runs; drop stale ones."""
        wanted: dict[str, tuple[str, Any]] = {}
        for row in self.store.workflows.list():
            definition = self.engine.definition(row)
            trig = definition.trigger
            if trig.type in ("interval", "cron"):
                wanted[definition.name] = (definition.digest(), trig)
        for name, (digest, _) in list(self._trigger_jobs.items()):
            if wanted.get(name, (None,))[0] != digest:
                self.scheduler.cancel(f"trigger:{name}")
                del self._trigger_jobs[name]
        for name, (digest, trig) in wanted.items():
            if name in self._trigger_jobs:
                continue

            def fire(name: str = name, value: Any = trig.input) -> None:
                execution_id = self.engine.submit(name, value)
                log.info("trigger queued %s run %s", name, execution_id)

            job = f"trigger:{name}"
            if trig.type == "interval":
                self.scheduler.add_interval(job, trig.every, fire)
            else:
                self.scheduler.add_cron(job, trig.cron, fire)
            self._trigger_jobs[name] = (digest, trig)

    # -- jobs and views ------------------------------------------------------------------

    def backup(self) -> Path:
        """Take an online backup now and rotate old ones."""
        from edge_min.store.backup import create_backup

        path = create_backup(
            self.store, self.paths.root, self.clock.time(), keep=self.config.storage.backup_keep
        )
        log.info("backup written to %s", path)
        return Path(path)

    def status(self) -> dict[str, Any]:
        """What ``edge-min status`` and ``GET /status`` show."""
        return status_of(
            self.store,
            self.paths,
            self.files,
            extra={
                "uptime_s": round(self.clock.time() - self.started_at, 1),
                "active_runs": len(self.engine.active_runs()),
                "steps_in_flight": self.engine.inflight(),
            },
        )


def status_of(store: Any, paths: Paths, files: Any, extra: dict[str, Any] | None = None) -> dict:
    """A status summary from an open store (used with or without a running runtime)."""
    counts: dict[str, int] = {}
    for status in ("queued", "running", "succeeded", "failed", "cancelled"):
        counts[status] = store.backend.count("workflow_executions", {"status": status})
    from edge_min.store.backup import list_backups

    backups = list_backups(paths.root)
    info: dict[str, Any] = {
        "version": __version__,
        "data_dir": str(paths.root),
        "database": str(paths.db),
        "database_bytes": store.size_bytes(),
        "workflows": store.backend.count("workflows"),
        "agents": store.backend.count("agents"),
        "executions": counts,
        "storage": {"usage": files.usage(), "total": files.total_usage(), "limit": files.max_bytes},
        "last_backup": backups[-1].name if backups else None,
        "time": iso(store.clock.time()),
    }
    info.update(extra or {})
    return info
