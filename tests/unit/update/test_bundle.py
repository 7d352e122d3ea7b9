"""Bundles: what verifies, and every bad input refused with its code before anything is written.

The bad inputs are the RAUC/TUF set: a bundle changed at any byte (a sweep of positions),
truncated, signed with another key, expired, older than the installed version, replayed
older metadata, for another architecture, a delta without its base. Each must raise the
error with its code, and leave the trust folder (the only thing outside the work folder
that verification could touch) byte for byte as it was, with no payload in the work folder.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from pathlib import Path

import pytest

from edge_min.update.bundle import (
    MAGIC,
    BundleReader,
    make_bundle,
    peek_version,
    repository_files,
    verify_bundle,
)
from edge_min.update.errors import (
    BadBundle,
    BadSignature,
    DeltaBaseMissing,
    MetadataExpired,
    RollbackRefused,
    UpdateRefused,
    WrongArch,
)
from edge_min.update.keys import KeysDir, init_keys, rotate_root
from edge_min.update.trust import Trust
from edge_min.update.verify import VerifiedUpdate, verify_from_files

NOW = time.time()
DAY = 86400.0


def elf_payload(path: Path, seed: int, size: int = 96 * 1024) -> Path:
    """An ELF-headed file of code-like bytes (compressible, with repeats), deterministic."""
    rnd = random.Random(seed)
    words = [rnd.randbytes(rnd.randint(2, 12)) for _ in range(300)]
    body = bytearray(b"\x7fELF\x02\x01\x01" + bytes(9))
    while len(body) < size:
        body += rnd.choice(words)
    path.write_bytes(bytes(body[:size]))
    return path


def changed(old: Path, new: Path) -> Path:
    """``old`` with one region replaced and a few bytes inserted: a one-module change."""
    data = old.read_bytes()
    mid = len(data) // 2
    new.write_bytes(data[:mid] + b"new module code" * 40 + data[mid + 300 :])
    return new


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeysDir:
    return init_keys(tmp_path_factory.mktemp("keys") / "k", now=NOW)


@pytest.fixture(scope="module")
def old_payload(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return elf_payload(tmp_path_factory.mktemp("payload") / "edge-min", seed=1)


@pytest.fixture(scope="module")
def full(keys: KeysDir, old_payload: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "full.emub"
    make_bundle(
        old_payload,
        version="0.2.0",
        keys=keys,
        arch="x86_64",
        now=NOW,
        expires_in=30 * DAY,
        out=out,
    )
    return out


@pytest.fixture()
def trust(keys: KeysDir, tmp_path: Path) -> Trust:
    return Trust.pin(keys.roots[0], tmp_path / "data" / "update" / "trust")


def verify(bundle: Path, trust: Trust, workdir: Path, **kw: object) -> VerifiedUpdate:
    args: dict = {"installed_version": "0.1.0", "arch": "x86_64", "now": NOW} | kw
    return verify_bundle(bundle, trust, workdir=workdir, **args)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def refused(bundle: Path, trust: Trust, tmp_path: Path, error: type, **kw: object) -> UpdateRefused:
    """Verify ``bundle``, expecting ``error``; check nothing was written but in workdir."""
    assert trust.path is not None
    before = snapshot(trust.path)
    work = tmp_path / f"work-{os.urandom(4).hex()}"
    with pytest.raises(error) as info:
        verify(bundle, trust, work, **kw)
    assert snapshot(trust.path) == before
    left = [p.name for p in work.iterdir()] if work.exists() else []
    assert not [n for n in left if not n.endswith(".part")], f"a payload was left: {left}"
    if error is not UpdateRefused:  # the sweep takes any refusal; the others, theirs
        assert info.value.code == error.code
    return info.value


def test_a_full_bundle_verifies_and_yields_the_payload(
    full: Path, trust: Trust, tmp_path: Path, old_payload: Path
) -> None:
    v = verify(full, trust, tmp_path / "work")
    assert v.payload.read_bytes() == old_payload.read_bytes()
    assert v.payload.parent == tmp_path / "work"
    assert (v.version, v.kind, v.arch, v.length) == (
        "0.2.0",
        "binary",
        "x86_64",
        old_payload.stat().st_size,
    )
    assert v.sha256 == hashlib.sha256(old_payload.read_bytes()).hexdigest()
    assert NOW + 29 * DAY < v.expires <= NOW + 30 * DAY
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == [v.payload.name]


def test_a_bundle_changed_at_any_byte_is_refused(full: Path, trust: Trust, tmp_path: Path) -> None:
    data = full.read_bytes()
    reader = BundleReader(full)
    payload_start = min(start for start, _ in reader.files.values())
    meta_end = max(start + n for name, (start, n) in reader.files.items() if name.endswith(".json"))
    positions = sorted(
        set(range(0, payload_start))
        | set(range(payload_start, meta_end, 7))
        | set(range(meta_end, len(data), 97))
        | {len(data) - 1}
    )
    assert len(positions) > 500
    codes: set[str] = set()
    for i, pos in enumerate(positions):
        bad = tmp_path / "bad.emub"
        flipped = bytearray(data)
        flipped[pos] ^= 1 << (i % 8)
        bad.write_bytes(flipped)
        codes.add(refused(bad, trust, tmp_path, UpdateRefused).code)
    # Each part of the file fails on its own check.
    assert {"bad_bundle", "bad_signature", "payload_mismatch"} <= codes


@pytest.mark.parametrize("keep", [0, 5, 11, 200, 0.5, -1])
def test_a_truncated_bundle_is_refused(
    full: Path, trust: Trust, tmp_path: Path, keep: float
) -> None:
    data = full.read_bytes()
    n = (
        int(len(data) * keep)
        if isinstance(keep, float)
        else (len(data) + keep if keep < 0 else keep)
    )
    bad = tmp_path / "cut.emub"
    bad.write_bytes(data[:n])
    err = refused(bad, trust, tmp_path, BadBundle)
    assert "truncated" in err.message or "magic" in err.message
    bad.write_bytes(data + b"\0")  # and one byte too many
    refused(bad, trust, tmp_path, BadBundle)


def test_a_bundle_signed_with_other_keys_is_refused(
    old_payload: Path, trust: Trust, tmp_path: Path
) -> None:
    other = init_keys(tmp_path / "other", now=NOW)
    out = tmp_path / "other.emub"
    make_bundle(
        old_payload, version="0.2.0", keys=other, arch="x86_64", now=NOW, expires_in=DAY, out=out
    )
    err = refused(out, trust, tmp_path, BadSignature)
    assert "not the root v1 this device trusts" in err.message
    # Served as files (no root chain to compare), the timestamp's signatures fail.
    with pytest.raises(BadSignature, match=r"timestamp.json: 0 valid signature\(s\)"):
        verify_from_files(
            repository_files(out).get,
            trust,
            installed_version=None,
            arch="x86_64",
            now=NOW,
            workdir=tmp_path / "w",
        )


def test_an_expired_bundle_is_refused(full: Path, trust: Trust, tmp_path: Path) -> None:
    err = refused(full, trust, tmp_path, MetadataExpired, now=NOW + 31 * DAY)
    assert "expired at" in err.message and "fix the clock" in err.message


def test_a_version_older_than_the_installed_one_is_refused(
    full: Path, trust: Trust, tmp_path: Path
) -> None:
    err = refused(full, trust, tmp_path, RollbackRefused, installed_version="0.10.0")
    assert "0.2.0 is older than the installed version 0.10.0" in err.message
    verify(full, trust, tmp_path / "same", installed_version="0.2.0")  # a reinstall is fine


def test_after_an_install_older_versions_and_older_metadata_are_refused(
    keys: KeysDir, old_payload: Path, full: Path, trust: Trust, tmp_path: Path
) -> None:
    newer_payload = changed(old_payload, tmp_path / "new")
    newer = tmp_path / "newer.emub"
    make_bundle(
        newer_payload, version="0.3.0", keys=keys, arch="x86_64", now=NOW, expires_in=DAY, out=newer
    )
    trust.record(verify(newer, trust, tmp_path / "w1"))
    assert trust.path is not None
    trust = Trust.load(trust.path)
    # The 0.2.0 bundle, still unexpired: refused by its old metadata versions first.
    err = refused(full, trust, tmp_path, RollbackRefused, installed_version=None)
    assert "timestamp.json: version" in err.message and "replay" in err.message
    # A fresh signing of 0.2.0 (new metadata versions): refused by the recorded version.
    again = tmp_path / "again.emub"
    make_bundle(
        old_payload, version="0.2.0", keys=keys, arch="x86_64", now=NOW, expires_in=DAY, out=again
    )
    err = refused(again, trust, tmp_path, RollbackRefused, installed_version=None)
    assert "older than the recorded version 0.3.0" in err.message


def test_a_bundle_for_another_architecture_is_refused(
    old_payload: Path, keys: KeysDir, trust: Trust, tmp_path: Path
) -> None:
    arm = tmp_path / "arm.emub"
    make_bundle(
        old_payload, version="0.2.0", keys=keys, arch="arm64", now=NOW, expires_in=DAY, out=arm
    )
    err = refused(arm, trust, tmp_path, WrongArch)
    assert "for aarch64, this device is x86_64" in err.message
    assert verify(arm, trust, tmp_path / "w", arch="aarch64").arch == "aarch64"


def test_a_delta_rebuilds_the_payload_from_the_installed_one(
    keys: KeysDir, old_payload: Path, full: Path, trust: Trust, tmp_path: Path
) -> None:
    pytest.importorskip("zstandard")  # the dev venv has it; a device without it gets full bundles
    new = changed(old_payload, tmp_path / "new")
    delta = tmp_path / "delta.emub"
    made = make_bundle(
        new,
        version="0.3.0",
        keys=keys,
        arch="x86_64",
        now=NOW,
        expires_in=DAY,
        out=delta,
        delta_from=old_payload,
    )
    assert made["encoding"] == "zstd-patch"
    assert made["bundle_length"] < 0.25 * full.stat().st_size
    v = verify(delta, trust, tmp_path / "w", base_payload=old_payload)
    assert v.payload.read_bytes() == new.read_bytes()
    # No base, or another base: the caller is told to fetch the full bundle.
    for base in (None, new):
        work = tmp_path / f"w-{base is None}"
        with pytest.raises(DeltaBaseMissing, match="fetch the full bundle"):
            verify(delta, trust, work, base_payload=base)
        assert not (work / v.payload.name).exists()
    # A full bundle ignores the base.
    assert (
        verify(full, trust, tmp_path / "w2", base_payload=new).payload.read_bytes()
        == old_payload.read_bytes()
    )


def test_a_device_on_the_old_root_follows_a_rotation(old_payload: Path, tmp_path: Path) -> None:
    keys = init_keys(tmp_path / "k", now=NOW)
    trust = Trust.pin(keys.roots[0], tmp_path / "trust")
    before = tmp_path / "before.emub"
    make_bundle(
        old_payload, version="0.2.0", keys=keys, arch="x86_64", now=NOW, expires_in=DAY, out=before
    )
    rotated = rotate_root(tmp_path / "k", now=NOW, all_roles=True)
    after = tmp_path / "after.emub"
    make_bundle(
        old_payload,
        version="0.3.0",
        keys=rotated,
        arch="x86_64",
        now=NOW,
        expires_in=DAY,
        out=after,
    )
    v = verify(after, trust, tmp_path / "w")
    assert v.root_json == rotated.roots[1]
    trust.record(v)
    assert Trust.load(tmp_path / "trust").root.version == 2
    # Bundles signed with the retired keys are no longer accepted (even a newer version).
    retired = KeysDir(
        tmp_path / "k",
        {
            r: [
                bytes.fromhex(x)
                for x in (tmp_path / "k" / "retired" / f"{r}.v1.key").read_text().split()
            ]
            for r in ("root", "targets", "snapshot", "timestamp")
        },
        rotated.roots[:1],
    )
    stale = tmp_path / "stale.emub"
    make_bundle(
        old_payload,
        version="0.4.0",
        keys=retired,
        arch="x86_64",
        now=NOW,
        expires_in=DAY,
        out=stale,
    )
    refused(stale, Trust.load(tmp_path / "trust"), tmp_path, BadSignature)
    del before


def test_the_same_files_verify_when_served(
    full: Path, trust: Trust, tmp_path: Path, old_payload: Path
) -> None:
    files = repository_files(full)
    assert {"1.root.json", "timestamp.json", "snapshot.json", "targets.json"} <= set(files)
    assert [n for n in files if n.startswith("targets/")] == [
        "targets/edge-min-0.2.0-x86_64.bin.xz"
    ]
    fetched: list[str] = []

    def fetch(name: str) -> bytes | None:
        fetched.append(name)
        return files.get(name)

    v = verify_from_files(
        fetch, trust, installed_version=None, arch="x86_64", now=NOW, workdir=tmp_path / "w"
    )
    assert v.payload.read_bytes() == old_payload.read_bytes()
    assert fetched[:2] == ["2.root.json", "timestamp.json"]
    # A served file swapped for another bundle's is refused like a changed byte.
    files["snapshot.json"] = files["snapshot.json"].replace(b'"version":', b'"version": ', 1)
    with pytest.raises(UpdateRefused):
        verify_from_files(
            files.get,
            trust,
            installed_version=None,
            arch="x86_64",
            now=NOW,
            workdir=tmp_path / "w3",
        )


def test_peek_version_reads_the_header_only_and_never_guesses(full: Path) -> None:
    data = full.read_bytes()
    assert peek_version(data) == "0.2.0"
    assert peek_version(b"not a bundle") is None
    assert peek_version(data[:20]) is None  # the header is cut short
    assert peek_version(MAGIC + b"\x00\x00\x00\x05{bad}") is None
