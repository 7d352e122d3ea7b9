"""Sync frames round-trip: every compression and encryption combination, any JSON-like items."""

from __future__ import annotations

import hashlib
import math
import os
import re
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_min.errors import MissingDependency
from edge_min.sync import protocol
from edge_min.sync.errors import (
    BadFrame,
    ConflictError,
    FrameTooLarge,
    ProtocolVersionError,
    SyncError,
    TruncatedFrame,
    error_for_code,
)
from edge_min.sync.protocol import (
    available_compressions,
    choose_compression,
    decode_frame,
    encode_frame,
    error_frame,
    peek_header,
    raise_for_error,
    read_frame,
)

DOC = Path(__file__).resolve().parents[3] / "docs" / "sync-protocol.md"
KEY = bytes(range(32))
HEADER = {"kind": "push", "node": "edge-7", "entity": "agent_executions", "batch": "b-0001"}
COMPRESSIONS = [
    "none",
    "zlib",
    pytest.param(
        "zstd",
        marks=pytest.mark.skipif(
            "zstd" not in available_compressions(), reason="zstandard is not installed"
        ),
    ),
]
ENCRYPTION = [pytest.param(None, id="plain"), pytest.param(KEY, id="aes")]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(max_size=64)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
items_strategy = st.lists(st.dictionaries(st.text(max_size=12), values, max_size=6), max_size=6)


@pytest.mark.parametrize("key", ENCRYPTION)
@pytest.mark.parametrize("compression", COMPRESSIONS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=items_strategy)
def test_round_trip(items: list[dict[str, Any]], compression: str, key: bytes | None) -> None:
    frame = encode_frame(HEADER, items, key=key, compression=compression)
    header, decoded = decode_frame(frame, key=key)
    assert decoded == items
    assert {k: header[k] for k in HEADER} == HEADER
    assert header["count"] == len(items)
    assert header["comp"] == compression
    assert header["enc"] == ("aes-256-gcm" if key else "none")
    assert header["v"] == protocol.PROTOCOL_VERSION
    assert ("nonce" in header) is (key is not None)


@pytest.mark.parametrize("key", ENCRYPTION)
@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_layout_is_the_documented_one(compression: str, key: bytes | None) -> None:
    items = [{"id": "r1", "n": 1}]
    frame = encode_frame(HEADER, items, key=key, compression=compression)
    magic, version, hlen = struct.unpack(">3sBI", frame[:8])
    assert (magic, version) == (b"EMS", 1)
    import cbor2

    header = cbor2.loads(frame[8 : 8 + hlen])
    (plen,) = struct.unpack(">I", frame[8 + hlen : 12 + hlen])
    assert len(frame) == 12 + hlen + plen
    plain = cbor2.dumps(items)
    assert header["sum"] == hashlib.sha256(plain).digest()
    if key is None and compression == "none":
        assert frame[12 + hlen :] == plain
    if key is not None:
        assert len(header["nonce"]) == 12
        assert plen >= 16  # the GCM tag rides at the end of the payload


def test_nonces_are_fresh_per_frame() -> None:
    frames = [encode_frame(HEADER, [{"a": 1}], key=KEY) for _ in range(20)]
    nonces = {peek_header(f)["nonce"] for f in frames}
    assert len(nonces) == 20
    assert len({f[-40:] for f in frames}) == 20


def test_nan_and_infinities_survive() -> None:
    items = [{"nan": math.nan, "inf": math.inf, "ninf": -math.inf, "z": -0.0}]
    _, (row,) = decode_frame(encode_frame(HEADER, items, compression="zlib"))
    assert math.isnan(row["nan"])
    assert row["inf"] == math.inf and row["ninf"] == -math.inf
    assert math.copysign(1, row["z"]) == -1


