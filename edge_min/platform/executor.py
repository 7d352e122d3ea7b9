"""The one executor port: where the core runs blocking work off its loop.

The engine runs agent calls on one, the sync subsystem runs a sync on another; both ask
the runtime's ``ExecutorFactory`` for an ``Executor`` by name and size, and get handles
with ``done()`` and ``result()``. Two implementations:

- ``InlineExecutor`` (here): ``submit`` runs the call at once and returns a finished
  handle. Pyodide, MicroPython-class hosts and tests on a virtual clock use it; so does a
  runtime opened for one CLI command.
- ``ThreadExecutor`` (``edge_min.platform.threads``): a pool of daemon threads on CPython,
  each finished call waking the runtime's loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

__all__ = [
    "Executor",
    "ExecutorFactory",
    "Handle",
    "InlineExecutor",
    "finished",
    "inline_executors",
]


class Handle(Protocol):
    """A submitted call."""

    def done(self) -> bool:
        """Whether it finished."""
        ...

    def result(self, timeout: float | None = None) -> Any:
        """Its value; raises what it raised (waits up to ``timeout`` on a thread)."""
        ...


class Executor(Protocol):
    """Runs calls; ``submit`` never blocks the caller longer than the call when inline."""

    def submit(self, fn: Callable[[], Any]) -> Handle:
        """Run ``fn``; a handle to its outcome."""
        ...

    def shutdown(self) -> None:
        """Stop taking work; calls already running finish on their own."""
        ...


#: ``factory(name, workers)``: an executor of that many workers for a subsystem.
ExecutorFactory = Callable[[str, int], Executor]


class _Done:
    """The handle of a call that already ran."""

    __slots__ = ("_error", "_value")

    def __init__(self, value: Any = None, error: BaseException | None = None) -> None:
        self._value = value
        self._error = error

    def done(self) -> bool:
        """Always finished."""
        return True

    def result(self, timeout: float | None = None) -> Any:
        """The value, or the error raised again."""
        if self._error is not None:
            raise self._error
        return self._value


def finished(value: Any = None, error: BaseException | None = None) -> Handle:
    """A handle to a call that already ended with ``value`` or ``error``."""
    return _Done(value, error)


class InlineExecutor:
    """Runs each call at once on the caller's thread."""

    def submit(self, fn: Callable[[], Any]) -> Handle:
        """Run ``fn`` now; a finished handle."""
        try:
            return _Done(fn())
        except Exception as exc:  # kept for result(), as a thread's future would
            return _Done(error=exc)

    def shutdown(self) -> None:
        """Nothing to stop."""


def inline_executors(name: str, workers: int) -> Executor:
    """The ``ExecutorFactory`` of hosts without threads: every executor runs inline."""
    return InlineExecutor()
