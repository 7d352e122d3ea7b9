"""The runtime: the subsystems of ``edge_min.subsystems`` assembled over one config.

``Runtime.open()`` opens each subsystem (storage, workflows, sync, ..., monitor) in the
order of their ``needs`` and schedules their timed jobs; ``Runtime.tick(now)`` does whatever
is due and returns how long the host may sleep, so the same runtime is driven by the
gateway's blocking loop (``edge_min.serving``), by Pyodide's event loop, or by a test with a
virtual clock. One error policy holds for every timed job: an exception is logged with its
traceback, counted (``edge_min_job_errors_total{job=...}``) and the job retried with backoff;
the loop goes on. Where things live under the storage root (the data directory)::

    <root>/meta-agent-edge.db    the database (unless storage.path says otherwise)
    <root>/backups/              online backups, rotated (storage.backup_keep)
    <root>/keys/storage.key      the master key of encryption at rest (0600; never in backups)
    <root>/models|data|tmp|logs  file storage, all under runtime.max_storage_usage
    <root>/tmp/agents/<name>/    each agent's private work directory
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from edge_min import __version__
from edge_min.clock import Clock, SystemClock
from edge_min.config import EdgeConfig
from edge_min.errors import ConfigError
from edge_min.gate import Gate
from edge_min.platform.executor import Executor, ExecutorFactory, inline_executors
from edge_min.subsystem import CheckFn, Job, Subsystem

if TYPE_CHECKING:
    from edge_min.agents.registry import AgentRegistry
    from edge_min.monitor import Monitor
    from edge_min.platform import Platform
    from edge_min.scheduler import Scheduler
    from edge_min.scheduler.state import ScheduleState
    from edge_min.security.keyring import KeyRing
    from edge_min.store import Store
    from edge_min.store.files import FileStore
    from edge_min.store.repos import ScheduleStateRepo
    from edge_min.sync.link import SyncLink
    from edge_min.sync.transport import TransportFactory
    from edge_min.workflows.engine import Engine

log = logging.getLogger("edge_min.runtime")

DEFAULT_DATA_DIR = "edge-data"
LINK_PROBE_SECONDS = 30.0  # how often offline_mode auto re-checks the link to central
LINK_PROBE_TIMEOUT = 3.0
QUEUE_POLL_SECONDS = 1.0  # how soon a run queued by another process (the CLI) is noticed
JOB_RETRY_FIRST = 1.0  # a failed job is retried after 1, 2, 4, ... seconds (at most its interval)

S = TypeVar("S", bound=Subsystem)


class Outcome(Protocol):
    """Where a call handed to the loop thread reports (``concurrent.futures.Future`` is one)."""

    def set_result(self, result: Any) -> None:
        """The call's value."""
        ...

    def set_exception(self, exception: BaseException | None) -> None:
        """What the call raised."""
        ...


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

    def __init__(self, db: Callable[[], ScheduleStateRepo]) -> None:
        self.db = db  # the repo of the runtime's store, looked up when first needed

    def load(self, job_id: str) -> ScheduleState | None:
        """The saved state of a job, or None."""
        from edge_min.scheduler.state import ScheduleState

        row = self.db().get(job_id)
        if row is None:
            return None
        return ScheduleState(row["last_run_at"], row["next_run_at"])

    def save(self, job_id: str, state: ScheduleState) -> None:
        """Record when a job last ran and is next due."""
        self.db().save(job_id, state.last_run_at, state.next_run_at)


