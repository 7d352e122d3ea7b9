"""The sync wire format: one versioned CBOR frame per batch, compressed, encrypted, checksummed.

    b"EMS" | version u8 | header length u32 | CBOR header | payload length u32 | payload

The header is a CBOR map (``v kind entity batch node count comp enc nonce sum``); the payload is
the CBOR list of items, compressed, then encrypted with every byte before the payload length as
associated data, in the suite the header's ``enc`` names: AES-256-GCM (12-byte nonce), or
AES-256-CBC with HMAC-SHA256, encrypt-then-MAC (16-byte IV; ``edge_min.sync.cbc``) for
devices whose AES has no GCM (MicroPython's ``cryptolib``); ``sum`` is the sha256 of the
plain CBOR. A receiver checks lengths (before reading), header, tag, inflated size, checksum
and items, in that order, and returns
nothing unless all pass. CBOR tags are refused both ways: a peer can make us build only str,
int, float, bool, None, bytes, lists and str-keyed maps. docs/sync-protocol.md is the spec.
Pure: nothing is opened at import; cbor2, the AES library (edge_min.security.aead) and
zstandard load on first use.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
import zlib
from collections.abc import Callable, Iterable
from importlib import import_module
from importlib.util import find_spec
from typing import Any

from edge_min.errors import EdgeError, MissingDependency
from edge_min.sync.errors import (
    BadFrame,
    ChecksumMismatch,
    DecryptionFailed,
    FrameTooLarge,
    ProtocolVersionError,
    SyncKeyError,
    TruncatedFrame,
    error_for_code,
)

MAGIC = b"EMS"
PROTOCOL_VERSION = 1
MIN_PROTOCOL_VERSION = 1
KINDS = ("push", "push_result", "pull", "pull_result", "error")
COMPRESSIONS = ("none", "zlib", "zstd")
ENCRYPTIONS = ("none", "aes-256-gcm", "aes-256-cbc-hmac-sha256")
#: The nonce (IV) length of each encrypting suite.
NONCE_SIZES = {"aes-256-gcm": 12, "aes-256-cbc-hmac-sha256": 16}
CONTENT_TYPE = "application/x-edge-min-sync"
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
MAX_HEADER_BYTES = 64 * 1024
MAX_DEPTH = 64
KEY_BYTES = 32
TAG_BYTES = 16
SUM_BYTES = 32
ZLIB_LEVEL = 6
ZSTD_LEVEL = 3

_PREFIX = struct.Struct(">3sBI")  # magic, version, header length
_U32 = struct.Struct(">I")
PREFIX_BYTES = _PREFIX.size
# Keys encode_frame owns; whatever the caller put there is replaced.
_DERIVED = ("v", "count", "comp", "enc", "nonce", "sum")
_TEXT_FIELDS = ("kind", "entity", "batch", "node")
# false, true, null: the only one-byte simple values with a Python meaning we accept.
_PLAIN_SIMPLE = frozenset((0xF4, 0xF5, 0xF6))
_TAG_NAMES = {
    0: "a datetime",
    1: "an epoch datetime",
    2: "a big integer",
    3: "a big negative integer",
    4: "a decimal",
    28: "a shared value",
    35: "a regular expression",
    36: "a MIME message",
    37: "a UUID",
    258: "a set",
}

Header = dict[str, Any]
Items = list[dict[str, Any]]
Read = Callable[[int], bytes]


def encode_frame(
    header: Header,
    items: Iterable[dict[str, Any]],
    *,
    key: bytes | None = None,
    compression: str = "zlib",
    max_bytes: int = DEFAULT_MAX_BYTES,
    encryption: str = "aes-256-gcm",
) -> bytes:
    """One frame carrying ``items``; ``header`` gives kind, node, entity and batch.

    ``v``, ``count``, ``comp``, ``enc``, ``nonce`` and ``sum`` are set here. With ``key``
    (32 bytes) the payload is encrypted in ``encryption`` (an encrypting suite of
    ``ENCRYPTIONS``; answer a peer in the suite its frame used). Raises BadFrame for items
    that are not wire types and FrameTooLarge when the plain payload or the frame passes
    ``max_bytes``.
    """
    items = list(items)
    if compression not in COMPRESSIONS:
        raise BadFrame(
            f"compression {compression!r} is not one of {', '.join(COMPRESSIONS)}; "
            "use choose_compression() to pick one"
        )
    if encryption not in NONCE_SIZES:
        raise BadFrame(
            f"encryption {encryption!r} is not one of {', '.join(NONCE_SIZES)}; "
            "leave it at aes-256-gcm, or answer in the suite the peer's frame named"
        )
    head = _outgoing_header(header, len(items))
    plain = _cbor_dumps(items, "items")
    if len(plain) > max_bytes:
        raise FrameTooLarge(
            f"{len(items)} items encode to {len(plain):,} bytes, past max_bytes "
            f"{max_bytes:,}; send fewer items per batch",
            size=len(plain),
            limit=max_bytes,
        )
    head["comp"] = compression
    head["sum"] = hashlib.sha256(plain).digest()
    body = _compress(compression, plain)
    if key is not None:
        _check_key(key)
        head["enc"] = encryption
        head["nonce"] = os.urandom(NONCE_SIZES[encryption])
    header_bytes = _cbor_dumps(head, "header")
    if len(header_bytes) > MAX_HEADER_BYTES:
        raise BadFrame(
            f"the header encodes to {len(header_bytes):,} bytes, past {MAX_HEADER_BYTES:,}; "
            "keep extra header fields short"
        )
    prefix = _PREFIX.pack(MAGIC, head["v"], len(header_bytes)) + header_bytes
    if key is not None:
        body = _encrypt(key, encryption, head["nonce"], prefix, body)
    size = len(prefix) + _U32.size + len(body)
    if size > max_bytes:
        raise FrameTooLarge(
            f"the frame is {size:,} bytes, past max_bytes {max_bytes:,}; "
            "send fewer items per batch",
            size=size,
            limit=max_bytes,
        )
    return prefix + _U32.pack(len(body)) + body


def decode_frame(
    data: bytes,
    *,
    key: bytes | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    require_encryption: bool = False,
) -> tuple[Header, Items]:
    """The (header, items) of a whole frame; any defect raises a FrameError and returns nothing."""
    stream = io.BytesIO(data)
    header, items = read_frame(
        stream.read, key=key, max_bytes=max_bytes, require_encryption=require_encryption
    )
    if extra := len(data) - stream.tell():
        raise BadFrame(f"{extra} bytes follow the frame's end; send one frame per request body")
    return header, items


def read_frame(
    read: Read,
    *,
    key: bytes | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    require_encryption: bool = False,
) -> tuple[Header, Items]:
    """Read exactly one frame from ``read(n)`` (a file's or socket file's read).

    Lengths are checked against ``max_bytes`` before anything behind them is read, so a
    hostile length field costs nothing. A short read raises TruncatedFrame.
    """
    version, prefix, header_bytes = _read_head(read, max_bytes)
    header = _parse_header(header_bytes, version)
    pos = len(prefix)
    plen = _U32.unpack(_read_exact(read, _U32.size, pos, "payload length"))[0]
    pos += _U32.size
    if pos + plen > max_bytes:
        raise FrameTooLarge(
            f"the frame says it is {pos + plen:,} bytes, past max_bytes {max_bytes:,}; "
            "the sender must cut smaller batches",
            size=pos + plen,
            limit=max_bytes,
        )
    payload = _read_exact(read, plen, pos, "payload")
    return header, _open_payload(header, prefix, payload, key, max_bytes, require_encryption)


def peek_header(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Header:
    """The header of a frame without opening its payload: NOT authenticated, for routing only."""
    stream = io.BytesIO(data)
    version, _prefix, header_bytes = _read_head(stream.read, max_bytes)
    return _parse_header(header_bytes, version)


def error_frame(err: EdgeError, *, node: str, key: bytes | None = None) -> bytes:
    """An ``error`` frame reporting ``err`` (its code and message) to the peer."""
    items = [{"code": err.code, "message": err.message}]
    return encode_frame({"kind": "error", "node": node}, items, key=key, compression="none")


def raise_for_error(header: Header, items: Items) -> None:
    """Raise the SyncError an ``error`` frame carries; do nothing for other kinds."""
    if header.get("kind") != "error":
        return
    code, message = (items[0].get(k) if items else None for k in ("code", "message"))
    raise error_for_code(
        code if isinstance(code, str) else "sync_error",
        message if isinstance(message, str) else "the peer reported an error without a message",
    )


def available_compressions() -> tuple[str, ...]:
    """The compressions this process can read and write, best first."""
    # find_spec looks without importing, so asking stays cheap.
    return ("zstd", "zlib", "none") if find_spec("zstandard") else ("zlib", "none")


def choose_compression(enabled: bool, accepted: Iterable[str] | None = None) -> str:
    """The best compression both sides read (``network.compression`` off gives "none")."""
    if not enabled:
        return "none"
    peer = set(COMPRESSIONS if accepted is None else accepted)
    return next(c for c in available_compressions() if c in peer or c == "none")


def _outgoing_header(header: Header, count: int) -> Header:
    if not isinstance(header, dict):
        raise BadFrame(f"the header must be a dict, got {type(header).__name__}")
    # Field order is cosmetic (a map), but v first makes hex dumps readable.
    head: Header = {"v": PROTOCOL_VERSION}
    head.update((k, header.get(k, "" if k in ("entity", "batch") else None)) for k in _TEXT_FIELDS)
    head.update(count=count, comp="none", enc=ENCRYPTIONS[0])
    head.update((k, v) for k, v in header.items() if k not in head and k not in _DERIVED)
    for name in _TEXT_FIELDS:
        if not isinstance(head.get(name), str):
            raise BadFrame(f"header field {name!r} must be text, got {head.get(name)!r}")
    if head["kind"] not in KINDS:
        raise BadFrame(f"header kind {head['kind']!r} is not one of {', '.join(KINDS)}")
    return head


def _read_upto(read: Read, n: int) -> bytes:
    """Up to ``n`` bytes; fewer only if the stream ended (a short read is not an end)."""
    chunks: list[bytes] = []
    got = 0
    while got < n and (chunk := read(n - got)):
        if len(chunk) > n - got:
            raise BadFrame(f"the reader returned {len(chunk)} bytes when {n - got} were asked")
        chunks.append(chunk)
        got += len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _read_exact(read: Read, n: int, pos: int, what: str) -> bytes:
    """Exactly ``n`` bytes of the frame's ``what``, which starts at byte ``pos``."""
    data = _read_upto(read, n)
    if len(data) < n:
        raise TruncatedFrame(
            f"the frame ends after {pos + len(data)} bytes, inside its {what} ({len(data)} of "
            f"{n} bytes); the link was probably cut: send the frame again",
            expected=pos + n,
            got=pos + len(data),
        )
    return data


