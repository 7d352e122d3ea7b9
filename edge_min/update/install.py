"""A signed bundle into the inactive slot: verify, install, switch; trust recorded at commit.

``install_bundle(bundle, root=, data_dir=, clock=)`` is what ``edge-min update install
BUNDLE`` (a USB stick) and the rollout follower (a download from central) both call:

1. the bundle is verified against the device's trusted root (``<data>/update/trust/``,
   pinned with ``edge-min update trust ROOT.json`` or at enrollment) with the version of
   the active slot as the installed one and this machine's architecture, in a work folder
   under the install root; a delta is applied to the active slot's binary (a gateway
   binary's is rebuilt from its expanded form and recompressed, edge_min.update.onefile;
   a bundle whose delta base is not there, or whose rebuild is not the signed file, raises
   ``DeltaBaseMissing``: fetch the full bundle). Any refusal
   happens here, before anything is written to a slot;
2. the payload goes into the inactive slot (``Installer.install``: written, read back,
   checked), and what ``Trust.record`` needs is kept beside it (``<slot>.trust.json``),
   with a package's tar (``<slot>.payload.tar``: the base of the next delta, since the
   slot holds the package unpacked);
3. the slot is put on trial (``switch``); the supervisor starts it and counts the tries.

When the trial commits (``edge_min.update.subsystem.Update``), ``record_committed(root,
slot, data_dir)`` records that update in the trust, so an older version, or older metadata,
is refused from then on. A trial that fails records nothing.
"""

from __future__ import annotations

import json
import platform
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_min.errors import UsageError
from edge_min.update.slots import Step, no_step

if TYPE_CHECKING:
    from edge_min.clock import Clock
    from edge_min.update.verify import VerifiedUpdate

STAGING = "staging"
TRUST_SUFFIX = ".trust.json"
PAYLOAD_SUFFIX = ".payload.tar"


def _trust_record(root: Path, slot: str) -> Path:
    from edge_min.update.slots import slot_dir

    path = slot_dir(root, slot)
    return path.with_name(path.name + TRUST_SUFFIX)


def _kept_payload(root: Path, slot: str) -> Path:
    """The package tar a slot was installed from (a slot holds the package unpacked)."""
    from edge_min.update.slots import slot_dir

    path = slot_dir(root, slot)
    return path.with_name(path.name + PAYLOAD_SUFFIX)


def load_trust(data_dir: Path) -> Any:
    """The device's trust (``update/trust/``); a UsageError naming how to pin a root."""
    from edge_min.update.trust import Trust, trust_dir

    folder = trust_dir(data_dir)
    if not (folder / "root.json").is_file():
        raise UsageError(
            f"no trusted update root in {folder}: pin your signing keys' root with "
            "`edge-min update trust ROOT.json` (made by `edge-min update keys init DIR`)"
        )
    return Trust.load(folder)


