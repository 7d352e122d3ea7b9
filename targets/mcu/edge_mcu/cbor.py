"""CBOR (RFC 8949) for the sync frames: the subset edge_min's protocol allows, both ways.

Encodes None, bool, int (within +-2**64), float, str, bytes, list/tuple and str-keyed dict,
deterministically as CPython's ``cbor2.dumps(value, canonical=True)`` does: map keys
ordered by the length of their encoding, then by its bytes (MicroPython's dicts keep no
order, so this is what makes the bytes the same on both sides), floats in the shortest of
half, single and double precision that keeps the value (halves only below 2**15 in
magnitude, as cbor2's C encoder writes them), NaN and infinities as half floats.

Decodes what the protocol's receivers accept (``edge_min/sync/protocol.py``): definite
lengths only, no tags, no simple values but false, true and null, text map keys, at most
``MAX_DEPTH`` levels, and no byte after the end. Anything else raises ``CborError`` with the
byte offset, so a bad frame from central is refused with a reason and never half-read.
Floats of every width are read (cbor2 writes doubles unless canonical).
"""

import struct

try:
    from typing import Any
except ImportError:  # MicroPython: annotations are not evaluated, nothing to import
    pass

MAX_DEPTH = 16
_U64 = 1 << 64


class CborError(ValueError):
    """The bytes are not CBOR this protocol accepts, or a value cannot be sent."""


