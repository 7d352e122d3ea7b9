"""The platform port: what the portable core needs from the host it runs on.

The core never forks, signals or reads ``/proc`` itself; it asks a ``Platform``:

- ``spawn_worker(spec)`` runs one agent invocation in an isolated worker and returns a
  ``WorkerHandle`` whose ``wait()`` gives a ``WorkerResult`` (raw facts: exit status,
  output, why the supervisor killed it). Turning those facts into errors is policy and
  lives in ``edge_min.agents.isolation``.
- ``start_service(spec)`` starts a *persistent* worker (``spec.entry`` names a factory
  ``factory(init, context) -> handler``) under the same limits, and returns a
  ``ServiceHandle``: ``request(value, timeout)`` sends one framed JSON request and gives a
  ``ServiceReply`` (the worker's answer, or how it ended); ``stop()`` ends it. The
  protocol is in ``edge_min.platform.worker``, the POSIX side in
  ``edge_min.platform.service``.
- ``runs_commands`` says whether ``spawn_worker`` can start a program (``argv``): a
  ``command`` agent is refused when it is added on a host that cannot (a browser tab).
- ``new_lock()`` gives a mutex for callers outside this package, which may not import
  ``threading`` themselves.
- ``boot_chain()`` gives a ``BootChain`` (``edge_min.platform.boot``): whether a signed
  launcher or UEFI Secure Boot verified how this process started, and what is missing;
  ``security.secure_boot`` acts on it (``edge_min.security.boot``).
- ``resources(data_path)`` gives the monitor's ``ResourceReader`` for this host:
  ``read(now)`` is one sample of host metrics (names in ``RESOURCE_METRICS``, the data
  volume measured at ``data_path``), leaving out whatever the host cannot tell.
  ``edge_min.platform.procfs`` reads them on Linux; ``NoResources`` reads nothing.
- ``boot_facts()`` gives the kernel command line, Secure Boot state, IMA log summary and
  TPM presence for remote attestation (``edge_min.platform.boot``; nothing in a browser).
- ``hardware_facts()`` gives the facts that identify the machine (machine-id, DMI product
  and serial, CPU model, MAC addresses), for the tamper check's hardware fingerprint; a
  fact the host cannot read is left out.

``get_platform()`` picks one lazily and caches it:

- ``PosixPlatform`` (``edge_min.platform.posix``) on CPython/Linux and other POSIX hosts:
  a subprocess per invocation with memory, CPU, storage and wall-time limits.
- ``InProcessPlatform`` (``edge_min.platform.inprocess``) on Pyodide
  (``sys.platform == "emscripten"``) and hosts without ``fork``: ``python`` executors run
  in the calling process, **without isolation or limits** (a browser tab has no
  processes); ``command`` executors are refused.

Importing this module does nothing but define types.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from edge_min.platform.boot import BootChain

__all__ = [
    "RESOURCE_METRICS",
    "NoResources",
    "Platform",
    "ResourceReader",
    "ServiceHandle",
    "ServiceReply",
    "WorkerHandle",
    "WorkerResult",
    "WorkerSpec",
    "get_platform",
    "new_lock",
    "set_platform",
]

#: How the CPU limit of a worker is enforced (``WorkerResult.cpu_limit_mode``).
CPU_LIMIT_MODES = ("cgroup2", "cgroup1", "rlimit", "none")


@dataclass(frozen=True)
class WorkerSpec:
    """One isolated invocation: what to run, with which input, under which limits.

    Exactly one of ``argv`` (run a program; JSON in on stdin, out on stdout) or ``entry``
    (``"module:function"`` called in a Python worker as ``fn(input, context)``) is set.
    ``env`` is the child's whole environment: the platform adds nothing to it.
    A limit of ``None`` means unlimited; ``needs_network=False`` asks for a worker without
    network access (best effort: see ``WorkerResult.applied["network"]``). ``preload``
    names modules the worker imports before it measures its memory baseline (``worker.py``).
    """

    name: str
    work_dir: str
    argv: tuple[str, ...] = ()
    entry: str | None = None
    sys_path: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    stdin: bytes = b""
    context: Mapping[str, Any] = field(default_factory=dict)
    max_memory: int | None = None
    max_cpu: float | None = None
    max_storage: int | None = None
    timeout: float | None = None
    needs_network: bool = True
    preload: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if bool(self.argv) == bool(self.entry):
            raise ValueError("a WorkerSpec needs exactly one of argv or entry")


@dataclass(frozen=True)
class WorkerResult:
    """The raw end of a worker: exit status, captured output and what the supervisor did.

    ``returncode`` is negative when a signal ended the worker (``signal`` names it);
    ``killed_for`` is ``"timeout"`` or ``"storage"`` when the supervisor killed it;
    ``storage_used`` is the work directory's size in bytes at the end (``None`` if unknown).
    For ``entry`` workers ``stdout`` holds one JSON result frame (see ``worker.py``).
    ``applied`` is what the worker reported it enforced on itself: ``address_space``
    (RLIMIT_AS bytes), ``cpu_seconds`` (RLIMIT_CPU), ``network`` (``netns``, ``userns``,
    ``shared``), or ``error`` when it could not apply them.
    """

    returncode: int | None
    stdout: bytes
    stderr: bytes
    duration: float
    killed_for: str | None = None
    signal: str | None = None
    storage_used: int | None = None
    cpu_limit_mode: str = "none"
    stdout_truncated: bool = False
    applied: Mapping[str, Any] = field(default_factory=dict)


class WorkerHandle(Protocol):
    """A running worker."""

    @property
    def pid(self) -> int | None:
        """The worker's process id, or ``None`` when it runs in-process."""
        ...

    def wait(self) -> WorkerResult:
        """Feed stdin, supervise limits and block until the worker has ended."""
        ...

    def kill(self) -> None:
        """Stop the worker and everything it started, now."""
        ...


