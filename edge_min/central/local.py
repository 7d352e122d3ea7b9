"""A local central beside the runtime, for a first run with nothing else set up.

``edge-min run --local-central`` (what ``make run`` does) calls ``start_local_central``: when
``sync.central_url`` is a plain-HTTP address on this machine (the built-in default,
``http://127.0.0.1:8765``, is one), a reference central is served on that address from the
same process, with its own SQLite database under the data directory
(``<data>/central/central.db``) and this device's payload key (``<data>/keys/sync.key``) as
its shared key, so the first sync succeeds with no hand steps. An operator's central is
never touched: with a ``central_url`` on another host, or over https, nothing is started,
and when something already listens on the address it is left to answer.
"""

from __future__ import annotations

import errno
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edge_min.central.server import CentralServer, is_loopback
from edge_min.central.store import open_central_store

log = logging.getLogger("edge_min.central")

#: Below the data directory: the local central's own files.
LOCAL_CENTRAL_DIR = "central"
#: A single device talks to it: a few workers are plenty.
LOCAL_CENTRAL_WORKERS = 4


def local_central_db(root: Path) -> Path:
    """Where the local central of the data directory ``root`` keeps its database."""
    return root / LOCAL_CENTRAL_DIR / "central.db"


def start_local_central(config: Any, root: Path) -> CentralServer | None:
    """Serve a local central at ``central_url`` on this machine; None when none is wanted.

    ``config`` is the runtime's EdgeConfig and ``root`` its data directory. Returns the
    started server (stop it after the runtime), or None when ``central_url`` names another
    host or https, or its address is already taken.
    """
    url = config.sync.central_url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme != "http" or not is_loopback(host) or parts.path.strip("/"):
        log.info(
            "sync.central_url %s is not plain http on this machine: no local central started", url
        )
        return None
    port = parts.port or 80
    key = None
    if config.sync_config.network.encryption:
        from edge_min.sync.commands import load_sync_key

        key = load_sync_key(root)  # made here if this is the first start
    db = local_central_db(root)
    db.parent.mkdir(parents=True, exist_ok=True)
    store = open_central_store(f"sqlite:///{db}")
    try:
        server = CentralServer(
            store, host, port, workers=LOCAL_CENTRAL_WORKERS, shared_key=key
        ).start()
    except OSError as exc:
        store.close()
        if exc.errno != errno.EADDRINUSE:
            raise
        log.warning(
            "%s:%d is already in use: syncing with whatever central answers there "
            "(it needs this device's key, %s)",
            host,
            port,
            root / "keys" / "sync.key",
        )
        return None
    log.info("local central on %s (data in %s)", server.url, db.parent)
    return server
