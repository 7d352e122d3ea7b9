"""Ed25519 signatures (RFC 8032): sign with a library, verify with one or in pure Python.

Signing needs ``cryptography`` or ``pycryptodome`` (the ``crypto`` extra; only the build or
install step signs). Verifying uses either when importable, else the RFC 8032 section 6
reference verifier below, so a device installed without the extra (a from-source package,
Pyodide) still checks its program manifest. Verification handles public data only (the
key, the message, the signature), so the reference code's lack of constant-time arithmetic
leaks nothing; it is checked against both libraries in ``tests/unit/security``.
"""

from __future__ import annotations

import hashlib

from edge_min.errors import MissingDependency

__all__ = ["public_key", "sign", "verify"]

SEED_BYTES = 32
KEY_BYTES = 32
SIGNATURE_BYTES = 64


def sign(seed: bytes, message: bytes) -> bytes:
    """The Ed25519 signature of ``message`` by the private key ``seed`` (32 bytes)."""
    try:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    except ImportError:
        try:
            from Crypto.PublicKey import ECC
            from Crypto.Signature import eddsa
        except ImportError:
            raise MissingDependency("cryptography", "crypto", "signing a manifest") from None
        key = ECC.construct(curve="ed25519", seed=seed)
        return bytes(eddsa.new(key, "rfc8032").sign(message))
    return Ed25519PrivateKey.from_private_bytes(seed).sign(message)


def public_key(seed: bytes) -> bytes:
    """The 32-byte public key of the private key ``seed``."""
    try:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    except ImportError:
        try:
            from Crypto.PublicKey import ECC
        except ImportError:
            raise MissingDependency("cryptography", "crypto", "making a build key") from None
        key = ECC.construct(curve="ed25519", seed=seed)
        return bytes(key.public_key().export_key(format="raw"))
    pub = Ed25519PrivateKey.from_private_bytes(seed).public_key()
    return pub.public_bytes(Encoding.Raw, PublicFormat.Raw)


def verify(key: bytes, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is the Ed25519 signature of ``message`` by public ``key``."""
    if len(key) != KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    except ImportError:
        return reference_verify(key, message, signature)
    try:
        Ed25519PublicKey.from_public_bytes(key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


# -- RFC 8032 section 6, verification only --------------------------------------------------

_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
_D = -121665 * pow(121666, _P - 2, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)
_Point = tuple[int, int, int, int]  # extended coordinates (X, Y, Z, T)


def _add(p: _Point, q: _Point) -> _Point:
    a = (p[1] - p[0]) * (q[1] - q[0]) % _P
    b = (p[1] + p[0]) * (q[1] + q[0]) % _P
    c = 2 * p[3] * q[3] * _D % _P
    d = 2 * p[2] * q[2] % _P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _mul(s: int, p: _Point) -> _Point:
    q: _Point = (0, 1, 1, 0)
    while s > 0:
        if s & 1:
            q = _add(q, p)
        p = _add(p, p)
        s >>= 1
    return q


def _equal(p: _Point, q: _Point) -> bool:
    return (p[0] * q[2] - q[0] * p[2]) % _P == 0 and (p[1] * q[2] - q[1] * p[2]) % _P == 0


def _recover_x(y: int, sign: int) -> int | None:
    if y >= _P:
        return None
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P)
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P != 0:
        x = x * _SQRT_M1 % _P
    if (x * x - x2) % _P != 0:
        return None
    if (x & 1) != sign:
        x = _P - x
    return x


def _decompress(s: bytes) -> _Point | None:
    y = int.from_bytes(s, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    x = _recover_x(y, sign)
    return None if x is None else (x, y, 1, x * y % _P)


_GY = 4 * pow(5, _P - 2, _P) % _P
_GX = _recover_x(_GY, 0)
assert _GX is not None
_G: _Point = (_GX, _GY, 1, _GX * _GY % _P)


def reference_verify(key: bytes, message: bytes, signature: bytes) -> bool:
    """RFC 8032's verification, in pure Python (used when no library is installed)."""
    if len(key) != KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    a = _decompress(key)
    r = _decompress(signature[:32])
    if a is None or r is None:
        return False
    s = int.from_bytes(signature[32:], "little")
    if s >= _L:
        return False
    h = int.from_bytes(hashlib.sha512(signature[:32] + key + message).digest(), "little") % _L
    return _equal(_mul(s, _G), _add(r, _mul(h, a)))
