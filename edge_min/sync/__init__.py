"""Sync between an edge and the central platform: the wire protocol and the edge's client.

- ``protocol``, ``errors``: frames (CBOR, checksummed, compressed, encrypted) and the errors
  that cross the wire (``docs/sync-protocol.md``); the facade below re-exports them.
- ``manager``: ``SyncManager``, the client: when each entity syncs, push then pull in batches.
- ``changes``, ``tracker``: ``SyncState`` (cursors, acknowledgements, pulled rows, conflicts)
  and ``ChangeTracker`` (the change log written with every local write).
- ``conflicts``, ``hlc``: conflict policies, and the hybrid logical clock that orders edits.
- ``transport``, ``bandwidth``, ``retry``: the transport port and ``HttpTransport``, the
  bandwidth cap, backoff.
- ``link``: ``SyncLink``, the runtime's manager on a worker of its own or inline.
- ``commands``: wiring for a data directory and the ``edge-min sync`` subcommands.

Loaded lazily (PEP 562): ``import edge_min.sync`` opens nothing and imports no third-party
package; ``edge_min.sync.encode_frame`` loads ``edge_min.sync.protocol`` on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "encode_frame": "edge_min.sync.protocol",
    "decode_frame": "edge_min.sync.protocol",
    "read_frame": "edge_min.sync.protocol",
    "peek_header": "edge_min.sync.protocol",
    "error_frame": "edge_min.sync.protocol",
    "raise_for_error": "edge_min.sync.protocol",
    "choose_compression": "edge_min.sync.protocol",
    "available_compressions": "edge_min.sync.protocol",
    "CONTENT_TYPE": "edge_min.sync.protocol",
    "PROTOCOL_VERSION": "edge_min.sync.protocol",
    "DEFAULT_MAX_BYTES": "edge_min.sync.protocol",
    "SyncError": "edge_min.sync.errors",
    "FrameError": "edge_min.sync.errors",
    "BadFrame": "edge_min.sync.errors",
    "TruncatedFrame": "edge_min.sync.errors",
    "FrameTooLarge": "edge_min.sync.errors",
    "ChecksumMismatch": "edge_min.sync.errors",
    "DecryptionFailed": "edge_min.sync.errors",
    "ProtocolVersionError": "edge_min.sync.errors",
    "SyncKeyError": "edge_min.sync.errors",
    "ConflictError": "edge_min.sync.errors",
    "error_for_code": "edge_min.sync.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'edge_min.sync' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
