"""One update bundle file: a whole signed repository (metadata and one payload) packed in one.

The format (``.emub``)::

    offset 0   8 bytes   b"EMUPDT1\\n"                       magic and format version
    offset 8   4 bytes   H, big-endian                       length of the header
    offset 12  H bytes   {"files":[[name,length],...],"format":1}   canonical JSON
    then       the files' bytes, in the header's order, back to back; nothing after them

The files are what a central serves for the same update (``repository_files``)::

    1.root.json ... N.root.json     every root of the signing keys (a device follows the
                                    chain from the root it trusts)
    timestamp.json snapshot.json targets.json
    targets/edge-min-<version>-<arch>.<bin|tar>.xz             the full payload, or
    targets/edge-min-<version>-<arch>.<bin|tar>.from-<base16>.zst   a delta from <base>
    targets/edge-min-<version>-<arch>.bin.from-<base16>.onefile.zst  between two gateway
                                    binaries: a delta of their expanded forms (delta.py)

The header is not signed and need not be: every file in it is verified (metadata by its
signatures, encoded payloads by the length and SHA-256 in targets.json), a length that does
not add up to the file size is refused as truncated, and a name not of the shape above is
refused before anything is read. A payload is the *uncompressed* program: the gateway
binary (ELF), or the from-source package's tar (a ``.tar.gz`` given to ``make_bundle`` is
unpacked to its tar), so deltas work on bytes that did not move.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from edge_min.update import delta as codec
from edge_min.update import metadata as md
from edge_min.update.errors import BadBundle, BadSignature
from edge_min.update.keys import KeysDir
from edge_min.update.onefile import is_onefile
from edge_min.update.slots import Step, no_step
from edge_min.update.trust import Trust
from edge_min.update.verify import (
    VerifiedUpdate,
    normalize_arch,
    verify_repository,
    version_key,
)

__all__ = [
    "MAGIC",
    "BundleReader",
    "make_bundle",
    "peek_version",
    "repository_files",
    "verify_bundle",
]

MAGIC = b"EMUPDT1\n"
_HEAD = struct.Struct(">I")
MAX_HEADER = 64 * 1024
_NAME_RE = re.compile(
    r"[1-9][0-9]{0,8}\.root\.json|(?:timestamp|snapshot|targets)\.json"
    r"|targets/[A-Za-z0-9][A-Za-z0-9._+-]{0,200}"
)
_ROOT_RE = re.compile(r"([1-9][0-9]{0,8})\.root\.json")


class _Slice(io.RawIOBase):
    """A read-only window [start, start+length) of an open file."""

    def __init__(self, path: Path, start: int, length: int) -> None:
        self._f = open(path, "rb")  # noqa: SIM115 (closed by close(), a reader's lifetime)
        self._f.seek(start)
        self._left = length

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = min(len(b), self._left)
        if n <= 0:
            return 0
        got = self._f.readinto(memoryview(b)[:n])
        self._left -= got or 0
        return got or 0

    def close(self) -> None:
        self._f.close()
        super().close()


class BundleReader:
    """A bundle file's table of contents, checked; ``open(name)`` reads one file of it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.files: dict[str, tuple[int, int]] = {}
        try:
            size = path.stat().st_size
            with open(path, "rb") as f:
                head = f.read(len(MAGIC) + _HEAD.size)
                if head[: len(MAGIC)] != MAGIC:
                    raise BadBundle(
                        f"{path}: not an edge-min update bundle (no EMUPDT1 magic): make one "
                        "with `edge-min update bundle`"
                    )
                if len(head) < len(MAGIC) + _HEAD.size:
                    raise BadBundle(f"{path}: truncated in its header: copy the file again")
                (hlen,) = _HEAD.unpack(head[len(MAGIC) :])
                if hlen > MAX_HEADER:
                    raise BadBundle(f"{path}: a header of {hlen:,} bytes: the file is damaged")
                raw = f.read(hlen)
        except OSError as err:
            raise BadBundle(f"{path}: cannot read it ({err.strerror})") from None
        if len(raw) != hlen:
            raise BadBundle(f"{path}: truncated in its header: copy the file again")
        offset = len(MAGIC) + _HEAD.size + hlen
        for name, length in self._entries(raw):
            self.files[name] = (offset, length)
            offset += length
        if offset != size:
            what = "truncated" if offset > size else "longer than its header says"
            raise BadBundle(
                f"{path}: {what} ({size:,} bytes, the header adds up to {offset:,}): copy "
                "the file again"
            )

    def _entries(self, raw: bytes) -> list[tuple[str, int]]:
        try:
            doc = json.loads(raw.decode("utf-8"))
            ok = (
                md.canonical(doc) == raw
                and doc.get("format") == 1
                and set(doc) == {"files", "format"}
            )
        except (ValueError, UnicodeDecodeError, AttributeError):
            ok = False
        if not ok:
            raise BadBundle(f"{self.path}: the header is not a format-1 bundle header")
        out: list[tuple[str, int]] = []
        for item in doc["files"]:
            if not (
                isinstance(item, list)
                and len(item) == 2
                and isinstance(item[0], str)
                and _NAME_RE.fullmatch(item[0])
                and ".." not in item[0]
                and isinstance(item[1], int)
                and not isinstance(item[1], bool)
                and item[1] >= 0
            ):
                raise BadBundle(f"{self.path}: header entry {str(item)[:60]} is malformed")
            if any(item[0] == n for n, _ in out):
                raise BadBundle(f"{self.path}: {item[0]} is in the header twice")
            out.append((item[0], item[1]))
        return out

    def open(self, name: str) -> BinaryIO | None:
        """A reader of the file ``name`` in the bundle, or None if it holds no such file."""
        if name not in self.files:
            return None
        start, length = self.files[name]
        return _Slice(self.path, start, length)  # type: ignore[return-value]

    def read(self, name: str) -> bytes:
        """The whole file ``name`` (it must be in the bundle)."""
        f = self.open(name)
        assert f is not None
        with f:
            return f.read()


