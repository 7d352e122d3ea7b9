"""A platform without processes (Pyodide in a browser tab): Python agents run in-process.

There is **no isolation** here: the agent shares the runtime's interpreter, memory and
files, and a call cannot be interrupted. Its limits are **checked after the call** instead
of enforced during it, and a call over a limit fails the step as on a gateway (the same
``AgentLimitExceeded``, retried as the step says; its output is discarded):

- ``timeout``: the call took longer;
- ``max_memory``: the peak of the Python memory it allocated (``tracemalloc``, on only
  while an agent with the limit runs) was over it; memory outside Python's allocator (a
  native library's) is not seen;
- ``max_storage``: its work directory holds more after the call.

``max_cpu`` cannot be checked apart from the wall time (``cpu_limit_mode`` is ``"none"``);
``WorkerResult.applied`` says ``{"in_process": "checked after the call"}``. ``command``
agents are refused, as there is nothing to run them with. The result has the same shape as a
POSIX worker's (one JSON frame on ``stdout``), so executors read both the same way.

``start_service`` gives an ``InProcessService``: the handler factory runs here once and the
handler is called for each request, with the same frames as a persistent POSIX worker
(``edge_min.platform.worker``), again without limits or timeouts.

``resources()`` gives ``NoResources``: a tab sees no host CPU, memory or disk, so the
monitor's samples carry the runtime's own metrics only. ``boot_chain()`` is unverifiable, so
``security.secure_boot: true`` is a startup error here.
"""

from __future__ import annotations

import json
import os
import time
import tracemalloc
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from edge_min.errors import AgentError
from edge_min.platform import NoResources, ServiceReply, WorkerResult, WorkerSpec

if TYPE_CHECKING:
    from edge_min.platform.boot import BootChain


class InProcessHandle:
    """A Python agent call that runs, in this process, when ``wait()`` is called."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self._result: WorkerResult | None = None

    @property
    def pid(self) -> int | None:
        """Always ``None``: there is no separate process."""
        return None

    def kill(self) -> None:
        """Nothing to kill: an in-process call cannot be interrupted."""

    def wait(self) -> WorkerResult:
        """Call the agent function and return its frame."""
        if self._result is None:
            from edge_min.platform.worker import run_entry

            spec = self.spec
            tracing = spec.max_memory is not None and not tracemalloc.is_tracing()
            if tracing:
                tracemalloc.start()
            elif spec.max_memory is not None:
                tracemalloc.reset_peak()
            started = time.monotonic()
            try:
                frame = run_entry(
                    str(spec.entry), spec.stdin, dict(spec.context), list(spec.sys_path)
                )
                duration = time.monotonic() - started
                peak = tracemalloc.get_traced_memory()[1] if spec.max_memory is not None else 0
            finally:
                if tracing:
                    tracemalloc.stop()
            killed_for = None
            if spec.timeout is not None and duration > spec.timeout:
                killed_for = "timeout"
            elif spec.max_memory is not None and peak > spec.max_memory:
                frame = {
                    "ok": False,
                    "kind": "memory",
                    "type": "MemoryError",
                    "message": f"allocated up to {peak:,} bytes of Python memory in the call",
                }
            storage = du(spec.work_dir) if spec.max_storage is not None else None
            self._result = WorkerResult(
                returncode=0 if frame.get("ok") else 1,
                stdout=json.dumps(frame).encode("utf-8"),
                stderr=b"",
                duration=duration,
                killed_for=killed_for,
                storage_used=storage,
                cpu_limit_mode="none",
                applied={"in_process": "checked after the call"},
            )
        return self._result


def du(folder: str) -> int:
    """Bytes of the files under ``folder`` (0 when it is gone)."""
    total = 0
    for base, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(base, name)).st_size
            except OSError:
                continue
    return total


class InProcessService:
    """A persistent "worker" in this process: the factory's handler, kept between requests."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self._handler: Any = None
        self._served = 0
        self._stopped = False

    @property
    def pid(self) -> int | None:
        """Always ``None``: there is no separate process."""
        return None

    @property
    def alive(self) -> bool:
        """Until ``stop()``, or until its factory failed."""
        return not self._stopped

    @property
    def applied(self) -> Mapping[str, Any]:
        """Nothing is applied in-process."""
        return {}

    def request(self, value: Any, timeout: float | None) -> ServiceReply:
        """Call the factory (first request) or the handler, here and now."""
        from edge_min.platform.worker import call_guarded, resolve_entry

        started = time.monotonic()
        if self._stopped:
            ended = WorkerResult(None, b"", b"", 0.0, killed_for="stopped")
            return ServiceReply(frame=None, ended=ended)
        if self._handler is None:
            try:
                factory = resolve_entry(str(self.spec.entry), list(self.spec.sys_path))
            except Exception as exc:
                self._stopped = True
                frame = {"ok": False, "kind": "import", "type": type(exc).__name__}
                return ServiceReply({**frame, "message": str(exc)}, None)
            frame = call_guarded(factory, value, dict(self.spec.context), raw=True)
            if not frame.get("ok"):
                self._stopped = True
                if frame.get("kind") == "error":
                    frame["kind"] = "load"
                return ServiceReply(frame, None, duration=time.monotonic() - started)
            self._handler = frame["output"]
            frame = {"ok": True, "output": getattr(self._handler, "info", None)}
        else:
            request = value if isinstance(value, dict) else {}
            frame = call_guarded(
                self._handler, request.get("input"), dict(request.get("context") or {})
            )
            self._served += 1
        extra = self._handler.meta() if hasattr(self._handler, "meta") else {}
        frame["meta"] = {"pid": None, "served": self._served, **extra}
        return ServiceReply(frame, None, duration=time.monotonic() - started)

    def stop(self) -> None:
        """Drop the handler (and the session it holds)."""
        self._stopped = True
        self._handler = None


