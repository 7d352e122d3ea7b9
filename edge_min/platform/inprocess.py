"""A platform without processes (Pyodide in a browser tab): Python agents run in-process.

There is **no isolation and no limit** here: the agent shares the runtime's interpreter,
memory and files, ``max_memory``/``max_cpu``/``max_storage``/``timeout`` are not enforced
and ``cpu_limit_mode`` is ``"none"``. ``command`` agents are refused, as there is nothing
to run them with. The result has the same shape as a POSIX worker's (one JSON frame on
``stdout``), so executors read both the same way.
"""

from __future__ import annotations

import json
import os
import time

from edge_min.errors import AgentError
from edge_min.platform import CpuTimes, DiskUsage, MemoryInfo, WorkerResult, WorkerSpec


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

            started = time.monotonic()
            spec = self.spec
            frame = run_entry(str(spec.entry), spec.stdin, dict(spec.context), list(spec.sys_path))
            self._result = WorkerResult(
                returncode=0 if frame.get("ok") else 1,
                stdout=json.dumps(frame).encode("utf-8"),
                stderr=b"",
                duration=time.monotonic() - started,
                cpu_limit_mode="none",
            )
        return self._result


class InProcessPlatform:
    """Runs ``python`` agents in the calling interpreter, without isolation (Pyodide)."""

    name = "inprocess"

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

    def cpu_times(self) -> CpuTimes:
        """Not available without a host OS view."""
        raise NotImplementedError("cpu_times is not available on the in-process platform")

    def memory_info(self) -> MemoryInfo:
        """Not available without a host OS view."""
        raise NotImplementedError("memory_info is not available on the in-process platform")

    def disk_usage(self, path: str) -> DiskUsage:
        """Not available without a host OS view."""
        raise NotImplementedError("disk_usage is not available on the in-process platform")

    def can_reach(self, host: str, port: int, timeout: float) -> bool:
        """No sockets here: the host page (or its shim) tells us; assume the link is up."""
        return True
