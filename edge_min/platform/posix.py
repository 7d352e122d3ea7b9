"""Isolated agent workers on POSIX hosts: one subprocess per invocation, with limits.

Each worker is ``python -s -B worker.py '<config>'`` (compiled: ``<binary> __worker__ ...``) in a
new session (its own process group), cwd = the agent's work directory, env = ``spec.env``.
``worker.py`` applies the limits on itself before any agent code runs. The rules:

- **memory** (``max_memory``): ``RLIMIT_AS`` = the worker interpreter's own address space
  at start (``VmSize``, ~15MB) + ``max_memory``. ``RLIMIT_AS`` counts virtual memory, so
  an agent that maps much more than it touches (some JITs, thread stacks) needs a larger
  ``max_memory`` than its resident size. With ``spec.preload`` the baseline is taken
  after those imports (numpy + onnxruntime: ~150MB at 1 thread, ~190MB at 2+; see
  ``worker.py``), so ``max_memory`` pays for the model, its session and thread stacks.
- **cpu** (``max_cpu`` cores), in the first mode that works (``cpu_limit_mode``):
  ``cgroup2`` — a child cgroup per worker under ``<cgroup2 mount>/edge_min`` (or the
  ``cgroup_parent`` given) with ``cpu.max = "<max_cpu * 100000> 100000"``; ``cgroup1`` —
  the same with ``cpu.cfs_quota_us`` in the v1 ``cpu`` hierarchy; ``rlimit`` — no
  throttling, but ``nice +10`` and ``RLIMIT_CPU = ceil(max_cpu * timeout)`` CPU seconds,
  so a worker that burns more than its share over the whole step is stopped (SIGXCPU).
  The worker joins its cgroup itself, before running agent code; the cgroup is removed
  (and anything left in it killed) when the worker ends (``edge_min.platform.cgroups``).
- **storage** (``max_storage``): ``RLIMIT_FSIZE = max_storage`` (no single file may
  outgrow the quota) plus a watchdog that sums the apparent size of the work directory
  every ``poll_interval`` (backing off when the walk is slow) and kills the worker once
  the sum reaches the quota. Reaching the quota counts as passing it: a write that
  RLIMIT_FSIZE cut short leaves a file exactly at the quota, and a program may ignore
  that failure. The quota is soft by at most one poll interval of writes; the size is
  checked once more at the end. A work directory already at its quota is refused
  without starting a worker.
- **timeout**: the whole process group gets SIGKILL at ``spec.timeout``; anything left in
  the group after the worker exits is killed too, so no agent outlives its step.

``WorkerResult`` reports what happened; ``edge_min.agents.isolation`` names the limit.
``start_service`` starts the same worker in ``serve`` mode and keeps it for many requests
(``edge_min.platform.service`` states the per-request rules). ``resources(data_path)``
gives the monitor's host readings from ``edge_min.platform.procfs``, the one parser of
``/proc`` and ``/sys``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_min.platform import NoResources, ResourceReader, WorkerResult, WorkerSpec
from edge_min.platform.cgroups import CgroupCpu
from edge_min.platform.procfs import ProcfsResources
from edge_min.platform.worker import command as worker_command

if TYPE_CHECKING:
    from edge_min.platform.boot import BootChain
    from edge_min.platform.service import PosixService

STDERR_TAIL = 64 * 1024
# A worker that exits while a stray grandchild holds its pipes open gets this long to drain.
_DRAIN_GRACE = 0.5
_NICE_FALLBACK = 10


def directory_size(path: str) -> int:
    """The apparent size in bytes of every regular file under ``path`` (symlinks not followed)."""
    total = 0
    stack = [path]
    while stack:
        current = stack.pop()
        try:
            with os.scandir(current) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        elif entry.is_file(follow_symlinks=False):
                            total += entry.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue  # removed while we walked
        except OSError:
            continue
    return total


class PosixWorkerHandle:
    """A running worker subprocess and its supervisor (runs inside ``wait()``)."""

    def __init__(
        self,
        spec: WorkerSpec,
        proc: subprocess.Popen[bytes] | None,
        *,
        cgroup: CgroupCpu | None,
        cgroup_path: str | None,
        cpu_limit_mode: str,
        poll_interval: float,
        max_output: int,
        started: float,
        refused_usage: int | None = None,
    ) -> None:
        self.spec = spec
        self.cpu_limit_mode = cpu_limit_mode
        self._proc = proc
        self._cgroup = cgroup
        self._cgroup_path = cgroup_path
        self._poll = poll_interval
        self._max_output = max_output
        self._started = started
        self._refused_usage = refused_usage
        self._result: WorkerResult | None = None
        self.status_fd: int | None = None
        self._kill_reason: str | None = None

    @property
    def pid(self) -> int | None:
        """The worker's process id (also its process group id)."""
        return self._proc.pid if self._proc else None

    def kill(self, reason: str = "cancelled") -> None:
        """SIGKILL the worker's process group and cgroup; ``reason`` lands in ``killed_for``."""
        if self._proc is not None and self._proc.returncode is None and self._kill_reason is None:
            self._kill_reason = reason
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGKILL)
        if self._cgroup is not None and self._cgroup_path is not None:
            self._cgroup.remove(self._cgroup_path)
            self._cgroup_path = None

    def wait(self) -> WorkerResult:
        """Feed stdin, enforce timeout and storage, collect output; block until the end."""
        if self._result is None:
            if self._proc is None:
                self._result = WorkerResult(
                    returncode=None,
                    stdout=b"",
                    stderr=b"",
                    duration=0.0,
                    killed_for="storage",
                    storage_used=self._refused_usage,
                    cpu_limit_mode=self.cpu_limit_mode,
                )
            else:
                try:
                    self._result = self._supervise(self._proc)
                finally:
                    self.kill()
                    if self.status_fd is not None:
                        os.close(self.status_fd)
                        self.status_fd = None
        return self._result

    def _applied(self) -> dict[str, object]:
        # The worker wrote one line and closed its end before running agent code.
        if self.status_fd is None:
            return {}
        os.set_blocking(self.status_fd, False)
        try:
            data = os.read(self.status_fd, 65536)
            value = json.loads(data.decode("utf-8")) if data.strip() else {}
        except (OSError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    def _supervise(self, proc: subprocess.Popen[bytes]) -> WorkerResult:
        spec = self.spec
        out, err = bytearray(), bytearray()
        truncated = False
        killed_for: str | None = None
        sel = selectors.DefaultSelector()
        assert proc.stdin and proc.stdout and proc.stderr
        pending = memoryview(spec.stdin)
        if pending:
            os.set_blocking(proc.stdin.fileno(), False)
            sel.register(proc.stdin, selectors.EVENT_WRITE)
        else:
            proc.stdin.close()
        sel.register(proc.stdout, selectors.EVENT_READ)
        sel.register(proc.stderr, selectors.EVENT_READ)
        deadline = self._started + spec.timeout if spec.timeout else None
        storage_every, next_storage = self._poll, time.monotonic()
        exited_at: float | None = None
        while sel.get_map():
            for key, _ in sel.select(self._poll):
                stream = key.fileobj
                if stream is proc.stdin:
                    try:
                        sent = os.write(proc.stdin.fileno(), pending[:65536])
                        pending = pending[sent:]
                    except (BrokenPipeError, ConnectionResetError):
                        pending = pending[:0]
                    if not pending:
                        sel.unregister(proc.stdin)
                        proc.stdin.close()
                    continue
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(stream)
                    continue
                if stream is proc.stdout:
                    room = self._max_output - len(out)
                    truncated = truncated or len(chunk) > room
                    out += chunk[: max(room, 0)]
                else:
                    err += chunk
                    if len(err) > 2 * STDERR_TAIL:
                        del err[:-STDERR_TAIL]
            now = time.monotonic()
            if killed_for is None and deadline is not None and now >= deadline:
                killed_for = "timeout"
                self.kill(killed_for)
            if killed_for is None and spec.max_storage is not None and now >= next_storage:
                t0 = time.monotonic()
                used = directory_size(spec.work_dir)
                walk = time.monotonic() - t0
                storage_every = max(self._poll, 10 * walk)
                next_storage = time.monotonic() + storage_every
                if used >= spec.max_storage:
                    killed_for = "storage"
                    self.kill(killed_for)
            killed_for = killed_for or self._kill_reason
            if proc.poll() is not None or killed_for is not None:
                if exited_at is None:
                    exited_at = now
                    self.kill()  # stragglers in the group must not outlive the step
                elif now - exited_at > _DRAIN_GRACE:
                    break
        for key in list(sel.get_map().values()):
            sel.unregister(key.fileobj)
        sel.close()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            stream.close()
        returncode = proc.wait()
        used_end = directory_size(spec.work_dir) if spec.max_storage is not None else None
        signame = None
        if returncode < 0:
            try:
                signame = signal.Signals(-returncode).name
            except ValueError:
                signame = f"signal {-returncode}"
        return WorkerResult(
            returncode=returncode,
            stdout=bytes(out),
            stderr=bytes(err[-STDERR_TAIL:]),
            duration=time.monotonic() - self._started,
            killed_for=killed_for,
            signal=signame,
            storage_used=used_end,
            cpu_limit_mode=self.cpu_limit_mode,
            stdout_truncated=truncated,
            applied=self._applied(),
        )


class PosixPlatform:
    """The platform for CPython on Linux and other POSIX hosts."""

    name = "posix"
    runs_commands = True

    def __init__(
        self,
        *,
        python: str | None = None,
        cgroup_parent: str | None = None,
        cpu_limit: str = "auto",
        poll_interval: float = 0.05,
        max_output: int = 16 * 1024 * 1024,
        proc_root: str | Path = "/proc",
        sys_root: str | Path = "/sys",
    ) -> None:
        if cpu_limit not in ("auto", "rlimit"):
            raise ValueError(f"cpu_limit must be 'auto' or 'rlimit', got {cpu_limit!r}")
        self.python = python or sys.executable
        self.cgroup_parent = cgroup_parent
        self.cpu_limit = cpu_limit
        self.poll_interval = poll_interval
        self.max_output = max_output
        # Where the host readings come from (edge_min.platform.procfs); tests use fake trees.
        self.proc_root = proc_root
        self.sys_root = sys_root
        self._cgroup: CgroupCpu | None = None
        self._probed = False

    @property
    def cpu_limit_mode(self) -> str:
        """``cgroup2``, ``cgroup1`` or ``rlimit``: how ``max_cpu`` is enforced here."""
        cg = self._cgroup_cpu()
        return cg.mode if cg else "rlimit"

    def _cgroup_cpu(self) -> CgroupCpu | None:
        if not self._probed:
            self._probed = True
            if self.cpu_limit == "auto":
                self._cgroup = CgroupCpu.probe(self.cgroup_parent)
        return self._cgroup

    def _prepare(
        self, spec: WorkerSpec, mode: str
    ) -> tuple[dict[str, object], CgroupCpu | None, str | None, str]:
        """The worker's config, its CPU cgroup (made here) and the CPU limit mode."""
        os.makedirs(spec.work_dir, exist_ok=True)
        config: dict[str, object] = {
            "mode": mode,
            "argv": list(spec.argv),
            "entry": spec.entry,
            "sys_path": list(spec.sys_path),
            "context": dict(spec.context),
            "max_memory": spec.max_memory,
            "max_storage": spec.max_storage,
            "needs_network": spec.needs_network,
            "preload": list(spec.preload),
            "parent_pid": os.getpid(),
        }
        cpu_mode = "none"
        cgroup, cgroup_path = None, None
        if spec.max_cpu is not None:
            cgroup = self._cgroup_cpu()
            if cgroup is not None:
                try:
                    cgroup_path = cgroup.create(spec.name, spec.max_cpu)
                    config["cgroup_procs"] = os.path.join(cgroup_path, "cgroup.procs")
                    cpu_mode = cgroup.mode
                except OSError:
                    cgroup = None
            if cgroup is None:
                cpu_mode = "rlimit"
                config["nice"] = _NICE_FALLBACK
                # A persistent worker gets its CPU budget per request instead (service.py).
                if spec.timeout and mode != "serve":
                    config["cpu_seconds"] = max(1, math.ceil(spec.max_cpu * spec.timeout))
        return config, cgroup, cgroup_path, cpu_mode

    def _popen(
        self, spec: WorkerSpec, config: dict[str, object]
    ) -> tuple[subprocess.Popen[bytes], int]:
        """Start ``worker.py`` with ``config``; the process and the status pipe's read end."""
        status_read, status_write = os.pipe()
        config["status_fd"] = status_write
        try:
            proc = subprocess.Popen(
                [*worker_command(self.python), json.dumps(config)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=spec.work_dir,
                env=dict(spec.env),
                start_new_session=True,
                close_fds=True,
                pass_fds=(status_write,),
            )
        except BaseException:
            os.close(status_read)
            raise
        finally:
            os.close(status_write)
        return proc, status_read

    def _refused(self, spec: WorkerSpec) -> int | None:
        # A work directory already at its quota gets no worker at all.
        if spec.max_storage is None:
            return None
        used = directory_size(spec.work_dir)
        return used if used >= spec.max_storage else None

    def spawn_worker(self, spec: WorkerSpec) -> PosixWorkerHandle:
        """Start ``worker.py`` for ``spec`` in its own session, limits applied in the child."""
        started = time.monotonic()
        config, cgroup, cgroup_path, mode = self._prepare(spec, "exec" if spec.argv else "python")

        def handle(proc: subprocess.Popen[bytes] | None, refused: int | None) -> PosixWorkerHandle:
            return PosixWorkerHandle(
                spec,
                proc,
                cgroup=cgroup,
                cgroup_path=cgroup_path,
                cpu_limit_mode=mode,
                poll_interval=self.poll_interval,
                max_output=self.max_output,
                started=started,
                refused_usage=refused,
            )

        refused = self._refused(spec)
        if refused is not None:
            if cgroup is not None and cgroup_path is not None:
                cgroup.remove(cgroup_path)
            return handle(None, refused)
        try:
            proc, status_read = self._popen(spec, config)
        except BaseException:
            if cgroup is not None and cgroup_path is not None:
                cgroup.remove(cgroup_path)
            raise
        h = handle(proc, None)
        h.status_fd = status_read
        return h

    def start_service(self, spec: WorkerSpec) -> PosixService:
        """Start a persistent worker for ``spec`` (see ``edge_min.platform.service``)."""
        from edge_min.platform.service import PosixService, spawn_from_long_lived_thread

        if not spec.entry:
            raise ValueError("a persistent worker needs spec.entry (its handler factory)")
        config, cgroup, cgroup_path, mode = self._prepare(spec, "serve")
        rate = spec.max_cpu if mode == "rlimit" else None

        def service(proc: subprocess.Popen[bytes] | None, status: int | None) -> PosixService:
            return PosixService(
                spec,
                proc,
                status_fd=status,
                cgroup=cgroup,
                cgroup_path=cgroup_path,
                cpu_limit_mode=mode,
                cpu_seconds_per_second=rate,
                poll_interval=self.poll_interval,
                max_output=self.max_output,
                refused_usage=refused,
            )

        refused = self._refused(spec)
        if refused is not None:
            if cgroup is not None and cgroup_path is not None:
                cgroup.remove(cgroup_path)
            return service(None, None)
        try:
            proc, status_read = spawn_from_long_lived_thread(lambda: self._popen(spec, config))
        except BaseException:
            if cgroup is not None and cgroup_path is not None:
                cgroup.remove(cgroup_path)
            raise
        return service(proc, status_read)

    def resources(self, data_path: str) -> ResourceReader:
        """``ProcfsResources`` on ``data_path`` where /proc is readable, else ``NoResources``."""
        if ProcfsResources.available(self.proc_root):
            return ProcfsResources(data_path, proc_root=self.proc_root, sys_root=self.sys_root)
        return NoResources()

    def boot_facts(self) -> dict[str, Any]:
        """/proc/cmdline, Secure Boot, IMA log summary, TPM (``platform.boot_facts``)."""
        from edge_min.platform.boot_facts import read_boot_facts

        return read_boot_facts(self.proc_root, self.sys_root)

    def boot_chain(self) -> BootChain:
        """The signed launcher's claim (in the compiled program) and UEFI Secure Boot."""
        from edge_min.platform.boot import this_process_boot_chain

        return this_process_boot_chain(self.sys_root)

    def storage_facts(self) -> dict[str, Any] | None:
        """None: the data volume's readings (the monitor's) say it all."""
        return None

    def hardware_facts(self) -> dict[str, str]:
        """machine-id, DMI product and serial, CPU model, MACs (``read_hardware_facts``)."""
        from edge_min.platform.procfs import read_hardware_facts

        return read_hardware_facts(self.proc_root, self.sys_root)

    def can_reach(self, host: str, port: int, timeout: float) -> bool:
        """Whether a TCP connection to host:port opens within ``timeout``."""
        import socket

        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except OSError:
            return False
        return True
