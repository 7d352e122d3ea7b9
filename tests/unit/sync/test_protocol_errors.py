"""Every defect in a frame gives its own error and nothing is returned (so nothing is applied)."""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import io
import re
import struct
import tracemalloc
import uuid
import zlib
from collections.abc import Callable
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_min.sync.errors import (
    BadFrame,
    ChecksumMismatch,
    DecryptionFailed,
    FrameError,
    FrameTooLarge,
    ProtocolVersionError,
    SyncKeyError,
    TruncatedFrame,
)
from edge_min.sync.protocol import decode_frame, encode_frame, read_frame

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
HEADER = {"kind": "push", "node": "edge-7", "entity": "agents", "batch": "b-1"}
ITEMS = [{"id": f"r{i}", "status": "ok", "n": i, "blob": b"\x00\x01"} for i in range(4)]
COMBOS = [
    pytest.param(c, k, id=f"{c}-{'aes' if k else 'plain'}")
    for c in ("none", "zlib")
    for k in (None, KEY)
]


def raw_frame(
    header: dict[str, Any] | bytes,
    payload: bytes,
    *,
    version: int = 1,
    magic: bytes = b"EMS",
) -> bytes:
    """A frame assembled by hand from the documented layout, bypassing encode_frame's checks."""
    hb = header if isinstance(header, bytes) else cbor2.dumps(header)
    lengths = struct.pack(">I", len(hb)), struct.pack(">I", len(payload))
    return magic + bytes([version]) + lengths[0] + hb + lengths[1] + payload


def plain_header(plain: bytes, count: int, **extra: Any) -> dict[str, Any]:
    """A valid unencrypted, uncompressed header for ``plain``."""
    head = {"v": 1, "kind": "push", "entity": "agents", "batch": "b-1", "node": "edge-7"}
    head |= {"count": count, "comp": "none", "enc": "none", "sum": hashlib.sha256(plain).digest()}
    return head | extra


def payload_start(frame: bytes) -> int:
    """Where a frame's payload begins."""
    (hlen,) = struct.unpack(">I", frame[4:8])
    return 12 + hlen


class Reader:
    """A read(n) that records what was asked, to prove limits are checked before reading."""

    def __init__(self, data: bytes) -> None:
        self.stream = io.BytesIO(data)
        self.asked = 0

    def read(self, n: int) -> bytes:
        self.asked += n
        return self.stream.read(n)


# --- truncation -------------------------------------------------------------------------------


@pytest.mark.parametrize(("compression", "key"), COMBOS)
def test_truncated_at_every_byte_offset(compression: str, key: bytes | None) -> None:
    frame = encode_frame(HEADER, ITEMS, key=key, compression=compression)
    for cut in range(len(frame)):
        with pytest.raises(TruncatedFrame) as err:
            decode_frame(frame[:cut], key=key)
        assert err.value.got == cut, cut
        with pytest.raises(TruncatedFrame):
            read_frame(io.BytesIO(frame[:cut]).read, key=key)
    assert decode_frame(frame, key=key)[1] == ITEMS  # the whole frame still decodes


# --- versions ---------------------------------------------------------------------------------


def test_newer_version_names_both_versions_and_says_upgrade() -> None:
    plain = cbor2.dumps(ITEMS)
    frame = raw_frame(plain_header(plain, len(ITEMS), v=2), plain, version=2)
    with pytest.raises(ProtocolVersionError) as err:
        decode_frame(frame)
    message = str(err.value)
    assert "version 2" in message and "version 1" in message
    assert "upgrade edge_min" in message
    assert (err.value.got, err.value.supported, err.value.code) == (2, (1, 1), "sync_version")


def test_newer_version_is_refused_before_its_header_is_read() -> None:
    # A version-9 header may mean anything: it is never parsed, even if it is garbage.
    reader = Reader(b"EMS\x09" + struct.pack(">I", 5) + b"\xff\xff\xff\xff\xff")
    with pytest.raises(ProtocolVersionError):
        read_frame(reader.read)
    assert reader.asked == 8


