"""A host's own AES-GCM (``aead.provide``): used only where no library imports."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from edge_min.errors import MissingDependency
from edge_min.security import aead

KEY = bytes(range(32))
NONCE = b"\x01" * 12


@pytest.fixture
def clean() -> Iterator[None]:
    saved = aead._impl, aead._provided
    aead._impl, aead._provided = None, None
    try:
        yield
    finally:
        aead._impl, aead._provided = saved


def library_backend(key: bytes) -> tuple[aead.Seal, aead.Seal]:
    """What a host brings (here a library's AES, made before the libraries are hidden)."""
    real = REAL[key]
    return real.seal, real.open


REAL: dict[bytes, aead.Aead] = {}


def hide_libraries(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("cryptography.hazmat.primitives.ciphers.aead", "Crypto.Cipher.AES"):
        monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError


@pytest.mark.usefixtures("clean")
def test_a_library_wins_over_a_provided_backend() -> None:
    aead.provide("host", library_backend)
    assert aead.implementation() in ("cryptography", "pycryptodome")


@pytest.mark.usefixtures("clean")
def test_the_provided_backend_does_the_aes_where_no_library_imports(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    REAL[KEY] = aead.Aead(KEY)
    sealed_by_library = REAL[KEY].seal(NONCE, b"payload", b"aad")
    aead._impl = None
    hide_libraries(monkeypatch)
    with pytest.raises(MissingDependency):
        aead.implementation()
    aead.provide("host", library_backend)
    assert aead.implementation() == "host"
    host = aead.Aead(KEY)
    assert host.open(NONCE, sealed_by_library, b"aad") == b"payload"
    assert host.seal(NONCE, b"payload", b"aad") == sealed_by_library
    with pytest.raises(aead.TagMismatch):
        host.open(NONCE, sealed_by_library, b"other aad")