class InProcessPlatform:
    """Runs ``python`` agents in the calling interpreter, without isolation (Pyodide)."""

    name = "inprocess"
    runs_commands = False

    @property
    def cpu_limit_mode(self) -> str:
        """Always ``"none"``: nothing limits CPU here."""
        return "none"

    def spawn_worker(self, spec: WorkerSpec) -> InProcessHandle:
        """Prepare an in-process call; refuses ``argv`` (command) workers."""
        if spec.argv:
            raise AgentError(
                f"agent '{spec.name}': runtime.executor 'command' needs a host that can start "
                "processes; this platform (in-process, e.g. Pyodide) cannot. "
                "Use runtime.executor: python"
            )
        os.makedirs(spec.work_dir, exist_ok=True)
        return InProcessHandle(spec)

    def start_service(self, spec: WorkerSpec) -> InProcessService:
        """A persistent handler in this process (no isolation, see the module doc)."""
        os.makedirs(spec.work_dir, exist_ok=True)
        return InProcessService(spec)

    def resources(self, data_path: str) -> NoResources:
        """Nothing to read without a host OS view: samples carry runtime metrics only."""
        return NoResources()

    def boot_facts(self) -> dict[str, Any]:
        """No kernel to look at from here: every fact unknown."""
        return {"cmdline": None, "kernel": None, "secure_boot": None, "ima": None, "tpm": None}

    def boot_chain(self) -> BootChain:
        """Unverifiable: a browser tab cannot see how its host booted."""
        from edge_min.platform.boot import BootChain

        return BootChain(
            missing=(
                "no boot chain to verify (in-process platform: a browser tab cannot see "
                "how its host booted)",
            )
        )

    def storage_facts(self) -> dict[str, Any] | None:
        """None: the data volume's readings (the monitor's) say it all."""
        return None

    def hardware_facts(self) -> dict[str, str]:
        """What this interpreter can tell of its machine: the OS name and the machine type.

        ``os.uname()``, not ``platform.platform()``: that one asks a ``uname -p`` subprocess
        for the processor, and there are no processes here. The OS release is left out, so
        an upgrade of the interpreter (Pyodide's Emscripten) is not seen as new hardware.
        """
        if not hasattr(os, "uname"):
            return {}
        uname = os.uname()
        return {"system": uname.sysname, "machine": uname.machine}

    def can_reach(self, host: str, port: int, timeout: float) -> bool:
        """No sockets here: the host page (or its shim) tells us; assume the link is up."""
        return True