def _read_head(read: Read, max_bytes: int) -> tuple[int, bytes, bytes]:
    """(version, bytes before the payload length, header bytes), each field checked in turn."""
    start = _read_upto(read, PREFIX_BYTES)
    # A few bytes that already differ from the magic are garbage, not a cut frame.
    if not MAGIC.startswith(start[:3]):
        raise BadFrame(
            f"the data starts with {start[:3]!r}, not the sync magic {MAGIC!r}: "
            "not an edge_min sync frame (wrong URL, or a proxy's error page?)"
        )
    # Nothing more will come if it ended inside the prefix: report it as a cut.
    start += _read_exact(lambda n: b"", PREFIX_BYTES - len(start), len(start), "prefix")
    _magic, version, hlen = _PREFIX.unpack(start)
    _check_version(version)
    if hlen > MAX_HEADER_BYTES or PREFIX_BYTES + hlen + _U32.size > max_bytes:
        limit = min(MAX_HEADER_BYTES, max_bytes)
        raise FrameTooLarge(
            f"the header length field says {hlen:,} bytes, past the limit {limit:,}",
            size=hlen,
            limit=limit,
        )
    header_bytes = _read_exact(read, hlen, PREFIX_BYTES, "header")
    return version, start + header_bytes, header_bytes


def _check_version(version: int) -> None:
    low, high = MIN_PROTOCOL_VERSION, PROTOCOL_VERSION
    if version > high:
        why = f"newer than version {high} that this edge_min speaks; upgrade edge_min on this side"
    elif version < low:
        why = f"older than version {low}, the oldest this edge_min reads; upgrade the sender"
    else:
        return
    raise ProtocolVersionError(
        f"the frame uses sync protocol version {version}, {why}", got=version, supported=(low, high)
    )


