"""The storage subsystem: the device database, file storage under the quota, and backups.

Contributes the timed ``storage.backup`` job (``storage.backup_interval``, rotated to
``storage.backup_keep``), the ``database`` health check, the ``cleanup_temp`` alert action,
its part of the status, and the ``backup`` and ``restore`` commands.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_min.subsystem import CheckFn, Command, CommandContext, Job, Subsystem

log = logging.getLogger("edge_min.runtime")

if TYPE_CHECKING:
    import argparse

    from edge_min.store.files import FileStore
    from edge_min.store.repos import Store


class Storage(Subsystem):
    """The store and file storage every other subsystem writes through."""

    name = "storage"

    store: Store
    files: FileStore

    def open(self) -> None:
        """Open (create, migrate) the database and the file storage."""
        from edge_min.store.files import FileStore

        host = self.host
        host.paths.root.mkdir(parents=True, exist_ok=True)
        self.store = host.open_store()
        self.files = FileStore(
            host.paths.root, host.config.runtime.max_storage_usage, db_size=self.store.size_bytes
        )

    def close(self) -> None:
        """Close the database."""
        store = getattr(self, "store", None)
        if store is not None:
            store.close()

    def jobs(self) -> Sequence[Job]:
        """Online backups every ``storage.backup_interval`` (0 = never)."""
        interval = self.host.config.storage.backup_interval
        return [Job("storage.backup", interval, self.backup)] if interval > 0 else []

    def backup(self) -> Path:
        """Take an online backup now and rotate old ones."""
        from edge_min.store.backup import create_backup

        host = self.host
        path = create_backup(
            self.store, host.paths.root, host.clock.time(), keep=host.config.storage.backup_keep
        )
        log.info("backup written to %s", path)
        return Path(path)

    def health_checks(self) -> Mapping[str, CheckFn]:
        """``database``: the store answers a read."""
        from edge_min.monitor.health import database_check

        return {"database": database_check(self.store.backend)}

    def alert_actions(self) -> Mapping[str, Callable[..., Any]]:
        """``cleanup_temp``: delete old files under tmp/."""
        return {"cleanup_temp": self.files.cleanup_tmp}

    def status(self) -> Mapping[str, Any]:
        """The database, file storage and backups (``status_of``)."""
        return storage_status(self.store, self.host.paths, self.files)

    @classmethod
    def commands(cls) -> Sequence[Command]:
        """``backup`` and ``restore``."""
        return [
            Command(("backup",), "take an online backup now", "edge-min backup", run_backup),
            Command(
                ("restore",),
                "restore the database from a backup",
                "edge-min restore edge-data/backups/meta-agent-edge-20260101T000000Z.db",
                run_restore,
                _restore_arguments,
            ),
        ]


def storage_status(store: Store, paths: Any, files: FileStore) -> dict[str, Any]:
    """What ``edge-min status`` shows of storage, from an open store."""
    from edge_min.clock import iso
    from edge_min.store.backup import list_backups

    counts: dict[str, int] = {}
    for status in ("queued", "running", "succeeded", "failed", "cancelled"):
        counts[status] = store.backend.count("workflow_executions", {"status": status})
    backups = list_backups(paths.root)
    return {
        "data_dir": str(paths.root),
        "database": str(paths.db),
        "database_bytes": store.size_bytes(),
        "workflows": store.backend.count("workflows"),
        "agents": store.backend.count("agents"),
        "executions": counts,
        "storage": {"usage": files.usage(), "total": files.total_usage(), "limit": files.max_bytes},
        "last_backup": backups[-1].name if backups else None,
        "time": iso(store.clock.time()),
    }


def _restore_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="a backup file made by `edge-min backup`")


def run_backup(ctx: CommandContext) -> int:
    """Take an online backup now; prints its path."""
    import time

    from edge_min.errors import UsageError
    from edge_min.store import open_store
    from edge_min.store.backup import create_backup

    config, paths = ctx.context()
    if not paths.db.exists():
        raise UsageError(f"no database at {paths.db}; nothing to back up")
    with open_store(str(paths.db), synchronous=config.storage.synchronous) as store:
        print(create_backup(store, paths.root, time.time(), keep=config.storage.backup_keep))
    return 0


def run_restore(ctx: CommandContext) -> int:
    """Replace the database with a backup that passes integrity_check."""
    from edge_min.errors import RuntimeBusy
    from edge_min.security.atrest import check_backup_keys
    from edge_min.store.backup import restore

    _, paths = ctx.context()
    with ctx.holding() as held:
        if not held:
            raise RuntimeBusy(
                f"edge-min run (pid {ctx.holder()}) is using {paths.root}; stop it before restoring"
            )
        # An encrypted backup is restored only if this device's master key opens its keys.
        check_backup_keys(ctx.args.file, paths)
        restore(ctx.args.file, paths.db)
    print(f"restored {paths.db} from {ctx.args.file}")
    return 0