@dataclass(frozen=True)
class ServiceReply:
    """One request to a persistent worker: its answer frame, or how the worker ended.

    ``frame`` is the decoded reply (``{"ok": ..., "output"|"kind"...,"meta": ...}``) when
    the worker answered; otherwise ``ended`` holds the raw end (exit status, signal,
    ``killed_for="timeout"``/``"storage"``) and the worker is gone. ``stderr`` is what the
    worker wrote on stderr during this request (its tail).
    """

    frame: Mapping[str, Any] | None
    ended: WorkerResult | None
    stderr: bytes = b""
    duration: float = 0.0


class ServiceHandle(Protocol):
    """A persistent worker: one request at a time (the caller serialises them)."""

    @property
    def pid(self) -> int | None:
        """The worker's process id, or ``None`` when it runs in-process."""
        ...

    @property
    def alive(self) -> bool:
        """Whether it can take another request."""
        ...

    @property
    def applied(self) -> Mapping[str, Any]:
        """The limits the worker reported it applied (as ``WorkerResult.applied``)."""
        ...

    def request(self, value: Any, timeout: float | None) -> ServiceReply:
        """Send ``value`` (the first is the factory's ``init``); block for the reply."""
        ...

    def stop(self) -> None:
        """End the worker: close its input, then kill what is left."""
        ...


#: Every name a ``ResourceReader`` may report; the monitor's catalogue gives their units.
RESOURCE_METRICS = (
    "cpu_usage",
    "memory_total",
    "memory_used",
    "memory_available",
    "memory_usage",
    "storage_total",
    "storage_used",
    "free_storage",
    "storage_usage",
    "network_rx_bytes_per_second",
    "network_tx_bytes_per_second",
    "battery_level",
    "battery_charging",
)


class ResourceReader(Protocol):
    """Host metrics for the monitor, one sample per ``read``.

    ``now`` is monotonic seconds, for rates between two reads. A metric the host cannot
    give (no battery, an unreadable source, a rate before its second read) is left out,
    never reported as 0.
    """

    def read(self, now: float) -> Mapping[str, float]:
        """Metric name (one of ``RESOURCE_METRICS``) -> value."""
        ...


class NoResources:
    """A host that shows nothing (no /proc, a browser tab): samples carry runtime metrics only."""

    def read(self, now: float) -> Mapping[str, float]:
        """Nothing."""
        return {}


class Platform(Protocol):
    """What the core needs from the host: isolated workers and resource readings."""

    name: str
    #: Whether ``spawn_worker`` can run an ``argv`` (a ``command`` agent) here.
    runs_commands: bool

    @property
    def cpu_limit_mode(self) -> str:
        """How CPU limits are enforced here: one of ``CPU_LIMIT_MODES``."""
        ...

    def spawn_worker(self, spec: WorkerSpec) -> WorkerHandle:
        """Start one isolated invocation."""
        ...

    def start_service(self, spec: WorkerSpec) -> ServiceHandle:
        """Start a persistent worker running ``spec.entry``'s factory."""
        ...

    def resources(self, data_path: str) -> ResourceReader:
        """The monitor's reader of this host; ``data_path`` is on the volume to measure."""
        ...

    def hardware_facts(self) -> dict[str, str]:
        """Identifying facts of the machine by name (``machine_id``, ``cpu_model``, ...)."""
        ...

    def can_reach(self, host: str, port: int, timeout: float) -> bool:
        """Whether a TCP connection to host:port opens within ``timeout`` (the link probe)."""
        ...

    def boot_facts(self) -> Mapping[str, Any]:
        """Kernel and boot facts for attestation (``edge_min.platform.boot``); None if unread."""

    def boot_chain(self) -> BootChain:
        """What verified how this process started (signed launcher, UEFI Secure Boot)."""
        ...

    def storage_facts(self) -> Mapping[str, Any] | None:
        """What the device reports to central of its durable storage when the host, not the
        data volume, decides it (a browser: backend, persistence granted, quota, usage);
        None where the monitor's disk readings say it all."""
        ...


_current: Platform | None = None


def get_platform() -> Platform:
    """The platform of this host, chosen on first call and cached."""
    global _current
    if _current is None:
        if sys.platform == "emscripten" or not hasattr(os, "fork"):
            from edge_min.platform.inprocess import InProcessPlatform

            _current = InProcessPlatform()
        else:
            from edge_min.platform.posix import PosixPlatform

            _current = PosixPlatform()
    return _current


def new_lock() -> AbstractContextManager[bool]:
    """A mutex (``with lock: ...``) for code outside ``edge_min.platform``."""
    import threading

    return threading.Lock()


def set_platform(platform: Platform | None) -> None:
    """Replace the cached platform (a target shim or a test); ``None`` re-detects."""
    global _current
    _current = platform
