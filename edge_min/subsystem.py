"""The subsystem contract: what a part of the runtime brings, declared in one place.

A subsystem is a package with a ``subsystem`` module whose ``Subsystem`` subclass says what
it contributes and what it needs; ``edge_min.subsystems.SUBSYSTEMS`` lists them, and the
runtime, the local API and the CLI assemble themselves from that list. Adding a subsystem
is one new package plus one line there::

    class Backups(Subsystem):
        name = "backups"
        needs = ("storage",)                      # opened after these, closed before

        def open(self) -> None:                   # the host's store, clock, config, ...
            self.store = self.host.get(Storage).store

        def jobs(self) -> list[Job]:              # timed jobs, intervals from config
            return [Job("backups.take", 3600.0, self.take)]

        def routes(self, api: ApiContext) -> list[ApiRoute]:
            return [ApiRoute("POST", "/backups", "configure", self._post)]

        @classmethod
        def commands(cls) -> list[Command]:       # CLI commands, without opening anything
            return [Command(("backup",), "take a backup now", "edge-min backup", run_backup)]

What a subsystem may contribute, each optional (the base class contributes nothing):

- ``jobs()``: ``Job``s the host's scheduler runs at their interval. A job that raises is
  logged with its traceback, counted in ``edge_min_job_errors_total{job=...}`` and retried
  with backoff; the loop never dies of it.
- ``tick(now)``: work for every turn of the loop (the sync manager's due entities); returns
  the monotonic time it next wants a turn, or None.
- ``routes(api)``: ``ApiRoute``s, each with the permission it needs (default deny).
- ``commands()``: ``Command``s for the CLI, a class method so the parser is built without
  opening a data directory.
- ``metrics()``: readings the monitor samples with the host's (``queue_depth``, ...).
- ``health_checks()``: built-in checks by name (``database``, ``sync``), referenced from
  edge-monitoring.yaml as ``type: builtin``.
- ``alert_actions()``: actions alert rules may name (``restart_sync``, ``cleanup_temp``).
- ``status()``: a section of ``edge-min status`` / ``GET /status``.
- ``link_changed(up)``: told when the link to central comes or goes.
- ``uplink()``: a way to POST JSON to central (the sync subsystem offers one; the monitor
  uses it for metrics and alerts).

Small protocols let a part reach others without naming them: a subsystem holding data
keys in memory is a ``KeyHolder`` (``drop_keys()``: a lockdown calls it on each, once every
``Drainer`` says nothing in flight still needs them; ``restore_keys()`` after an unlock), one
that measures what it guards is a ``Remeasurer`` (``remeasure(what, by)``: a command making
a legitimate change, ``agent add``, calls ``remeasured(host, ...)`` so it is not reported as
tampering).

The host (``edge_min.runtime.Runtime``) gives each subsystem its config, paths, clock,
platform, scheduler and the other subsystems (``host.get(Kind)``), and opens them in the
order of ``needs``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar, runtime_checkable

if TYPE_CHECKING:
    from edge_min.clock import Clock
    from edge_min.config import EdgeConfig
    from edge_min.gate import Gate
    from edge_min.hooks import TargetHooks
    from edge_min.platform import Platform
    from edge_min.platform.executor import Executor
    from edge_min.routing import Handler
    from edge_min.runtime import Paths, Runtime
    from edge_min.scheduler import Scheduler
    from edge_min.store import Store
    from edge_min.sync.transport import TransportFactory

__all__ = [
    "ApiContext",
    "ApiRoute",
    "CheckFn",
    "Command",
    "CommandContext",
    "Drainer",
    "Host",
    "Job",
    "KeyHolder",
    "Remeasurer",
    "Subsystem",
    "Uplink",
    "remeasured",
]

#: A built-in health check: returns (healthy, output) or raises; see edge_min.monitor.health.
CheckFn = Callable[[], Any]
#: POST a JSON payload to central at a path (``/api/metrics``); raises when it fails.
Uplink = Callable[[str, Any], None]


@dataclass(frozen=True)
class Job:
    """A timed job: ``fn`` every ``every`` seconds, the first after ``first`` (default: every)."""

    name: str
    every: float
    fn: Callable[[], object]
    first: float | None = None


@dataclass(frozen=True)
class ApiRoute:
    """One route of the local API: method, path pattern, the permission it needs, handler.

    A route needing more than ``read`` is refused with 423 ``locked_down`` while the host's
    gate is closed, unless ``while_locked`` (``POST /security/unlock``).
    """

    method: str
    pattern: str
    permission: str
    handler: Handler
    while_locked: bool = False


class ApiContext(Protocol):
    """What the local API gives route handlers of the core."""

    def reads(self) -> Store:
        """A store connection of the calling (API) thread, for reads."""
        ...

    def on_loop(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the runtime's loop thread (the only one that writes); its value."""
        ...


