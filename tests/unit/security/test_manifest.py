"""The signed program manifest and its Ed25519 signatures: good, tampered, foreign, missing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from edge_min.platform.procfs import parse_cpu_model, read_hardware_facts
from edge_min.security import ed25519
from edge_min.security.manifest import (
    ManifestInvalid,
    ManifestMissing,
    Program,
    load_build_key,
    read_manifest,
    write_manifest,
)
from edge_min.security.measure import differences, measure_program


def test_the_reference_verifier_agrees_with_the_libraries() -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    for size in (0, 1, 64, 1000):
        seed, message = os.urandom(32), os.urandom(size)
        key = Ed25519PrivateKey.from_private_bytes(seed)
        pub = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        sig = key.sign(message)
        assert ed25519.public_key(seed) == pub and ed25519.sign(seed, message) == sig
        assert ed25519.reference_verify(pub, message, sig)
        assert ed25519.verify(pub, message, sig)
        bad = bytearray(sig)
        bad[5] ^= 1
        for args in (
            (pub, message + b"x", sig),  # another message
            (pub, message, bytes(bad)),  # a flipped bit
            (ed25519.public_key(os.urandom(32)), message, sig),  # another key
            (pub, message, sig[:63]),  # truncated
        ):
            assert not ed25519.reference_verify(*args)
            assert not ed25519.verify(*args)


def program(tmp_path: Path) -> Program:
    root = tmp_path / "edge_min"
    (root / "sub").mkdir(parents=True)
    (root / "a.py").write_text("A = 1\n")
    (root / "sub" / "b.yaml").write_text("b: 2\n")
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    return Program("package", root)


def test_a_written_manifest_verifies_and_finds_a_changed_file(tmp_path: Path) -> None:
    prog = program(tmp_path)
    seed = load_build_key(tmp_path / "key")
    assert oct((tmp_path / "key").stat().st_mode & 0o777) == "0o600"
    path = write_manifest(prog, seed, version="1", created_at="2024-01-01T00:00:00Z")
    manifest = read_manifest(path, frozenset({ed25519.public_key(seed).hex()}))
    assert set(manifest.files) == {"a.py", "sub/b.yaml"}  # no __pycache__, not itself
    assert differences(manifest.files, measure_program(prog.files())) == []
    (prog.root / "a.py").write_text("A = 2\n")
    (prog.root / "c.py").write_text("")
    (prog.root / "sub" / "b.yaml").unlink()
    assert differences(manifest.files, measure_program(prog.files())) == [
        "changed: a.py",
        "added: c.py",
        "missing: sub/b.yaml",
    ]


def test_an_edited_manifest_or_a_foreign_signer_is_refused(tmp_path: Path) -> None:
    prog = program(tmp_path)
    seed = load_build_key(tmp_path / "key")
    path = write_manifest(prog, seed, version="1", created_at="t")
    good = path.read_text()
    body = json.loads(good)
    body["files"]["a.py"] = "0" * 64  # the attacker updates the digest of a file they changed
    path.write_text(json.dumps(body))
    with pytest.raises(ManifestInvalid, match="signature does not verify"):
        read_manifest(path)
    path.write_text(good[:-40])
    with pytest.raises(ManifestInvalid, match="malformed"):
        read_manifest(path)
    write_manifest(prog, os.urandom(32), version="1", created_at="t")  # re-signed by another key
    with pytest.raises(ManifestInvalid, match="not a trusted build key"):
        read_manifest(path, frozenset({ed25519.public_key(seed).hex()}))
    path.unlink()
    with pytest.raises(ManifestMissing, match="edge-min security manifest --write"):
        read_manifest(path)


def test_hardware_facts_come_from_the_host_files(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "machine-id").write_text("abc123\n")
    dmi = tmp_path / "sys" / "class" / "dmi" / "id"
    dmi.mkdir(parents=True)
    (dmi / "product_name").write_text("Gateway 3000\n")
    for iface, mac in (("lo", "00:00:00:00:00:00"), ("eth0", "02:aa:bb:cc:dd:ee")):
        (tmp_path / "sys" / "class" / "net" / iface).mkdir(parents=True)
        (tmp_path / "sys" / "class" / "net" / iface / "address").write_text(mac + "\n")
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "cpuinfo").write_text("processor\t: 0\nmodel name\t: Test CPU @ 2GHz\n")
    facts = read_hardware_facts(tmp_path / "proc", tmp_path / "sys", tmp_path / "etc")
    assert facts == {
        "machine_id": "abc123",
        "dmi_product_name": "Gateway 3000",  # no product_serial: unreadable is left out
        "cpu_model": "Test CPU @ 2GHz",
        "mac:eth0": "02:aa:bb:cc:dd:ee",
    }
    assert parse_cpu_model("Processor\t: ARMv7\nHardware\t: BCM2835\n") == "BCM2835"


def test_a_compiled_program_is_the_one_file_its_launcher_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The launcher execs the program in its unpack directory (sys.argv[0] is there); the
    # file built, signed and given a manifest is the one file, named in EDGE_MIN_ONEFILE.
    import sys

    from edge_min.security.manifest import ONEFILE_ENV, this_program

    onefile = tmp_path / "edge-min-linux-x86_64"
    onefile.write_bytes(b"\x7fELF")
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "argv", [str(tmp_path / "unpacked" / onefile.name)])
    monkeypatch.setenv(ONEFILE_ENV, str(onefile))
    program = this_program()
    assert (program.kind, program.root) == ("binary", onefile)
    assert program.manifest_path == tmp_path / "edge-min-linux-x86_64.manifest.json"
    monkeypatch.delenv(ONEFILE_ENV)  # started without the launcher: its own path
    assert this_program().root == tmp_path / "unpacked" / onefile.name