def test_tuples_and_bytearrays_go_out_as_lists_and_bytes() -> None:
    _, items = decode_frame(encode_frame(HEADER, ({"t": (1, 2), "b": bytearray(b"x")},)))
    assert items == [{"t": [1, 2], "b": b"x"}]


def test_encoder_owns_derived_header_fields_and_keeps_extras() -> None:
    given_header = {**HEADER, "count": 99, "sum": b"x", "v": 7, "enc": "rot13", "cursor": 41}
    header, _ = decode_frame(encode_frame(given_header, [{"a": 1}], key=KEY), key=KEY)
    assert (header["count"], header["v"], header["enc"]) == (1, 1, "aes-256-gcm")
    assert header["cursor"] == 41


def test_entity_and_batch_default_to_empty() -> None:
    header, items = decode_frame(encode_frame({"kind": "pull", "node": "n"}, []))
    assert (header["entity"], header["batch"], items) == ("", "", [])


@pytest.mark.parametrize(
    ("header", "field"),
    [
        ({"kind": "shove", "node": "n"}, "kind"),
        ({"node": "n"}, "kind"),
        ({"kind": "push"}, "node"),
        ({"kind": "push", "node": "n", "entity": 3}, "entity"),
    ],
)
def test_bad_outgoing_header_names_the_field(header: dict[str, Any], field: str) -> None:
    with pytest.raises(BadFrame, match=field):
        encode_frame(header, [])


@pytest.mark.parametrize(
    ("items", "where"),
    [
        ([{"at": __import__("datetime").datetime(2024, 1, 1)}], r"items\[0\]\['at'\]: datetime"),
        ([{"a": {"b": [1, {2, 3}]}}], r"items\[0\]\['a'\]\['b'\]\[1\]: set"),
        ([{"big": 2**64}], r"items\[0\]\['big'\]: integer"),
        ([{1: "x"}], r"key 1 is int"),
        ([{"d": __import__("decimal").Decimal("1.5")}], r"Decimal"),
        (["not a map"], r"map"),
        ([{"o": object()}], r"object is not a wire type"),
    ],
)
def test_items_that_are_not_wire_types_are_refused_with_their_path(
    items: list[Any], where: str
) -> None:
    with pytest.raises(BadFrame, match=where):
        encode_frame(HEADER, items)


def test_encoding_past_max_bytes_is_refused() -> None:
    rows = [{"text": "x" * 1000} for _ in range(10)]
    with pytest.raises(FrameTooLarge, match="fewer items"):
        encode_frame(HEADER, rows, compression="none", max_bytes=5000)
    # Compressed it fits: the cap is on the plain payload and on the frame.
    assert decode_frame(encode_frame(HEADER, rows, compression="zlib", max_bytes=20_000))


def test_read_frame_leaves_the_rest_of_the_stream() -> None:
    import io

    first = encode_frame(HEADER, [{"n": 1}], key=KEY)
    second = encode_frame({**HEADER, "batch": "b-0002"}, [{"n": 2}], key=KEY)
    stream = io.BytesIO(first + second)
    assert read_frame(stream.read, key=KEY)[1] == [{"n": 1}]
    header, items = read_frame(stream.read, key=KEY)
    assert (header["batch"], items) == ("b-0002", [{"n": 2}])
    with pytest.raises(TruncatedFrame):
        read_frame(stream.read, key=KEY)


def test_read_frame_copes_with_short_reads() -> None:
    frame = encode_frame(HEADER, [{"n": i, "s": "abc" * i} for i in range(50)], key=KEY)
    pos = 0

    def dribble(n: int) -> bytes:
        nonlocal pos
        chunk = frame[pos : pos + min(n, 3)]
        pos += len(chunk)
        return chunk

    assert len(read_frame(dribble, key=KEY)[1]) == 50


