"""Which modules a gateway binary must contain, and a check that imports each of them.

A Nuitka build only contains what it could see imported. Modules loaded by name (the
``edge_min`` subpackages imported lazily, pycryptodome's curve modules, the stdlib modules
Python agents import in the worker) are listed here and passed to the build with
``--include-module`` / ``--include-package`` by ``build/build_binary.py``; the binary's
hidden ``__modules__`` command imports them again, so a test finds a module that is there
in the source tree but missing in the binary.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

#: Third-party modules the base binary carries, and why.
THIRD_PARTY = (
    "yaml",  # the five config files
    "cbor2",  # the sync wire format
    "zstandard",  # zstd sync payloads (the wire falls back to zlib without it)
    "Crypto.Cipher.AES",  # AES-256-GCM of sync payloads and data at rest
    "Crypto.PublicKey.ECC",  # signatures of update bundles and attestation
    # pycryptodome loads the curve implementations by name: invisible to the compiler.
    "Crypto.PublicKey._edwards",
    "Crypto.PublicKey._nist_ecc",
    "Crypto.PublicKey._montgomery",
    "Crypto.Signature.eddsa",
    "Crypto.Signature.DSS",
    # enrollment without cryptography (edge_min.security.pkix): the device's P-256 key and
    # CSR, and a factory key's signature (EC, Ed25519 or RSA PKCS#1 v1.5, SHA-256)
    "Crypto.Hash.SHA256",
    "Crypto.Util.asn1",
    "Crypto.PublicKey.RSA",
    "Crypto.Signature.pkcs1_15",
)

#: The stdlib beyond what edge_min imports itself, for Python agents run by the worker:
#: the compiled binary has no stdlib on disk, so an agent can import only what is inside.
AGENT_STDLIB = (
    "base64",
    "bisect",
    "collections",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "enum",
    "fractions",
    "functools",
    "gzip",
    "hashlib",
    "heapq",
    "hmac",
    "io",
    "json",
    "logging",
    "math",
    "operator",
    "pathlib",
    "random",
    "re",
    "secrets",
    "shutil",
    "socket",
    "sqlite3",
    "ssl",
    "statistics",
    "string",
    "struct",
    "subprocess",
    "tempfile",
    "textwrap",
    "typing",
    "unicodedata",
    "urllib.parse",
    "urllib.request",
    "uuid",
    "zlib",
)

#: Optional heavy runtimes the base binary leaves out (the ``-onnx`` variant has them).
EXCLUDED = ("numpy", "onnxruntime", "cryptography", "psycopg")


def edge_min_modules() -> list[str]:
    """Every module of the ``edge_min`` package, found by walking it."""
    import edge_min

    names = ["edge_min"]
    for info in pkgutil.walk_packages(edge_min.__path__, "edge_min."):
        names.append(info.name)
    return sorted(names)


def target_modules() -> list[str]:
    """The firmware target's modules: the image's slots run this binary."""
    import targets.firmware

    names = ["targets.firmware"]
    for info in pkgutil.walk_packages(targets.firmware.__path__, "targets.firmware."):
        names.append(info.name)
    return sorted(names)


def required_modules() -> list[str]:
    """All the modules a base gateway binary must be able to import."""
    return [*edge_min_modules(), *target_modules(), *THIRD_PARTY, *AGENT_STDLIB]


def check_modules(names: list[str]) -> int:
    """Import ``names`` (default: ``required_modules()``); one line each; 1 if any failed."""
    failed = 0
    for name in names or required_modules():
        try:
            importlib.import_module(name)
        except Exception as exc:  # a broken module is as missing as an absent one
            failed += 1
            print(f"{name}: missing: {type(exc).__name__}: {exc}")
        else:
            print(f"{name}: ok")
    sys.stdout.flush()
    return 1 if failed else 0
