"""Deltas between two gateway binaries (the ``zstd-onefile`` encoding), made and applied.

The binaries are real files of ``build/onefile.py``'s ``pack()`` from a tiny folder, the
new one with one module changed. What must hold: the bundle maker picks the encoding by
itself and refuses a binary it cannot rebuild; the device rebuilds the signed bytes; and
every way a device cannot (another base, another zstd named in the delta's header, a zstd
that compresses otherwise) is ``DeltaBaseMissing``, which takes the full payload where
the repository has it, with nothing left in the work folder or written to a slot.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edge_min.clock import VirtualClock
from edge_min.update import metadata as md
from edge_min.update import onefile
from edge_min.update.bundle import BundleReader, make_bundle, repository_files
from edge_min.update.errors import DeltaBaseMissing, PayloadMismatch
from edge_min.update.install import install_bundle
from edge_min.update.installer import Installer
from edge_min.update.keys import KeysDir, init_keys
from edge_min.update.slots import program
from edge_min.update.trust import Trust, trust_dir
from edge_min.update.verify import verify_from_files
from tests.unit.update.test_bundle import DAY, NOW, verify
from tests.unit.update.test_onefile import packed, signing

pytest.importorskip("zstandard")
MODULE_OLD = "def size():\n    return 'a size such as 512MB'\n" * 50
MODULE_NEW = MODULE_OLD.replace("512MB", "512MB or 2GB", 1)


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The key the binaries are signed with (nothing here starts them)."""
    return signing.development_key(tmp_path_factory.mktemp("signing") / "k.pem")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeysDir:
    return init_keys(tmp_path_factory.mktemp("keys") / "k", now=NOW)


@pytest.fixture(scope="module")
def binaries(tmp_path_factory: pytest.TempPathFactory, key: Any) -> tuple[Path, Path]:
    old = packed(tmp_path_factory.mktemp("old"), key, MODULE_OLD)
    new = packed(tmp_path_factory.mktemp("new"), key, MODULE_NEW)
    return old, new


def bundle(keys: KeysDir, payload: Path, out: Path, version: str, **kw: Any) -> dict[str, Any]:
    common = {"arch": "x86_64", "now": NOW, "expires_in": DAY}
    return make_bundle(payload, version=version, keys=keys, out=out, **common, **kw)