def _parse_header(header_bytes: bytes, version: int) -> Header:
    head = _cbor_loads(header_bytes, "header", rows=False)[0]
    if head.get("v") != version:
        raise BadFrame(f"header v={head.get('v')!r} disagrees with the version byte {version}")
    for name in _TEXT_FIELDS:
        if not isinstance(head.get(name), str):
            raise BadFrame(f"header field {name!r} must be text, got {head.get(name)!r}")
    checks = (
        ("kind", head["kind"] in KINDS, f"one of {', '.join(KINDS)}"),
        ("comp", head.get("comp") in COMPRESSIONS, f"one of {', '.join(COMPRESSIONS)}"),
        ("enc", head.get("enc") in ENCRYPTIONS, f"one of {', '.join(ENCRYPTIONS)}"),
        ("count", type(head.get("count")) is int and head["count"] >= 0, "a count (int >= 0)"),
        ("sum", _is_bytes(head.get("sum"), SUM_BYTES), f"{SUM_BYTES} bytes (sha256)"),
    )
    for name, ok, want in checks:
        if not ok:
            raise BadFrame(f"header field {name!r} must be {want}, got {head.get(name)!r}")
    if head["enc"] != "none" and not _is_bytes(head.get("nonce"), NONCE_SIZES[head["enc"]]):
        raise BadFrame(
            f"header field 'nonce' must be {NONCE_SIZES[head['enc']]} bytes when enc is "
            f"{head['enc']}"
        )
    return head


