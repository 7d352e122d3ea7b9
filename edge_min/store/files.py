"""``FileStore``: model files, agent data, scratch space and logs under one root, with a quota.

The spec's ``runtime.max_storage_usage`` covers the database plus these folders: a write that
would pass it fails with ``QuotaExceeded`` before the limit is crossed and leaves no partial
file behind (data goes to a temp file in the same folder, the running total is checked while
streaming, then fsync and an atomic rename). Concurrent writers may together overshoot by
one write: the check is per write, not a reservation.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable
from contextlib import suppress
from pathlib import Path, PurePosixPath

from edge_min.errors import ConfigError, NotFound, QuotaExceeded, StorageError
from edge_min.units import format_size, parse_size

AREAS = ("models", "data", "tmp", "logs")
TEMP_PREFIX = ".edge-tmp-"
_CHUNK = 1 << 16


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (a no-op where directories cannot be opened)."""
    with suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _no_db() -> int:
    return 0


class FileStore:
    """Files under ``root/{models,data,tmp,logs}``; writes checked against ``max_bytes``."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        max_bytes: int | str | None = None,
        db_size: Callable[[], int] = _no_db,
    ) -> None:
        try:
            self.max_bytes = None if max_bytes is None else parse_size(max_bytes)
        except ValueError as exc:
            raise ConfigError(str(exc), path="runtime.max_storage_usage", value=max_bytes) from exc
        self.root = Path(root)
        self.db_size = db_size
        for area in AREAS:
            (self.root / area).mkdir(parents=True, exist_ok=True)

    def _area(self, area: str) -> Path:
        if area not in AREAS:
            raise StorageError(f"unknown file area {area!r}; use one of {', '.join(AREAS)}")
        return self.root / area

    def path(self, area: str, name: str) -> Path:
        """The path of ``name`` in ``area``; ``StorageError`` if the name would escape it."""
        base = self._area(area)
        pure = PurePosixPath(name) if isinstance(name, str) else None
        if (
            pure is None
            or not name
            or "\x00" in name
            or "\\" in name
            or pure.is_absolute()
            or os.path.isabs(name)
            or not pure.parts
            or ".." in pure.parts
            or pure.name.startswith(TEMP_PREFIX)
        ):
            raise StorageError(
                f"file name {name!r} is not allowed in {area}/: use a relative name such as "
                "'model.onnx' or 'batch/01.json', without '..', a leading '/' or '\\'"
            )
        target = base.joinpath(*pure.parts)
        # A symlink inside the area could still point outside it.
        if not target.resolve().is_relative_to(base.resolve()):
            raise StorageError(f"file name {name!r} resolves outside {area}/ ({target.resolve()})")
        return target

    # -- usage -----------------------------------------------------------------------------

    @staticmethod
    def _tree_size(folder: Path) -> int:
        total = 0
        for dirpath, _dirs, files in os.walk(folder):
            for f in files:
                with suppress(OSError):  # removed while we walked
                    total += os.lstat(os.path.join(dirpath, f)).st_size
        return total

    def usage(self) -> dict[str, int]:
        """Bytes used per area, and by the ``database``."""
        out = {area: self._tree_size(self.root / area) for area in AREAS}
        out["database"] = int(self.db_size())
        return out

    def total_usage(self) -> int:
        """Bytes counted against ``max_bytes``: the database plus every area."""
        return sum(self.usage().values())

    def free_bytes(self) -> int | None:
        """Bytes left under the quota (never negative), or None without a quota."""
        if self.max_bytes is None:
            return None
        return max(0, self.max_bytes - self.total_usage())

    def _quota_error(self, target: str, usage: int, needed: int, streaming: bool) -> QuotaExceeded:
        limit = self.max_bytes or 0
        need = f"{'at least ' if streaming else ''}{format_size(needed)}"
        return QuotaExceeded(
            f"writing {target} needs {need} but usage is {format_size(usage)} of the "
            f"max_storage_usage limit {format_size(limit)} ({format_size(max(0, limit - usage))} "
            "free); nothing was written. Free space (delete old files in models/, data/, tmp/ "
            "or logs/, prune executions) or raise runtime.max_storage_usage",
            usage=usage,
            limit=limit,
            needed=needed,
        )

    # -- files -----------------------------------------------------------------------------

    def write(self, area: str, name: str, data: bytes | Iterable[bytes]) -> Path:
        """Write a file atomically (bytes or an iterable of chunks); ``QuotaExceeded`` if over."""
        target = self.path(area, name)
        label = f"{area}/{name}"
        replaced = target.stat().st_size if target.is_file() else 0
        # The file being replaced will be freed by the rename, so it does not count.
        usage = self.total_usage() - replaced
        limit = self.max_bytes
        chunks: Iterable[bytes]
        if isinstance(data, bytes | bytearray | memoryview):
            payload = bytes(data)
            if limit is not None and usage + len(payload) > limit:
                raise self._quota_error(label, usage, len(payload), False)
            chunks, streaming = (payload,), False
        else:
            chunks, streaming = data, True
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{TEMP_PREFIX}{uuid.uuid4().hex[:12]}-{target.name}")
        written = 0
        try:
            with open(tmp, "xb") as f:
                for chunk in chunks:
                    if not isinstance(chunk, bytes | bytearray | memoryview):
                        raise StorageError(
                            f"writing {label}: chunks must be bytes, got {type(chunk).__name__}"
                        )
                    written += len(chunk)
                    if limit is not None and usage + written > limit:
                        raise self._quota_error(label, usage, written, streaming)
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            with suppress(OSError):
                tmp.unlink()
            raise
        fsync_dir(target.parent)
        return target

    def read(self, area: str, name: str) -> bytes:
        """The file's bytes; ``NotFound`` if there is none."""
        target = self.path(area, name)
        try:
            return target.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no file {area}/{name} under {self.root}") from None

    def delete(self, area: str, name: str) -> bool:
        """Delete a file; whether it existed."""
        target = self.path(area, name)
        try:
            target.unlink()
        except FileNotFoundError:
            return False
        return True

    def list(self, area: str) -> list[str]:
        """Names of the files in ``area`` (relative, '/'-separated), sorted; temp files hidden."""
        base = self._area(area)
        names = []
        for dirpath, _dirs, files in os.walk(base):
            for f in files:
                if not f.startswith(TEMP_PREFIX):
                    names.append(Path(dirpath, f).relative_to(base).as_posix())
        return sorted(names)

    def cleanup_tmp(self, older_than_seconds: float, now: float) -> int:
        """Delete tmp/ files (and abandoned temp files anywhere) older than the age; bytes freed."""
        cutoff = now - older_than_seconds
        freed = 0
        for area in AREAS:
            for dirpath, _dirs, files in os.walk(self.root / area):
                for f in files:
                    if area != "tmp" and not f.startswith(TEMP_PREFIX):
                        continue
                    p = os.path.join(dirpath, f)
                    with suppress(OSError):
                        st = os.lstat(p)
                        if st.st_mtime <= cutoff:
                            os.unlink(p)
                            freed += st.st_size
        return freed