def install_bundle(
    bundle: Path,
    *,
    root: Path,
    data_dir: Path,
    clock: Clock,
    switch: bool = True,
    arch: str | None = None,
    step: Step = no_step,
) -> tuple[str, VerifiedUpdate]:
    """Verify ``bundle``, install it into the inactive slot and (``switch``) put it on
    trial; returns (slot, what was verified). Refusals raise before a slot is touched.
    ``step`` is told of each durable step, the verify's chunks included (kill-9 tests)."""
    from edge_min.update.bundle import verify_bundle
    from edge_min.update.installer import Installer
    from edge_min.update.slots import program
    from edge_min.update.verify import normalize_arch

    trust = load_trust(data_dir)
    installer = Installer(root, clock, step)
    state = installer.state()
    active = state.get("active")
    record = state["slots"].get(active, {}) if active else {}
    base: Path | None = None
    if active and record.get("kind") == "binary":
        base = program(root, active)
    elif active and record.get("kind") == "package":
        base = _kept_payload(root, active)  # the slot holds it unpacked: its tar is kept
    workdir = root / STAGING
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    try:
        if active and record.get("kind") == "image" and record.get("length"):
            base = _image_of(root, active, int(record["length"]), workdir)
        verified = verify_bundle(
            Path(bundle),
            trust,
            installed_version=record.get("version"),
            arch=normalize_arch(arch or platform.machine()),
            now=clock.time(),
            workdir=workdir,
            base_payload=base if base is not None and base.is_file() else None,
            step=step,
        )
        slot = installer.install(verified)
        _write_record(_trust_record(root, slot), verified)
        if verified.kind == "package":  # the base of the next delta
            keep_package_tar(root, slot, verified.payload)
            step("install.kept_payload")
        if switch:
            installer.switch()
        return slot, verified
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _image_of(root: Path, slot: str, length: int, workdir: Path) -> Path | None:
    """The active image slot's image, copied out of its partition: the base of a delta."""
    from edge_min.update.slots import SlotError, slot_devices

    try:
        device = slot_devices(root)[slot]
        out = workdir / f"base-{slot}.img"
        with open(device, "rb") as src, open(out, "wb") as dst:
            left = length
            while left > 0 and (chunk := src.read(min(1 << 20, left))):
                dst.write(chunk)
                left -= len(chunk)
        return out
    except (OSError, SlotError):  # no base: a delta is refused as delta_base_missing
        return None


def keep_package_tar(root: Path, slot: str, package: Path) -> Path:
    """Keep the package a slot was installed from as its uncompressed tar (a ``.tar.gz`` is
    decompressed): the base a delta bundle of the next version is made against, since the
    slot holds the package unpacked (``update bundle --delta-from`` unpacks a .tar.gz too)."""
    import gzip

    from edge_min.update.trust import write_whole

    data = Path(package).read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    kept = _kept_payload(root, slot)
    write_whole(kept, data)
    return kept


def _write_record(path: Path, verified: VerifiedUpdate) -> None:
    from edge_min.update.trust import write_whole

    doc = asdict(verified)
    doc.pop("payload")
    doc["root_json"] = verified.root_json.decode("utf-8")
    doc["meta_versions"] = dict(verified.meta_versions)
    write_whole(path, json.dumps(doc, sort_keys=True).encode("utf-8"))


def record_committed(root: Path, slot: str, data_dir: Path) -> str | None:
    """Record the committed slot's update in the trust (its version, root, metadata
    versions); the version recorded, or None when the slot came from no bundle."""
    from edge_min.update.trust import Trust, trust_dir
    from edge_min.update.verify import VerifiedUpdate

    path = _trust_record(root, slot)
    if not path.is_file() or not (trust_dir(data_dir) / "root.json").is_file():
        return None
    doc = json.loads(path.read_text(encoding="utf-8"))
    verified = VerifiedUpdate(
        payload=Path(),
        **{**doc, "root_json": str(doc["root_json"]).encode("utf-8")},
    )
    Trust.load(trust_dir(data_dir)).record(verified)
    path.unlink()
    return verified.version


def committed_version(root: Path) -> str | None:
    """The version of the active (committed) slot, or None before the first install."""
    state = _state(root)
    return _version_of(state, state.get("active"))


def trial_version(root: Path) -> str | None:
    """The version of the slot on trial (installed and switched to, not committed), or None."""
    state = _state(root)
    return _version_of(state, (state.get("trying") or {}).get("slot"))


def _state(root: Path) -> dict[str, Any]:
    from edge_min.clock import SystemClock
    from edge_min.update.installer import Installer

    return Installer(root, SystemClock()).state()


def _version_of(state: dict[str, Any], slot: str | None) -> str | None:
    """The version recorded for ``slot`` in the slot state, or None (no slot, no version)."""
    if not slot:
        return None
    version = state["slots"].get(slot, {}).get("version")
    return None if version is None else str(version)
