"""The device's checks of an update, in TUF's order, for a bundle file or a served repository.

1. **root**: each ``N.root.json`` after the trusted version must be signed by the threshold
   of the previous root's root keys and by its own; the last one must not have expired.
2. **timestamp**: signed by the root's timestamp keys, not older than the version seen,
   not expired; names the version, length and hash of snapshot.json.
3. **snapshot**: that length and hash, signed, not older, not expired; names the version
   of targets.json.
4. **targets**: that version, signed, not expired; the target for this architecture.
5. **payload**: its version not below the installed one; the encoded file (full or delta)
   of the signed length and hash is copied into ``workdir``, decoded there, and the result
   must have the signed length and SHA-256. A delta this device cannot apply
   (``DeltaBaseMissing``: another base, no zstandard, for a gateway binary's onefile delta
   another zstd or a rebuilt file that is not the signed one) gives way to the full
   payload when the repository has it too, and is raised when it has not.

Nothing is written outside ``workdir`` (the trust is updated by ``Trust.record`` after the
install commits). The same code runs on a bundle (``verify_bundle``) and on the files a
central serves (``verify_from_files``: ``fetch(name)`` returns the bytes or None).
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from edge_min.update import delta as codec
from edge_min.update import metadata as md
from edge_min.update.errors import (
    BadBundle,
    DeltaBaseMissing,
    PayloadMismatch,
    RollbackRefused,
    WrongArch,
)
from edge_min.update.slots import Step, no_step
from edge_min.update.trust import Trust

__all__ = [
    "KINDS",
    "Opener",
    "VerifiedUpdate",
    "normalize_arch",
    "verify_from_files",
    "verify_repository",
    "version_key",
]

KINDS = ("binary", "package", "image")
#: ``platform.machine()`` spellings of the same architecture, to the names targets use.
_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "armv8": "aarch64"}
_VERSION_RE = re.compile(r"(\d+(?:\.\d+){0,3})(?:[-.]?(dev|a|b|rc)\.?(\d+))?")
_PRE_RANK = {"dev": 0, "a": 1, "b": 2, "rc": 3}
#: Opens a repository file by name for reading, or None if there is no such file.
Opener = Callable[[str], BinaryIO | None]


def normalize_arch(arch: str) -> str:
    """``arch`` as targets name it (``x86_64``, ``aarch64``)."""
    a = arch.strip().lower()
    return _ARCH_ALIASES.get(a, a)


def version_key(version: str) -> tuple[int, ...]:
    """A sortable key of ``0.2.0``, ``1.4``, ``2.0.0rc1``; ValueError if it is none of these."""
    m = _VERSION_RE.fullmatch(version.strip())
    if m is None:
        raise ValueError(f"version {version!r} is not like 1.2.3 (or 1.2.3rc1, 1.2.3.dev4)")
    nums = [int(x) for x in m.group(1).split(".")] + [0] * 4
    pre = (_PRE_RANK[m.group(2)], int(m.group(3))) if m.group(2) else (9, 0)
    return (*nums[:4], *pre)


@dataclass(frozen=True)
class VerifiedUpdate:
    """An update that passed every check: its payload is in the work folder."""

    version: str
    payload: Path
    sha256: str
    length: int
    kind: str  # "binary", "package" or "image" (a firmware slot's root file system)
    arch: str
    expires: float  # the earliest expiry of the metadata it was verified with
    #: What Trust.record keeps once it is installed: the newest root and the role versions.
    root_json: bytes = field(default=b"", repr=False)
    meta_versions: Mapping[str, int] = field(default_factory=dict)
    target: str = ""


def _read(open_: Opener, name: str, limit: int = md.MAX_METADATA_BYTES) -> bytes | None:
    f = open_(name)
    if f is None:
        return None
    with f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise BadBundle(f"{name}: more than {limit:,} bytes: not a metadata file")
    return data


def _need(open_: Opener, name: str) -> bytes:
    data = _read(open_, name)
    if data is None:
        raise BadBundle(f"{name}: missing: the bundle or repository is incomplete")
    return data


def _check_file(data: bytes, name: str, spec: Any, by: str) -> None:
    if not isinstance(spec, dict) or not spec:
        raise BadBundle(f"{by}: no entry for {name}")
    hashes = spec.get("hashes")
    want = hashes.get("sha256") if isinstance(hashes, dict) else None
    if spec.get("length") != len(data) or want != hashlib.sha256(data).hexdigest():
        raise PayloadMismatch(
            f"{name}: length {len(data)} or SHA-256 is not what {by} signed: the file was "
            "changed or mixed from another bundle; get a fresh copy"
        )


def _not_older(parsed: md.Parsed, seen: int) -> None:
    if parsed.version < seen:
        raise RollbackRefused(
            f"{parsed.name}: version {parsed.version} is older than the version {seen} this "
            "device has accepted: a replay of old metadata; use a newer bundle"
        )


def verify_repository(
    open_: Opener,
    trust: Trust,
    *,
    installed_version: str | None,
    arch: str,
    now: float,
    workdir: Path,
    base_payload: Path | None = None,
    step: Step = no_step,
) -> VerifiedUpdate:
    """Check the repository that ``open_`` reads (see the module docstring) and decode its
    payload into ``workdir``; an ``UpdateError`` naming what failed otherwise.

    ``step`` is told of every chunk written to ``workdir`` (the kill-9 tests count them)."""
    # 1. the root chain
    root = trust.root
    while (raw := _read(open_, f"{root.version + 1}.root.json")) is not None:
        root = md.verify_root_update(root, raw, f"{root.version + 1}.root.json")
    root_doc = md.parse(root.raw, f"{root.version}.root.json", "root")
    expiries = [md.check_fresh(root_doc, now)]
    rotated = {
        r for r in ("timestamp", "snapshot") if root.roles[r].keys != trust.root.roles[r].keys
    }

    def seen(role: str) -> int:
        # After the root changed a role's keys, its old versions no longer bind (TUF 5.3.11):
        # that is how a fast-forwarded version number is recovered from.
        return 0 if role in rotated else trust.seen(role)

    # 2. timestamp
    ts = md.parse(_need(open_, "timestamp.json"), "timestamp.json", "timestamp")
    md.verify_role(ts, root.roles["timestamp"], by=f"root v{root.version}'s timestamp role")
    _not_older(ts, seen("timestamp"))
    expiries.append(md.check_fresh(ts, now))
    snap_spec: dict[str, Any] = (ts.signed.get("meta") or {}).get("snapshot.json") or {}
    # 3. snapshot
    snap_raw = _need(open_, "snapshot.json")
    _check_file(snap_raw, "snapshot.json", snap_spec, "timestamp.json")
    snap = md.parse(snap_raw, "snapshot.json", "snapshot")
    md.verify_role(snap, root.roles["snapshot"], by=f"root v{root.version}'s snapshot role")
    if snap.version != snap_spec.get("version"):
        raise BadBundle(f"snapshot.json: version {snap.version} is not the one timestamp names")
    _not_older(snap, seen("snapshot"))
    expiries.append(md.check_fresh(snap, now))
    tgt_spec = (snap.signed.get("meta") or {}).get("targets.json")
    if not isinstance(tgt_spec, dict) or not isinstance(tgt_spec.get("version"), int):
        raise BadBundle("snapshot.json: no version for targets.json")
    # 4. targets
    tgt = md.parse(_need(open_, "targets.json"), "targets.json", "targets")
    md.verify_role(tgt, root.roles["targets"], by=f"root v{root.version}'s targets role")
    if tgt.version != tgt_spec["version"]:
        raise BadBundle(f"targets.json: version {tgt.version} is not the one snapshot names")
    _not_older(tgt, trust.seen("targets"))
    expiries.append(md.check_fresh(tgt, now))
    name, entry, info = _pick_target(tgt.signed, normalize_arch(arch))
    version = info["version"]
    _check_version(version, installed_version, trust)
    # 5. payload
    payload = _decode_payload(open_, tgt.signed, name, entry, info, workdir, base_payload, step)
    return VerifiedUpdate(
        version=version,
        payload=payload,
        sha256=entry["hashes"]["sha256"],
        length=entry["length"],
        kind=info["kind"],
        arch=info["arch"],
        expires=min(expiries),
        root_json=root.raw,
        meta_versions={"timestamp": ts.version, "snapshot": snap.version, "targets": tgt.version},
        target=name,
    )


def _pick_target(
    signed: Mapping[str, Any], arch: str
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    targets = signed.get("targets")
    if not isinstance(targets, dict):
        raise BadBundle("targets.json: no 'targets' object")
    found: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    for name, entry in targets.items():
        custom = entry.get("custom") if isinstance(entry, dict) else None
        info = custom.get("edge_min") if isinstance(custom, dict) else None
        if not isinstance(info, dict) or "encodings" not in info:
            continue  # an encoded file (checked when used), or a target for something else
        if not (
            isinstance(info.get("version"), str)
            and info.get("kind") in KINDS
            and isinstance(info.get("arch"), str)
            and isinstance(entry.get("length"), int)
            and isinstance((entry.get("hashes") or {}).get("sha256"), str)
        ):
            raise BadBundle(f"targets.json: {name}: needs version, kind, arch, length, sha256")
        found.append((name, entry, info))
    if not found:
        raise BadBundle("targets.json: no edge_min payload in it")
    mine = [t for t in found if t[2]["arch"] == arch]
    if not mine:
        arches = sorted({t[2]["arch"] for t in found})
        raise WrongArch(
            f"targets.json: the update is for {', '.join(arches)}, this device is {arch}: use "
            f"the bundle made for {arch} (`edge-min update bundle ... --arch {arch}`)"
        )
    return max(mine, key=lambda t: _key(t[2]["version"], t[0]))


def _key(version: str, where: str) -> tuple[int, ...]:
    try:
        return version_key(version)
    except ValueError as err:
        raise BadBundle(f"{where}: {err}") from None


def _check_version(version: str, installed: str | None, trust: Trust) -> None:
    for have, source in ((installed, "installed"), (trust.installed_version, "recorded")):
        if have is not None and _key(version, "targets.json") < _key(have, source):
            raise RollbackRefused(
                f"targets.json: version {version} is older than the {source} version {have}: "
                "a rollback is refused; install a newer bundle (`edge-min update rollback` "
                "returns to the previous slot instead)"
            )


def _decode_payload(
    open_: Opener,
    signed: Mapping[str, Any],
    name: str,
    entry: Mapping[str, Any],
    info: Mapping[str, Any],
    workdir: Path,
    base_payload: Path | None,
    step: Step = no_step,
) -> Path:
    encodings = [e for e in info["encodings"] if isinstance(e, dict)]
    base_sha = codec.sha256_file(base_payload)[0] if base_payload is not None else None
    present = [e for e in encodings if _exists(open_, e.get("file"))]
    delta = [
        e for e in present if e.get("encoding") in codec.DELTAS and e.get("base_sha256") == base_sha
    ]
    full = [e for e in present if e.get("encoding") == codec.FULL]
    if not delta and not full:
        bases = [
            str(e.get("base_sha256", ""))[:16]
            for e in encodings
            if e.get("encoding") in codec.DELTAS
        ]
        if bases:
            have = "no installed payload" if base_sha is None else f"the installed {base_sha[:16]}"
            raise DeltaBaseMissing(
                f"{name}: this is a delta from payload {', '.join(bases)}, and the device has "
                f"{have}: fetch the full bundle (`edge-min update bundle` without --delta-from)"
            )
        raise BadBundle(f"{name}: the bundle carries none of its encoded files")
    # A delta this device cannot apply (DeltaBaseMissing: no zstandard, another zstd for a
    # binary's delta, a rebuilt binary that is not the signed one) falls back to the full
    # payload when the repository has it too, as a delta from another base does.
    chosen = [*delta, *full]
    for i, encoding in enumerate(chosen):
        try:
            return _decode_one(open_, signed, name, entry, encoding, workdir, base_payload, step)
        except DeltaBaseMissing:
            if i == len(chosen) - 1:
                raise
    raise AssertionError("unreachable")  # the loop returns or raises


def _decode_one(
    open_: Opener,
    signed: Mapping[str, Any],
    name: str,
    entry: Mapping[str, Any],
    chosen: Mapping[str, Any],
    workdir: Path,
    base_payload: Path | None,
    step: Step = no_step,
) -> Path:
    file = str(chosen["file"])
    spec = (signed.get("targets") or {}).get(file)
    if not isinstance(spec, dict) or not isinstance(spec.get("length"), int):
        raise BadBundle(f"targets.json: the encoded file {file} is not a signed target")
    workdir.mkdir(parents=True, exist_ok=True)
    encoded = workdir / (Path(file).name + ".part")
    _copy_checked(open_, file, spec, encoded, step)
    out_path = workdir / (Path(name).name + ".part")
    h = hashlib.sha256()
    kind = chosen.get("encoding")
    try:
        with open(encoded, "rb") as inp, open(out_path, "wb") as out:
            sink = _Hashing(out, h, step)
            if kind == codec.ONEFILE:
                assert base_payload is not None
                codec.apply_onefile_delta(
                    base_payload, inp, sink, max_output=entry["length"], name=file,
                    workdir=workdir,
                )  # fmt: skip
            elif kind == codec.DELTA:
                assert base_payload is not None
                codec.apply_delta(base_payload, inp, sink, max_output=entry["length"], name=file)
            else:
                codec.decode_full(inp, sink, max_output=entry["length"], name=file)
    except BaseException:
        out_path.unlink(missing_ok=True)
        raise
    finally:
        encoded.unlink()
    if sink.count != entry["length"] or h.hexdigest() != entry["hashes"]["sha256"]:
        out_path.unlink()
        got = (
            f"{name}: the payload decoded from {file} has {sink.count:,} bytes and SHA-256 "
            f"{h.hexdigest()[:16]}, the signed target {entry['length']:,} and "
            f"{entry['hashes']['sha256'][:16]}"
        )
        if kind == codec.ONEFILE:  # base and delta were checked: this zstd packs otherwise
            raise DeltaBaseMissing(
                f"{got}: this device's zstd recompresses the binary into other bytes; fetch "
                "the full bundle (`edge-min update bundle` without --delta-from)"
            )
        raise PayloadMismatch(
            f"{got}: the delta's base is not the installed payload or the bundle is damaged; "
            "use the full bundle"
        )
    final = workdir / Path(name).name
    out_path.replace(final)
    step("verify.decoded")
    return final


def _exists(open_: Opener, file: Any) -> bool:
    if not isinstance(file, str):
        return False
    f = open_(file)
    if f is None:
        return False
    f.close()
    return True


class _Hashing:
    """Writes through to ``out``, hashing and counting what passes."""

    def __init__(self, out: BinaryIO, h: Any, step: Step = no_step) -> None:
        self.out, self.h, self.count, self.step = out, h, 0, step

    def write(self, b: bytes) -> int:
        self.h.update(b)
        self.count += len(b)
        self.out.write(b)
        self.step("verify.decode_chunk")
        return len(b)


def _copy_checked(
    open_: Opener, file: str, spec: Mapping[str, Any], dest: Path, step: Step = no_step
) -> None:
    f = open_(file)
    assert f is not None
    h, n, limit = hashlib.sha256(), 0, int(spec["length"])
    with f, open(dest, "wb") as out:
        while chunk := f.read(min(codec.CHUNK, limit + 1 - n)):
            h.update(chunk)
            n += len(chunk)
            out.write(chunk)
            step("verify.copy_chunk")
            if n > limit:
                break
    want = (spec.get("hashes") or {}).get("sha256")
    if n != limit or h.hexdigest() != want:
        dest.unlink()
        raise PayloadMismatch(
            f"{file}: {n:,} bytes and SHA-256 {h.hexdigest()[:16]}, the signed target "
            f"{limit:,} and {str(want)[:16]}: the bundle was changed or truncated; get a "
            "fresh copy"
        )


def verify_from_files(
    fetch: Callable[[str], bytes | None],
    trust: Trust,
    *,
    installed_version: str | None,
    arch: str,
    now: float,
    workdir: Path,
    base_payload: Path | None = None,
) -> VerifiedUpdate:
    """``verify_repository`` over files a central serves: ``fetch(name)`` is their bytes
    (``GET /updates/<rollout>/<name>``), None for a missing file (a 404)."""
    cache: dict[str, bytes | None] = {}

    def open_(name: str) -> BinaryIO | None:
        if name not in cache:
            cache[name] = fetch(name)
        data = cache[name]
        return None if data is None else io.BytesIO(data)

    return verify_repository(
        open_,
        trust,
        installed_version=installed_version,
        arch=arch,
        now=now,
        workdir=workdir,
        base_payload=base_payload,
    )