def _is_bytes(value: Any, size: int) -> bool:
    return isinstance(value, bytes) and len(value) == size


def _open_payload(
    header: Header,
    prefix: bytes,
    payload: bytes,
    key: bytes | None,
    max_bytes: int,
    require_encryption: bool,
) -> Items:
    if header["enc"] != "none":
        if key is None:
            raise SyncKeyError(
                f"the frame is encrypted (enc {header['enc']}) but no sync key is configured "
                "here; give both sides the same 32-byte key (<data>/keys/sync.key)"
            )
        body = _decrypt(key, header["enc"], header["nonce"], prefix, payload)
    elif require_encryption:
        raise BadFrame(
            "the frame is not encrypted but this side requires encryption; "
            "turn network.encryption on at the sender"
        )
    else:
        body = payload
    plain = _decompress(header["comp"], body, max_bytes)
    if hashlib.sha256(plain).digest() != header["sum"]:
        raise ChecksumMismatch(
            f"the payload's sha256 does not match the header sum (batch {header['batch']!r}); "
            "it was damaged in transit: send the batch again"
        )
    items, count = _cbor_loads(plain, "payload", rows=True)
    if count != header["count"]:
        raise BadFrame(f"the header says {header['count']} items, the payload holds {count}")
    return list(items)


def _check_key(key: Any) -> None:
    if not isinstance(key, bytes | bytearray) or len(key) != KEY_BYTES:
        size = len(key) if isinstance(key, bytes | bytearray) else type(key).__name__
        raise SyncKeyError(
            f"the sync payload key must be {KEY_BYTES} bytes (AES-256), got {size}; "
            "write 32 random bytes to the key file (e.g. <data>/keys/sync.key)"
        )


def _optional(module: str, package: str, extra: str, purpose: str) -> Any:
    """An optional module, imported on first use; missing → the exact pip install to run."""
    try:
        return import_module(module)
    except ImportError:
        raise MissingDependency(package, extra, purpose) from None


def _aes(key: bytes) -> Any:
    from edge_min.security.aead import Aead

    return Aead(key, "Sync payload encryption")


def _encrypt(key: bytes, suite: str, nonce: bytes, aad: bytes, body: bytes) -> bytes:
    if suite != "aes-256-gcm":
        from edge_min.sync import cbc

        return cbc.seal(key, nonce, body, aad)
    return bytes(_aes(key).seal(nonce, body, aad))


def _decrypt(key: bytes, suite: str, nonce: bytes, aad: bytes, payload: bytes) -> bytes:
    from edge_min.security.aead import TagMismatch

    _check_key(key)
    if suite != "aes-256-gcm":
        from edge_min.sync import cbc

        try:
            return cbc.open_(key, nonce, payload, aad)
        except cbc.CbcTagMismatch as exc:
            raise DecryptionFailed(
                f"the payload does not open under {suite} ({exc}): the two sides hold "
                "different sync keys, or the header or payload was altered in transit"
            ) from None
    if len(payload) < TAG_BYTES:
        raise DecryptionFailed(
            f"the encrypted payload is {len(payload)} bytes, shorter than its {TAG_BYTES}-byte tag"
        )
    try:
        return bytes(_aes(key).open(nonce, payload, aad))
    except TagMismatch:
        raise DecryptionFailed(
            "the payload's AES-GCM tag does not verify: the two sides hold different sync "
            "keys, or the header or payload was altered in transit"
        ) from None


