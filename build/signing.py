"""The key that signs the gateway binary's payload, and its public half for the launcher.

``build_binary.py`` compiles the public key into ``targets/gateway/launcher.c`` (a
generated header, :func:`write_header`) and ``onefile.pack`` signs the file with it. Which
key, from the environment (or the same names as make variables, ``make binary
EDGE_MIN_SIGNING_KEY=...``):

- ``EDGE_MIN_SIGNING_KEY=path``: an Ed25519 private key, PKCS#8 PEM (``openssl genpkey
  -algorithm ed25519``). A release key, kept offline.
- ``EDGE_MIN_SIGNING_PUBKEY=path`` with ``EDGE_MIN_SIGN_COMMAND='...'``: the key lives in an
  HSM or on a signing machine. The build compiles the public key (PEM) in and runs the
  command with the message to sign on stdin; it must print the 64-byte signature on stdout
  (raw). The signature is checked here before the file is written.
- neither: a **development key**, generated once into ``.cache/signing/`` (0600) and reused.
  Binaries signed with it say so (``EDGE_MIN_BOOT_KEY_KIND=development``): for development only.

Signing uses pycryptodome, which the build venvs already carry (``build/requirements.txt``),
so the binary's venv gets no package it doesn't ship. Build time only: the binary verifies
with the launcher's own C code (``targets/gateway/ed25519_verify.c``).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEV_KEY = ROOT / ".cache" / "signing" / "edge-min-dev-ed25519.pem"
#: The environment variables (and make variables) that choose the key.
KEY_VARS = ("EDGE_MIN_SIGNING_KEY", "EDGE_MIN_SIGNING_PUBKEY", "EDGE_MIN_SIGN_COMMAND")


def key_id(public: bytes) -> str:
    """``ed25519:`` and 16 hex digits of SHA-512 over the raw public key (the launcher's too)."""
    return "ed25519:" + hashlib.sha512(public).hexdigest()[:16]


@dataclass(frozen=True)
class SigningKey:
    """A signing key: its raw public half, what kind it is, and how to sign with it."""

    public: bytes
    kind: str  # "development" or "release"
    source: str  # where it came from, for messages
    private_pem: bytes | None = None
    command: str | None = None

    @property
    def key_id(self) -> str:
        """The key's fingerprint, as the launcher reports it."""
        return key_id(self.public)

    def sign(self, message: bytes) -> bytes:
        """The Ed25519 signature (RFC 8032, pure) of ``message``; checked before it is returned."""
        from Crypto.PublicKey import ECC
        from Crypto.Signature import eddsa

        if self.private_pem is not None:
            signature: bytes = eddsa.new(ECC.import_key(self.private_pem), "rfc8032").sign(message)
        else:
            assert self.command is not None
            done = subprocess.run(
                self.command, shell=True, input=message, capture_output=True, check=False
            )
            if done.returncode != 0:
                raise SystemExit(
                    f"build: EDGE_MIN_SIGN_COMMAND failed ({done.returncode}): "
                    f"{done.stderr.decode(errors='replace').strip()}"
                )
            signature = done.stdout
        try:
            eddsa.new(eddsa.import_public_key(self.public), "rfc8032").verify(message, signature)
        except ValueError:
            raise SystemExit(
                f"build: the signature from {self.source} does not verify with the public key "
                f"{self.key_id}: wrong key or command"
            ) from None
        return signature


def load_private(path: Path, kind: str = "release") -> SigningKey:
    """The key in the PKCS#8 PEM file at ``path``."""
    from Crypto.PublicKey import ECC

    pem = path.read_bytes()
    try:
        key = ECC.import_key(pem)
    except ValueError as err:
        raise SystemExit(f"build: {path} is not an Ed25519 private key in PEM: {err}") from None
    if key.curve != "Ed25519" or not key.has_private():
        raise SystemExit(f"build: {path} is not an Ed25519 private key (it is {key.curve})")
    public = key.public_key().export_key(format="raw")
    return SigningKey(public, kind, str(path), private_pem=pem)


def development_key(path: Path = DEV_KEY) -> SigningKey:
    """The development key at ``path``, generated (0600) on first use."""
    if not path.exists():
        from Crypto.PublicKey import ECC

        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        pem = ECC.generate(curve="ed25519").export_key(format="PEM").encode()
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        tmp.replace(path)  # two builds at once: one key wins, both then read it
        print(f"build: generated a development signing key in {path} (development only)")
    return load_private(path, kind="development")


def resolve(env: Mapping[str, str] | None = None) -> SigningKey:
    """The key the environment names (see the module docstring), else the development key."""
    env = os.environ if env is None else env
    private, public, command = (env.get(name) or None for name in KEY_VARS)
    if command:
        if not public:
            raise SystemExit(
                "build: EDGE_MIN_SIGN_COMMAND needs EDGE_MIN_SIGNING_PUBKEY (the public key, PEM)"
            )
        from Crypto.PublicKey import ECC

        key = ECC.import_key(Path(public).read_bytes())
        if key.curve != "Ed25519":
            raise SystemExit(f"build: {public} is not an Ed25519 public key")
        raw = key.public_key().export_key(format="raw")
        return SigningKey(raw, "release", "EDGE_MIN_SIGN_COMMAND", command=command)
    if private:
        return load_private(Path(private))
    return development_key()


def write_header(path: Path, key: SigningKey, download_from: str) -> Path:
    """The launcher's ``launcher_key.h``: the public key, its id and kind, where to download."""

    def c_string(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    data = ", ".join(f"0x{b:02x}" for b in key.public)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "/* Generated by build/signing.py: the key the launcher accepts. Do not edit. */\n"
        f"#define SIGNING_KEY {{{data}}}\n"
        f"#define SIGNING_KEY_ID {c_string(key.key_id)}\n"
        f"#define SIGNING_KEY_KIND {c_string(key.kind)}\n"
        f"#define DOWNLOAD_FROM {c_string(download_from)}\n"
    )
    return path
