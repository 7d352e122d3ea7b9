"""Fixtures for the store tests: every contract test runs against both backends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_min.clock import VirtualClock
from edge_min.store import MemoryStore, Storage, Store
from edge_min.store.sqlite import SqliteStore

BACKENDS = ("sqlite", "memory")


def make_backend(kind: str, tmp_path: Path) -> Storage:
    """A fresh backend of the given kind; SQLite on a real file."""
    if kind == "sqlite":
        return SqliteStore(tmp_path / "edge.db")
    return MemoryStore()


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    backend = make_backend(request.param, tmp_path)
    yield backend
    backend.close()


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path, clock: VirtualClock) -> Iterator[Store]:
    s = Store(make_backend(request.param, tmp_path), clock)
    yield s
    s.close()
