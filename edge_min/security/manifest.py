"""The signed program manifest: the digest of each file of the runtime's own program.

Written at build or install time (``edge-min security manifest --write``, the Makefile's
venv stamp, ``build/build_binary.py`` for the gateway binary) and checked by the tamper
subsystem's ``boot_integrity``. The program is the compiled binary itself when the runtime
runs as one, else every file of the installed ``edge_min`` package (sources, schema,
default configs; ``__pycache__`` left out: the interpreter rewrites it). The manifest is
JSON: ``files`` (path relative to the program root -> sha256 hex), ``program``, ``version``,
``created_at``, the signer's Ed25519 ``public_key`` and a ``signature`` over the canonical
JSON of everything else (keys sorted, no spaces).

Which signer is trusted: the keys listed (hex, one a line) in ``$EDGE_MIN_BUILD_KEYS`` or
``/etc/edge-min/build-keys.pub`` when that file exists (a real build key, provisioned on a
path the program's own update does not write); else the key that signed the manifest at
the first start is pinned in the database (trust on first use) and every later manifest
must be signed by it. See docs/security.md for what a software-only check can and cannot
tell.

::

    EdgeError
    └── TamperError           tamper_error      a tamper check cannot run as configured
        ├── ManifestMissing   manifest_missing  boot_integrity is on and there is no program
        │                                       manifest (the message names the command to
        │                                       write one)
        └── ManifestInvalid   manifest_invalid  the manifest is malformed, its signature
                                                does not verify, or its signer is untrusted
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_min.errors import EdgeError

FORMAT = "edge-min-program-manifest/1"
MANIFEST_NAME = "program-manifest.json"
#: Set by the gateway binary's launcher (targets/gateway/launcher.c): the one file it ran.
ONEFILE_ENV = "EDGE_MIN_ONEFILE"
TRUSTED_KEYS_FILE = "/etc/edge-min/build-keys.pub"
TRUSTED_KEYS_ENV = "EDGE_MIN_BUILD_KEYS"
_SKIP_DIRS = frozenset({"__pycache__"})
_SKIP_SUFFIXES = (".pyc", ".pyo")
WRITE_HINT = "edge-min security manifest --write --key BUILD_KEY"


class TamperError(EdgeError):
    """A tamper check cannot run as configured."""

    code = "tamper_error"


class ManifestMissing(TamperError):
    """``boot_integrity`` is on and the program has no manifest."""

    code = "manifest_missing"


class ManifestInvalid(TamperError):
    """The manifest is malformed, badly signed or signed by a key that is not trusted."""

    code = "manifest_invalid"


@dataclass(frozen=True)
class Program:
    """The runtime's own program: a compiled binary, or the package's folder."""

    kind: str  # "binary" or "package"
    root: Path

    @property
    def manifest_path(self) -> Path:
        """Where its manifest is: inside the package, or beside the binary."""
        if self.kind == "package":
            return self.root / MANIFEST_NAME
        return self.root.with_name(self.root.name + ".manifest.json")

    def files(self) -> dict[str, Path]:
        """Every file the manifest covers, by its name relative to the root."""
        if self.kind == "binary":  # one name whatever the file is called where installed
            return {"program": self.root}
        found: dict[str, Path] = {}
        for folder, dirs, names in os.walk(self.root):
            dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
            for name in names:
                if name == MANIFEST_NAME or name.endswith(_SKIP_SUFFIXES):
                    continue
                path = Path(folder) / name
                found[path.relative_to(self.root).as_posix()] = path
        return dict(sorted(found.items()))


def this_program() -> Program:
    """The program running now: the binary when compiled, else the edge_min package.

    A compiled program started by the gateway binary's launcher runs from the launcher's
    unpack directory, so its own path (``sys.argv[0]``) is not the file that was built,
    signed and given a manifest: the launcher names that one in ``EDGE_MIN_ONEFILE``.
    """
    import edge_min

    if getattr(sys, "frozen", False) or "__compiled__" in vars(edge_min):
        onefile = os.environ.get(ONEFILE_ENV)
        if onefile and Path(onefile).is_file():
            return Program("binary", Path(onefile).resolve())
        return Program("binary", Path(sys.argv[0]).resolve())
    return Program("package", Path(edge_min.__file__).resolve().parent)


def sha256_file(path: Path) -> str:
    """The sha256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def canonical(body: Mapping[str, Any]) -> bytes:
    """The signed bytes: JSON with keys sorted and no spaces, the signature left out."""
    rest = {k: v for k, v in body.items() if k != "signature"}
    return json.dumps(rest, sort_keys=True, separators=(",", ":")).encode()


def write_manifest(program: Program, seed: bytes, *, version: str, created_at: str) -> Path:
    """Measure ``program``, sign its manifest with ``seed`` and write it; the path."""
    from edge_min.security import ed25519

    body: dict[str, Any] = {
        "format": FORMAT,
        "program": program.kind,
        "version": version,
        "created_at": created_at,
        "files": {name: sha256_file(path) for name, path in program.files().items()},
        "public_key": ed25519.public_key(seed).hex(),
    }
    body["signature"] = ed25519.sign(seed, canonical(body)).hex()
    path = program.manifest_path
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(body, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)  # atomic: a reader never sees half a manifest
    return path


@dataclass(frozen=True)
class Manifest:
    """A manifest whose signature verified: its files' digests and its signer."""

    files: dict[str, str]
    public_key: str
    program: str
    version: str
    created_at: str


def read_manifest(path: Path, trusted: frozenset[str] | None = None) -> Manifest:
    """The manifest at ``path``, verified; ``trusted`` (hex keys) restricts the signer."""
    from edge_min.security import ed25519

    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ManifestMissing(
            f"tamper_detection.checks has boot_integrity but there is no program manifest at "
            f"{path}; write one at build or install time with `{WRITE_HINT}`, or remove "
            "boot_integrity from tamper_detection.checks in edge-security.yaml"
        ) from None
    try:
        body = json.loads(text)
        files = {str(k): str(v) for k, v in dict(body["files"]).items()}
        key, signature = bytes.fromhex(body["public_key"]), bytes.fromhex(body["signature"])
        if body.get("format") != FORMAT:
            raise ValueError(f"format {body.get('format')!r}, expected {FORMAT!r}")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ManifestInvalid(f"program manifest {path} is malformed: {exc}") from exc
    if not ed25519.verify(key, canonical(body), signature):
        raise ManifestInvalid(f"program manifest {path}: the signature does not verify")
    if trusted is not None and key.hex() not in trusted:
        raise ManifestInvalid(
            f"program manifest {path} is signed by key {key.hex()[:16]}..., which is not a "
            f"trusted build key ({TRUSTED_KEYS_ENV} or {TRUSTED_KEYS_FILE})"
        )
    return Manifest(
        files, key.hex(), str(body.get("program")), str(body.get("version")), body["created_at"]
    )


def trusted_build_keys() -> frozenset[str] | None:
    """The provisioned build keys (hex), or None when none are provisioned (then: pinning)."""
    path = Path(os.environ.get(TRUSTED_KEYS_ENV) or TRUSTED_KEYS_FILE)
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    keys = {ln.split("#", 1)[0].strip().lower() for ln in lines}
    return frozenset(k for k in keys if k)


def load_build_key(path: Path, *, create: bool = True) -> bytes:
    """A build key's private seed (hex in a 0600 file), made on first use when ``create``."""
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        if not create:
            raise
    seed = os.urandom(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return bytes.fromhex(path.read_text().strip())
    with os.fdopen(fd, "w") as f:
        f.write(seed.hex() + "\n")
    return seed
