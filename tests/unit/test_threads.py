"""The CPython thread primitives: the worker pool and the waiter the runtime and CLI use."""

from __future__ import annotations

import pytest

from edge_min.platform.threads import ThreadWaiter, ThreadWorkerPool


def test_thread_primitives() -> None:
    pool = ThreadWorkerPool(2)
    done = ThreadWaiter()
    handle = pool.submit(lambda: 6 * 7, done.set)
    assert done.wait(2.0)
    assert handle.done() and handle.result() == 42 and handle.exception() is None
    bad = pool.submit(lambda: 1 / 0)
    assert isinstance(bad.exception(timeout=2.0), ZeroDivisionError)
    pool.shutdown(wait=True, timeout=1.0)
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit(lambda: None)
    with pytest.raises(ValueError, match="workers"):
        ThreadWorkerPool(0)
