"""The AES-256-CBC + HMAC-SHA256 sync suite (``edge_min.sync.cbc``) inside sync frames.

Checked against an independent computation of the documented construction (pycryptodome's
AES and the stdlib's HMAC), not only against itself; then every byte of a sealed frame is
flipped and each flip must be refused.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

import cbor2
import pytest
from Crypto.Cipher import AES

from edge_min.sync import cbc, protocol
from edge_min.sync.errors import BadFrame, DecryptionFailed, FrameError, SyncKeyError
from edge_min.sync.protocol import decode_frame, encode_frame

KEY = bytes(range(32))
SUITE = "aes-256-cbc-hmac-sha256"
HEADER = {"kind": "push", "node": "mcu-1", "entity": "agent_executions", "batch": "mcu-1:1-2"}
ITEMS = [{"id": "mcu-1:1", "row": {"input": {"reading": 20.5, "seq": 1}}}, {"id": "mcu-1:2"}]


def _frame(compression: str = "none") -> bytes:
    return encode_frame(HEADER, ITEMS, key=KEY, compression=compression, encryption=SUITE)


@pytest.mark.parametrize("compression", ["none", "zlib"])
def test_round_trip_names_the_suite_and_a_16_byte_iv(compression: str) -> None:
    header, items = decode_frame(_frame(compression), key=KEY, require_encryption=True)
    assert items == ITEMS
    assert header["enc"] == SUITE and len(header["nonce"]) == 16


def test_the_payload_is_the_documented_construction() -> None:
    frame = _frame()
    hlen = struct.unpack(">I", frame[4:8])[0]
    aad, rest = frame[: 8 + hlen], frame[8 + hlen :]
    payload = rest[4:]
    assert struct.unpack(">I", rest[:4])[0] == len(payload)
    header = protocol.peek_header(frame)
    enc_key = hmac.new(KEY, b"edge-min/sync/aes-256-cbc", hashlib.sha256).digest()
    mac_key = hmac.new(KEY, b"edge-min/sync/hmac-sha256", hashlib.sha256).digest()
    ct, tag = payload[:-32], payload[-32:]
    assert tag == hmac.new(mac_key, aad + ct, hashlib.sha256).digest()
    padded = AES.new(enc_key, AES.MODE_CBC, iv=header["nonce"]).decrypt(ct)
    plain = padded[: -padded[-1]]
    assert hashlib.sha256(plain).digest() == header["sum"]


def test_every_flipped_byte_is_refused() -> None:
    frame = _frame()
    for i in range(len(frame)):
        bad = bytearray(frame)
        bad[i] ^= 0x01
        with pytest.raises(FrameError):
            decode_frame(bytes(bad), key=KEY)


def test_a_wrong_key_says_so() -> None:
    with pytest.raises(DecryptionFailed, match="different sync keys"):
        decode_frame(_frame(), key=bytes(32))


def test_no_key_here_is_a_key_error_naming_the_suite() -> None:
    with pytest.raises(SyncKeyError, match=SUITE):
        decode_frame(_frame())


def test_a_gcm_sized_nonce_under_the_cbc_suite_is_refused() -> None:
    frame = encode_frame(HEADER, ITEMS, key=KEY, compression="none")  # gcm: 12-byte nonce
    header_len = struct.unpack(">I", frame[4:8])[0]
    head = cbor2.loads(frame[8 : 8 + header_len])
    head["enc"] = SUITE
    header = cbor2.dumps(head)
    forged = frame[:4] + struct.pack(">I", len(header)) + header + frame[8 + header_len :]
    with pytest.raises(BadFrame, match="'nonce' must be 16 bytes"):
        decode_frame(forged, key=KEY)


def test_an_unknown_suite_is_refused_at_encode() -> None:
    with pytest.raises(BadFrame, match="encryption 'aes-128-cbc'"):
        encode_frame(HEADER, ITEMS, key=KEY, encryption="aes-128-cbc")


def test_padding_and_tag_are_checked_by_open() -> None:
    sealed = cbc.seal(KEY, bytes(16), b"x" * 5, b"aad")
    assert cbc.open_(KEY, bytes(16), sealed, b"aad") == b"x" * 5
    with pytest.raises(cbc.CbcTagMismatch, match="tag"):
        cbc.open_(KEY, bytes(16), sealed, b"aaD")
    with pytest.raises(cbc.CbcTagMismatch, match="blocks"):
        cbc.open_(KEY, bytes(16), sealed[:-1], b"aad")
