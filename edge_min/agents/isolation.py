"""Isolation policy: an agent's config becomes a ``WorkerSpec``; a worker's end becomes an error.

The mechanics (rlimits, cgroups, watchdogs) live behind the platform port
(``edge_min.platform.posix`` states the exact rules); this module decides *what* to ask for
and *how to name* what went wrong, so it is pure and testable without processes.

The worker's environment is minimal, never the runtime's own (which may hold secrets):
``PATH`` (the runtime's, else a standard one), ``LANG``/``LC_ALL=C.UTF-8``, ``HOME``,
``TMPDIR``, ``TMP`` and ``TEMP`` = the work directory, ``OMP_NUM_THREADS`` =
``runtime.threads``, ``MALLOC_ARENA_MAX=2`` (each glibc arena reserves 64MB of the address
space that ``max_memory`` limits), ``EDGE_MIN_AGENT``, ``EDGE_MIN_WORK_DIR``,
``EDGE_MIN_ATTEMPT``; then ``runtime.env`` on top; then ``EDGE_MIN_IDEMPOTENCY_KEY``, last
so an agent cannot shadow it.

How a worker's end maps to ``AgentLimitExceeded(limit=...)``, first match wins:

- the supervisor killed it for the wall timeout -> ``timeout``;
- the supervisor killed it (or refused to start it) for the work directory's size, it died
  of SIGXFSZ, its frame or stderr reports "file too large", or it ended with the work
  directory at or past ``max_storage`` (reaching the quota counts as passing it, see
  ``edge_min.platform.posix``) -> ``storage``;
- it died of SIGXCPU or was SIGKILLed past its RLIMIT_CPU (rlimit mode) -> ``cpu``;
- with a memory limit set: its frame says ``MemoryError``, its stderr shows an
  out-of-memory marker, or it died of SIGSEGV/SIGBUS/SIGABRT/SIGKILL not sent by the
  supervisor -> ``memory``.
"""

from __future__ import annotations

import json
import os
from typing import Any, Protocol

from edge_min.errors import AgentLimitExceeded
from edge_min.platform import WorkerResult, WorkerSpec
from edge_min.units import format_duration, format_size

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
_MEMORY_MARKERS = (
    "MemoryError",
    "Cannot allocate memory",
    "out of memory",
    "std::bad_alloc",
    "failed to allocate",
)
_STORAGE_MARKERS = ("File too large", "File size limit exceeded", "Disk quota exceeded")
_MEMORY_SIGNALS = ("SIGSEGV", "SIGBUS", "SIGABRT", "SIGKILL")


class AgentLike(Protocol):
    """``AgentConfig`` (``edge_min.config.agent``): the attributes this package reads.

    ``resources`` (max_memory, max_cpu, max_storage), ``runtime`` (executor, threads,
    acceleration, provider_fallback, command, entry, env, needs_network), ``model`` (path,
    precision), ``input`` (format, max_length, truncate), ``output`` (classes) are read by
    attribute name, so a stand-in with those names works too.
    """

    @property
    def name(self) -> str:
        """The agent's name."""
        ...

    @property
    def resources(self) -> Any:
        """``AgentResources``."""
        ...

    @property
    def runtime(self) -> Any:
        """``AgentRuntime``."""
        ...

    @property
    def input(self) -> Any:
        """``InputSpec``."""
        ...

    @property
    def output(self) -> Any:
        """``OutputSpec``."""
        ...

    @property
    def model(self) -> Any:
        """``ModelConfig`` or ``None``."""
        ...

    @property
    def source(self) -> str | None:
        """The config file it came from, if any."""
        ...


def worker_env(
    agent: AgentLike, *, work_dir: str, idempotency_key: str, attempt: int = 1
) -> dict[str, str]:
    """The whole environment of an agent's worker (see the module doc)."""
    threads = getattr(agent.runtime, "threads", None) or 1
    env = {
        "PATH": os.environ.get("PATH") or DEFAULT_PATH,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": work_dir,
        "TMPDIR": work_dir,
        "TMP": work_dir,
        "TEMP": work_dir,
        "OMP_NUM_THREADS": str(threads),
        # RLIMIT_AS counts each glibc malloc arena's 64MB reservation; cap the arenas.
        "MALLOC_ARENA_MAX": "2",
        "EDGE_MIN_AGENT": agent.name,
        "EDGE_MIN_WORK_DIR": work_dir,
        "EDGE_MIN_ATTEMPT": str(attempt),
    }
    env.update({str(k): str(v) for k, v in (getattr(agent.runtime, "env", None) or {}).items()})
    env["EDGE_MIN_IDEMPOTENCY_KEY"] = idempotency_key
    return env


def agent_sys_path(agent: AgentLike) -> tuple[str, ...]:
    """Extra import paths for a Python agent: the folder of its config file, if known."""
    source = getattr(agent, "source", None)
    if not source or source.startswith("<"):
        return ()
    path = os.path.abspath(source)
    return (path if os.path.isdir(path) else os.path.dirname(path),)