@pytest.fixture(scope="module")
def bundles(
    keys: KeysDir, binaries: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """The full bundle of the new binary, and its delta from the old one."""
    old, new = binaries
    tmp = tmp_path_factory.mktemp("bundles")
    bundle(keys, new, tmp / "full.emub", "2.0.0")
    made = bundle(keys, new, tmp / "delta.emub", "2.0.0", delta_from=old)
    assert made["encoding"] == "zstd-onefile"
    return tmp / "full.emub", tmp / "delta.emub"


@pytest.fixture()
def trust(keys: KeysDir, tmp_path: Path) -> Trust:
    return Trust.pin(keys.roots[0], tmp_path / "trust")


def test_a_onefile_delta_rebuilds_the_new_binary(
    bundles: tuple[Path, Path], binaries: tuple[Path, Path], trust: Trust, tmp_path: Path
) -> None:
    full, delta = bundles
    old, new = binaries
    assert delta.stat().st_size < 0.2 * full.stat().st_size
    reader = BundleReader(delta)
    [file] = [n for n in reader.files if n.startswith("targets/")]
    assert file.endswith(".onefile.zst")
    header = reader.read(file)[:200]
    assert header.startswith(b"EMOFD1\n\0") and onefile.zstd_version().encode() in header
    work = tmp_path / "w"
    v = verify(delta, trust, work, base_payload=old)
    assert v.payload.read_bytes() == new.read_bytes()
    assert sorted(p.name for p in work.iterdir()) == [v.payload.name]  # nothing else left


def test_a_plain_elf_still_gets_the_plain_delta(keys: KeysDir, tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    old.write_bytes(Path("/bin/true").read_bytes())
    new.write_bytes(old.read_bytes() + b"\0changed\0")
    made = bundle(keys, new, tmp_path / "d.emub", "2.0.0", delta_from=old)
    assert made["encoding"] == "zstd-patch"


def test_another_base_is_told_to_fetch_the_full_bundle(
    bundles: tuple[Path, Path], binaries: tuple[Path, Path], trust: Trust, tmp_path: Path
) -> None:
    full, delta = bundles
    old, new = binaries
    for i, base in enumerate((new, Path("/bin/true"), None)):
        work = tmp_path / f"w{i}"
        with pytest.raises(DeltaBaseMissing, match="fetch the full bundle"):
            verify(delta, trust, work, base_payload=base)
        assert not [p for p in work.glob("*") if not p.name.endswith(".part")]
    # ... and the full bundle is what it takes instead.
    assert verify(full, trust, tmp_path / "f", base_payload=old).payload.read_bytes() == (
        new.read_bytes()
    )


def test_a_delta_naming_another_zstd_is_refused_before_any_work(
    keys: KeysDir,
    binaries: tuple[Path, Path],
    trust: Trust,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old, new = binaries
    with monkeypatch.context() as m:  # the bundle made where zstd is another version
        m.setattr(onefile, "zstd_version", lambda: "zstandard 0.19.0, libzstd 1.5.2")
        bundle(keys, new, tmp_path / "other.emub", "2.0.0", delta_from=old)
    work = tmp_path / "w"
    with pytest.raises(DeltaBaseMissing) as err:
        verify(tmp_path / "other.emub", trust, work, base_payload=old)
    assert "made with zstandard 0.19.0, libzstd 1.5.2" in err.value.message
    assert f"this device has {onefile.zstd_version()}" in err.value.message
    assert list(work.iterdir()) == []


def _single_threaded(threads: int, level: int = onefile.LEVEL) -> Any:
    """A device whose zstd packs otherwise: the single-threaded mode writes other bytes."""
    import zstandard

    return zstandard.ZstdCompressionParameters.from_level(
        level, window_log=onefile.WINDOW_LOG, write_checksum=True, threads=0
    )


def test_a_device_whose_zstd_packs_otherwise_falls_back(
    bundles: tuple[Path, Path],
    binaries: tuple[Path, Path],
    trust: Trust,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, delta = bundles
    old, _ = binaries
    monkeypatch.setattr(onefile, "compression_params", _single_threaded)
    work = tmp_path / "w"
    with pytest.raises(DeltaBaseMissing, match="recompresses the binary into other bytes"):
        verify(delta, trust, work, base_payload=old)
    assert list(work.iterdir()) == []


def both_encodings(delta: Path, full: Path, keys: KeysDir) -> dict[str, bytes]:
    """The delta bundle's repository with the full payload added to its target, re-signed."""
    files, extra = repository_files(delta), repository_files(full)
    signed = json.loads(files["targets.json"])["signed"]
    extra_signed = json.loads(extra["targets.json"])["signed"]
    [entry] = [e for e in signed["targets"].values() if "custom" in e]
    [full_file] = [n for n in extra if n.endswith(".xz")]
    entry["custom"]["edge_min"]["encodings"].append({"encoding": "xz", "file": full_file})
    signed["targets"][full_file] = extra_signed["targets"][full_file]
    files["targets.json"] = md.sign(signed, keys.seeds["targets"])
    files[full_file] = extra[full_file]
    return files


def test_a_repository_with_the_full_payload_too_falls_back_to_it(
    bundles: tuple[Path, Path],
    binaries: tuple[Path, Path],
    keys: KeysDir,
    trust: Trust,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    full, delta = bundles
    old, new = binaries
    files = both_encodings(delta, full, keys)

    def check(work: Path) -> None:
        v = verify_from_files(
            files.get, trust, installed_version=None, arch="x86_64", now=NOW, workdir=work,
            base_payload=old,
        )  # fmt: skip
        assert v.payload.read_bytes() == new.read_bytes()

    check(tmp_path / "delta")  # the delta is used
    monkeypatch.setattr(onefile, "compression_params", _single_threaded)
    check(tmp_path / "full")  # its rebuild fails here: the full payload instead


def test_a_binary_this_zstd_cannot_rebuild_is_not_bundled(
    keys: KeysDir, binaries: tuple[Path, Path], key: Any, tmp_path: Path
) -> None:
    old, _ = binaries
    other = packed(tmp_path, key, MODULE_NEW, level=18)  # packed at another level
    out = tmp_path / "d.emub"
    with pytest.raises(ValueError, match="does not recompress to the same bytes") as err:
        bundle(keys, other, out, "2.0.0", delta_from=old)
    assert onefile.zstd_version() in str(err.value)
    assert not out.exists()


def test_a_tampered_delta_is_refused_before_a_slot_is_written(
    bundles: tuple[Path, Path], binaries: tuple[Path, Path], keys: KeysDir, tmp_path: Path
) -> None:
    _, delta = bundles
    old, new = binaries
    root, data = tmp_path / "opt", tmp_path / "data"
    Trust.pin((keys.path / "root.json").read_bytes(), trust_dir(data))

    def install(b: Path) -> str:
        clock = VirtualClock(NOW)
        return install_bundle(b, root=root, data_dir=data, clock=clock, arch="x86_64")[0]

    first = bundle(keys, old, tmp_path / "old.emub", "1.0.0")
    assert first["encoding"] == "xz"
    slot = install(tmp_path / "old.emub")
    Installer(root, VirtualClock(NOW)).commit(slot)
    before = (root / "update-state.json").read_bytes()
    reader = BundleReader(delta)
    [file] = [n for n in reader.files if n.startswith("targets/")]
    start, length = reader.files[file]
    for at in (start + 5, start + length // 2, start + length - 1):  # header, body, end
        bad = bytearray(delta.read_bytes())
        bad[at] ^= 0x01
        (tmp_path / "bad.emub").write_bytes(bytes(bad))
        with pytest.raises(PayloadMismatch):
            install(tmp_path / "bad.emub")
        assert (root / "update-state.json").read_bytes() == before
        assert not (root / "staging").exists()
        assert sorted(p.name for p in (root / "slots").iterdir()) == sorted(
            [slot, f"{slot}.trust.json"]
        )
    other = install(delta)  # the good one: rebuilt from the active slot's binary
    assert other != slot and program(root, other).read_bytes() == new.read_bytes()
