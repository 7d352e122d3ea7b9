"""The worker program: runs in the child process, applies limits, then runs the agent.

Started by ``PosixPlatform`` as ``python -s -B worker.py '<config JSON>'`` in a new session,
with cwd and ``TMPDIR`` set to the agent's work directory (``command()`` gives that argv; in a
compiled single-file build it is ``<binary> __worker__ '<config JSON>'``, whose entry point
calls ``main``). It imports only the stdlib (never ``edge_min``), so it runs from a bare
file next to any interpreter.

Order of work, before any agent code runs:

1. join the per-worker cgroup (``cgroup_procs``), when the parent made one;
2. unless ``needs_network``, move into an empty network namespace (best effort, see
   ``isolate_network``; the outcome is reported on the status pipe);
3. ``nice`` and ``RLIMIT_CPU`` (the CPU fallback when there is no cgroup);
4. ``RLIMIT_FSIZE`` = ``max_storage`` (no single file may outgrow the quota);
5. ``RLIMIT_AS`` = the address space this interpreter has mapped right now (read from
   ``/proc/self/status`` ``VmSize``, about 15MB for CPython 3.11 on x86-64) **plus**
   ``max_memory``. The agent so gets ``max_memory`` of address space of its own, its
   imports included; the interpreter's own baseline is not charged to it. In ``exec`` mode
   the same sum applies to the program that replaces this one.

Before step 5, ``preload`` modules are imported (``serve`` mode: ``numpy`` and
``onnxruntime`` for the onnx executor), so the baseline of step 5 is measured *after* them:
an imported runtime's own mappings (numpy's BLAS buffers, onnxruntime's library: about
150MB of address space with ``OMP_NUM_THREADS=1``, 190MB with 2 or more, on x86-64 with
numpy 2 and onnxruntime 1.32) are not charged to ``max_memory``; the model, its session,
its arenas and its thread stacks (8MB of address space each) are.

Then, in ``exec`` mode, it restores the default SIGPIPE/SIGXFSZ/SIGXCPU handling (Python
ignores some of them and ``SIG_IGN`` survives ``exec``) and execs ``argv``. In
``python`` mode it reads the input JSON from stdin, imports ``entry``'s module (with
``sys_path`` prepended), calls ``fn(input, context)`` and writes one JSON frame to the
original stdout, while ``print`` in agent code goes to stderr:

- ``{"ok": true, "output": <value>}``
- ``{"ok": false, "kind": "memory"|"storage"|"import"|"input"|"output"|"error",
  "type": <exception class>, "message": <text>, "traceback": <tail>}``

In ``serve`` mode (a persistent worker, see ``edge_min.platform.service``) it speaks framed
JSON on stdin/stdout: each frame is a 4-byte big-endian length and that many bytes of UTF-8
JSON. The first request frame is the ``init`` value: the worker calls
``factory(init, context)`` (``entry`` names the factory) and answers with a ready frame
``{"ok": true, "output": handler.info, "meta": ...}`` (or a failure frame with ``kind``
``load``/``import``/``memory`` and exits). Each later request ``{"input", "context",
"cpu_seconds"?}`` is answered by one frame as above, from ``handler(input, context)``, with
``"meta": {"pid", "served", **handler.meta()}``. ``cpu_seconds`` (rlimit CPU mode) sets the
soft ``RLIMIT_CPU`` to the CPU time used so far plus that budget. End of input: exit 0.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import json
import math
import os
import struct
import sys
import traceback
from typing import Any

# Freed on MemoryError so the worker still has room to report it; one per process.
_BALLAST_BYTES = 1 << 20
_ballast: bytearray | None = None
_STORAGE_ERRNOS = {errno.EFBIG, getattr(errno, "EDQUOT", errno.EFBIG)}
_HEADER = struct.Struct("!I")
#: The largest frame either side accepts (a guard against a corrupt length prefix).
MAX_FRAME = 256 * 1024 * 1024
# Native runtimes (onnxruntime) report a failed allocation as an exception, not MemoryError.
_MEMORY_MARKERS = ("bad_alloc", "Failed to allocate memory", "Cannot allocate memory")


#: The first argument that makes a compiled edge-min binary act as this worker program.
WORKER_ARG = "__worker__"


def command(python: str) -> list[str]:
    """The argv that starts this program, before its config: ``python -s -B worker.py``."""
    # A Nuitka build has neither an interpreter nor this file on disk, only the one binary,
    # and its sys.executable names a "python" that does not exist: run the real executable
    # (for the one-file build, the unpacked program: no launcher and no unpack check per worker).
    if _compiled():
        exe = "/proc/self/exe"
        return [os.path.realpath(exe) if os.path.exists(exe) else sys.argv[0], WORKER_ARG]
    return [python, "-s", "-B", os.path.abspath(__file__)]


def _compiled() -> bool:
    return "__compiled__" in globals() or bool(getattr(sys, "frozen", False))


class CallContext(dict[str, Any]):
    """The ``context`` handed to a Python agent: a dict whose keys are also attributes.

    Keys: ``idempotency_key``, ``agent``, ``work_dir``, ``attempt``, ``timeout``.
    """

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None


def current_vm_size() -> int | None:
    """This process's mapped address space in bytes, from ``/proc/self/status``."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000


