"""The reference central platform: versioned record store, sync endpoint, devices, alerts.

``open_central_store(url)`` opens the store (SQLite by default, PostgreSQL for fleets);
``CentralServer`` serves it in-process; ``serve(db_url, host, port)`` runs it until SIGTERM
(``edge-min central serve``). Its HTTP routes come from the parts listed in
``edge_min.central.parts`` (the contract: ``edge_min.central.part``). Importing this package
loads nothing else.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "open_central_store": "edge_min.central.store",
    "CentralStore": "edge_min.central.store",
    "CentralApp": "edge_min.central.app",
    "CentralServer": "edge_min.central.server",
    "serve": "edge_min.central.server",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'edge_min.central' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
