"""A signed bundle into the slots (``edge_min.update.install``) on real files: what is refused
leaves the slots as they were; what commits is recorded in the trust."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from edge_min.clock import VirtualClock
from edge_min.errors import UsageError
from edge_min.update.bundle import make_bundle
from edge_min.update.errors import BadBundle, BadSignature, RollbackRefused, UpdateRefused
from edge_min.update.install import committed_version, install_bundle, record_committed
from edge_min.update.installer import Installer
from edge_min.update.keys import KeysDir, init_keys
from edge_min.update.trust import Trust, trust_dir

NOW = time.time()
DAY = 86400.0


def elf(path: Path, tag: bytes) -> Path:
    path.write_bytes(b"\x7fELF" + tag * 4096)
    return path


@pytest.fixture
def keys(tmp_path: Path) -> KeysDir:
    return init_keys(tmp_path / "keys", now=NOW)


def bundle(keys: KeysDir, tmp: Path, version: str) -> Path:
    out = tmp / f"{version}.emub"
    payload = elf(tmp / f"payload-{version}", version.encode())
    make_bundle(
        payload,
        version=version,
        keys=keys,
        arch="x86_64",
        now=NOW,
        expires_in=30 * DAY,
        out=out,
    )
    return out


def device(tmp: Path, keys: KeysDir) -> tuple[Path, Path]:
    root, data = tmp / "opt", tmp / "data"
    Trust.pin((keys.path / "root.json").read_bytes(), trust_dir(data))
    return root, data


def install(b: Path, root: Path, data: Path) -> tuple[str, object]:
    return install_bundle(b, root=root, data_dir=data, clock=VirtualClock(NOW), arch="x86_64")


def test_without_a_pinned_root_nothing_is_installed(tmp_path: Path, keys: KeysDir) -> None:
    with pytest.raises(UsageError) as err:
        install_bundle(
            bundle(keys, tmp_path, "1.0.0"),
            root=tmp_path / "opt",
            data_dir=tmp_path / "data",
            clock=VirtualClock(NOW),
        )
    assert "edge-min update trust" in err.value.message
    assert not (tmp_path / "opt" / "slots").exists()


def test_a_bundle_goes_on_trial_and_its_commit_is_recorded(tmp_path: Path, keys: KeysDir) -> None:
    root, data = device(tmp_path, keys)
    slot, _ = install(bundle(keys, tmp_path, "1.0.0"), root, data)
    state = Installer(root, VirtualClock(NOW)).state()
    assert state["trying"]["slot"] == slot and state["slots"][slot]["version"] == "1.0.0"
    assert not (root / "staging").exists()  # the work folder is gone
    assert committed_version(root) is None  # on trial, not committed
    Installer(root, VirtualClock(NOW)).commit(slot)
    assert record_committed(root, slot, data) == "1.0.0"
    assert committed_version(root) == "1.0.0"
    assert Trust.load(trust_dir(data)).installed_version == "1.0.0"
    assert record_committed(root, slot, data) is None  # recorded once


@pytest.mark.parametrize("how", ["flipped", "truncated", "other keys", "older"])
def test_a_refused_bundle_writes_no_slot(tmp_path: Path, keys: KeysDir, how: str) -> None:
    root, data = device(tmp_path, keys)
    slot, _ = install(bundle(keys, tmp_path, "2.0.0"), root, data)
    Installer(root, VirtualClock(NOW)).commit(slot)
    record_committed(root, slot, data)
    before = (root / "update-state.json").read_bytes()
    if how == "older":
        bad, error = bundle(keys, tmp_path, "1.5.0"), RollbackRefused
    elif how == "other keys":
        other = init_keys(tmp_path / "other-keys", now=NOW)
        bad, error = bundle(other, tmp_path, "3.0.0"), BadSignature
    else:
        bad = bundle(keys, tmp_path, "3.0.0")
        data_bytes = bytearray(bad.read_bytes())
        if how == "flipped":
            data_bytes[len(data_bytes) // 2] ^= 0x01
        else:
            del data_bytes[-100:]
        bad.write_bytes(bytes(data_bytes))
        error = UpdateRefused
    with pytest.raises(error) as err:
        install(bad, root, data)
    assert isinstance(err.value, (UpdateRefused, BadBundle))
    assert (root / "update-state.json").read_bytes() == before  # no slot was touched
    assert not (root / "staging").exists()


def test_a_commit_whose_trust_record_was_cut_off_is_recorded_at_the_next_start(
    tmp_path: Path, keys: KeysDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge_min.config import parse_config
    from edge_min.runtime import Paths, Runtime

    root, data = device(tmp_path, keys)
    slot, _ = install(bundle(keys, tmp_path, "1.0.0"), root, data)
    Installer(root, VirtualClock(NOW)).commit(slot)  # a power cut before record_committed
    assert Trust.load(trust_dir(data)).installed_version is None
    monkeypatch.setenv("EDGE_MIN_UPDATE_ROOT", str(root))
    monkeypatch.setenv("EDGE_MIN_UPDATE_SLOT", slot)
    monkeypatch.setenv("EDGE_MIN_UPDATE_TRY", "0")
    config = parse_config({"runtime": {"offline_mode": "always"}}, source="test")
    Runtime(config, Paths.resolve(config, data)).open().close()
    assert Trust.load(trust_dir(data)).installed_version == "1.0.0"


def package_tar(path: Path, tag: str) -> Path:
    """A from-source package as the installer takes it: edge-min, a module, SHA256SUMS."""
    import hashlib
    import io
    import tarfile

    files = {"edge-min": b"#!/bin/sh\nexit 0\n", "lib/module.py": tag.encode() * 5000}
    sums = "".join(f"{hashlib.sha256(b).hexdigest()}  {n}\n" for n, b in files.items())
    with tarfile.open(path, "w") as tar:
        for name, body in {**files, "SHA256SUMS": sums.encode()}.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(body), 0o755
            tar.addfile(info, io.BytesIO(body))
    return path


def test_a_package_delta_applies_to_the_tar_the_active_slot_came_from(
    tmp_path: Path, keys: KeysDir
) -> None:
    root, data = device(tmp_path, keys)
    old = package_tar(tmp_path / "v1.tar", "one ")
    new = package_tar(tmp_path / "v2.tar", "two ")
    full, delta = tmp_path / "full.emub", tmp_path / "delta.emub"
    common = {"keys": keys, "arch": "x86_64", "now": NOW, "expires_in": 30 * DAY}
    make_bundle(old, version="1.0.0", out=full, **common)  # type: ignore[arg-type]
    make_bundle(new, version="2.0.0", out=delta, delta_from=old, **common)  # type: ignore[arg-type]
    slot, _ = install(full, root, data)
    Installer(root, VirtualClock(NOW)).commit(slot)
    assert (root / "slots" / f"{slot}.payload.tar").read_bytes() == old.read_bytes()
    other, verified = install(delta, root, data)  # rebuilt from the kept tar, then checked
    assert other != slot and verified.version == "2.0.0"  # type: ignore[attr-defined]
    assert Installer(root, VirtualClock(NOW)).state()["trying"]["slot"] == other


def test_a_package_installed_by_hand_is_the_base_of_the_next_delta(
    tmp_path: Path, keys: KeysDir
) -> None:
    # setup.sh's first install (install-payload, a .tar.gz, no bundle) keeps the package's
    # tar too, so the first delta bundle after it applies instead of delta_base_missing.
    import gzip
    import subprocess
    import sys

    root, data = device(tmp_path, keys)
    old = package_tar(tmp_path / "v1.tar", "one ")
    gz = tmp_path / "v1.tar.gz"
    gz.write_bytes(gzip.compress(old.read_bytes()))
    new = package_tar(tmp_path / "v2.tar", "two ")
    delta = tmp_path / "delta.emub"
    common = {"keys": keys, "arch": "x86_64", "now": NOW, "expires_in": 30 * DAY}
    make_bundle(new, version="2.0.0", out=delta, delta_from=gz, **common)  # type: ignore[arg-type]
    done = subprocess.run(
        [sys.executable, "-m", "edge_min.cli", "--data-dir", str(data), "update",
         "install-payload", str(gz), "--version", "1.0.0", "--commit", "--root", str(root)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (root / "slots" / "a.payload.tar").read_bytes() == old.read_bytes()
    other, verified = install(delta, root, data)
    assert other == "b" and verified.version == "2.0.0"  # type: ignore[attr-defined]
