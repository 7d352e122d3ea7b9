"""AES-256-GCM, one object per key: the at-rest cipher's and the sync wire's one AES helper.

``cryptography``'s ``AESGCM`` (OpenSSL) is used where it imports: it is several times faster
per call than pycryptodome, which matters for many small values. pycryptodome is the
fallback (it has pure wheels for more hosts). Where neither imports, a host may bring its own
(``provide``: the browser target's WebCrypto, ``targets.browser.transport``). None of them:
``MissingDependency`` with the exact ``pip install``. Nothing is imported until the first key
is used, so the portable core still imports where neither exists (Pyodide without the crypto
extra).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any

from edge_min.errors import MissingDependency

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16

Seal = Callable[[bytes, bytes, bytes], bytes]
#: A host's AES-256-GCM: ``backend(key) -> (seal, open)``, the same calls as ``Aead``'s
#: (ciphertext then 16-byte tag; ``open`` raises ``TagMismatch``).
Backend = Callable[[bytes], tuple[Seal, Seal]]

_impl: str | None = None  # "cryptography" | "pycryptodome" | a provided name, on first use
_provided: tuple[str, Backend] | None = None


def provide(name: str, backend: Backend) -> None:
    """Let ``backend`` do the AES where neither library imports (a library still wins)."""
    global _provided, _impl
    _provided = (name, backend)
    if _impl not in ("cryptography", "pycryptodome"):
        _impl = None  # decided again on next use


class TagMismatch(ValueError):
    """The tag does not verify: wrong key, altered data, altered associated data or nonce."""


def implementation(purpose: str = "AES-256-GCM encryption") -> str:
    """Which library does the AES here (``cryptography`` or ``pycryptodome``)."""
    global _impl
    if _impl is None:
        for name, module in (
            ("cryptography", "cryptography.hazmat.primitives.ciphers.aead"),
            ("pycryptodome", "Crypto.Cipher.AES"),
        ):
            try:
                import_module(module)
            except ImportError:
                continue
            _impl = name
            break
        else:
            if _provided is None:
                raise MissingDependency("pycryptodome", "crypto", purpose)
            _impl = _provided[0]
    return _impl


def available() -> bool:
    """Whether AES-GCM can be done on this host (without raising)."""
    try:
        implementation()
    except MissingDependency:
        return False
    return True


class Aead:
    """AES-256-GCM under one key: ``seal`` gives ciphertext+tag, ``open`` checks and returns.

    ``seal(nonce, data, aad)`` (nonce: 12 bytes, never reused with this key) returns the
    ciphertext followed by the tag; ``open(nonce, sealed, aad)`` returns the plaintext or
    raises ``TagMismatch``. Both are the library's own calls where it can be (no wrapper on
    the hot path of every sealed value).
    """

    __slots__ = ("open", "seal")

    seal: Seal
    open: Seal

    def __init__(self, key: bytes, purpose: str = "AES-256-GCM encryption") -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"an AES-256 key is {KEY_BYTES} bytes, got {len(key)}")
        if implementation(purpose) == "cryptography":
            from cryptography.exceptions import InvalidTag
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            gcm = AESGCM(key)
            decrypt = gcm.decrypt

            def open_(nonce: bytes, sealed: bytes, aad: bytes) -> bytes:
                try:
                    return decrypt(nonce, sealed, aad)
                except InvalidTag:
                    raise TagMismatch("AES-GCM tag does not verify") from None

            self.seal = gcm.encrypt
            self.open = open_
            return
        if _provided is not None and _impl == _provided[0]:
            self.seal, self.open = _provided[1](key)
            return
        aes: Any = import_module("Crypto.Cipher.AES")
        new, gcm_mode = aes.new, aes.MODE_GCM

        def seal(nonce: bytes, data: bytes, aad: bytes) -> bytes:
            cipher = new(key, gcm_mode, nonce=nonce, mac_len=TAG_BYTES)
            cipher.update(aad)
            body, tag = cipher.encrypt_and_digest(data)
            return bytes(body) + bytes(tag)

        def open_pycryptodome(nonce: bytes, sealed: bytes, aad: bytes) -> bytes:
            if len(sealed) < TAG_BYTES:
                raise TagMismatch(f"{len(sealed)} bytes is shorter than the tag")
            cipher = new(key, gcm_mode, nonce=nonce, mac_len=TAG_BYTES)
            cipher.update(aad)
            try:
                return bytes(cipher.decrypt_and_verify(sealed[:-TAG_BYTES], sealed[-TAG_BYTES:]))
            except ValueError:
                raise TagMismatch("AES-GCM tag does not verify") from None

        self.seal = seal
        self.open = open_pycryptodome