def _compress(comp: str, plain: bytes) -> bytes:
    if comp == "zlib":
        return zlib.compress(plain, ZLIB_LEVEL)
    if comp == "zstd":
        return bytes(_zstd("Compressing").ZstdCompressor(level=ZSTD_LEVEL).compress(plain))
    return plain


def _decompress(comp: str, body: bytes, max_bytes: int) -> bytes:
    """The inflated payload, never more than ``max_bytes`` of it held (a bomb stops early)."""
    if comp == "none":
        return body
    if comp == "zlib":
        inflater = zlib.decompressobj()
        try:
            plain = inflater.decompress(body, max_bytes + 1)
        except zlib.error as exc:
            raise BadFrame(f"the zlib payload is corrupt ({exc}); send the batch again") from None
        complete = inflater.eof and not inflater.unused_data
    else:
        plain, complete = _zstd_inflate(body, max_bytes)
    if len(plain) > max_bytes:
        raise FrameTooLarge(
            f"the {comp} payload inflates past max_bytes {max_bytes:,} "
            f"({len(body):,} bytes on the wire): refused as a decompression bomb",
            size=len(plain),
            limit=max_bytes,
        )
    if not complete:
        raise BadFrame(f"the {comp} payload is incomplete or has trailing bytes")
    return plain


def _zstd(purpose: str) -> Any:
    return _optional("zstandard", "zstandard", "zstd", f"{purpose} a zstd sync payload")


def _zstd_inflate(body: bytes, max_bytes: int) -> tuple[bytes, bool]:
    zstd = _zstd("Decompressing")
    out = bytearray()
    try:
        with zstd.ZstdDecompressor().stream_reader(body) as reader:
            while len(out) <= max_bytes and (chunk := reader.read(max_bytes + 1 - len(out))):
                out += chunk
    except zstd.ZstdError as exc:
        raise BadFrame(f"the zstd payload is corrupt ({exc}); send the batch again") from None
    return bytes(out), True


def _cbor() -> Any:
    return _optional("cbor2", "cbor2", "cbor", "Reading or writing sync frames")


def _cbor_dumps(value: Any, what: str) -> bytes:
    """CBOR of ``value``, proven to hold wire types only by the same scan a receiver runs."""
    cbor2 = _cbor()
    try:
        data = bytes(cbor2.dumps(value))
        _scan(data, what, rows=what == "items")
    except (cbor2.CBOREncodeError, TypeError, ValueError, RecursionError, BadFrame) as exc:
        reason = _first_unsupported(value, what) or str(exc)
        raise BadFrame(f"cannot send the {what}: {reason}") from None
    return data


def _first_unsupported(value: Any, path: str, depth: int = 0) -> str | None:
    """Where ``value`` holds something that is not a wire type, as a message; None if nowhere."""
    kind = type(value)
    if value is None or kind in (str, bool, float, bytes, bytearray):
        return None
    if kind is int:
        if -(2**64) <= value < 2**64:
            return None
        return f"{path}: integer {value} is outside ±2**64; send it as text"
    if depth >= MAX_DEPTH:
        return f"{path}: nested deeper than {MAX_DEPTH} levels"
    if isinstance(value, dict | list | tuple):
        for k, v in value.items() if isinstance(value, dict) else enumerate(value):
            if type(k) is not str and isinstance(value, dict):
                return f"{path}: key {k!r} is {type(k).__name__}; map keys must be str"
            if found := _first_unsupported(v, f"{path}[{k!r}]", depth + 1):
                return found
        return None
    return (
        f"{path}: {kind.__name__} is not a wire type; send str, int, float, bool, None, "
        "bytes, list or dict (datetimes as ISO text)"
    )


def _refuse_tag(_decoder: Any, tag: Any) -> Any:
    raise BadFrame(f"CBOR tag {tag.tag} is not allowed in sync frames")


