"""The signed metadata: canonical files, thresholds, expiry, root rotation, the trust state."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import pytest

from edge_min.security import ed25519
from edge_min.update import metadata as md
from edge_min.update.errors import (
    BadBundle,
    BadSignature,
    MetadataExpired,
    RollbackRefused,
    UpdateRefused,
)
from edge_min.update.keys import KeysDir, init_keys, root_signed, rotate_root
from edge_min.update.trust import Trust
from edge_min.update.verify import VerifiedUpdate, version_key

NOW = time.time()


def seeds(n: int) -> list[bytes]:
    return [secrets.token_bytes(32) for _ in range(n)]


def a_root(version: int, role_seeds: dict[str, list[bytes]], thresholds: dict[str, int]) -> dict:
    return root_signed(version, NOW + 3600, role_seeds, thresholds)


def test_a_file_is_canonical_json_and_an_edited_one_is_refused() -> None:
    s = seeds(1)
    raw = md.sign({"_type": "timestamp", "version": 1, "expires": "2030-01-01T00:00:00Z"}, s)
    assert raw == md.canonical(json.loads(raw))
    parsed = md.parse(raw, "timestamp.json", "timestamp")
    assert parsed.version == 1 and len(parsed.signatures) == 1
    spaced = json.dumps(json.loads(raw), indent=1).encode()
    with pytest.raises(BadBundle, match="canonical"):
        md.parse(spaced, "timestamp.json", "timestamp")
    with pytest.raises(BadBundle, match="_type"):
        md.parse(raw, "timestamp.json", "snapshot")
    # An upper-case spelling of the same signature bytes is another file: refused.
    doc = json.loads(raw)
    doc["signatures"][0]["sig"] = doc["signatures"][0]["sig"].upper()
    with pytest.raises(BadBundle, match="lower-case hex"):
        md.parse(md.canonical(doc), "timestamp.json", "timestamp")


def test_threshold_counts_distinct_valid_signatures_by_the_roles_keys() -> None:
    root_seeds = seeds(3)
    role_seeds = {
        "root": root_seeds,
        "targets": seeds(1),
        "snapshot": seeds(1),
        "timestamp": seeds(1),
    }
    signed = a_root(1, role_seeds, {"root": 2})
    root = md.Root.from_signed(signed, b"", "root.json")
    assert root.roles["root"].threshold == 2 and len(root.roles["root"].keys) == 3
    one = md.parse(md.sign(signed, root_seeds[:1]), "root.json", "root")
    with pytest.raises(BadSignature, match=r"1 valid signature.*2 required"):
        md.verify_role(one, root.roles["root"], by="test")
    two = md.parse(md.sign(signed, root_seeds[1:]), "root.json", "root")
    md.verify_role(two, root.roles["root"], by="test")
    # Signatures by keys the role does not name do not count, however many.
    others = md.parse(md.sign(signed, [root_seeds[0], *seeds(4)]), "root.json", "root")
    with pytest.raises(BadSignature):
        md.verify_role(others, root.roles["root"], by="test")
    # A signature moved to another key id, or over other bytes, does not count either.
    doc = json.loads(md.sign(signed, root_seeds[:2]))
    doc["signed"]["version"] = 2
    with pytest.raises(BadSignature):
        md.verify_role(md.parse(md.canonical(doc), "root.json", "root"), root.roles["root"], by="t")
    # No signatures at all.
    with pytest.raises(BadSignature, match="0 valid"):
        md.verify_role(
            md.parse(md.sign(signed, []), "root.json", "root"), root.roles["root"], by="t"
        )


def test_a_threshold_no_keys_can_meet_is_refused() -> None:
    role_seeds = {r: seeds(1) for r in md.ROLES}
    with pytest.raises(BadBundle, match="threshold 2 is more than its 1 keys"):
        md.Root.from_signed(a_root(1, role_seeds, {"targets": 2}), b"", "root.json")


def test_expired_metadata_is_refused() -> None:
    s = seeds(1)
    raw = md.sign({"_type": "targets", "version": 1, "expires": md.format_expires(NOW + 60)}, s)
    parsed = md.parse(raw, "targets.json", "targets")
    assert md.check_fresh(parsed, NOW) == pytest.approx(NOW + 60, abs=1)
    with pytest.raises(MetadataExpired, match=r"targets\.json: expired"):
        md.check_fresh(parsed, NOW + 61)


def test_root_rotation_needs_the_old_threshold_and_its_own(tmp_path: Path) -> None:
    keys = init_keys(tmp_path / "k", now=NOW)
    old_root = md.load_root(keys.roots[0])
    rotated = rotate_root(tmp_path / "k", now=NOW)
    assert len(rotated.roots) == 2 and (tmp_path / "k" / "retired" / "root.v1.key").exists()
    new = md.verify_root_update(old_root, rotated.roots[1], "2.root.json")
    assert new.version == 2 and new.roles["root"].keys != old_root.roles["root"].keys
    assert new.roles["targets"].keys == old_root.roles["targets"].keys  # only root rotated
    signed = json.loads(rotated.roots[1])["signed"]
    # Signed by the new root keys alone (an attacker holding a new key): refused.
    with pytest.raises(BadSignature, match="the trusted root v1"):
        md.verify_root_update(old_root, md.sign(signed, rotated.seeds["root"]), "2.root.json")
    # Signed by the old root keys alone (the new root cannot sign for itself): refused.
    with pytest.raises(BadSignature, match="the new root v2 itself"):
        md.verify_root_update(old_root, md.sign(signed, keys.seeds["root"]), "2.root.json")
    # Versions go one at a time, and never back.
    with pytest.raises(BadBundle, match="one version at a time"):
        md.verify_root_update(md.Root(0, NOW, old_root.roles, b""), rotated.roots[1], "2.root.json")
    with pytest.raises(RollbackRefused):
        md.verify_root_update(new, rotated.roots[1], "2.root.json")


def test_keys_are_private_files_and_never_overwritten(tmp_path: Path) -> None:
    init_keys(tmp_path / "k", now=NOW, root_keys=3, root_threshold=2)
    for role in md.ROLES:
        assert (tmp_path / "k" / f"{role}.key").stat().st_mode & 0o777 == 0o600
    loaded = KeysDir.load(tmp_path / "k")
    assert len(loaded.seeds["root"]) == 3 and loaded.root.roles["root"].threshold == 2
    from edge_min.update.errors import SigningKeysError

    with pytest.raises(SigningKeysError, match="never overwritten"):
        init_keys(tmp_path / "k", now=NOW)
    with pytest.raises(SigningKeysError, match="keys init"):
        KeysDir.load(tmp_path / "none")


def test_python_tuf_reads_and_verifies_the_files(tmp_path: Path) -> None:
    # python-tuf as an oracle: our files are TUF metadata its own verifier accepts.
    from tuf.api import metadata as tuf_md

    keys = init_keys(tmp_path / "k", now=NOW)
    root = tuf_md.Metadata.from_bytes(keys.roots[0])
    root.verify_delegate("root", root)
    targets_signed = {
        "_type": "targets",
        "spec_version": md.SPEC_VERSION,
        "version": 1,
        "expires": md.format_expires(NOW + 60),
        "targets": {"a.bin": {"length": 3, "hashes": {"sha256": "00" * 32}}},
    }
    targets = tuf_md.Metadata.from_bytes(md.sign(targets_signed, keys.seeds["targets"]))
    root.verify_delegate("targets", targets)
    forged = tuf_md.Metadata.from_bytes(md.sign(targets_signed, seeds(1)))
    from tuf.api.exceptions import UnsignedMetadataError

    with pytest.raises(UnsignedMetadataError, match="signed by 0/1 keys"):
        root.verify_delegate("targets", forged)


def test_versions_sort_numerically_with_pre_releases_first() -> None:
    ordered = ["0.9.0", "0.10.0.dev1", "0.10.0a1", "0.10.0rc2", "0.10.0", "0.10.1", "1.0"]
    assert sorted(ordered, key=version_key) == ordered
    assert version_key("1.0") == version_key("1.0.0")
    with pytest.raises(ValueError, match=r"not like 1\.2\.3"):
        version_key("latest")


def test_trust_is_pinned_once_loaded_and_records_installs(tmp_path: Path) -> None:
    keys = init_keys(tmp_path / "k", now=NOW)
    folder = tmp_path / "data" / "update" / "trust"
    with pytest.raises(UpdateRefused, match="no trusted root"):
        Trust.load(folder)
    trust = Trust.pin(keys.roots[0], folder)
    with pytest.raises(UpdateRefused, match="already trusts a root"):
        Trust.pin(keys.roots[0], folder)
    rotated = rotate_root(tmp_path / "k", now=NOW)
    verified = VerifiedUpdate(
        version="0.2.0",
        payload=tmp_path / "p",
        sha256="ab" * 32,
        length=1,
        kind="binary",
        arch="x86_64",
        expires=NOW + 60,
        root_json=rotated.roots[1],
        meta_versions={"timestamp": 5, "snapshot": 4, "targets": 3},
    )
    trust.record(verified)
    again = Trust.load(folder)
    assert again.root.version == 2 and again.installed_version == "0.2.0"
    assert (again.seen("timestamp"), again.seen("snapshot"), again.seen("targets")) == (5, 4, 3)
    assert (folder / "root.json").read_bytes() == rotated.roots[1]
    # A root that does not verify with its own keys is never pinned.
    doc = json.loads(keys.roots[0])
    doc["signatures"] = []
    with pytest.raises(BadSignature):
        Trust.pin(md.canonical(doc))


def test_reference_verifier_accepts_what_the_library_signs() -> None:
    # Devices without the crypto extra verify in pure Python: the same answers.
    s = seeds(1)[0]
    message = md.canonical({"a": 1})
    sig = ed25519.sign(s, message)
    assert ed25519.reference_verify(ed25519.public_key(s), message, sig)
    assert not ed25519.reference_verify(ed25519.public_key(s), message + b"x", sig)
