"""Persistent workers on POSIX hosts: one long-lived subprocess per agent, framed JSON.

``PosixPlatform.start_service(spec)`` starts ``worker.py`` in ``serve`` mode with the same
isolation as a one-shot worker (own session, cwd = work directory, env = ``spec.env``,
cgroup CPU quota or nice + RLIMIT_CPU, RLIMIT_FSIZE, RLIMIT_AS, PR_SET_PDEATHSIG, no
network unless ``needs_network``), and keeps it. ``PosixService.request`` then sends one
frame (4-byte big-endian length + UTF-8 JSON) on the worker's stdin and reads one frame
from its stdout, draining stderr meanwhile. The rules per request:

- **wall timeout**: no answer within ``timeout`` seconds -> the process group is
  SIGKILLed and the reply carries ``ended.killed_for == "timeout"``; the handle is dead.
- **storage**: the work directory is summed every ``poll_interval`` (backing off when
  the walk is slow) and once more at the end; reaching ``max_storage`` kills the worker
  (``killed_for == "storage"``).
- **cpu** in rlimit mode: each request carries ``cpu_seconds = ceil(max_cpu * timeout)``
  and the worker moves its soft RLIMIT_CPU to (CPU used so far + that budget).
- **death**: end of stdout before a whole frame -> ``ended`` holds the exit status and
  signal, for ``edge_min.agents.isolation`` to name the limit.

PR_SET_PDEATHSIG fires when the *thread* that forked the worker exits, not the process.
A persistent worker outlives the call that started it (an API request thread, say), so
every persistent worker is forked from one long-lived daemon "spawner" thread.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import selectors
import signal
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from edge_min.platform import ServiceReply, WorkerResult, WorkerSpec
from edge_min.platform.cgroups import CgroupCpu
from edge_min.platform.posix import STDERR_TAIL, directory_size

_HEADER = struct.Struct("!I")
#: How long ``stop()`` lets a worker exit on its own after its input is closed.
STOP_GRACE = 2.0
_EXIT_GRACE = 1.0


class _Spawner:
    """One daemon thread that runs every fork of a persistent worker (see module doc)."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the spawner thread and return its result (or raise its error)."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="edge-spawner", daemon=True)
                self._thread.start()
        done = threading.Event()
        box: dict[str, Any] = {}
        self._jobs.put((fn, box, done))
        done.wait()
        if "error" in box:
            raise box["error"]
        return box.get("value")

    def _loop(self) -> None:
        while True:
            fn, box, done = self._jobs.get()
            try:
                box["value"] = fn()
            except BaseException as exc:
                box["error"] = exc
            done.set()


_spawner = _Spawner()


