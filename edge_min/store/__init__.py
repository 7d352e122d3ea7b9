"""Local storage: the storage port, its SQLite (default) and memory backends, repositories,
backups and the file store.

``open_store(path)`` gives a ``Store``: repositories for the spec's tables on a migrated
SQLite database. ``Store(MemoryStore())`` is the same facade without a file. The sqlite
backend is imported only when a store is opened, so ``import edge_min.store`` works where
``sqlite3`` is missing (some MicroPython-class builds).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from edge_min.clock import Clock
from edge_min.store.base import Ge, Gt, IsNull, Le, Lt, Ne, NotNull, NotPrefix, Prefix, Storage
from edge_min.store.memory import MemoryStore
from edge_min.store.repos import ChangeRecorder, ChangeRecorderFactory, Store
from edge_min.store.sealed import FieldCipher, FieldCipherFactory

if TYPE_CHECKING:
    from edge_min.store.migrations import Migration

__all__ = [
    "ChangeRecorder",
    "ChangeRecorderFactory",
    "FieldCipher",
    "FieldCipherFactory",
    "Ge",
    "Gt",
    "IsNull",
    "Le",
    "Lt",
    "MemoryStore",
    "Ne",
    "NotNull",
    "NotPrefix",
    "Prefix",
    "Storage",
    "Store",
    "open_sqlite",
    "open_store",
]


def open_sqlite(
    path: str | os.PathLike[str] = ":memory:",
    synchronous: str = "FULL",
    *,
    busy_timeout_ms: int | None = None,
    lock_retries: int | None = None,
    migrations: Sequence[Migration] | None = None,
    clock: Clock | None = None,
    secure_delete: bool = False,
) -> Storage:
    """The bare SQLite backend at ``path`` (created 0600 and migrated if needed)."""
    from edge_min.store import sqlite as backend

    if str(path) not in ("", ":memory:"):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    return backend.SqliteStore(
        path,
        synchronous=synchronous,
        busy_timeout_ms=(
            backend.DEFAULT_BUSY_TIMEOUT_MS if busy_timeout_ms is None else busy_timeout_ms
        ),
        lock_retries=backend.DEFAULT_LOCK_RETRIES if lock_retries is None else lock_retries,
        migrations=migrations,
        clock=clock,
        secure_delete=secure_delete,
    )


def open_store(
    path: str | os.PathLike[str] = ":memory:",
    synchronous: str = "FULL",
    *,
    clock: Clock | None = None,
    busy_timeout_ms: int | None = None,
    lock_retries: int | None = None,
    migrations: Sequence[Migration] | None = None,
    changes: ChangeRecorderFactory | None = None,
    cipher: FieldCipherFactory | None = None,
) -> Store:
    """A ``Store`` on the SQLite database at ``path`` (``":memory:"`` for a throwaway one).

    ``changes`` makes the recorder that logs writes of the synced tables for sync
    (``edge_min.sync.tracker.ChangeTracker``); without one nothing is logged, which suits
    read-only commands and tests of the store alone. ``cipher`` seals the payload columns at
    rest (``edge_min.security.keyring.KeyRing.cipher``); with one, SQLite's ``secure_delete``
    is on, so plaintext a sealing rewrite frees does not stay in free pages.
    """
    backend = open_sqlite(
        path,
        synchronous,
        busy_timeout_ms=busy_timeout_ms,
        lock_retries=lock_retries,
        migrations=migrations,
        clock=clock,
        secure_delete=cipher is not None,
    )
    return Store(backend, clock, changes, cipher)