def peek_version(data: bytes) -> str | None:
    """The version a bundle's payload file is named for, read from its header, *unverified*
    (for central's listing; a device verifies everything before it trusts any of it)."""
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + _HEAD.size:
        return None
    (size,) = _HEAD.unpack_from(data, len(MAGIC))
    start = len(MAGIC) + _HEAD.size
    if size > MAX_HEADER or start + size > len(data):
        return None
    try:
        header = json.loads(data[start : start + size])
        names = [str(entry[0]) for entry in header["files"]]
    except (ValueError, TypeError, KeyError, IndexError):
        return None
    for name in names:
        found = re.match(r"targets/edge-min-(.+)-(x86_64|aarch64)\.", name)
        if found:
            return found.group(1)
    return None


def repository_files(bundle: Path) -> dict[str, bytes]:
    """Every file of ``bundle`` by repository name, for a central to serve as they are."""
    reader = BundleReader(bundle)
    return {name: reader.read(name) for name in reader.files}


def verify_bundle(
    bundle: Path,
    trust: Trust,
    *,
    installed_version: str | None,
    arch: str,
    now: float,
    workdir: Path,
    base_payload: Path | None = None,
    step: Step = no_step,
) -> VerifiedUpdate:
    """Verify ``bundle`` against ``trust`` and put its payload in ``workdir`` (see verify);
    ``step`` is told of each chunk written there."""
    reader = BundleReader(bundle)
    _check_root_chain(reader, trust)
    used: set[str] = {n for n in reader.files if _ROOT_RE.fullmatch(n)}

    def open_(name: str) -> BinaryIO | None:
        f = reader.open(name)
        return None if f is None else _Marking(f, name, used)  # type: ignore[return-value]

    verified = verify_repository(
        open_,
        trust,
        installed_version=installed_version,
        arch=arch,
        now=now,
        workdir=workdir,
        base_payload=base_payload,
        step=step,
    )
    # A bundle is one verified repository: a file its metadata did not account for (renamed,
    # added) means it is not the file that was signed.
    extra = sorted(set(reader.files) - used)
    if extra:
        verified.payload.unlink()
        raise BadBundle(
            f"{bundle}: holds files its signed metadata does not cover ({', '.join(extra)}): "
            "it was changed after signing; get a fresh copy"
        )
    return verified