class CommandContext(Protocol):
    """What the CLI gives a subsystem's command."""

    args: argparse.Namespace
    #: The hooks a target registered (``edge_min.hooks``), for the commands that serve.
    hooks: Sequence[TargetHooks]

    def context(self) -> tuple[EdgeConfig, Paths]:
        """The config (``--config``, ``$EDGE_MIN_CONFIG``, the data dir's) and the paths."""
        ...

    def reload_config(self) -> None:
        """Read the config files again on the next ``context()`` (a command changed them)."""
        ...

    def opened(
        self, *, threads: bool = False, syncing: bool = False
    ) -> AbstractContextManager[Runtime]:
        """The data directory's runtime, opened for this command and closed after it
        (agent calls on worker threads with ``threads``). Without ``syncing`` it opens
        without the sync subsystem (and what needs it): a local command needs no link to
        central, so no TLS files either."""
        ...

    def running_url(self) -> str | None:
        """The API URL of the ``edge-min run`` holding the data directory, or None."""
        ...

    def holding(self) -> AbstractContextManager[bool]:
        """The data directory's lock while the block runs: True if taken here, False if a
        running runtime holds it."""
        ...

    def holder(self) -> str:
        """The pid of the runtime holding the data directory, for messages."""
        ...


CommandFn = Callable[[CommandContext], int]


@dataclass(frozen=True)
class Command:
    """One CLI command: its words, a summary, an example, how to run it, its arguments."""

    path: tuple[str, ...]
    summary: str
    example: str
    run: CommandFn
    arguments: Callable[[argparse.ArgumentParser], None] | None = None
    #: A service (``run``, ``central serve``, ``update supervise``): logs at INFO. Every
    #: other command logs warnings only (``-v``: everything), so its output is its own.
    serves: bool = False


S = TypeVar("S", bound="Subsystem")


class Host(Protocol):
    """What the runtime offers its subsystems."""

    config: EdgeConfig
    paths: Paths
    clock: Clock
    scheduler: Scheduler
    threaded: bool
    #: Ask the loop for a turn now (work arrived from another thread).
    wake: Callable[[], object]
    #: How the sync subsystem reaches central; None: HTTP(S) to sync.central_url.
    transport: TransportFactory | None
    #: Closed while the device is locked down: no writes, no runs, no sync but the report.
    gate: Gate

    @property
    def platform(self) -> Platform:
        """The host platform (workers, resources, link probe)."""
        ...

    @property
    def online(self) -> bool:
        """Whether central answered the last link probe (offline_mode decides what counts)."""
        ...

    def get(self, kind: type[S]) -> S:
        """The open subsystem of that class; a subsystem may only ask for what it needs."""
        ...

    def find(self, kind: type[S]) -> S | None:
        """The subsystem of that class if this runtime has it, else None."""
        ...

    def subsystems(self) -> Iterator[Subsystem]:
        """Every open subsystem, in the order they were opened."""
        ...

    def open_store(self) -> Store:
        """A new connection to the device database, with sync change tracking."""
        ...

    def executor(self, name: str, workers: int) -> Executor:
        """Where a subsystem runs blocking work: ``workers`` threads (inline without threads);
        a finished call wakes the loop."""
        ...


@runtime_checkable
class KeyHolder(Protocol):
    """A subsystem holding data keys in memory, which a lockdown makes it forget."""

    def drop_keys(self) -> None:
        """Forget every data key held in memory (they are read again after an unlock)."""
        ...

    def restore_keys(self) -> None:
        """Read the keys again (an admin lifted the lockdown)."""
        ...


@runtime_checkable
class Drainer(Protocol):
    """A subsystem with work in flight that must record its end with the data keys."""

    def drained(self) -> bool:
        """Whether nothing in flight still needs the data keys (a lockdown waits for it)."""
        ...


@runtime_checkable
class Remeasurer(Protocol):
    """A subsystem that measures what it guards, told when a change was made on purpose."""

    def remeasure(self, what: str, by: str) -> None:
        """Take new baselines after ``what`` changed legitimately; ``by`` is who did it."""
        ...


def remeasured(host: Host, what: str, by: str) -> None:
    """Tell every ``Remeasurer`` of ``host`` that ``what`` was changed on purpose by ``by``."""
    for sub in host.subsystems():
        if isinstance(sub, Remeasurer):
            sub.remeasure(what, by)


class Subsystem:
    """The base of every subsystem: contributes nothing until a subclass says what it brings."""

    #: A short unique name (``storage``, ``sync``): in logs, metrics and ``needs``.
    name: ClassVar[str] = ""
    #: The names of the subsystems this one uses: they are opened first and closed after.
    needs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, host: Host) -> None:
        self.host = host

    # -- lifecycle ------------------------------------------------------------------------

    def open(self) -> None:
        """Open what the subsystem holds; the subsystems it needs are open already."""

    def close(self) -> None:
        """Release what it holds (called in reverse order of opening)."""

    # -- contributions ----------------------------------------------------------------------

    def jobs(self) -> Sequence[Job]:
        """Timed jobs for the host's scheduler."""
        return ()

    def tick(self, now: float) -> float | None:
        """Work for this turn of the loop; the monotonic time of the next wanted turn."""
        return None

    def routes(self, api: ApiContext) -> Sequence[ApiRoute]:
        """Routes of the local API."""
        return ()

    @classmethod
    def commands(cls) -> Sequence[Command]:
        """CLI commands."""
        return ()

    def metrics(self) -> Mapping[str, float]:
        """Readings for the monitor's sample."""
        return {}

    def health_checks(self) -> Mapping[str, CheckFn]:
        """Built-in health checks by name."""
        return {}

    def alert_actions(self) -> Mapping[str, Callable[..., Any]]:
        """Actions alert rules may name."""
        return {}

    def status(self) -> Mapping[str, Any]:
        """This subsystem's part of the runtime status."""
        return {}

    def link_changed(self, up: bool) -> None:
        """The link to central came up or went down."""

    def uplink(self) -> Uplink | None:
        """A way to POST JSON to central, if this subsystem has one."""
        return None
