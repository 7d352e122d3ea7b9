"""Thread primitives for CPython hosts: a worker pool, a waiter, and the executor port on it.

The runtime's loop sleeps on a ``ThreadWaiter`` (``edge-min run``); agent calls and sync
runs go to ``ThreadExecutor``s (``thread_executors``: the runtime's ``ExecutorFactory``), so
the scheduler core, the engine and the sync client never import ``threading``. Pyodide and
MicroPython have no usable threads: there the runtime is given none, so agent calls and sync
run inline on the loop (``edge_min.platform.executor.InlineExecutor``).

Workers are daemon threads on purpose: a job stuck in a blocking agent call must not keep
the process alive after the runtime has decided to exit (the agent's own subprocess is
killed by its supervisor, not here). ``concurrent.futures.Future`` serves as the handle
because it already offers ``done()``, ``result()`` and ``exception()``.

Nothing is started at import; threads start on first ``submit``.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from edge_min.platform.executor import Executor, ExecutorFactory

log = logging.getLogger("edge_min.platform.threads")

_names = itertools.count(1)


class ThreadWaiter:
    """An event a loop sleeps on and other threads set to wake it."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep until set or ``timeout`` seconds pass; True if it was set."""
        return self._event.wait(timeout)

    def set(self) -> None:
        """Wake the waiting thread (and the next wait, until cleared)."""
        self._event.set()

    def clear(self) -> None:
        """Forget an earlier set."""
        self._event.clear()

    def close(self) -> None:
        """Nothing to release."""


_STOP = object()


class ThreadWorkerPool:
    """A fixed number of daemon worker threads taking callables from a queue."""

    def __init__(self, workers: int = 4, name: str = "edge-worker") -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a whole number of at least 1, got {workers!r}")
        self.size = workers
        self._name = name
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False

    def submit(
        self, fn: Callable[[], Any], on_done: Callable[[], object] | None = None
    ) -> Future[Any]:
        """Run ``fn`` on a worker; ``on_done`` is called on that worker when it finishes."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the worker pool is shut down")
            if len(self._threads) < self.size:
                self._start_worker()
        future: Future[Any] = Future()
        self._queue.put((future, fn, on_done))
        return future

    def _start_worker(self) -> None:
        thread = threading.Thread(
            target=self._work, name=f"{self._name}-{next(_names)}", daemon=True
        )
        thread.start()
        self._threads.append(thread)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            future, fn, on_done = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)
            if on_done is not None:
                try:
                    on_done()
                except Exception:
                    log.exception("a worker's on_done callback failed")

    def shutdown(self, wait: bool = False, timeout: float | None = None) -> None:
        """Stop taking work; with ``wait``, join the workers for up to ``timeout`` seconds."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            threads = list(self._threads)
        for _ in threads:
            self._queue.put(_STOP)
        if wait:
            for thread in threads:
                thread.join(timeout)


class ThreadExecutor:
    """The executor port (``edge_min.platform.executor``) on CPython: a pool of daemon threads.

    ``on_done`` is called on the worker after each call: how a finished call wakes the
    runtime's loop instead of waiting for its next poll.
    """

    def __init__(
        self,
        workers: int = 4,
        *,
        name: str = "edge-worker",
        on_done: Callable[[], object] | None = None,
    ) -> None:
        self.pool = ThreadWorkerPool(workers, name=name)
        self.on_done = on_done

    def submit(self, fn: Callable[[], Any]) -> Future[Any]:
        """Run ``fn`` on a worker thread."""
        return self.pool.submit(fn, self.on_done)

    def shutdown(self) -> None:
        """Stop taking work; running calls finish on their own."""
        self.pool.shutdown(wait=False)


def thread_executors(on_done: Callable[[], object] | None = None) -> ExecutorFactory:
    """The runtime's ``ExecutorFactory`` on CPython: one thread pool per subsystem's ask."""

    def make(name: str, workers: int) -> Executor:
        return ThreadExecutor(workers, name=f"edge-{name}", on_done=on_done)

    return make
