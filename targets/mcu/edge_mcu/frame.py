"""Sync frames as the gateway and central speak them (``edge_min/sync/protocol.py``).

    b"EMS" | version u8 | header length u32 | CBOR header | payload length u32 | payload

The shim writes ``push`` frames of ``agent_executions`` items, uncompressed (MicroPython's
``deflate`` only inflates, and a zlib window would not fit the heap), encrypted in the
``aes-256-cbc-hmac-sha256`` suite when it has a sync key, and reads central's answers
(``push_result`` or ``error``) with the receivers' checks in their order: magic, version,
lengths against ``max_bytes`` before anything is read, header fields, the tag, the checksum,
then the items. Any defect raises ``FrameError`` with the reason; nothing is returned.
"""

import hashlib
import struct

from edge_mcu import cbor
from edge_mcu.suite import IV_BYTES, SUITE, Suite, SuiteError

try:
    from typing import Any
except ImportError:  # MicroPython: annotations are not evaluated, nothing to import
    pass

MAGIC = b"EMS"
VERSION = 1
MAX_HEADER = 4096
KINDS = ("push", "push_result", "pull", "pull_result", "error")


class FrameError(ValueError):
    """A frame from central that is refused: why is the message."""


#: Bytes kept free at the start of the payload buffer for the items' list head.
HEAD_ROOM = 3


def encode_parts(
    header: dict[str, str],
    count: int,
    buf: bytearray,
    end: int,
    suite: Suite | None = None,
) -> list[Any]:
    """A frame as the list of its byte strings, written one after the other.

    ``buf[HEAD_ROOM:end]`` holds the CBOR of ``count`` items; the list head goes just before
    them and the payload is encrypted in place (``buf`` has 16 spare bytes after ``end``),
    so the heap never holds a copy of it."""
    list_head = bytearray()
    cbor._head(list_head, 4, count)
    start = HEAD_ROOM - len(list_head)
    buf[start:HEAD_ROOM] = list_head
    payload = memoryview(buf)[start:end]
    head = {
        "v": VERSION,
        "kind": header["kind"],
        "node": header["node"],
        "entity": header.get("entity", ""),
        "batch": header.get("batch", ""),
        "count": count,
        "comp": "none",
        "enc": "none",
        "sum": hashlib.sha256(payload).digest(),
    }
    if suite is not None:
        head["enc"] = SUITE
        head["nonce"] = Suite.new_iv()
    head_bytes = cbor.dumps(head)
    prefix = MAGIC + struct.pack(">BI", VERSION, len(head_bytes)) + head_bytes
    if suite is None:
        parts = [payload]  # type: list[Any]
    else:
        size, tag = suite.seal_into(head["nonce"], memoryview(buf)[start:], end - start, prefix)
        parts = [memoryview(buf)[start : start + size], tag]
    return [prefix, struct.pack(">I", sum(len(p) for p in parts))] + parts


def decode(
    data: memoryview | bytes, suite: Suite | None = None, max_bytes: int = 16384
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(header, items) of one whole frame from central (a memoryview; an encrypted payload
    is decrypted in place); ``FrameError`` for any defect."""
    data = memoryview(data)
    if len(data) > max_bytes:
        raise FrameError(
            "the frame is %d bytes, past this device's limit %d" % (len(data), max_bytes)
        )
    if bytes(data[:3]) != MAGIC:
        raise FrameError("the answer does not start with the sync magic %r: not a frame" % MAGIC)
    if len(data) < 8:
        raise FrameError("the frame ends after %d bytes, inside its prefix" % len(data))
    version, hlen = struct.unpack(">BI", data[3:8])
    if version != VERSION:
        raise FrameError(
            "the frame uses sync protocol version %d; this shim speaks version %d"
            % (version, VERSION)
        )
    if hlen > MAX_HEADER or 8 + hlen + 4 > max_bytes:
        raise FrameError("the header length field says %d bytes, past %d" % (hlen, MAX_HEADER))
    if len(data) < 8 + hlen + 4:
        raise FrameError("the frame ends after %d bytes, inside its header" % len(data))
    prefix = bytes(data[: 8 + hlen])
    try:
        head = cbor.loads(prefix[8:])
    except cbor.CborError as exc:
        raise FrameError("the header is not valid CBOR: %s" % exc) from None
    _check_header(head, version)
    plen = struct.unpack(">I", data[8 + hlen : 12 + hlen])[0]
    if 12 + hlen + plen != len(data):
        raise FrameError(
            "the frame says its payload is %d bytes; %d came (cut or padded in transit)"
            % (plen, len(data) - 12 - hlen)
        )
    payload = data[12 + hlen :]
    enc = head["enc"]
    if enc == SUITE:
        if suite is None:
            raise FrameError("the frame is encrypted (%s) but this device has no sync key" % enc)
        try:
            payload = suite.open_into(head["nonce"], payload, prefix)
        except SuiteError as exc:
            raise FrameError(str(exc)) from None
    elif enc != "none":
        raise FrameError("the frame is encrypted in %r, which this shim cannot open" % enc)
    elif suite is not None and head["kind"] != "error":
        raise FrameError("the answer is not encrypted but this device requires encryption")
    if head["comp"] != "none":
        raise FrameError("the frame is %s-compressed; this shim asks for none" % head["comp"])
    if hashlib.sha256(payload).digest() != head["sum"]:
        raise FrameError("the payload's sha256 does not match the header sum: damaged in transit")
    try:
        items = cbor.loads(payload)
    except cbor.CborError as exc:
        raise FrameError("the payload is not valid CBOR: %s" % exc) from None
    if not isinstance(items, list) or any(not isinstance(i, dict) for i in items):
        raise FrameError("the payload must be a list of maps")
    if len(items) != head["count"]:
        raise FrameError(
            "the header says %d items, the payload holds %d" % (head["count"], len(items))
        )
    return head, items


def _check_header(head: Any, version: int) -> None:
    if not isinstance(head, dict):
        raise FrameError("the header must be a map")
    if head.get("v") != version:
        raise FrameError(
            "header v=%r disagrees with the version byte %d" % (head.get("v"), version)
        )
    for name in ("kind", "entity", "batch", "node", "comp", "enc"):
        if not isinstance(head.get(name), str):
            raise FrameError("header field %r must be text, got %r" % (name, head.get(name)))
    if head["kind"] not in KINDS:
        raise FrameError("header kind %r is not a frame kind" % head["kind"])
    count = head.get("count")
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise FrameError("header field 'count' must be an int >= 0, got %r" % (count,))
    digest = head.get("sum")
    if not isinstance(digest, bytes) or len(digest) != 32:
        raise FrameError("header field 'sum' must be 32 bytes (sha256)")
    if head["enc"] == SUITE:
        nonce = head.get("nonce")
        if not isinstance(nonce, bytes) or len(nonce) != IV_BYTES:
            raise FrameError("header field 'nonce' must be %d bytes for %s" % (IV_BYTES, SUITE))
