"""What a serving runtime needs from its host to run its loop: a waiter, executors, signals.

``PosixLoopHost`` (CPython on Linux and other POSIX hosts): a threading event to sleep on,
thread-pool executors whose finished calls wake the loop, and SIGTERM/SIGINT as the stop
request. A browser worker or a firmware init brings its own (``edge_min.serving.serve``
takes any ``LoopHost``).
"""

from __future__ import annotations

import contextlib
import os
import select
from collections.abc import Callable
from typing import Any, Protocol

from edge_min.platform.executor import ExecutorFactory


class Waiter(Protocol):
    """What the loop sleeps on between turns; other threads set it to wake the loop."""

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep until set or ``timeout`` seconds pass."""
        ...

    def set(self) -> None:
        """Wake the loop."""
        ...

    def clear(self) -> None:
        """Forget an earlier set."""
        ...

    def close(self) -> None:
        """Release what it holds."""
        ...


class PipeWaiter:
    """A waiter on a self-pipe: ``set`` is one ``os.write``, safe in a signal handler.

    A ``threading.Event`` is not: its ``set`` takes a lock the main thread may already hold
    in ``clear`` or ``wait`` when the signal lands, and the handler runs on that same thread,
    so the runtime deadlocked on a SIGTERM now and then (seen as ``make run`` not stopping).
    Worker threads wake the loop the same way.
    """

    def __init__(self) -> None:
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep until set or ``timeout`` seconds pass; True if it was set."""
        ready, _, _ = select.select([self._r], [], [], timeout)
        return bool(ready)

    def set(self) -> None:
        """Wake the loop (a full pipe is already a wake-up)."""
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._w, b"\0")

    def clear(self) -> None:
        """Drain the pipe."""
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self._r, 4096):
                pass

    def close(self) -> None:
        """Close both ends."""
        for fd in (self._r, self._w):
            with contextlib.suppress(OSError):
                os.close(fd)


class LoopHost(Protocol):
    """The host side of a serving runtime's loop."""

    def waiter(self) -> Waiter:
        """A new waiter."""
        ...

    def executors(self, on_done: Callable[[], object]) -> ExecutorFactory:
        """Executors whose finished calls call ``on_done`` (the loop's wake-up)."""
        ...

    def on_stop(self, handler: Callable[[int], None]) -> Callable[[], None]:
        """Call ``handler(signum)`` when the host asks the runtime to stop; returns an undo."""
        ...

    def ignore_stop(self) -> None:
        """From now on the process is stopping anyway: ignore further stop requests."""
        ...


class PosixLoopHost:
    """Threads and POSIX signals."""

    def waiter(self) -> Waiter:
        """A self-pipe waiter (signal-safe)."""
        return PipeWaiter()

    def executors(self, on_done: Callable[[], object]) -> ExecutorFactory:
        """Thread pools, one per subsystem's ask."""
        from edge_min.platform.threads import thread_executors

        return thread_executors(on_done)

    def on_stop(self, handler: Callable[[int], None]) -> Callable[[], None]:
        """SIGTERM and SIGINT call ``handler`` (install from the main thread)."""
        import signal

        def on_signal(signum: int, _frame: Any) -> None:
            handler(signum)

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}

        def undo() -> None:
            for sig, old in previous.items():
                signal.signal(sig, old)

        return undo

    def ignore_stop(self) -> None:
        """SIG_IGN for SIGTERM and SIGINT: it outlives the interpreter's shutdown, which puts
        Python-level handlers back to the default (a kill) while daemon threads wind down."""
        import signal

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
