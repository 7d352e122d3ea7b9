"""The errors of sync, rooted at ``SyncError`` (an ``EdgeError``).

::

    EdgeError
    └── SyncError                   sync_error        something in sync failed
        ├── FrameError              sync_frame_error  a frame was refused; nothing in it applied
        │   ├── BadFrame            sync_bad_frame    not an edge_min frame, or malformed inside
        │   ├── TruncatedFrame      sync_truncated    the frame ended early (a cut link)
        │   ├── FrameTooLarge       sync_too_large    a length field or the inflated payload
        │   │                                         passes max_bytes
        │   ├── ChecksumMismatch    sync_checksum     the payload's sha256 is not the header's sum
        │   ├── DecryptionFailed    sync_decrypt      the AES-GCM tag did not verify
        │   └── ProtocolVersionError  sync_version    the frame's protocol version is unsupported
        ├── SyncKeyError            sync_key          the payload key is missing or not 32 bytes
        ├── ConflictError           sync_conflict     a record changed on both sides (manual policy)
        ├── SyncUnavailable         sync_unavailable  the running runtime cannot sync now
        │                                             (offline, link down)
        ├── DeviceUntrusted         device_untrusted  central refuses this device's pushes: its
        │                                             attestation failed or is overdue
        ├── TransportError          sync_transport    the request or its answer did not make it
        │                                             across; retry later
        │                                             (in edge_min.sync.transport)
        └── TlsRefused              sync_tls          the TLS handshake refused the peer's
                                                      certificate; retrying will not help
                                                      (in edge_min.sync.transport)

Every ``FrameError`` means the same to a receiver: drop the whole frame, apply nothing, answer
with the error's ``code`` (the second column; ``http_status`` says which HTTP status carries
it). Codes cross the wire in ``error`` frames; ``error_for_code`` turns one back into its class.
``TransportError`` and ``TlsRefused`` are raised by the edge's own transport, never carried in an
``error`` frame; their codes show in the edge's sync report.
"""

from __future__ import annotations

from edge_min.errors import EdgeError


class SyncError(EdgeError):
    """Something in sync failed."""

    code = "sync_error"
    http_status = 500


class FrameError(SyncError):
    """A frame was rejected as a whole; nothing in it was applied."""

    code = "sync_frame_error"
    http_status = 400


class BadFrame(FrameError):
    """Not an edge_min sync frame (bad magic), or malformed header, payload or CBOR."""

    code = "sync_bad_frame"


class TruncatedFrame(FrameError):
    """The frame ended before the length fields said it would (a cut link)."""

    code = "sync_truncated"

    def __init__(self, message: str, *, expected: int = 0, got: int = 0) -> None:
        super().__init__(message, expected=expected, got=got)
        self.expected = expected
        self.got = got


class FrameTooLarge(FrameError):
    """A length field, or the decompressed payload, passes the receiver's ``max_bytes``."""

    code = "sync_too_large"
    http_status = 413

    def __init__(self, message: str, *, size: int = 0, limit: int = 0) -> None:
        super().__init__(message, size=size, limit=limit)
        self.size = size
        self.limit = limit


class ChecksumMismatch(FrameError):
    """The sha256 of the plain payload is not the header's ``sum``."""

    code = "sync_checksum"


class DecryptionFailed(FrameError):
    """The AES-256-GCM tag did not verify: wrong key, or header or payload altered."""

    code = "sync_decrypt"


class ProtocolVersionError(FrameError):
    """The frame speaks a protocol version this edge_min cannot read."""

    code = "sync_version"

    def __init__(self, message: str, *, got: int = 0, supported: tuple[int, int] = (1, 1)) -> None:
        super().__init__(message, got=got, supported=supported)
        self.got = got
        self.supported = supported


class SyncKeyError(SyncError):
    """The payload encryption key is missing or is not 32 bytes."""

    code = "sync_key"
    http_status = 400


class DeviceUntrusted(SyncError):
    """Central refuses this device's pushes: its attestation failed or is overdue."""

    code = "device_untrusted"
    http_status = 403
    # Retrying on backoff will not help; a passing attestation restarts sync.
    retryable = False


class ConflictError(SyncError):
    """A record was changed on both sides and its policy leaves the choice to a person."""

    code = "sync_conflict"
    http_status = 409

    def __init__(self, message: str, *, entity: str = "", entity_id: str = "") -> None:
        super().__init__(message, entity=entity, entity_id=entity_id)
        self.entity = entity
        self.entity_id = entity_id


_BY_CODE: dict[str, type[SyncError]] = {
    cls.code: cls
    for cls in (
        SyncError,
        FrameError,
        BadFrame,
        TruncatedFrame,
        FrameTooLarge,
        ChecksumMismatch,
        DecryptionFailed,
        ProtocolVersionError,
        SyncKeyError,
        ConflictError,
        DeviceUntrusted,
    )
}


def error_for_code(code: str, message: str) -> SyncError:
    """The ``SyncError`` a peer reported by ``code``; an unknown code gives a plain SyncError."""
    cls = _BY_CODE.get(code)
    if cls is None:
        return SyncError(f"{message} (remote code {code!r})", remote_code=code)
    return cls(message)


class SyncUnavailable(SyncError):
    """The running runtime cannot sync now (offline, link down, no sync manager)."""

    code = "sync_unavailable"
