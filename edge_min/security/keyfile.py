"""Secret key files (the API token key, the sync payload key): made once, never replaced.

``create_key_file`` writes a fresh random key to a temporary file (0600, in a 0700 folder),
fsyncs it, then ``link``s it into place, so a power cut leaves either no key file or a whole
one, and when two processes race both end up with the winner's key.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def create_key_file(path: str | os.PathLike[str], nbytes: int) -> bytes:
    """Make the key file at ``path`` with ``nbytes`` random bytes; return the key in force.

    If the file appears meanwhile (another process), its key is returned instead.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = secrets.token_bytes(nbytes)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.{secrets.token_hex(4)}")
    _write_new(tmp, key)
    try:
        # link() fails if the key appeared meanwhile, so a key once used is never replaced.
        # Some hosts have no link() at all (Emscripten's file systems, under Pyodide).
        link = getattr(os, "link", None)
        if link is None:
            raise OSError("no hard links on this host")
        link(tmp, p)
    except FileExistsError:
        return p.read_bytes()
    except OSError:
        # No hard links on this filesystem: exclusive create is the next best thing.
        try:
            _write_new(p, key)
        except FileExistsError:
            return p.read_bytes()
    finally:
        tmp.unlink(missing_ok=True)
    return key


def replace_key_file(path: str | os.PathLike[str], data: bytes) -> None:
    """Put ``data`` at ``path`` whole, replacing what was there: a key that comes from
    outside (a firmware seed's API token key), not one made here. 0600 from its creation,
    fsynced, renamed into place, the folder fsynced."""
    from edge_min.store.files import fsync_dir

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        _write_new(tmp, data)
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(p.parent)


def _write_new(path: Path, data: bytes) -> None:
    """Create ``path`` (0600; FileExistsError if it exists), write ``data``, fsync."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
