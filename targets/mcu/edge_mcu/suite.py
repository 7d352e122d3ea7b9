"""The cipher suite MicroPython can do: AES-256-CBC with HMAC-SHA256, encrypt-then-MAC.

``cryptolib`` has AES in ECB and CBC modes only (no GCM), and there is no ``hmac`` module,
so HMAC (RFC 2104) is written here on ``hashlib.sha256``. The suite is named in the frame
header's ``enc`` field as ``aes-256-cbc-hmac-sha256``; central implements the same in
``edge_min/sync/cbc.py`` (docs/sync-protocol.md). From the device's 32-byte sync key::

    enc_key = HMAC-SHA256(key, b"edge-min/sync/aes-256-cbc")
    mac_key = HMAC-SHA256(key, b"edge-min/sync/hmac-sha256")
    payload = AES-256-CBC(enc_key, iv, PKCS#7(plain)) || HMAC-SHA256(mac_key, aad || ct)

``aad`` is every frame byte before the payload length (magic, version, header with the
16-byte IV as its ``nonce``), so nothing of the header can be changed unseen. The tag is
checked (in constant time) before anything is decrypted.
"""

import hashlib
import os

import cryptolib

try:
    from typing import Any
except ImportError:  # MicroPython: annotations are not evaluated, nothing to import
    pass

SUITE = "aes-256-cbc-hmac-sha256"
IV_BYTES = 16
TAG_BYTES = 32
_BLOCK = 64
_CBC = 2  # cryptolib's mode number for CBC


class SuiteError(ValueError):
    """The tag does not verify, or the ciphertext is malformed."""


def hmac_sha256(key: bytes, data: Any) -> bytes:
    """HMAC-SHA256 of ``data`` (bytes or a list of bytes, hashed in order)."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key + bytes(_BLOCK - len(key))
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    for part in data if isinstance(data, list) else (data,):
        inner.update(part)
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
    outer.update(inner.digest())
    return outer.digest()


def same(a: bytes | memoryview, b: bytes | memoryview) -> bool:
    """Whether two byte strings are equal, in time that does not depend on where they differ."""
    if len(a) != len(b):
        return False
    diff = 0
    for i in range(len(a)):
        diff |= a[i] ^ b[i]
    return diff == 0


class Suite:
    """The suite under one 32-byte sync key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise SuiteError("the sync key must be 32 bytes, got %d" % len(key))
        self._enc = hmac_sha256(key, b"edge-min/sync/aes-256-cbc")
        self._mac = hmac_sha256(key, b"edge-min/sync/hmac-sha256")

    @staticmethod
    def new_iv() -> bytes:
        """A fresh random IV (the frame header's ``nonce``)."""
        return os.urandom(IV_BYTES)

    def seal_into(self, iv: bytes, buf: memoryview, n: int, aad: bytes) -> tuple[int, bytes]:
        """Pad and encrypt the memoryview ``buf[:n]`` in place; (ciphertext length, tag).
        ``buf`` needs 16 spare bytes after ``n`` (the heap gets no copy of the payload)."""
        pad = 16 - n % 16
        if n + pad > len(buf):
            raise SuiteError("no room to pad %d bytes in a %d-byte buffer" % (n, len(buf)))
        for i in range(n, n + pad):
            buf[i] = pad
        view = buf[: n + pad]
        cryptolib.aes(self._enc, _CBC, iv).encrypt(view, view)
        return n + pad, hmac_sha256(self._mac, [aad, view])

    def open_into(self, iv: bytes, view: memoryview, aad: bytes) -> memoryview:
        """Check the tag, then decrypt the memoryview ``view`` (ciphertext + tag) in place;
        the plain part of it, or ``SuiteError``."""
        n = len(view) - TAG_BYTES
        if n < 16 or n % 16:
            raise SuiteError(
                "the encrypted payload is %d bytes: not blocks plus a %d-byte tag"
                % (len(view), TAG_BYTES)
            )
        ct = view[:n]
        if not same(hmac_sha256(self._mac, [aad, ct]), view[n:]):
            raise SuiteError(
                "the payload's HMAC-SHA256 tag does not verify: central holds another "
                "sync key, or the frame was altered in transit"
            )
        cryptolib.aes(self._enc, _CBC, iv).decrypt(ct, ct)
        pad = ct[n - 1]
        if not 1 <= pad <= 16 or any(ct[i] != pad for i in range(n - pad, n)):
            raise SuiteError("the decrypted payload's padding is wrong")
        return ct[: n - pad]
