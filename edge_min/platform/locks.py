"""The data directory's lock: one ``edge-min run`` per data directory.

An advisory ``flock`` on ``<data dir>/runtime.lock``, held for the runtime's life and
dropped by the kernel when the process dies (a kill -9 leaves no stale lock). The holder
writes its pid into the file, for messages. Hosts without ``fcntl`` (Pyodide) have one
runtime per page and take the lock trivially.
"""

from __future__ import annotations

import os
from pathlib import Path


class DataDirLock:
    """An advisory lock on ``<data dir>/runtime.lock``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock without waiting; False when another process holds it."""
        try:
            import fcntl
        except ImportError:  # no processes to share the directory with
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd
        return True

    def holder(self) -> str:
        """The pid written by the holder, for messages."""
        try:
            return self.path.read_text().strip() or "?"
        except OSError:
            return "?"

    def release(self) -> None:
        """Let go of the lock."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
