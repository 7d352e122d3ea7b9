"""Image slots (a firmware image's partitions): the squashfs written raw, read back, checked.

The partitions are fixed-size files here, as ``slot-devices.json`` allows; on the firmware
image they are ``/dev/vdaN`` (tests/firmware boots that under QEMU).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from edge_min.clock import VirtualClock
from edge_min.update.bundle import detect_kind
from edge_min.update.installer import Installer, local_payload
from edge_min.update.slots import (
    BadPayload,
    SlotDigestMismatch,
    SlotError,
    slot_devices,
    verify_slot,
    write_slot_devices,
)

PART = 1 << 20


def _image(tmp: Path, version: str, size: int = 300_000) -> Path:
    """A stand-in squashfs image: the magic, then bytes that depend on the version."""
    path = tmp / f"rootfs-{version}.img"
    body = hashlib.sha256(version.encode()).digest() * (size // 32 + 1)
    path.write_bytes(b"hsqs" + body[: size - 4])
    return path


def _device(tmp: Path) -> Installer:
    root = tmp / "data" / "update"
    parts = {}
    for slot in ("a", "b"):
        part = tmp / f"part-{slot}"
        part.write_bytes(b"\xff" * PART)  # what was there before: must not count
        parts[slot] = part
    write_slot_devices(root, parts)
    return Installer(root, VirtualClock())


def test_an_image_is_written_into_the_inactive_partition_and_read_back(tmp_path: Path) -> None:
    inst = _device(tmp_path)
    first = local_payload(_image(tmp_path, "1.0.0"), "1.0.0")
    assert first.kind == "image"
    assert inst.install(first) == "a"
    inst.switch()
    inst.commit()
    new = local_payload(_image(tmp_path, "2.0.0"), "2.0.0")
    assert inst.install(new) == "b"
    st = inst.state()
    record = st["slots"]["b"]
    assert (record["kind"], record["length"], record["digest"]) == ("image", new.length, new.sha256)
    part_b = slot_devices(inst.root)["b"].read_bytes()
    assert part_b[: new.length] == new.payload.read_bytes()
    assert len(part_b) == PART and part_b[new.length :] == b"\xff" * (PART - new.length)
    assert slot_devices(inst.root)["a"].read_bytes()[: first.length] == first.payload.read_bytes()
    verify_slot(inst.root, st, "a")
    verify_slot(inst.root, st, "b")


def test_a_changed_partition_is_not_bootable(tmp_path: Path) -> None:
    inst = _device(tmp_path)
    inst.install(local_payload(_image(tmp_path, "1.0.0"), "1.0.0"))
    with open(slot_devices(inst.root)["a"], "r+b") as f:
        f.seek(1000)
        f.write(b"X")
    with pytest.raises(SlotDigestMismatch, match="does not match its digest"):
        verify_slot(inst.root, inst.state(), "a")


def test_an_image_larger_than_the_partition_is_refused_before_a_byte(tmp_path: Path) -> None:
    inst = _device(tmp_path)
    big = local_payload(_image(tmp_path, "9.9.9", size=PART + 4096), "9.9.9")
    with pytest.raises(BadPayload, match=rf"larger than slot a's partition .* \({PART} bytes\)"):
        inst.install(big)
    assert slot_devices(inst.root)["a"].read_bytes() == b"\xff" * PART


def test_without_slot_devices_an_image_install_names_the_firmware(tmp_path: Path) -> None:
    inst = Installer(tmp_path / "root", VirtualClock())
    with pytest.raises(SlotError, match="firmware image"):
        inst.install(local_payload(_image(tmp_path, "1.0.0"), "1.0.0"))


def test_bundles_know_squashfs_images(tmp_path: Path) -> None:
    assert detect_kind(_image(tmp_path, "1.0.0")) == "image"
