"""What a serving runtime needs from its host to run its loop: a waiter, executors, signals.

``PosixLoopHost`` (CPython on Linux and other POSIX hosts): a threading event to sleep on,
thread-pool executors whose finished calls wake the loop, and SIGTERM/SIGINT as the stop
request. A browser worker or a firmware init brings its own (``edge_min.serving.serve``
takes any ``LoopHost``).
"""

from __future__ import annotations

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


class PosixLoopHost:
    """Threads and POSIX signals."""

    def waiter(self) -> Waiter:
        """A ``threading.Event``-based waiter."""
        from edge_min.platform.threads import ThreadWaiter

        return ThreadWaiter()

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