def test_version_older_than_supported_is_refused() -> None:
    plain = cbor2.dumps([])
    with pytest.raises(ProtocolVersionError, match="older than version 1"):
        decode_frame(raw_frame(plain_header(plain, 0, v=0), plain, version=0))


def test_header_v_must_match_the_version_byte() -> None:
    plain = cbor2.dumps([])
    with pytest.raises(BadFrame, match="v=3 disagrees"):
        decode_frame(raw_frame(plain_header(plain, 0, v=3), plain))


# --- checksum and encryption ------------------------------------------------------------------


def test_flipped_payload_byte_without_encryption_is_a_checksum_mismatch() -> None:
    frame = encode_frame(HEADER, ITEMS, compression="none")
    start = payload_start(frame)
    for i in range(start, len(frame)):
        bad = bytearray(frame)
        bad[i] ^= 0x01
        with pytest.raises(ChecksumMismatch, match="send the batch again"):
            decode_frame(bytes(bad))


@pytest.mark.parametrize("compression", ["none", "zlib"])
def test_flipped_payload_byte_with_encryption_fails_the_tag(compression: str) -> None:
    frame = encode_frame(HEADER, ITEMS, key=KEY, compression=compression)
    start = payload_start(frame)
    for i in range(start, len(frame)):
        bad = bytearray(frame)
        bad[i] ^= 0x80
        with pytest.raises(DecryptionFailed):
            decode_frame(bytes(bad), key=KEY)


def test_flipped_compressed_byte_never_decodes() -> None:
    frame = encode_frame(HEADER, ITEMS, compression="zlib")
    start = payload_start(frame)
    for i in range(start, len(frame)):
        bad = bytearray(frame)
        bad[i] ^= 0x01
        with pytest.raises((ChecksumMismatch, BadFrame)):
            decode_frame(bytes(bad))


def test_header_edit_with_encryption_fails_the_tag() -> None:
    frame = encode_frame(HEADER, ITEMS, key=KEY)
    # Same length, still a valid header: only the tag can notice.
    for old, new in ((b"b-1", b"b-2"), (b"edge-7", b"edge-8"), (b"agents", b"agentz")):
        edited = frame.replace(old, new, 1)
        assert edited != frame
        with pytest.raises(DecryptionFailed, match="altered"):
            decode_frame(edited, key=KEY)


def test_every_single_byte_change_of_an_encrypted_frame_is_refused() -> None:
    frame = encode_frame(HEADER, ITEMS, key=KEY, compression="zlib")
    for i in range(len(frame)):
        for flip in (0x01, 0xFF):
            bad = bytearray(frame)
            bad[i] ^= flip
            with pytest.raises(FrameError):
                decode_frame(bytes(bad), key=KEY)


def test_wrong_key() -> None:
    frame = encode_frame(HEADER, ITEMS, key=KEY)
    with pytest.raises(DecryptionFailed, match="different sync keys"):
        decode_frame(frame, key=OTHER_KEY)


def test_encrypted_frame_without_a_key() -> None:
    with pytest.raises(SyncKeyError, match="no sync key"):
        decode_frame(encode_frame(HEADER, ITEMS, key=KEY))


@pytest.mark.parametrize("key", [b"short", bytes(31), bytes(33), bytes(64)])
def test_key_must_be_32_bytes(key: bytes) -> None:
    with pytest.raises(SyncKeyError, match=f"32 bytes.*got {len(key)}"):
        encode_frame(HEADER, ITEMS, key=key)
    with pytest.raises(SyncKeyError, match="32 bytes"):
        decode_frame(encode_frame(HEADER, ITEMS, key=KEY), key=key)


def test_required_encryption_refuses_a_plain_frame() -> None:
    frame = encode_frame(HEADER, ITEMS)
    with pytest.raises(BadFrame, match="requires encryption"):
        decode_frame(frame, key=KEY, require_encryption=True)
    assert decode_frame(encode_frame(HEADER, ITEMS, key=KEY), key=KEY, require_encryption=True)


