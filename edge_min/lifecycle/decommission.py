"""``edge-min decommission --yes``: crypto-erase the device, then tell central it is gone.

The order is what makes it an erase and not a delete:

1. the **master key** ``keys/storage.key`` is overwritten, fsync'd, unlinked and its folder
   fsync'd. Every sealed value in the database (and in any backup or stray copy of it) was
   wrapped under that key, so from here they are unreadable, whatever a flash translation
   layer keeps of the files deleted next;
2. the **data**: everything under the data directory (database, WAL, backups, other keys,
   models, temp files) and the database file if it lives elsewhere;
3. **central** is told, if it answers, with ``POST /api/devices/self/retire`` over the same
   mutual TLS as sync (the TLS context is loaded before anything is erased): central marks the
   device retired and revokes its certificate. Unreachable is not an error: the operator
   then runs ``DELETE /api/devices/{id}``, which revokes it the same way;
4. the device's TLS key and certificate (``encryption.communication``) go last; the CA
   certificate stays (it is public).

``decommission(config, paths)`` returns what it did, for the command to print.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

from edge_min.errors import EdgeError

log = logging.getLogger("edge_min.lifecycle")

RETIRE_PATH = "/api/devices/self/retire"


def erase_master_key(root: str | os.PathLike[str]) -> bool:
    """Overwrite, fsync and delete ``keys/storage.key``; whether there was one."""
    from edge_min.security.keyring import master_key_path

    path = master_key_path(root)
    if not path.exists():
        return False
    size = path.stat().st_size
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, secrets.token_bytes(max(size, 32)))
        os.fsync(fd)
    finally:
        os.close(fd)
    path.unlink()
    _fsync_dir(path.parent)
    return True


def erase_data(root: Path, db: Path) -> list[str]:
    """Delete everything under ``root`` (and ``db`` and its WAL files if elsewhere)."""
    removed: list[str] = []
    for extra in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        if extra.exists() and root not in extra.parents:
            extra.unlink()
            removed.append(str(extra))
    if root.is_dir():
        for child in sorted(root.iterdir()):
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
            removed.append(str(child))
        _fsync_dir(root)
    return removed


def decommission(config: Any, paths: Any, *, tell_central: bool = True) -> dict[str, Any]:
    """Crypto-erase this device and tell central; a report of each step."""
    from edge_min.lifecycle.enroll import enrollment_record

    root = Path(paths.root)
    record = enrollment_record(root) if root.is_dir() else None
    node = _device_id(config, record)
    # Connect material is read now: after step 2 only memory holds it.
    transport = _transport(config, node) if tell_central and node else None
    report: dict[str, Any] = {"device_id": node}
    report["master_key_erased"] = erase_master_key(root)
    report["removed"] = erase_data(root, Path(paths.db))
    report["central"] = _tell_central(transport) if transport is not None else "not told"
    comm = config.security_config.encryption.communication
    gone = []
    for name in ("key_path", "certificate_path"):
        value = getattr(comm, name)
        if value and Path(value).exists():
            Path(value).unlink()
            gone.append(str(value))
    report["tls_files_removed"] = gone
    return report


def _device_id(config: Any, record: dict[str, Any] | None) -> str | None:
    if record and record.get("device_id"):
        return str(record["device_id"])
    from edge_min.security.certs import certificate_cn

    comm = config.security_config.encryption.communication
    return certificate_cn(comm.certificate_path) if comm.enabled else None


def _transport(config: Any, node: str) -> Any:
    from edge_min.sync.transport import http_transport

    try:
        return http_transport(config, node, timeout=10.0)
    except EdgeError as exc:
        log.warning("cannot build the link to central (%s); it will not be told", exc.message)
        return None


def _tell_central(transport: Any) -> str:
    try:
        status, _headers, body = transport.request(
            "POST", RETIRE_PATH, b"{}", {"Content-Type": "application/json"}
        )
    except EdgeError as exc:
        return f"unreachable: {exc.message}"
    finally:
        close = getattr(transport, "close", None)
        if close is not None:
            close()
    if status >= 300:
        try:
            err = json.loads(body).get("error") or {}
        except (ValueError, AttributeError):
            err = {}
        return f"refused (HTTP {status}, {err.get('code')}): {err.get('message')}"
    return "retired"


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