def test_an_older_supported_version_still_decodes(monkeypatch: pytest.MonkeyPatch) -> None:
    v1 = encode_frame(HEADER, [{"a": 1}], key=KEY)
    # This edge_min, one protocol version later, still reading version 1 frames.
    monkeypatch.setattr(protocol, "PROTOCOL_VERSION", 2)
    header, items = decode_frame(v1, key=KEY)
    assert (header["v"], items) == (1, [{"a": 1}])
    v2 = encode_frame(HEADER, [{"a": 2}], key=KEY)
    assert v2[3] == 2
    monkeypatch.setattr(protocol, "PROTOCOL_VERSION", 1)
    with pytest.raises(ProtocolVersionError, match="version 2, newer than version 1"):
        decode_frame(v2, key=KEY)


def test_choose_compression() -> None:
    assert choose_compression(False) == "none"
    best = available_compressions()[0]
    assert choose_compression(True) == best
    assert choose_compression(True, accepted=["zlib"]) == "zlib"
    assert choose_compression(True, accepted=[]) == "none"


@pytest.mark.skipif("zstd" in available_compressions(), reason="zstandard is installed")
def test_zstd_without_the_module_is_a_clear_error() -> None:
    with pytest.raises(MissingDependency, match=r"zstandard.*edge-min\[zstd\]"):
        encode_frame(HEADER, [], compression="zstd")
    # A peer that has zstandard sends comp "zstd": built by hand here, as no encoder can.
    import cbor2

    plain = cbor2.dumps([])
    head = {"v": 1, "kind": "push", "entity": "", "batch": "", "node": "n", "count": 0}
    head |= {"comp": "zstd", "enc": "none", "sum": hashlib.sha256(plain).digest()}
    hb = cbor2.dumps(head)
    body = b"(\xb5/\xfd\x00\x00\x01\x00\x00\x80"  # a zstd frame's bytes; never inflated
    frame = b"EMS\x01" + struct.pack(">I", len(hb)) + hb + struct.pack(">I", len(body)) + body
    with pytest.raises(MissingDependency, match="Decompressing a zstd sync payload"):
        decode_frame(frame)


def test_error_frames_carry_the_code_across() -> None:
    sent = FrameTooLarge("the frame is 20 MB, past max_bytes", size=20, limit=16)
    header, items = decode_frame(error_frame(sent, node="central", key=KEY), key=KEY)
    assert header["kind"] == "error"
    with pytest.raises(FrameTooLarge, match="past max_bytes") as got:
        raise_for_error(header, items)
    assert got.value.code == "sync_too_large" and got.value.http_status == 413
    raise_for_error({"kind": "push_result"}, [])  # other kinds pass through


def test_error_for_code() -> None:
    assert isinstance(error_for_code("sync_conflict", "x"), ConflictError)
    unknown = error_for_code("storage_error", "disk full")
    assert type(unknown) is SyncError and "storage_error" in unknown.message


def _doc_frame() -> bytes:
    text = DOC.read_text()
    block = text.split("<!-- example-frame -->", 1)[1].split("```text", 1)[1].split("```", 1)[0]
    hexes = [re.match(r"[0-9a-f]{4}  ((?:[0-9a-f]{2} ?)+)", ln) for ln in block.splitlines()]
    return bytes.fromhex("".join(m.group(1) for m in hexes if m))


def test_the_example_in_the_docs_is_a_real_frame() -> None:
    frame = _doc_frame()
    header, items = decode_frame(frame)
    assert items == [{"id": "r1", "status": "ok"}]
    rebuilt = encode_frame(
        {k: header[k] for k in ("kind", "entity", "batch", "node")}, items, compression="none"
    )
    assert rebuilt == frame


def test_importing_the_package_loads_no_third_party_module() -> None:
    import subprocess
    import sys

    code = (
        "import sys, edge_min.sync, edge_min.sync.protocol, edge_min.sync.errors\n"
        "bad = [m for m in ('cbor2', 'Crypto', 'zstandard') if m in sys.modules]\n"
        "print(bad); raise SystemExit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert os.environ is not None
