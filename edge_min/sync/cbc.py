"""The sync wire's second cipher suite, for devices without AES-GCM: AES-256-CBC + HMAC-SHA256.

MicroPython's ``cryptolib`` has AES-ECB and AES-CBC only, so the MCU shim (``targets/mcu``)
seals frames with encrypt-then-MAC, and central opens and answers them the same way. The
frame header names the suite (``enc: aes-256-cbc-hmac-sha256``) and carries the 16-byte IV
as its ``nonce``; a receiver answers in the suite it was spoken to in. From the 32-byte
sync key (docs/sync-protocol.md)::

    enc_key = HMAC-SHA256(key, b"edge-min/sync/aes-256-cbc")
    mac_key = HMAC-SHA256(key, b"edge-min/sync/hmac-sha256")
    payload = AES-256-CBC(enc_key, iv, PKCS#7(plain)) || HMAC-SHA256(mac_key, aad || ct)

``aad`` is every frame byte before the payload length, so the header (the IV included) is
covered by the tag. The tag is compared in constant time before anything is decrypted, so a
padding oracle has nothing to answer. The AES is ``cryptography``'s where it imports, else
pycryptodome's, loaded on first use (``MissingDependency`` names the pip install).
"""

from __future__ import annotations

import hashlib
import hmac
from importlib import import_module
from typing import Any

from edge_min.errors import MissingDependency

SUITE = "aes-256-cbc-hmac-sha256"
IV_BYTES = 16
TAG_BYTES = 32
_BLOCK = 16
_ENC_LABEL = b"edge-min/sync/aes-256-cbc"
_MAC_LABEL = b"edge-min/sync/hmac-sha256"


class CbcTagMismatch(ValueError):
    """The tag does not verify (wrong key or altered frame), or the padding is wrong."""


def _derive(key: bytes) -> tuple[bytes, bytes]:
    return (
        hmac.new(key, _ENC_LABEL, hashlib.sha256).digest(),
        hmac.new(key, _MAC_LABEL, hashlib.sha256).digest(),
    )


def _cipher(key: bytes, iv: bytes, encrypt: bool) -> Any:
    """A one-shot AES-256-CBC function over whole blocks."""
    try:
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        ctx = Cipher(algorithms.AES(key), modes.CBC(iv))
        op = ctx.encryptor() if encrypt else ctx.decryptor()
        return lambda data: op.update(data) + op.finalize()
    except ImportError:
        pass
    try:
        aes: Any = import_module("Crypto.Cipher.AES")
    except ImportError:
        raise MissingDependency("pycryptodome", "crypto", f"The {SUITE} sync suite") from None
    c = aes.new(key, aes.MODE_CBC, iv=iv)
    return lambda data: bytes(c.encrypt(data) if encrypt else c.decrypt(data))


def seal(key: bytes, iv: bytes, plain: bytes, aad: bytes) -> bytes:
    """CBC ciphertext of PKCS#7-padded ``plain``, followed by its HMAC-SHA256 tag."""
    enc_key, mac_key = _derive(key)
    pad = _BLOCK - len(plain) % _BLOCK
    ct = bytes(_cipher(enc_key, iv, True)(plain + bytes([pad]) * pad))
    return ct + hmac.new(mac_key, aad + ct, hashlib.sha256).digest()


def open_(key: bytes, iv: bytes, sealed: bytes, aad: bytes) -> bytes:
    """The plain bytes of ``sealed``; ``CbcTagMismatch`` if the tag or the padding is wrong."""
    if len(sealed) < TAG_BYTES + _BLOCK or (len(sealed) - TAG_BYTES) % _BLOCK:
        raise CbcTagMismatch(
            f"the payload is {len(sealed)} bytes: not whole AES blocks plus a {TAG_BYTES}-byte tag"
        )
    enc_key, mac_key = _derive(key)
    ct, tag = sealed[:-TAG_BYTES], sealed[-TAG_BYTES:]
    if not hmac.compare_digest(hmac.new(mac_key, aad + ct, hashlib.sha256).digest(), tag):
        raise CbcTagMismatch("the HMAC-SHA256 tag does not verify")
    padded = bytes(_cipher(enc_key, iv, False)(ct))
    pad = padded[-1]
    if not 1 <= pad <= _BLOCK or padded[-pad:] != bytes([pad]) * pad:
        raise CbcTagMismatch("the PKCS#7 padding is wrong")
    return padded[:-pad]