def spawn_from_long_lived_thread(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` (which forks) on the process-wide spawner thread."""
    return _spawner.run(fn)


class PosixService:
    """A persistent worker subprocess and its per-request supervisor."""

    def __init__(
        self,
        spec: WorkerSpec,
        proc: subprocess.Popen[bytes] | None,
        *,
        status_fd: int | None,
        cgroup: CgroupCpu | None,
        cgroup_path: str | None,
        cpu_limit_mode: str,
        cpu_seconds_per_second: float | None,
        poll_interval: float,
        max_output: int,
        refused_usage: int | None = None,
    ) -> None:
        self.spec = spec
        self.cpu_limit_mode = cpu_limit_mode
        self._proc = proc
        self._status_fd = status_fd
        self._cgroup = cgroup
        self._cgroup_path = cgroup_path
        self._cpu_rate = cpu_seconds_per_second
        self._poll = poll_interval
        self._max_output = max_output
        self._started = time.monotonic()
        self._requests = 0
        self._applied: dict[str, Any] = {}
        self._buffer = bytearray()
        self._sel: selectors.BaseSelector | None = None
        self.ended: WorkerResult | None = None
        if proc is None:
            self.ended = WorkerResult(
                returncode=None,
                stdout=b"",
                stderr=b"",
                duration=0.0,
                killed_for="storage",
                storage_used=refused_usage,
                cpu_limit_mode=cpu_limit_mode,
            )

    @property
    def pid(self) -> int | None:
        """The worker's process id (also its process group id)."""
        return self._proc.pid if self._proc else None

    @property
    def alive(self) -> bool:
        """Whether the worker can take another request."""
        return self.ended is None and self._proc is not None and self._proc.poll() is None

    @property
    def applied(self) -> Mapping[str, Any]:
        """What the worker reported it applied on itself (read after its first reply)."""
        return self._applied

    def request(self, value: Any, timeout: float | None) -> ServiceReply:
        """Send one request frame and wait for one reply frame, under the limits."""
        if self.ended is not None or self._proc is None:
            assert self.ended is not None
            return ServiceReply(frame=None, ended=self.ended)
        if self._requests and isinstance(value, dict) and self._cpu_rate and timeout:
            value = {**value, "cpu_seconds": max(1.0, self._cpu_rate * timeout)}
        self._requests += 1
        data = json.dumps(value).encode("utf-8")
        return self._exchange(self._proc, _HEADER.pack(len(data)) + data, timeout)

    def _exchange(
        self, proc: subprocess.Popen[bytes], data: bytes, timeout: float | None
    ) -> ServiceReply:
        spec = self.spec
        assert proc.stdin and proc.stdout and proc.stderr
        t0 = time.monotonic()
        deadline = t0 + timeout if timeout else None
        err = bytearray()
        sel = self._selector(proc)
        # The worker is idle and reading: most requests fit the pipe in one write.
        pending = self._write_some(proc, memoryview(data))
        if pending:
            sel.register(proc.stdin, selectors.EVENT_WRITE)
        next_storage = t0 + self._poll
        killed_for: str | None = None
        frame: dict[str, Any] | None = None
        eof = False
        try:
            while frame is None and not eof and killed_for is None:
                now = time.monotonic()
                wait = self._poll if deadline is None else min(self._poll, deadline - now)
                for key, _ in sel.select(max(wait, 0.0)):
                    if key.fileobj is proc.stdin:
                        pending = self._write_some(proc, pending)
                        if not pending:
                            sel.unregister(proc.stdin)
                        continue
                    chunk = os.read(key.fd, 65536)
                    if key.fileobj is proc.stderr:
                        err += chunk
                        if len(err) > 2 * STDERR_TAIL:
                            del err[:-STDERR_TAIL]
                        if not chunk:
                            sel.unregister(proc.stderr)
                        continue
                    if not chunk:
                        eof = True
                        break
                    self._buffer += chunk
                    frame = self._take_frame()
                now = time.monotonic()
                if deadline is not None and now >= deadline and frame is None:
                    killed_for = "timeout"
                elif spec.max_storage is not None and now >= next_storage:
                    walk_start = time.monotonic()
                    if directory_size(spec.work_dir) >= spec.max_storage:
                        killed_for = "storage"
                    walk = time.monotonic() - walk_start
                    next_storage = time.monotonic() + max(self._poll, 10 * walk)
        finally:
            if pending:
                sel.unregister(proc.stdin)
        full = spec.max_storage is not None and directory_size(spec.work_dir) >= spec.max_storage
        if frame is not None and full:
            killed_for, frame = "storage", None
        took = time.monotonic() - t0
        if frame is not None:
            if not self._applied:
                self._applied = self._read_status()
            err = (err + self._drain_stderr(proc))[-STDERR_TAIL:]
            return ServiceReply(frame=frame, ended=None, stderr=bytes(err), duration=took)
        if killed_for is not None:
            self._kill()
        ended = self._finish(proc, killed_for, bytes(err))
        return ServiceReply(frame=None, ended=ended, stderr=ended.stderr, duration=took)

    def _selector(self, proc: subprocess.Popen[bytes]) -> selectors.BaseSelector:
        # One selector for the worker's life: stdout and stderr stay registered.
        if self._sel is None:
            assert proc.stdin and proc.stdout and proc.stderr
            os.set_blocking(proc.stdin.fileno(), False)
            self._sel = selectors.DefaultSelector()
            self._sel.register(proc.stdout, selectors.EVENT_READ)
            self._sel.register(proc.stderr, selectors.EVENT_READ)
        return self._sel

    def _write_some(self, proc: subprocess.Popen[bytes], pending: memoryview) -> memoryview:
        assert proc.stdin is not None
        try:
            while pending:
                pending = pending[os.write(proc.stdin.fileno(), pending[:65536]) :]
        except BlockingIOError:
            pass
        except (BrokenPipeError, ConnectionResetError):
            pending = pending[:0]  # it died: stdout's end of file tells the rest
        return pending

    def _drain_stderr(self, proc: subprocess.Popen[bytes]) -> bytes:
        # What the worker wrote on stderr before its reply may still sit in the pipe.
        assert proc.stderr is not None
        fd = proc.stderr.fileno()
        data = bytearray()
        os.set_blocking(fd, False)
        try:
            while len(data) < STDERR_TAIL:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                data += chunk
        except BlockingIOError:
            pass
        finally:
            os.set_blocking(fd, True)
        return bytes(data)

    def _take_frame(self) -> dict[str, Any] | None:
        buf = self._buffer
        if len(buf) < _HEADER.size:
            return None
        (size,) = _HEADER.unpack_from(buf)
        if size > self._max_output:
            # A worker cannot be trusted past a bad frame: treat it as broken output.
            self._buffer = bytearray()
            return {
                "ok": False,
                "kind": "output",
                "type": "FrameTooLarge",
                "message": f"reply of {size} bytes is over the {self._max_output} byte maximum",
            }
        if len(buf) < _HEADER.size + size:
            return None
        body = bytes(buf[_HEADER.size : _HEADER.size + size])
        del buf[: _HEADER.size + size]
        try:
            value = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            value = {"ok": False, "kind": "output", "type": "BadFrame", "message": str(exc)}
        return value if isinstance(value, dict) else {"ok": False, "kind": "output"}

    def _read_status(self) -> dict[str, Any]:
        # The worker wrote one line and closed its end before it ran the factory.
        fd, self._status_fd = self._status_fd, None
        if fd is None:
            return {}
        try:
            os.set_blocking(fd, False)
            data = os.read(fd, 65536)
            value = json.loads(data.decode("utf-8")) if data.strip() else {}
        except (OSError, ValueError):
            value = {}
        finally:
            os.close(fd)
        return value if isinstance(value, dict) else {}

    def _finish(
        self, proc: subprocess.Popen[bytes], killed_for: str | None, stderr: bytes
    ) -> WorkerResult:
        # The worker is ending (or was killed): collect its status, the rest of its stderr.
        try:
            returncode = proc.wait(_EXIT_GRACE)
        except subprocess.TimeoutExpired:
            self._kill()
            returncode = proc.wait()
        assert proc.stderr is not None
        with contextlib.suppress(OSError):
            os.set_blocking(proc.stderr.fileno(), False)
            rest = proc.stderr.read() or b""
            stderr = (stderr + rest)[-STDERR_TAIL:]
        applied = self._applied or self._read_status()
        self._cleanup()
        signame = None
        if returncode < 0:
            try:
                signame = signal.Signals(-returncode).name
            except ValueError:
                signame = f"signal {-returncode}"
        used = directory_size(self.spec.work_dir) if self.spec.max_storage is not None else None
        self.ended = WorkerResult(
            returncode=returncode,
            stdout=b"",
            stderr=stderr,
            duration=time.monotonic() - self._started,
            killed_for=killed_for,
            signal=signame,
            storage_used=used,
            cpu_limit_mode=self.cpu_limit_mode,
            applied=applied,
        )
        return self.ended

    def _kill(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGKILL)
        if self._cgroup is not None and self._cgroup_path is not None:
            self._cgroup.remove(self._cgroup_path)
            self._cgroup_path = None

    def _cleanup(self) -> None:
        self._kill()  # stragglers in the group must not outlive the worker
        if self._sel is not None:
            self._sel.close()
            self._sel = None
        proc = self._proc
        if proc is not None:
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        if self._status_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._status_fd)
            self._status_fd = None

    def stop(self) -> None:
        """Close the worker's input (it exits at end of input), then kill what is left."""
        proc = self._proc
        if proc is None or self.ended is not None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            returncode = proc.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            self._kill()
            returncode = proc.wait()
        self._cleanup()
        self.ended = WorkerResult(
            returncode=returncode,
            stdout=b"",
            stderr=b"",
            duration=time.monotonic() - self._started,
            killed_for="stopped",
            cpu_limit_mode=self.cpu_limit_mode,
            applied=self._applied,
        )