class Raw:
    """Bytes that already are one CBOR data item, written as they are (a record's output
    map goes from the log into a push item without being decoded)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


def dumps(value: Any) -> bytes:
    """The canonical CBOR bytes of ``value``."""
    out = bytearray()
    _encode(out, value, 0)
    return bytes(out)


def _head(out: bytearray, major: int, arg: int) -> None:
    if arg < 24:
        out.append(major << 5 | arg)
    elif arg < 0x100:
        out.append(major << 5 | 24)
        out.append(arg)
    elif arg < 0x10000:
        out.append(major << 5 | 25)
        out.extend(struct.pack(">H", arg))
    elif arg < 0x100000000:
        out.append(major << 5 | 26)
        out.extend(struct.pack(">I", arg))
    else:
        out.append(major << 5 | 27)
        out.extend(struct.pack(">II", arg >> 32, arg & 0xFFFFFFFF))


def _float(out: bytearray, value: float) -> None:
    if value != value:
        out.extend(b"\xf9\x7e\x00")
        return
    if value in (float("inf"), float("-inf")):
        out.extend(b"\xf9\x7c\x00" if value > 0 else b"\xf9\xfc\x00")
        return
    best = b"\xfb" + struct.pack(">d", value)
    for fmt, tag in ((">f", b"\xfa"), (">e", b"\xf9")):
        if tag == b"\xf9" and not -32768.0 < value < 32768.0:
            break  # cbor2's C encoder (CPython's default) keeps halves below 2**15
        try:
            packed = struct.pack(fmt, value)
        except (OverflowError, ValueError):
            break
        if struct.unpack(fmt, packed)[0] != value:
            break
        best = tag + packed
    out.extend(best)


def _encode(out: bytearray, value: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise CborError("nested deeper than %d levels" % MAX_DEPTH)
    if value is None:
        out.append(0xF6)
    elif value is True:
        out.append(0xF5)
    elif value is False:
        out.append(0xF4)
    elif isinstance(value, int):
        if value >= 0:
            if value >= _U64:
                raise CborError("integer %d is past 2**64; send it as text" % value)
            _head(out, 0, value)
        else:
            if -1 - value >= _U64:
                raise CborError("integer %d is below -2**64; send it as text" % value)
            _head(out, 1, -1 - value)
    elif isinstance(value, float):
        _float(out, value)
    elif isinstance(value, str):
        data = value.encode("utf-8")
        _head(out, 3, len(data))
        out.extend(data)
    elif isinstance(value, (bytes, bytearray)):
        _head(out, 2, len(value))
        out.extend(value)
    elif isinstance(value, (list, tuple)):
        _head(out, 4, len(value))
        for item in value:
            _encode(out, item, depth + 1)
    elif isinstance(value, Raw):
        out.extend(value.data)
    elif isinstance(value, dict):
        keyed = []
        for key in value:
            if not isinstance(key, str):
                raise CborError("map key %r is not text; sync frames use text keys" % (key,))
            encoded = bytearray()
            _encode(encoded, key, depth + 1)
            keyed.append((len(encoded), bytes(encoded), key))
        keyed.sort()
        _head(out, 5, len(keyed))
        for _n, key_bytes, key in keyed:
            out.extend(key_bytes)
            _encode(out, value[key], depth + 1)
    else:
        raise CborError("%s is not a wire type" % type(value).__name__)


def loads(data: bytes | bytearray | memoryview) -> Any:
    """The value of exactly one CBOR data item filling ``data``."""
    value, pos = _decode(memoryview(data), 0, 0)
    if pos != len(data):
        raise CborError("%d trailing bytes after byte %d" % (len(data) - pos, pos))
    return value


def head_items(data: bytes | memoryview, n: int) -> tuple[list[Any], int]:
    """The first ``n`` items of the CBOR list ``data`` and the offset after them."""
    data = memoryview(data)
    major, count, pos = _arg(data, 0)
    if major != 4 or count < n:
        raise CborError("expected a list of at least %d items" % n)
    values = []
    for _ in range(n):
        value, pos = _decode(data, pos, 1)
        values.append(value)
    return values, pos


def _arg(data: memoryview, pos: int) -> tuple[int, int, int]:
    """(major, argument, position after the head) at ``pos``."""
    if pos >= len(data):
        raise CborError("the data ends at byte %d, inside an item" % pos)
    initial = data[pos]
    major, info = initial >> 5, initial & 31
    if info < 24:
        return major, info, pos + 1
    if info > 27:
        raise CborError("indefinite or reserved length at byte %d" % pos)
    width = 1 << (info - 24)
    end = pos + 1 + width
    if end > len(data):
        raise CborError("the data ends at byte %d, inside a length" % len(data))
    arg = 0
    for i in range(pos + 1, end):
        arg = arg << 8 | data[i]
    return major, arg, end


def _decode(data: memoryview, pos: int, depth: int) -> tuple[Any, int]:
    if depth > MAX_DEPTH:
        raise CborError("nested deeper than %d levels at byte %d" % (MAX_DEPTH, pos))
    start = pos
    major, arg, pos = _arg(data, pos)
    if major == 0:
        return arg, pos
    if major == 1:
        return -1 - arg, pos
    if major in (2, 3):
        end = pos + arg
        if end > len(data):
            raise CborError("a %d-byte string at byte %d runs past the end" % (arg, start))
        raw = bytes(data[pos:end])
        if major == 2:
            return raw, end
        try:
            return raw.decode("utf-8"), end
        except UnicodeError:
            raise CborError("text at byte %d is not UTF-8" % start) from None
    if major == 4:
        if arg > len(data) - pos:
            raise CborError("a list of %d items at byte %d cannot fit the data" % (arg, start))
        items = []
        for _ in range(arg):
            item, pos = _decode(data, pos, depth + 1)
            items.append(item)
        return items, pos
    if major == 5:
        if arg > (len(data) - pos) // 2:
            raise CborError("a map of %d pairs at byte %d cannot fit the data" % (arg, start))
        result = {}
        for _ in range(arg):
            if pos < len(data) and data[pos] >> 5 != 3:
                raise CborError("a map key at byte %d is not text" % pos)
            key, pos = _decode(data, pos, depth + 1)
            result[key], pos = _decode(data, pos, depth + 1)
        return result, pos
    if major == 6:
        raise CborError("CBOR tag %d at byte %d: frames carry no tags" % (arg, start))
    info = data[start] & 31
    if info == 20:
        return False, pos
    if info == 21:
        return True, pos
    if info == 22:
        return None, pos
    if info == 25:
        return struct.unpack(">e", bytes(data[start + 1 : pos]))[0], pos
    if info == 26:
        return struct.unpack(">f", bytes(data[start + 1 : pos]))[0], pos
    if info == 27:
        return struct.unpack(">d", bytes(data[start + 1 : pos]))[0], pos
    raise CborError("CBOR simple value %d at byte %d is not allowed" % (arg, start))