class _Marking:
    """A reader that records its name in ``used`` once it has been read from."""

    def __init__(self, f: BinaryIO, name: str, used: set[str]) -> None:
        self._f, self._name, self._used = f, name, used

    def read(self, n: int = -1) -> bytes:
        self._used.add(self._name)
        return self._f.read(n)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> _Marking:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_root_chain(reader: BundleReader, trust: Trust) -> None:
    """Every root in the bundle is a valid chain from 1.root.json, through the trusted root."""
    versions = sorted(int(m.group(1)) for n in reader.files if (m := _ROOT_RE.fullmatch(n)))
    if versions != list(range(1, len(versions) + 1)) or not versions:
        raise BadBundle(
            f"{reader.path}: its roots are versions {versions}, not 1 to N: the bundle was "
            "changed after it was made; get a fresh copy"
        )
    root = md.load_root(reader.read("1.root.json"), "1.root.json")
    for v in versions:
        if v > 1:
            root = md.verify_root_update(root, reader.read(f"{v}.root.json"), f"{v}.root.json")
        if v == trust.root.version and root.raw != trust.root.raw:
            raise BadSignature(
                f"{v}.root.json: not the root v{v} this device trusts: the bundle was made "
                "with another signing keys folder; make it with the keys whose root.json the "
                "device pinned"
            )


# -- making a bundle (the build side; needs the crypto extra to sign) -------------------------


_SUFFIX = {"binary": "bin", "package": "tar", "image": "img"}