# --- sizes ------------------------------------------------------------------------------------


def test_huge_header_length_is_refused_before_reading() -> None:
    reader = Reader(b"EMS\x01" + struct.pack(">I", 2**31))
    with pytest.raises(FrameTooLarge, match="header length"):
        read_frame(reader.read)
    assert reader.asked == 8


def test_huge_payload_length_is_refused_before_reading() -> None:
    plain = cbor2.dumps(ITEMS)
    frame = raw_frame(plain_header(plain, len(ITEMS)), plain)
    start = payload_start(frame)
    lying = frame[: start - 4] + struct.pack(">I", 2**32 - 1)  # no payload follows
    reader = Reader(lying)
    with pytest.raises(FrameTooLarge, match="past max_bytes") as err:
        read_frame(reader.read)
    assert reader.asked == len(lying)
    assert err.value.limit == 16 * 1024 * 1024 and err.value.http_status == 413


def test_frame_larger_than_max_bytes() -> None:
    frame = encode_frame(HEADER, [{"text": "y" * 5000}], compression="none")
    with pytest.raises(FrameTooLarge):
        decode_frame(frame, max_bytes=len(frame) - 1)
    assert decode_frame(frame, max_bytes=len(frame))


def test_decompression_bomb_stops_at_max_bytes() -> None:
    limit = 1024 * 1024
    size = 48 * limit  # 48 MiB of zeros, about 48 KiB on the wire
    head = b"\x81\xa1\x61x\x5a" + struct.pack(">I", size)  # [{"x": <bytes of size>}]
    digest = hashlib.sha256(head)
    squeeze = zlib.compressobj(9)
    parts = [squeeze.compress(head)]
    zeros = bytes(limit)
    for _ in range(size // limit):
        digest.update(zeros)
        parts.append(squeeze.compress(zeros))
    parts.append(squeeze.flush())
    body = b"".join(parts)
    header = plain_header(b"", 1, comp="zlib", sum=digest.digest())
    frame = raw_frame(header, body)
    assert len(frame) < limit // 10
    tracemalloc.start()
    try:
        with pytest.raises(FrameTooLarge, match="decompression bomb"):
            decode_frame(frame, max_bytes=limit)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * limit, f"held {peak:,} bytes while refusing a bomb"


# --- garbage ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: central\r\n\r\n",
        b"<html><body>502 Bad Gateway</body></html>",
        b'{"items": []}',
        b"\x00" * 64,
        b"X",
        b"EMX\x01\x00\x00\x00\x00",
    ],
)
def test_garbage_magic(data: bytes) -> None:
    with pytest.raises(BadFrame, match="not an edge_min sync frame"):
        decode_frame(data)


def test_trailing_bytes_after_the_frame() -> None:
    with pytest.raises(BadFrame, match="follow the frame"):
        decode_frame(encode_frame(HEADER, ITEMS) + b"\x00")


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200))
def test_random_bytes_never_decode(data: bytes) -> None:
    with pytest.raises(FrameError):
        decode_frame(b"EMS\x01" + data)


# --- CBOR content -----------------------------------------------------------------------------

TAGGED: list[tuple[str, Any]] = [
    ("datetime", dt.datetime(2024, 1, 1, tzinfo=dt.UTC)),
    ("date", dt.date(2024, 1, 1)),
    ("bignum", 2**70),
    ("decimal", decimal.Decimal("1.25")),
    ("set", {1, 2}),
    ("uuid", uuid.UUID(int=5)),
    ("regex", re.compile("a+")),
    ("unknown", cbor2.CBORTag(4242, "x")),
    ("self-described", cbor2.CBORTag(55799, 1)),
]


@pytest.mark.parametrize(("name", "value"), TAGGED, ids=[t[0] for t in TAGGED])
def test_cbor_tag_in_payload_is_refused(name: str, value: Any) -> None:
    plain = cbor2.dumps([{"id": "r1", "deep": [{"v": value}]}])
    frame = raw_frame(plain_header(plain, 1), plain)
    with pytest.raises(BadFrame, match=r"CBOR tag \d+"):
        decode_frame(frame)