def isolate_network() -> str:
    """Move this process into an empty network namespace; which way worked, or ``shared``.

    ``netns`` as root (or with CAP_SYS_ADMIN); ``userns`` through an unprivileged user
    namespace (same uid/gid mapped) where the kernel allows it; ``shared`` otherwise.
    """
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return "shared"
    if not hasattr(libc, "unshare"):
        return "shared"
    if libc.unshare(CLONE_NEWNET) == 0:
        return "netns"
    uid, gid = os.getuid(), os.getgid()
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0:
        return "shared"
    try:
        for name, text in (
            ("setgroups", "deny"),
            ("uid_map", f"{uid} {uid} 1"),
            ("gid_map", f"{gid} {gid} 1"),
        ):
            with open(f"/proc/self/{name}", "w") as fh:
                fh.write(text)
    except OSError:
        pass  # the namespace holds; only the id mapping is missing (ids show as nobody)
    return "userns"


def die_with_parent(parent_pid: int | None) -> bool:
    """Ask Linux to SIGKILL this worker when the runtime that started it dies.

    A worker orphaned by a kill -9 of its runtime must not go on producing side effects
    while the restarted runtime runs the same step again. PR_SET_PDEATHSIG survives exec, so
    command agents inherit it. If the runtime is already gone, exit at once.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        if libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(125)  # the runtime died before we could watch it
    return True


def apply_limits(config: dict[str, Any]) -> dict[str, Any]:
    """Join the cgroup, isolate the network, set nice and rlimits; what was applied."""
    import resource

    applied: dict[str, Any] = {}
    if die_with_parent(config.get("parent_pid")):
        applied["die_with_parent"] = True
    procs = config.get("cgroup_procs")
    if procs:
        with open(procs, "w") as fh:
            fh.write(str(os.getpid()))
        applied["cgroup"] = os.path.dirname(procs)
    if not config.get("needs_network", True):
        applied["network"] = isolate_network()
    if config.get("nice"):
        os.nice(int(config["nice"]))
    cpu_seconds = config.get("cpu_seconds")
    if cpu_seconds:
        # SIGXCPU at the soft limit; the hard limit one second later is SIGKILL.
        resource.setrlimit(resource.RLIMIT_CPU, (int(cpu_seconds), int(cpu_seconds) + 1))
        applied["cpu_seconds"] = int(cpu_seconds)
    fsize = config.get("max_storage")
    if fsize:
        resource.setrlimit(resource.RLIMIT_FSIZE, (int(fsize), int(fsize)))
    missing = preload(config.get("preload") or ())
    if missing:
        applied["preload_missing"] = missing
    max_memory = config.get("max_memory")
    if max_memory:
        baseline = current_vm_size() or 0
        limit = baseline + int(max_memory)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        applied["address_space"] = limit
    return applied


def preload(modules: list[str] | tuple[str, ...]) -> list[str]:
    """Import ``modules`` before the memory baseline is measured; the names that failed."""
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # a missing or broken optional runtime is reported by the factory
            missing.append(name)
    return missing


def _report(config: dict[str, Any], status: dict[str, Any]) -> None:
    # One JSON line on the status pipe tells the parent what was applied.
    fd = config.get("status_fd")
    if fd is None:
        return
    try:
        os.write(int(fd), json.dumps(status).encode("utf-8") + b"\n")
    finally:
        os.close(int(fd))


def _exec(config: dict[str, Any]) -> int:
    import signal

    argv = [str(a) for a in config["argv"]]
    for name in ("SIGPIPE", "SIGXFSZ", "SIGXCPU"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        sys.stderr.write(f"edge-min worker: cannot run {argv[0]!r}: {exc.strerror}\n")
        return 127
    return 127  # pragma: no cover - execvp does not return


def _failure(kind: str, exc: BaseException) -> dict[str, Any]:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return {
        "ok": False,
        "kind": kind,
        "type": type(exc).__name__,
        "message": str(exc)[:2000],
        "traceback": tb[-4000:],
    }


def resolve_entry(entry: str, sys_path: list[str]) -> Any:
    """The callable ``entry`` (``"module:function"``) names, with ``sys_path`` prepended."""
    module_name, _, func_name = entry.partition(":")
    for path in reversed(sys_path):
        if path not in sys.path:
            sys.path.insert(0, path)
    module = importlib.import_module(module_name)
    target: Any = module
    for part in func_name.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"{entry} is not callable")
    return target


def run_entry(
    entry: str, raw_input: bytes, context: dict[str, Any], sys_path: list[str]
) -> dict[str, Any]:
    """Call ``entry`` with the decoded input and context; the result as a frame dict."""
    try:
        value = json.loads(raw_input.decode("utf-8")) if raw_input.strip() else None
    except ValueError as exc:
        return _failure("input", exc)
    try:
        fn = resolve_entry(entry, sys_path)
    except MemoryError as exc:
        return _failure("memory", exc)
    except Exception as exc:
        return _failure("import", exc)
    return call_guarded(fn, value, context)


def call_guarded(
    fn: Any, value: Any, context: dict[str, Any], *, native_oom: bool = False, raw: bool = False
) -> dict[str, Any]:
    """``fn(value, context)`` as a frame dict; failures classified by ``kind``.

    ``native_oom`` counts an exception whose text is a native allocator's out-of-memory
    report as ``memory``; ``raw`` skips the check that the output is JSON.
    """
    global _ballast
    if _ballast is None:
        _ballast = bytearray(_BALLAST_BYTES)
    try:
        output = fn(value, CallContext(context))
        if not raw:
            try:
                json.dumps(output)
            except (TypeError, ValueError) as exc:
                return _failure("output", exc)
        return {"ok": True, "output": output}
    except MemoryError as exc:
        _ballast = None  # room to build the failure frame; taken again by the next call
        return _failure("memory", exc)
    except OSError as exc:
        return _failure("storage" if exc.errno in _STORAGE_ERRNOS else "error", exc)
    except Exception as exc:
        oom = native_oom and any(m in str(exc) for m in _MEMORY_MARKERS)
        return _failure("memory" if oom else "error", exc)


def _python(config: dict[str, Any]) -> int:
    # The frame goes to the real stdout; agent prints are sent to stderr instead.
    result_fd = os.dup(1)
    os.dup2(2, 1)
    raw = sys.stdin.buffer.read()
    frame = run_entry(
        str(config["entry"]), raw, dict(config.get("context") or {}), config.get("sys_path") or []
    )
    try:
        data = json.dumps(frame).encode("utf-8")
    except MemoryError:
        data = b'{"ok": false, "kind": "memory", "type": "MemoryError", "message": ""}'
    with os.fdopen(result_fd, "wb") as out:
        out.write(data)
    return 0 if frame.get("ok") else 1


def read_frame(fd: int) -> bytes | None:
    """One length-prefixed frame from ``fd``; ``None`` at a clean end of input."""
    head = _read_exact(fd, _HEADER.size)
    if head is None:
        return None
    (size,) = _HEADER.unpack(head)
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes is over the {MAX_FRAME} byte maximum")
    body = _read_exact(fd, size)
    if body is None:
        raise EOFError("input ended inside a frame")
    return body


def _read_exact(fd: int, size: int) -> bytes | None:
    data = bytearray()
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            if data:
                raise EOFError("input ended inside a frame")
            return None
        data += chunk
    return bytes(data)


def write_frame(fd: int, frame: dict[str, Any]) -> None:
    """Write ``frame`` as one length-prefixed JSON frame."""
    try:
        data = json.dumps(frame).encode("utf-8")
    except MemoryError:
        data = b'{"ok": false, "kind": "memory", "type": "MemoryError", "message": ""}'
    except (TypeError, ValueError) as exc:
        data = json.dumps(_failure("output", exc)).encode("utf-8")
    view = memoryview(_HEADER.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def _cpu_budget(seconds: Any) -> None:
    # rlimit CPU mode: a persistent worker gets a fresh budget per request on top of what it
    # has used so far (RLIMIT_CPU counts the process's whole life).
    if not seconds:
        return
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = math.ceil(usage.ru_utime + usage.ru_stime + float(seconds))
    hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _flush_prints() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()


def _serve(config: dict[str, Any]) -> int:
    # Frames go to the real stdout; anything the handler prints goes to stderr.
    reply_fd = os.dup(1)
    os.dup2(2, 1)
    init = read_frame(0)
    if init is None:
        return 0
    sys_path = config.get("sys_path") or []
    context = dict(config.get("context") or {})
    try:
        factory = resolve_entry(str(config["entry"]), sys_path)
    except MemoryError as exc:
        write_frame(reply_fd, _failure("memory", exc))
        return 1
    except Exception as exc:
        write_frame(reply_fd, _failure("import", exc))
        return 1
    try:
        init_value = json.loads(init.decode("utf-8"))
    except ValueError as exc:
        write_frame(reply_fd, _failure("input", exc))
        return 1
    frame = call_guarded(factory, init_value, context, native_oom=True, raw=True)
    if not frame.get("ok"):
        if frame.get("kind") == "error":
            frame["kind"] = "load"
        write_frame(reply_fd, frame)
        return 1
    handler = frame.pop("output")
    served = 0

    def meta() -> dict[str, Any]:
        extra = handler.meta() if hasattr(handler, "meta") else {}
        return {"pid": os.getpid(), "served": served, **extra}

    write_frame(reply_fd, {"ok": True, "output": getattr(handler, "info", None), "meta": meta()})
    while True:
        raw = read_frame(0)
        if raw is None:
            return 0
        try:
            request = json.loads(raw.decode("utf-8"))
            _cpu_budget(request.get("cpu_seconds"))
            value, call_context = request.get("input"), dict(request.get("context") or {})
        except (ValueError, AttributeError, TypeError, OSError) as exc:
            write_frame(reply_fd, {**_failure("input", exc), "meta": meta()})
            continue
        frame = call_guarded(handler, value, call_context, native_oom=True)
        served += 1
        frame["meta"] = meta()
        _flush_prints()  # before the reply, so the parent finds them with it
        write_frame(reply_fd, frame)


def main(argv: list[str]) -> int:
    """Entry point: ``worker.py '<config JSON>'``."""
    if len(argv) != 2:
        sys.stderr.write("usage: worker.py '<config JSON>'\n")
        return 2
    config = json.loads(argv[1])
    # Agent modules must not be shadowed by (or shadow with) this folder's modules.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    if _compiled():
        # A compiled build ignores PYTHONPATH, which agents may set in runtime.env.
        extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        sys.path[:0] = [p for p in extra if p not in sys.path]
    try:
        applied = apply_limits(config)
    except OSError as exc:
        _report(config, {"error": str(exc)})
        sys.stderr.write(f"edge-min worker: cannot apply limits: {exc}\n")
        return 126
    _report(config, applied)
    if config.get("mode") == "exec":
        return _exec(config)
    if config.get("mode") == "serve":
        return _serve(config)
    return _python(config)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
