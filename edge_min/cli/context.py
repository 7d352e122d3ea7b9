"""What every command gets: the config and paths of its data directory, opened on demand.

``CliContext`` is the CLI's ``edge_min.subsystem.CommandContext``: the config from
``--config``, else ``$EDGE_MIN_CONFIG``, else ``<data dir>/edge-config.yaml`` when present,
else the built-in defaults; the data directory from ``--data-dir``, else ``storage.root``,
else ``./edge-data``.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from edge_min.platform.locks import DataDirLock

if TYPE_CHECKING:
    from edge_min.config import EdgeConfig
    from edge_min.hooks import TargetHooks
    from edge_min.runtime import Paths, Runtime


def config_path(args: argparse.Namespace) -> Path | None:
    """The edge-config.yaml a command reads, or None for the built-in defaults."""
    if args.config:
        return Path(args.config)
    env = os.environ.get("EDGE_MIN_CONFIG")
    if env:
        return Path(env)
    beside = Path(args.data_dir or "edge-data") / "edge-config.yaml"
    return beside if beside.exists() else None


class CliContext:
    """One command's view of its data directory."""

    def __init__(self, args: argparse.Namespace, hooks: Sequence[TargetHooks] = ()) -> None:
        self.args = args
        self.hooks = list(hooks)
        self._loaded: tuple[EdgeConfig, Paths] | None = None

    def context(self) -> tuple[EdgeConfig, Paths]:
        """The config and paths (loaded once)."""
        if self._loaded is None:
            from edge_min.config import load_config
            from edge_min.runtime import Paths

            config = load_config(config_path(self.args))
            self._loaded = (config, Paths.resolve(config, self.args.data_dir))
        return self._loaded

    def reload_config(self) -> None:
        """Read the config files again on the next ``context()`` (a command changed them)."""
        self._loaded = None

    def open_runtime(self, *, threads: bool = False, syncing: bool = False) -> Runtime:
        """The data directory's runtime, opened (agent calls on threads with ``threads``;
        without the sync subsystem, and what needs it, unless ``syncing``)."""
        from edge_min.runtime import Runtime

        config, paths = self.context()
        executors = None
        if threads:
            from edge_min.platform.threads import thread_executors

            executors = thread_executors()
        without = () if syncing else ("sync",)
        return Runtime(config, paths, executors=executors, without=without).open()

    @contextmanager
    def opened(self, *, threads: bool = False, syncing: bool = False) -> Iterator[Runtime]:
        """The runtime, opened for one command and closed after it (see ``open_runtime``)."""
        runtime = self.open_runtime(threads=threads, syncing=syncing)
        try:
            yield runtime
        finally:
            runtime.close()

    def lock(self) -> DataDirLock:
        """The data directory's lock (not taken yet)."""
        return DataDirLock(self.context()[1].lock)

    @contextmanager
    def holding(self) -> Iterator[bool]:
        """Hold the lock for the block if no runtime does: True if held here."""
        lock = self.lock()
        held = lock.acquire()
        try:
            yield held
        finally:
            lock.release()

    def holder(self) -> str:
        """The pid of the runtime holding the data directory."""
        return self.lock().holder()

    def running_url(self) -> str | None:
        """Where the runtime holding the data directory answers (its runtime.json)."""
        try:
            return str(json.loads((self.context()[1].root / "runtime.json").read_text())["url"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
