"""The launcher's Ed25519 verifier (``targets/gateway/ed25519_verify.c``), compiled with gcc.

The launcher trusts this code with the decision to run a payload, so it is checked against
RFC 8032's test vectors, against signatures made by Python's ``cryptography`` (random keys
and messages, streamed in odd-sized pieces), against ``hashlib``'s SHA-512 at every padding
boundary, and against the forgeries it must refuse: a changed message, R, S or key, a
non-canonical S (S + L) and a key that is not a curve point.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

ed25519 = pytest.importorskip("cryptography.hazmat.primitives.asymmetric.ed25519")
pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

SOURCE = ROOT / "targets" / "gateway" / "ed25519_verify.c"
#: The group order: S must be below it.
L = 2**252 + 27742317777372353535851937790883648493

# A tiny driver: `sha512 FILE` prints the digest; `verify PUBHEX SIGHEX FILE` exits 0 if the
# signature is good. The file is fed in pieces of 1, 7, 128, 1000, ... bytes, so the
# streaming code paths (partial blocks, whole blocks) are all taken.
DRIVER = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ed25519_verify.h"

static void unhex(const char *s, unsigned char *out, size_t n) {
    for (size_t i = 0; i < n; i++) sscanf(s + 2 * i, "%2hhx", &out[i]);
}

int main(int argc, char **argv) {
    static const size_t pieces[] = {1, 7, 128, 1000, 3, 4096, 129, 65536};
    FILE *f = fopen(argv[argc - 1], "rb");
    if (!f) return 2;
    static unsigned char buf[65536];
    struct sha512 s;
    struct ed25519_verify v;
    int verify = strcmp(argv[1], "verify") == 0;
    if (verify) {
        unsigned char pk[32], sig[64];
        if (strlen(argv[2]) != 64 || strlen(argv[3]) != 128) return 3;
        unhex(argv[2], pk, 32);
        unhex(argv[3], sig, 64);
        ed25519_verify_start(&v, sig, pk);
    } else {
        sha512_init(&s);
    }
    size_t n, k = 0;
    while ((n = fread(buf, 1, pieces[k++ % 8], f)) > 0) {
        if (verify) ed25519_verify_update(&v, buf, n);
        else sha512_update(&s, buf, n);
    }
    fclose(f);
    if (verify) return ed25519_verify_finish(&v) == 0 ? 0 : 1;
    unsigned char out[64];
    sha512_final(&s, out);
    for (int i = 0; i < 64; i++) printf("%02x", out[i]);
    printf("\n");
    return 0;
}
"""

# RFC 8032, section 7.1: secret key, public key, message, signature (hex).
RFC8032 = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
        "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac"
        "18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
    (  # TEST SHA(abc): the message is SHA-512("abc")
        "833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
        "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
        "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
        "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
        "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b589"
        "09351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704",
    ),
]


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ed25519")
    (folder / "driver.c").write_text(DRIVER)
    out = folder / "driver"
    flags = ["-O2", "-Wall", "-Wextra", "-Werror", "-I", str(SOURCE.parent)]
    subprocess.run(
        ["gcc", *flags, "-o", str(out), str(folder / "driver.c"), str(SOURCE)], check=True
    )
    return out


def _verifies(driver: Path, tmp_path: Path, key: bytes, sig: bytes, message: bytes) -> bool:
    path = tmp_path / "message"
    path.write_bytes(message)
    res = subprocess.run([str(driver), "verify", key.hex(), sig.hex(), str(path)])
    assert res.returncode in (0, 1), res
    return res.returncode == 0


@pytest.mark.parametrize("size", [0, 1, 3, 111, 112, 113, 127, 128, 129, 239, 240, 256, 100_003])
def test_sha512_matches_hashlib(driver: Path, tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    (tmp_path / "m").write_bytes(data)
    out = subprocess.run([str(driver), "sha512", str(tmp_path / "m")], capture_output=True)
    assert out.stdout.decode().strip() == hashlib.sha512(data).hexdigest()


@pytest.mark.parametrize("vector", RFC8032, ids=["test1", "test2", "test3", "sha-abc"])
def test_rfc8032_vectors(driver: Path, tmp_path: Path, vector: tuple[str, ...]) -> None:
    secret, public, message, signature = (bytes.fromhex(v) for v in vector)
    # The vectors as typed here are the RFC's: cryptography derives the same key and signature.
    key = ed25519.Ed25519PrivateKey.from_private_bytes(secret)
    assert key.public_key().public_bytes_raw() == public
    assert key.sign(message) == signature
    assert _verifies(driver, tmp_path, public, signature, message)
    assert not _verifies(driver, tmp_path, public, signature, message + b"\0")


@pytest.mark.parametrize("size", [0, 64, 1000, 300_000])
def test_signatures_by_cryptography_verify(driver: Path, tmp_path: Path, size: int) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes_raw()
    message = os.urandom(size)
    assert _verifies(driver, tmp_path, public, key.sign(message), message)


def test_forgeries_are_refused(driver: Path, tmp_path: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes_raw()
    message = os.urandom(5000)
    sig = key.sign(message)
    assert _verifies(driver, tmp_path, public, sig, message)

    def flip(data: bytes, at: int) -> bytes:
        return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]

    assert not _verifies(driver, tmp_path, public, sig, flip(message, 2500))
    assert not _verifies(driver, tmp_path, public, flip(sig, 3), message)  # R
    assert not _verifies(driver, tmp_path, public, flip(sig, 40), message)  # S
    assert not _verifies(driver, tmp_path, flip(public, 7), sig, message)
    other = ed25519.Ed25519PrivateKey.generate()
    assert not _verifies(driver, tmp_path, public, other.sign(message), message)
    # S + L is the same scalar mod L, but not the canonical encoding: refused (RFC 8032 5.1.7).
    s = int.from_bytes(sig[32:], "little")
    malleable = sig[:32] + (s + L).to_bytes(32, "little")
    assert not _verifies(driver, tmp_path, public, malleable, message)
    # y = 2 is not the y of any point on the curve: no key decodes from it.
    assert not _verifies(driver, tmp_path, (2).to_bytes(32, "little"), sig, message)
