"""Attestation quotes, keys, policies and boot facts: the bad inputs kept as fixtures."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import cbor2
import pytest

from edge_min.platform.boot_facts import EFI_GLOBAL, IMA_LOG, read_boot_facts
from edge_min.security.quote import (
    BadPolicy,
    BadQuote,
    baseline,
    build_quote,
    compare,
    load_attestation_key,
    parse_policy,
    parse_quote,
    verify_signature,
)

NONCE = "ab" * 32
SHA = hashlib.sha256(b"x").hexdigest()
OTHER = hashlib.sha256(b"y").hexdigest()


def quote_bytes(tmp_path: Path, **over: object) -> bytes:
    key = load_attestation_key(tmp_path)
    fields: dict[str, object] = {
        "device_id": "gw-1",
        "nonce": NONCE,
        "measurements": {"fs": {"a": SHA}},
        "boot": {"cmdline": "ro"},
        "time": 1.5,
    }
    fields.update(over)
    return build_quote(key, **fields)  # type: ignore[arg-type]


def test_the_key_is_made_once_0600_and_signs_verifiably(tmp_path: Path) -> None:
    key = load_attestation_key(tmp_path)
    path = tmp_path / "keys" / "attestation.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(path.read_bytes()) == 32
    assert load_attestation_key(tmp_path) == key  # never replaced
    sig = key.sign(b"data")
    assert verify_signature(key.public, b"data", sig)
    assert not verify_signature(key.public, b"datA", sig)


def test_a_short_key_file_is_refused_with_the_fix(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "attestation.key").write_bytes(b"short")
    with pytest.raises(Exception, match="not a 32-byte Ed25519 seed; move it away"):
        load_attestation_key(tmp_path)


def test_a_quote_round_trips_and_its_body_is_canonical(tmp_path: Path) -> None:
    q = parse_quote(quote_bytes(tmp_path))
    assert (q.device_id, q.nonce, q.time) == ("gw-1", NONCE, 1.5)
    assert q.measurements == {"fs": {"a": SHA}} and q.signed()
    assert q.body == cbor2.dumps(cbor2.loads(q.body), canonical=True)


def test_an_altered_body_no_longer_verifies(tmp_path: Path) -> None:
    frame = cbor2.loads(quote_bytes(tmp_path))
    body = cbor2.loads(frame["body"])
    body["measurements"] = {"fs": {"a": OTHER}}
    frame["body"] = cbor2.dumps(body, canonical=True)
    assert not parse_quote(cbor2.dumps(frame)).signed()


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        ({"v": 2}, "v", "version 2 is not supported"),
        ({"alg": "rsa"}, "alg", "'rsa' is not supported"),
        ({"key": b"short"}, "key", "32-byte Ed25519 public key"),
        ({"sig": 5}, "sig", "must be bytes, not int"),
        ({"body": b"\xff"}, "body", "is not CBOR"),
        ({"body": cbor2.dumps([1])}, "body", "must be a CBOR map, not list"),
    ],
)
def test_bad_frames_name_the_field(
    tmp_path: Path, change: dict[str, object], field: str, says: str
) -> None:
    frame = cbor2.loads(quote_bytes(tmp_path))
    frame.update(change)
    with pytest.raises(BadQuote, match=f"quote field '{field}': .*{says}") as err:
        parse_quote(cbor2.dumps(frame))
    assert err.value.field == field and err.value.code == "bad_quote"


@pytest.mark.parametrize(
    ("body_change", "field", "says"),
    [
        ({"nonce": "xyz"}, "body.nonce", "64 hex digits"),
        ({"device_id": None}, "body.device_id", "must be str, not NoneType"),
        ({"measurements": {"fs": {"a": "nothex"}}}, "body.measurements.fs.a", "sha256"),
        ({"measurements": {"fs": ["a"]}}, "body.measurements.fs", "must be a map, not list"),
        ({"boot": "ro"}, "body.boot", "must be dict, not str"),
        ({"time": True}, "body.time", "must be int or float, not bool"),
    ],
)
def test_bad_bodies_name_the_field(
    tmp_path: Path, body_change: dict[str, object], field: str, says: str
) -> None:
    frame = cbor2.loads(quote_bytes(tmp_path))
    body = cbor2.loads(frame["body"])
    body.update(body_change)
    frame["body"] = cbor2.dumps(body)
    with pytest.raises(BadQuote, match=f"quote field '{field}': .*{says}"):
        parse_quote(cbor2.dumps(frame))


def test_measurements_are_required_even_if_empty(tmp_path: Path) -> None:
    assert parse_quote(quote_bytes(tmp_path, measurements={})).measurements == {}
    frame = cbor2.loads(quote_bytes(tmp_path))
    body = cbor2.loads(frame["body"])
    del body["measurements"]
    frame["body"] = cbor2.dumps(body)
    with pytest.raises(BadQuote, match=r"'body\.measurements': is missing"):
        parse_quote(cbor2.dumps(frame))


def test_policies_compare_item_for_item() -> None:
    policy = baseline({"fs": {"a": SHA, "b": SHA}}, {"cmdline": "ro", "ima": {"n": 1}})
    assert policy.boot == {"cmdline": ("ro",)}  # the IMA log grows: never a baseline
    assert compare(policy, {"fs": {"a": SHA, "b": SHA}, "other": {}}, {"cmdline": "ro"}) == []
    reasons = compare(policy, {"fs": {"a": OTHER, "c": SHA}}, {"cmdline": "rw"})
    assert reasons == [
        "fs: changed a",
        "fs: missing b",
        "fs: unexpected c",
        "boot cmdline: 'rw' is not accepted",
    ]
    assert compare(policy, {}, {"cmdline": "ro"}) == ["fs: not measured"]
    # Several accepted values (a rollout), and the JSON form round-trips.
    two = parse_policy({"measurements": {"fs": {"a": [SHA, OTHER]}}, "max_age": 60})
    assert compare(two, {"fs": {"a": OTHER}}, {}) == [] and two.max_age == 60.0
    assert parse_policy(two.to_dict()) == two


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ([], "must be an object"),
        ({"pcrs": {}}, r"unknown field\(s\) \['pcrs'\]"),
        ({"measurements": {"fs": {"a": "nope"}}}, "measurements.fs.a must be a sha256"),
        ({"boot": {"bios": "x"}}, r"unknown fact\(s\) \['bios'\]"),
        ({"max_age": 0}, "max_age must be a positive number"),
    ],
)
def test_bad_policies_name_the_field(raw: object, says: str) -> None:
    with pytest.raises(BadPolicy, match=says):
        parse_policy(raw)


def test_boot_facts_from_a_fake_host(tmp_path: Path) -> None:
    proc, sys_ = tmp_path / "proc", tmp_path / "sys"
    proc.mkdir()
    (proc / "cmdline").write_bytes(b"BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro\n")
    efivars = sys_ / "firmware" / "efi" / "efivars"
    efivars.mkdir(parents=True)
    (efivars / f"SecureBoot-{EFI_GLOBAL}").write_bytes(b"\x06\x00\x00\x00\x01")
    ima = sys_ / IMA_LOG
    ima.parent.mkdir(parents=True)
    log = (
        "10 " + "1" * 40 + " ima-ng sha256:" + "2" * 64 + " boot_aggregate\n"
        "10 " + "3" * 40 + " ima-ng sha256:" + "4" * 64 + " /usr/bin/python3\n"
    )
    ima.write_text(log)
    facts = read_boot_facts(proc, sys_)
    assert facts["cmdline"] == "BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro"
    assert facts["secure_boot"] == "enabled"
    assert facts["ima"] == {
        "entries": 2,
        "sha256": hashlib.sha256(log.encode()).hexdigest(),
        "boot_aggregate": "1" * 40,
    }
    assert facts["tpm"] is None and facts["kernel"]
    (efivars / f"SecureBoot-{EFI_GLOBAL}").write_bytes(b"\x06\x00\x00\x00\x00")
    assert read_boot_facts(proc, sys_)["secure_boot"] == "disabled"
    # A host that shows none of it: every fact unknown, nothing guessed.
    bare = read_boot_facts(tmp_path / "none", tmp_path / "none")
    assert {k: bare[k] for k in ("cmdline", "secure_boot", "ima", "tpm")} == dict.fromkeys(
        ("cmdline", "secure_boot", "ima", "tpm")
    )
