"""Online backups of the database into ``<root>/backups/``, rotation, and verified restore.

Backups use SQLite's online backup API (through ``store/sqlite.py``, the only module that
imports ``sqlite3``), so the runtime keeps writing while one is taken. Each file is named
``edge-<UTC timestamp>.db``; names sort by time, so rotation and "latest" need no index.
A restore refuses a file that fails ``PRAGMA integrity_check`` or is not an edge_min database,
and replaces the database atomically. Backups and restored files are created 0600; with
encryption at rest a backup holds sealed values and the wrapped key ring, so it opens only
with the device master key (``keys/storage.key``) that wrapped them. Restore only while no
store has the database open.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge_min.errors import IntegrityCheckFailed, SchemaError, StorageError
from edge_min.store.files import fsync_dir

BACKUP_DIR = "backups"
DEFAULT_KEEP = 7
_STAMP = "%Y%m%dT%H%M%S.%fZ"
_NAME = re.compile(r"^edge-(\d{8}T\d{6}\.\d{6}Z)\.db$")


def backup_name(now: float) -> str:
    """The file name of a backup taken at ``now`` (epoch seconds): sortable UTC."""
    return f"edge-{datetime.fromtimestamp(now, tz=UTC).strftime(_STAMP)}.db"


def backup_time(path: str | os.PathLike[str]) -> float | None:
    """When the backup at ``path`` was taken, from its name; None if not a backup name."""
    m = _NAME.match(Path(path).name)
    if not m:
        return None
    return datetime.strptime(m.group(1), _STAMP).replace(tzinfo=UTC).timestamp()


def list_backups(root: str | os.PathLike[str]) -> list[Path]:
    """The backups under ``root/backups``, oldest first."""
    folder = Path(root) / BACKUP_DIR
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _NAME.match(p.name))


def latest_backup_at(root: str | os.PathLike[str]) -> float | None:
    """When the newest backup was taken, or None (the scheduler's ``last_backup_at``)."""
    backups = list_backups(root)
    return backup_time(backups[-1]) if backups else None


def rotate(root: str | os.PathLike[str], keep: int = DEFAULT_KEEP) -> list[Path]:
    """Delete all but the ``keep`` newest backups; the deleted paths."""
    if keep < 1:
        raise StorageError(f"backup rotation must keep at least 1 backup, got keep={keep}")
    old = list_backups(root)[:-keep]
    for p in old:
        p.unlink(missing_ok=True)
    return old


def integrity_check(path: str | os.PathLike[str]) -> list[str]:
    """Problems ``PRAGMA integrity_check`` reports for the file ([] when it is sound)."""
    from edge_min.store.sqlite import integrity_check as check

    return check(path)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def create_backup(
    source: Any, root: str | os.PathLike[str], now: float, keep: int = DEFAULT_KEEP
) -> Path:
    """Back up ``source`` (a ``Store``, ``SqliteStore`` or database path) into root/backups.

    The copy is checked with ``integrity_check`` before it gets its final name, then old
    backups beyond ``keep`` are rotated away. Returns the new backup's path.
    """
    from edge_min.store.sqlite import SqliteStore, online_backup

    # A Store's unsealed backend: the copy carries the sealed values and the wrapped key ring.
    backend = getattr(source, "raw", source)
    folder = Path(root) / BACKUP_DIR
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / backup_name(now)
    tmp = folder / f".{final.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        if isinstance(backend, SqliteStore):
            if backend.in_memory:
                raise StorageError("an in-memory database has no file to back up")
            backend.backup_to(tmp)
        elif isinstance(backend, str | os.PathLike):
            online_backup(backend, tmp)
        else:
            raise StorageError(
                f"cannot back up a {type(backend).__name__}: only SQLite databases have backups"
            )
        problems = integrity_check(tmp)
        if problems:
            raise IntegrityCheckFailed(
                f"backup of the database failed its integrity check: {problems[0]}"
            )
        _fsync_file(tmp)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(folder)
    rotate(root, keep)
    return final


def restore(backup_file: str | os.PathLike[str], db_path: str | os.PathLike[str]) -> None:
    """Replace the database at ``db_path`` with a verified copy of ``backup_file``.

    Refuses (``IntegrityCheckFailed``) a file that fails ``PRAGMA integrity_check`` and
    (``SchemaError``) one that is not an edge_min database; the current database is then
    untouched. Close every store on ``db_path`` first.
    """
    from edge_min.store.sqlite import create_private, missing_edge_tables

    src, dst = Path(backup_file), Path(db_path)
    problems = integrity_check(src)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise IntegrityCheckFailed(
            f"refusing to restore {src}: integrity_check reports {problems[0]!r}{more}; "
            "pick an older backup"
        )
    missing = missing_edge_tables(src)
    if missing:
        raise SchemaError(
            f"refusing to restore {src}: not an edge_min database "
            f"(missing tables: {', '.join(missing)})"
        )
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.restore-{uuid.uuid4().hex[:8]}.tmp")
    try:
        create_private(tmp)  # 0600 before a byte is copied (copyfile keeps the mode)
        shutil.copyfile(src, tmp)
        _fsync_file(tmp)
        # The old database's WAL must go before the new file takes its name: SQLite would
        # otherwise replay the old WAL into the restored file.
        for suffix in ("-wal", "-shm", "-journal"):
            Path(str(dst) + suffix).unlink(missing_ok=True)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(dst.parent)