def build_worker_spec(
    agent: AgentLike,
    *,
    work_dir: str,
    idempotency_key: str,
    timeout: float | None,
    stdin: bytes,
    attempt: int = 1,
    argv: tuple[str, ...] = (),
    entry: str | None = None,
) -> WorkerSpec:
    """The isolated invocation for one call of ``agent``, with its resources as limits."""
    res = agent.resources
    context = {
        "idempotency_key": idempotency_key,
        "agent": agent.name,
        "work_dir": work_dir,
        "attempt": attempt,
        "timeout": timeout,
    }
    return WorkerSpec(
        name=agent.name,
        work_dir=work_dir,
        argv=argv,
        entry=entry,
        sys_path=agent_sys_path(agent) if entry else (),
        env=worker_env(agent, work_dir=work_dir, idempotency_key=idempotency_key, attempt=attempt),
        stdin=stdin,
        context=context,
        max_memory=getattr(res, "max_memory", None) or None,
        max_cpu=getattr(res, "max_cpu", None) or None,
        max_storage=getattr(res, "max_storage", None) or None,
        timeout=timeout,
        needs_network=bool(getattr(agent.runtime, "needs_network", True)),
    )


def result_frame(result: WorkerResult) -> dict[str, Any] | None:
    """The JSON frame a Python worker wrote on stdout, or ``None`` if there is none."""
    try:
        frame = json.loads(result.stdout.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return frame if isinstance(frame, dict) and "ok" in frame else None


def limit_hit(result: WorkerResult, spec: WorkerSpec) -> str | None:
    """Which limit ended the worker: ``timeout``, ``storage``, ``cpu``, ``memory`` or ``None``."""
    if result.killed_for == "timeout":
        return "timeout"
    frame = result_frame(result) if spec.entry else None
    kind = frame.get("kind") if frame and not frame.get("ok") else None
    stderr = result.stderr.decode("utf-8", "replace")
    failed = result.returncode != 0 or kind is not None
    if spec.max_storage is not None and (
        result.killed_for == "storage"
        or result.signal == "SIGXFSZ"
        or kind == "storage"
        or (failed and any(m in stderr for m in _STORAGE_MARKERS))
        or (result.storage_used or 0) >= spec.max_storage
    ):
        return "storage"
    if result.signal == "SIGXCPU" or (
        result.signal == "SIGKILL" and result.applied.get("cpu_seconds") and not kind
    ):
        return "cpu"
    if spec.max_memory is not None and (
        kind == "memory"
        or (failed and not kind and any(m in stderr for m in _MEMORY_MARKERS))
        or result.signal in _MEMORY_SIGNALS
    ):
        return "memory"
    return None


def limit_error(limit: str, result: WorkerResult, spec: WorkerSpec) -> AgentLimitExceeded:
    """The error for a worker stopped by ``limit``: names the limit, its key and the fix."""
    who = f"agent '{spec.name}'"
    checked_after = "in_process" in result.applied
    if limit == "timeout" and checked_after:
        text = (
            f"{who} ran for {format_duration(result.duration)}, past its timeout of "
            f"{format_duration(spec.timeout or 0)}; a call in this process cannot be "
            "interrupted, so it ran to its end and its output was discarded; raise the "
            "step's timeout or make the agent faster"
        )
    elif limit == "timeout":
        took = format_duration(spec.timeout or 0)
        text = (
            f"{who} timed out after {took} and was killed; raise the step's timeout "
            "or make the agent faster"
        )
    elif limit == "storage":
        size = format_size(spec.max_storage or 0)
        used = "" if result.storage_used is None else f" (holds {format_size(result.storage_used)})"
        text = (
            f"{who}: storage limit {size} exceeded (resources.max_storage) in its work "
            f"directory {spec.work_dir}{used}; delete files there or raise resources.max_storage"
        )
    elif limit == "cpu":
        seconds = result.applied.get("cpu_seconds", "?")
        text = (
            f"{who}: cpu limit exceeded: used more than {seconds} CPU seconds "
            f"(resources.max_cpu {spec.max_cpu} x timeout, mode {result.cpu_limit_mode}); "
            "raise resources.max_cpu or the step's timeout"
        )
    else:
        size = format_size(spec.max_memory or 0)
        seen = ""
        if checked_after:
            frame = result_frame(result) or {}
            seen = f" ({frame.get('message', 'measured after the call')}; output discarded)"
        text = (
            f"{who}: memory limit {size} exceeded (resources.max_memory){seen}; "
            "raise resources.max_memory or make the agent use less memory"
        )
    return AgentLimitExceeded(text, limit=limit)


def raise_for_limits(result: WorkerResult, spec: WorkerSpec) -> None:
    """Raise ``AgentLimitExceeded`` when the worker was stopped by one of its limits."""
    limit = limit_hit(result, spec)
    if limit is not None:
        raise limit_error(limit, result, spec)