class Core(Subsystem):
    """The runtime's own part: the link probe (offline_mode auto) and the scheduler check."""

    name = "core"

    def open(self) -> None:
        """Probe the link once, so the first sync and the engine know where they stand."""
        if self.host.config.runtime.offline_mode == "auto":
            runtime = self.host
            assert isinstance(runtime, Runtime)
            runtime.probe_link()

    def jobs(self) -> Sequence[Job]:
        """``network.probe_link`` every LINK_PROBE_SECONDS when offline_mode is auto."""
        if self.host.config.runtime.offline_mode != "auto":
            return []
        runtime = self.host
        assert isinstance(runtime, Runtime)
        return [Job("network.probe_link", LINK_PROBE_SECONDS, runtime.probe_link)]

    def health_checks(self) -> Mapping[str, CheckFn]:
        """``scheduler``: the loop is not behind its next job."""
        from edge_min.monitor.health import scheduler_check

        return {"scheduler": scheduler_check(self.host.scheduler.next_deadline, self.host.clock)}

    def metrics(self) -> Mapping[str, float]:
        """Failed timed-job runs since start (the job error policy's count)."""
        runtime = self.host
        assert isinstance(runtime, Runtime)
        return {"job_errors": float(sum(runtime.job_errors.values()))}


def _leaving_out(kinds: Sequence[type[Subsystem]], without: Sequence[str]) -> list[type[Subsystem]]:
    """``kinds`` without the named subsystems and, transitively, those that need them."""
    gone = set(without)
    kept: list[type[Subsystem]] = []
    for kind in kinds:  # opening order: a subsystem's needs come before it
        if kind.name in gone or gone.intersection(kind.needs):
            gone.add(kind.name)
        else:
            kept.append(kind)
    return kept