def detect_kind(path: Path) -> str:
    """``binary`` (an ELF file), ``package`` (a tar, or a gzipped tar) or ``image`` (a
    squashfs root file system: a firmware slot, ``make firmware``); ValueError else."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head.startswith(b"\x7fELF"):
        return "binary"
    if head.startswith(b"\x1f\x8b") or head[257:262] == b"ustar":
        return "package"
    from edge_min.update.slots import SQUASHFS_MAGIC

    if head.startswith(SQUASHFS_MAGIC):
        return "image"
    raise ValueError(
        f"{path}: neither an ELF binary (make binary), a tar package "
        "(infra/scripts/build_edge_package.sh) nor a squashfs slot image (make firmware)"
    )


@contextmanager
def uncompressed(path: Path) -> Iterator[Path]:
    """``path``, or for a gzip file a temporary copy of what it decompresses to."""
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    if not gz:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="edge-min-bundle-") as tmp:
        out = Path(tmp) / (path.name.removesuffix(".gz") or "payload")
        with gzip.open(path, "rb") as fin, open(out, "wb") as fout:
            shutil.copyfileobj(fin, fout, codec.CHUNK)
        yield out


def make_bundle(
    payload: Path,
    *,
    version: str,
    keys: KeysDir,
    arch: str,
    now: float,
    expires_in: float,
    out: Path,
    delta_from: Path | None = None,
) -> dict[str, Any]:
    """Write the bundle of ``payload`` (full, or a delta from ``delta_from``) to ``out``.

    Returns what it made: target name, version, arch, kind, sizes, metadata versions.
    """
    version_key(version)  # ValueError names the version
    arch = normalize_arch(arch)
    kind = detect_kind(payload)
    keys.check_matches_root()
    with (
        tempfile.TemporaryDirectory(prefix="edge-min-bundle-") as tmp,
        uncompressed(payload) as plain,
    ):
        sha, length = codec.sha256_file(plain)
        target = f"edge-min-{version}-{arch}.{_SUFFIX[kind]}"
        encoded = Path(tmp) / "encoded"
        if delta_from is None:
            file = f"targets/{target}.{codec.FULL}"
            codec.encode_full(plain, encoded)
            encoding: dict[str, Any] = {"encoding": codec.FULL, "file": file}
        else:
            if detect_kind(delta_from) != kind:
                raise ValueError(f"--delta-from {delta_from} is not a {kind} like {payload}")
            with uncompressed(delta_from) as base:
                base_sha, base_len = codec.sha256_file(base)
                if kind == "binary" and is_onefile(base) and is_onefile(plain):
                    # two gateway binaries: the delta of their expanded forms (delta.py)
                    file = f"targets/{target}.from-{base_sha[:16]}.onefile.zst"
                    codec.make_onefile_delta(base, plain, encoded, Path(tmp))
                    how = codec.ONEFILE
                else:
                    file = f"targets/{target}.from-{base_sha[:16]}.zst"
                    codec.make_delta(base, plain, encoded)
                    how = codec.DELTA
            encoding = {
                "encoding": how,
                "file": file,
                "base_sha256": base_sha,
                "base_length": base_len,
            }
        enc_sha, enc_len = codec.sha256_file(encoded)
        versions = keys.next_versions()
        expires = md.format_expires(now + expires_in)
        common = {"spec_version": md.SPEC_VERSION, "expires": expires}
        targets = {
            "_type": "targets",
            **common,
            "version": versions["targets"],
            "targets": {
                target: {
                    "length": length,
                    "hashes": {"sha256": sha},
                    "custom": {
                        "edge_min": {
                            "version": version,
                            "arch": arch,
                            "kind": kind,
                            "encodings": [encoding],
                        }
                    },
                },
                file: {"length": enc_len, "hashes": {"sha256": enc_sha}},
            },
        }
        targets_raw = md.sign(targets, keys.seeds["targets"])
        snapshot_raw = md.sign(
            {
                "_type": "snapshot",
                **common,
                "version": versions["snapshot"],
                "meta": {"targets.json": {"version": versions["targets"]}},
            },
            keys.seeds["snapshot"],
        )
        timestamp_raw = md.sign(
            {
                "_type": "timestamp",
                **common,
                "version": versions["timestamp"],
                "meta": {
                    "snapshot.json": {
                        "version": versions["snapshot"],
                        "length": len(snapshot_raw),
                        "hashes": {"sha256": hashlib.sha256(snapshot_raw).hexdigest()},
                    }
                },
            },
            keys.seeds["timestamp"],
        )
        small = {f"{i}.root.json": r for i, r in enumerate(keys.roots, start=1)}
        small |= {
            "timestamp.json": timestamp_raw,
            "snapshot.json": snapshot_raw,
            "targets.json": targets_raw,
        }
        header = md.canonical(
            {"files": [[n, len(d)] for n, d in small.items()] + [[file, enc_len]], "format": 1}
        )
        tmp_out = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        with open(tmp_out, "wb") as f:
            f.write(MAGIC + _HEAD.pack(len(header)) + header)
            for data in small.values():
                f.write(data)
            with open(encoded, "rb") as enc:
                shutil.copyfileobj(enc, f, codec.CHUNK)
            f.flush()
            os.fsync(f.fileno())
        tmp_out.replace(out)
    return {
        "target": target,
        "version": version,
        "arch": arch,
        "kind": kind,
        "length": length,
        "sha256": sha,
        "encoding": encoding["encoding"],
        "encoded_length": enc_len,
        "bundle_length": out.stat().st_size,
        "metadata_versions": versions,
        "root_version": len(keys.roots),
        "expires": expires,
    }