def _cbor_loads(data: bytes, what: str, *, rows: bool) -> tuple[Any, int]:
    """(value, top-level length) of CBOR already proven tag-free and well-formed by _scan."""
    count = _scan(data, what, rows=rows)
    cbor2 = _cbor()
    try:
        return cbor2.loads(data, tag_hook=_refuse_tag), count
    except (cbor2.CBORDecodeError, ValueError, RecursionError) as exc:
        raise BadFrame(f"the {what} is not valid CBOR: {exc}") from None


def _scan(data: bytes, what: str, *, rows: bool) -> int:
    """Walk CBOR without building it; return the top-level length.

    Refuses tags, indefinite lengths, simple values, non-text map keys, nesting past
    MAX_DEPTH, lengths past the data and trailing bytes, so cbor2 never allocates for a
    hostile length or builds an object we did not ask for. ``rows``: a list of maps at the
    top, else one map. Bounds are checked lazily: reading past the end raises IndexError,
    and a final position past the end means a length ran over.
    """
    shape = "a list of maps" if rows else "a map"
    try:
        major, count, pos = _head(data, 0, what)
        if major == 6:
            raise _tag_refused(what, count, 0)
        if major != (4 if rows else 5):
            raise BadFrame(f"the {what} must be {shape}, got CBOR major type {major}")
        if rows:
            for _ in range(count):
                major, pairs, pos = _head(data, pos, what)
                if major == 6:
                    raise _tag_refused(what, pairs, pos)
                if major != 5:
                    raise BadFrame(f"every item in the {what} must be a map (byte {pos})")
                pos = _skip(data, pos, pairs, True, 2, what)
        else:
            pos = _skip(data, pos, count, True, 1, what)
    except IndexError:
        pos = len(data) + 1
    if pos > len(data):
        raise BadFrame(f"the {what} CBOR ends early: a length runs past its {len(data)} bytes")
    if pos < len(data):
        raise BadFrame(f"the {what} CBOR has {len(data) - pos} trailing bytes after byte {pos}")
    return count


def _head(data: bytes, pos: int, what: str) -> tuple[int, int, int]:
    """(major type, argument, position after the head) of the data item at ``pos``."""
    initial = data[pos]
    info = initial & 31
    if info < 24:
        return initial >> 5, info, pos + 1
    if info < 28:
        width = 1 << (info - 24)
        if pos + 1 + width > len(data):
            raise IndexError(pos)
        return initial >> 5, int.from_bytes(data[pos + 1 : pos + 1 + width], "big"), pos + 1 + width
    raise BadFrame(
        f"the {what} CBOR has an indefinite or reserved length at byte {pos}; "
        "edge_min frames use definite lengths only"
    )


def _skip(data: bytes, pos: int, n: int, is_map: bool, depth: int, what: str) -> int:
    """The position after ``n`` items (pairs if ``is_map``) starting at ``pos``."""
    if depth > MAX_DEPTH:
        raise BadFrame(f"the {what} is nested deeper than {MAX_DEPTH} levels")
    for _ in range(n):
        if is_map:
            initial = data[pos]
            if 0x60 <= initial <= 0x77:  # short text key: the common case, kept inline
                pos += 1 + initial - 0x60
            else:
                major, arg, at = _head(data, pos, what)
                if major != 3:
                    raise BadFrame(f"the {what} has a map key that is not text at byte {pos}")
                pos = at + arg
        initial = data[pos]
        major = initial >> 5
        if initial & 31 < 24 and (major <= 1 or initial in _PLAIN_SIMPLE):
            pos += 1
            continue
        start = pos
        major, arg, pos = _head(data, pos, what)
        if major <= 1:
            continue
        if major <= 3:
            pos += arg
        elif major <= 5:
            pos = _skip(data, pos, arg, major == 5, depth + 1, what)
        elif major == 6:
            raise _tag_refused(what, arg, start)
        elif initial & 31 not in (25, 26, 27):
            raise BadFrame(f"the {what} holds CBOR simple value {arg} at byte {start}")
    return pos


def _tag_refused(what: str, tag: int, pos: int) -> BadFrame:
    name = _TAG_NAMES.get(tag, "an unknown type")
    return BadFrame(
        f"the {what} holds CBOR tag {tag} ({name}) near byte {pos}; frames carry only "
        "str, int, float, bool, null, bytes, lists and maps (datetimes as ISO text)"
    )