class Runtime:
    """One device's runtime: its subsystems opened, ticked and closed together."""

    def __init__(
        self,
        config: EdgeConfig,
        paths: Paths,
        *,
        clock: Clock | None = None,
        platform: Platform | None = None,
        executors: ExecutorFactory | None = None,
        subsystems: Sequence[type[Subsystem]] | None = None,
        without: Sequence[str] = (),
        transport: TransportFactory | None = None,
    ) -> None:
        from edge_min.scheduler import Scheduler

        self.config = config
        self.paths = paths
        self.clock: Clock = clock or SystemClock()
        self._platform = platform
        self._executors: ExecutorFactory = executors or inline_executors
        #: How sync reaches central (a browser's fetch, an MCU's socket); None: HTTP(S).
        self.transport = transport
        # Whether blocking work runs on threads: then each thread needs its own connection.
        self.threaded = executors is not None
        if subsystems is None:
            from edge_min.subsystems import SUBSYSTEMS

            subsystems = SUBSYSTEMS
        self._kinds: list[type[Subsystem]] = [Core, *_leaving_out(subsystems, without)]
        self._open: dict[type[Subsystem], Subsystem] = {}
        self._started: list[Executor] = []
        self.scheduler: Scheduler = Scheduler(
            self.clock, store=StoreScheduleState(lambda: self.store.schedule)
        )
        self.started_at = self.clock.time()
        # Work handed over by other threads (the API): run on the loop thread, the only one
        # that touches the engine. deque append/popleft are atomic, so no lock is needed.
        self._calls: deque[tuple[Callable[[], Any], Outcome]] = deque()
        self.wake: Callable[[], object] = lambda: None
        #: Closed while the device is locked down (edge_min.gate); the tamper subsystem's.
        self.gate = Gate()
        #: Failed runs of each timed job since start, and the consecutive failures now.
        self.job_errors: dict[str, int] = {}
        self._failing: dict[str, int] = {}
        # Whether central answered the last link probe; offline_mode decides what it means.
        self._online = config.runtime.offline_mode != "always"
        from edge_min.security.atrest import key_ring

        #: The data keys every connection of this runtime shares (None: encryption off).
        self.storage_keys: KeyRing | None = key_ring(config, paths, self.clock)

    # -- the host the subsystems see -------------------------------------------------------

    @property
    def platform(self) -> Platform:
        """The host platform, detected on first use unless one was given."""
        if self._platform is None:
            from edge_min.platform import get_platform

            self._platform = get_platform()
        return self._platform

    @property
    def online(self) -> bool:
        """Whether central answered the last link probe."""
        return self._online

    @online.setter
    def online(self, up: bool) -> None:
        was, self._online = self._online, up
        if was != up:
            for sub in self.subsystems():
                sub.link_changed(up)

    def get(self, kind: type[S]) -> S:
        """The open subsystem of that class."""
        sub = self._open.get(kind)
        if sub is None:
            names = ", ".join(k.name for k in self._open) or "none yet"
            raise ConfigError(
                f"subsystem {kind.name!r} is not open in this runtime (open: {names}); "
                "a subsystem may only use what its `needs` names"
            )
        assert isinstance(sub, kind)
        return sub

    def find(self, kind: type[S]) -> S | None:
        """The open subsystem of that class, or None when this runtime lacks it."""
        sub = self._open.get(kind)
        return sub if isinstance(sub, kind) else None

    def subsystems(self) -> Iterator[Subsystem]:
        """The open subsystems, in opening order."""
        return iter(list(self._open.values()))

    def open_store(self) -> Store:
        """A new connection to the device database (migrated; sync change tracking on;
        payload columns sealed by the runtime's one key ring when encryption is on)."""
        from edge_min.security.atrest import open_device_store
        from edge_min.sync.tracker import ChangeTracker

        return open_device_store(
            self.config,
            self.paths,
            ring=self.storage_keys,
            clock=self.clock,
            changes=ChangeTracker,
        )

    def executor(self, name: str, workers: int) -> Executor:
        """An executor for a subsystem's blocking work; shut down when the runtime closes."""
        executor = self._executors(name, workers)
        self._started.append(executor)
        return executor

    # -- the parts, typed ------------------------------------------------------------------

    @property
    def store(self) -> Store:
        """The device store (the storage subsystem's connection, on the loop thread)."""
        from edge_min.store.subsystem import Storage

        return self.get(Storage).store

    @property
    def files(self) -> FileStore:
        """File storage under ``runtime.max_storage_usage``."""
        from edge_min.store.subsystem import Storage

        return self.get(Storage).files

    @property
    def engine(self) -> Engine:
        """The durable workflow engine."""
        from edge_min.workflows.subsystem import Workflows

        return self.get(Workflows).engine

    @property
    def agents(self) -> AgentRegistry:
        """The registered agents and their executors."""
        from edge_min.workflows.subsystem import Workflows

        return self.get(Workflows).agents

    @property
    def monitor(self) -> Monitor:
        """Metrics, health checks and alerts."""
        from edge_min.monitor.subsystem import Monitoring

        return self.get(Monitoring).monitor

    @property
    def sync(self) -> SyncLink | None:
        """The link to the sync manager, or None when this runtime does not sync."""
        from edge_min.sync.subsystem import Sync

        sub = self.find(Sync)
        return sub.link if sub is not None else None

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> Runtime:
        """Open every subsystem in order and schedule its jobs; closes them again on error."""
        try:
            for kind in self._kinds:
                missing = [n for n in kind.needs if n not in {k.name for k in self._open}]
                if missing:
                    raise ConfigError(
                        f"subsystem {kind.name!r} needs {', '.join(missing)}, which must come "
                        "before it in edge_min.subsystems.SUBSYSTEMS"
                    )
                sub = kind(self)
                self._open[kind] = sub
                sub.open()
            # Jobs once all are open: their catch-up state lives in the store.
            for sub in self.subsystems():
                for job in sub.jobs():
                    self.add_job(job)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Close the subsystems, last opened first, and stop their executors."""
        for sub in reversed(list(self._open.values())):
            try:
                sub.close()
            except Exception:  # the others must still close
                log.exception("closing subsystem %s failed", sub.name)
        self._open.clear()
        for executor in self._started:
            executor.shutdown()
        self._started.clear()

    def add_job(self, job: Job) -> None:
        """Schedule a timed job under the runtime's error policy."""
        self.scheduler.add_interval(job.name, job.every, job.fn, first=job.first)

    # -- the loop --------------------------------------------------------------------------

    def tick(self, now: float | None = None) -> float:
        """Run what is due; returns the seconds the host may sleep before the next tick."""
        mono = self.clock.monotonic() if now is None else now
        self._run_calls()
        for due in self.scheduler.tick(mono):
            error: BaseException | None = None
            try:
                due.fn()
            except Exception as exc:  # the loop and the runtime go on: log, count, retry
                error = exc
                self._job_failed(due.name, exc)
            else:
                self._failing.pop(due.name.removesuffix(".retry"), None)
            finally:
                self.scheduler.release(due, error)
        wait = QUEUE_POLL_SECONDS
        nxt = self.scheduler.next_deadline()
        if nxt is not None:
            wait = min(wait, max(0.0, nxt - mono))
        for sub in self.subsystems():
            try:
                wanted = sub.tick(mono)
            except Exception as exc:
                self._job_failed(f"{sub.name}.tick", exc)
                continue
            if wanted is not None:
                wait = min(wait, max(0.0, wanted - mono))
        return wait

    def _job_failed(self, name: str, exc: Exception) -> None:
        """The one error policy: a traceback in the log, a count, a retry with backoff.

        While the gate is closed (a lockdown dropped the data keys) a job that needs sealed
        columns cannot run: that is the lockdown working, logged once at debug, not an error.
        """
        base = name.removesuffix(".retry")
        if self.gate.closed is not None and getattr(exc, "code", None) == "keys_dropped":
            log.debug("job %s paused while locked down: %s", base, exc)
            return
        self.job_errors[base] = self.job_errors.get(base, 0) + 1
        streak = self._failing[base] = self._failing.get(base, 0) + 1
        log.error("job %s failed (%d in a row): %s", base, streak, exc, exc_info=exc)
        job = self.scheduler.get(base)
        if job is None or job.every is None or name.endswith(".tick"):
            return
        delay = min(JOB_RETRY_FIRST * 2 ** (streak - 1), float(job.every))
        if delay < float(job.every):  # sooner than the next regular run
            self.scheduler.cancel(f"{base}.retry")
            self.scheduler.add_once(f"{base}.retry", job.fn, after=delay)

    def call(self, fn: Callable[[], Any], future: Outcome | None = None) -> Any:
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

    # -- the runtime's own jobs and views ----------------------------------------------------

    def probe_link(self) -> bool:
        """Check whether central (sync.central_url) is reachable; sets ``online``."""
        from urllib.parse import urlsplit

        url = urlsplit(self.config.sync.central_url)
        port = url.port or (443 if url.scheme == "https" else 80)
        up = self.platform.can_reach(url.hostname or "127.0.0.1", port, LINK_PROBE_TIMEOUT)
        if up != self._online:
            log.info("link to central %s is %s", url.netloc, "up" if up else "down")
        self.online = up
        return up

    def refresh_triggers(self) -> None:
        """Give each interval or cron workflow its job (the workflows subsystem's)."""
        from edge_min.workflows.subsystem import Workflows

        self.get(Workflows).refresh_triggers()

    def backup(self) -> Path:
        """Take an online backup now and rotate old ones."""
        from edge_min.store.subsystem import Storage

        return self.get(Storage).backup()

    def runtime_metrics(self) -> dict[str, float]:
        """Every subsystem's readings, for the monitor's sample."""
        values: dict[str, float] = {}
        for sub in self.subsystems():
            values.update(sub.metrics())
        return values

    def status(self) -> dict[str, Any]:
        """What ``edge-min status`` and ``GET /status`` show."""
        info: dict[str, Any] = {"version": __version__}
        for sub in self.subsystems():
            info.update(sub.status())
        info["uptime_s"] = round(self.clock.time() - self.started_at, 1)
        return info


def status_of(
    store: Store, paths: Paths, files: FileStore, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A status summary from an open store (used with or without a running runtime)."""
    from edge_min.store.subsystem import storage_status

    info: dict[str, Any] = {"version": __version__, **storage_status(store, paths, files)}
    info.update(extra or {})
    return info