def test_cbor_tag_in_header_is_refused() -> None:
    plain = cbor2.dumps([])
    frame = raw_frame(plain_header(plain, 0, when=dt.datetime(2024, 1, 1, tzinfo=dt.UTC)), plain)
    with pytest.raises(BadFrame, match="header holds CBOR tag"):
        decode_frame(frame)


def test_shared_references_are_refused() -> None:
    row: dict[str, Any] = {"id": "r1"}
    plain = cbor2.dumps([row, row], value_sharing=True)
    with pytest.raises(BadFrame, match="shared value"):
        decode_frame(raw_frame(plain_header(plain, 2), plain))


def _payload_case(plain: bytes, count: int = 1) -> Callable[[], Any]:
    return lambda: decode_frame(raw_frame(plain_header(plain, count), plain))


@pytest.mark.parametrize(
    ("plain", "count", "match"),
    [
        (cbor2.dumps([{1: "int key"}]), 1, "map key that is not text"),
        (cbor2.dumps([{b"k": "bytes key"}]), 1, "map key that is not text"),
        (b"\x9f\xa0\xff", 1, "indefinite"),  # [_ {}]
        (b"\x81\xa1\x61a\xf7", 1, "simple value"),  # [{"a": undefined}]
        (b"\x81\xa1\x61a\xf0", 1, "simple value"),  # [{"a": simple(16)}]
        (cbor2.dumps({"a": 1}), 1, "must be a list of maps"),
        (cbor2.dumps(["x"]), 1, "must be a map"),
        (cbor2.dumps([{"a": 1}]), 2, "header says 2 items"),
        (cbor2.dumps([{"a": 1}]) + b"\x00", 1, "trailing"),
        (b"\x81\xa1\x61a\x7a\xff\xff\xff\xf0abc", 1, "ends early"),  # a 4 GB string
        (b"\x9b" + b"\xff" * 8, 1, "ends early"),  # 2**64 items declared, none sent
        (b"\x81\xa1\x61a\x62\xff\xfe", 1, "not valid CBOR"),  # invalid UTF-8
    ],
)
def test_malformed_payload_cbor(plain: bytes, count: int, match: str) -> None:
    with pytest.raises(BadFrame, match=match):
        _payload_case(plain, count)()


def test_nesting_up_to_the_limit_is_allowed_and_past_it_refused() -> None:
    value: Any = 1
    for _ in range(60):  # list > map > 60 lists: 62 levels
        value = [value]
    assert decode_frame(encode_frame(HEADER, [{"a": value}]))[1] == [{"a": value}]
    for _ in range(10):
        value = [value]
    plain = b"\x81\xa1\x61a" + b"\x81" * 70 + b"\x01"
    assert cbor2.loads(plain) == [{"a": value}]
    with pytest.raises(BadFrame, match="nested deeper"):
        _payload_case(plain)()
    with pytest.raises(BadFrame, match="nested deeper"):
        encode_frame(HEADER, [{"a": value}])


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("kind", "shove", "'kind' must be one of"),
        ("comp", "lz4", "'comp' must be one of"),
        ("enc", "rot13", "'enc' must be one of"),
        ("count", -1, "'count' must be a count"),
        ("count", True, "'count' must be a count"),
        ("sum", b"short", "'sum' must be 32 bytes"),
        ("node", 7, "'node' must be text"),
        ("enc", "aes-256-gcm", "'nonce' must be 12 bytes"),
    ],
)
def test_bad_header_fields(field: str, value: Any, match: str) -> None:
    plain = cbor2.dumps([])
    with pytest.raises(BadFrame, match=match):
        decode_frame(raw_frame(plain_header(plain, 0) | {field: value}, plain), key=KEY)


def test_header_that_is_not_a_map() -> None:
    plain = cbor2.dumps([])
    with pytest.raises(BadFrame, match="header must be a map"):
        decode_frame(raw_frame(cbor2.dumps(["v", 1]), plain))
