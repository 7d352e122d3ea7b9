"""A/B slots and the one state file that says which of them the device runs.

Layout under the install root (``/opt/meta-agent`` on a gateway)::

    <root>/slots/a/edge-min         one payload per slot: the gateway binary, or an
    <root>/slots/b/edge-min ...     unpacked from-source package (launcher + lib/python)
    <root>/update-state.json        the single truth (below)
    <root>/update.lock              held while the state is read and written

The database, keys and configs live in the data directory and the config directory, outside
the slots, so both versions see the same data.

On a firmware image (``targets/firmware``) a slot is a partition instead: ``<root>`` is on
the data partition, the payload is a squashfs ``image`` written raw into the slot's
partition, and ``<root>/slot-devices.json`` (``{"a": "/dev/vda2", "b": "/dev/vda3"}``,
written at each boot) says which device is which slot. An image slot's digest is the sha256
of its first ``length`` bytes: the image, not the rest of the partition.

``update-state.json``::

    {"format": 1,
     "active": "a",                 the committed slot the device boots
     "trying": {"slot": "b", "tries": 1, "opened": 1, "backup_done": true,
                "unhealthy": null},  a slot on trial, or null
     "slots": {"a": {"state": "good", "version": "1.0.0", "sha256": ..., "digest": ...,
                     "kind": "binary", "schema": 5, "db_backup": null, ...},
               "b": {...}},
     "report": {"kind": "fallback", "slot": "b", "version": "2.0.0",
                "reason": "...", "at": ..., "reported": false}}

A slot's ``state`` is ``empty``, ``installing`` (being written: never started),
``installed`` (written and verified, not yet committed), ``good`` (committed once) or
``bad`` (a trial of it failed). Every change is written to a temporary file, fsynced,
renamed over the state file and the directory fsynced: a power cut leaves the old state or
the new one, never a mix.

Errors::

    EdgeError
    └── SlotError                   update_slot_error     an A/B slot operation cannot be done
        ├── SlotBusy                update_slot_busy      the state is locked by another process
        │                                                 or a trial is under way
        ├── SlotStateCorrupt        update_state_corrupt  update-state.json cannot be read
        ├── SlotDigestMismatch      update_slot_digest    a written slot does not match its digest
        ├── BadPayload              update_bad_payload    a payload cannot be installed as given
        └── NoPreviousVersion       update_no_previous    a rollback has no good version to go to
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edge_min.errors import EdgeError
from edge_min.store.files import fsync_dir

SLOTS = ("a", "b")
STATE_FILE = "update-state.json"
LOCK_FILE = "update.lock"
SLOTS_DIR = "slots"
DEVICES_FILE = "slot-devices.json"
#: The first bytes of a squashfs image (little-endian "sqsh"): an image slot's payload.
SQUASHFS_MAGIC = b"hsqs"
PROGRAM = "edge-min"
FORMAT = 1
#: A trial slot that failed this many starts (or health) is given up for the active one.
MAX_TRIES = 3
SLOT_STATES = ("empty", "installing", "installed", "good", "bad")
#: Bootable states: a slot in any other state is never started.
BOOTABLE = ("installed", "good")
_CHUNK = 64 * 1024
_LOCK_WAIT = 30.0

#: Told the name of each durable step as it is about to be taken (tests kill -9 there).
Step = Callable[[str], None]


def no_step(_name: str) -> None:
    """The default step hook: nothing."""


class SlotError(EdgeError):
    """An A/B slot operation cannot be done."""

    code = "update_slot_error"


class SlotBusy(SlotError):
    """The update state is locked by another process, or a trial is under way."""

    code = "update_slot_busy"


class SlotStateCorrupt(SlotError):
    """update-state.json cannot be read."""

    code = "update_state_corrupt"


class SlotDigestMismatch(SlotError):
    """A written slot does not match the digest it was installed with."""

    code = "update_slot_digest"


class BadPayload(SlotError):
    """A payload cannot be installed as given."""

    code = "update_bad_payload"


class NoPreviousVersion(SlotError):
    """A rollback has no good version in the other slot to go to."""

    code = "update_no_previous"


# -- the state -----------------------------------------------------------------------------


def empty_slot() -> dict[str, Any]:
    """A slot holding nothing."""
    return {"state": "empty", "version": None, "sha256": None, "digest": None, "kind": None}


def empty_state() -> dict[str, Any]:
    """The state of an install root that has never had a slot."""
    return {
        "format": FORMAT,
        "active": None,
        "trying": None,
        "slots": {s: empty_slot() for s in SLOTS},
        "report": None,
    }


def other(slot: str) -> str:
    """The other slot."""
    return "b" if slot == "a" else "a"


class StateFile:
    """``<root>/update-state.json``: read, and written durably (temp, fsync, rename, fsync)."""

    def __init__(self, root: Path, step: Step = no_step) -> None:
        self.root = Path(root)
        self.path = self.root / STATE_FILE
        self.step = step

    def load(self) -> dict[str, Any]:
        """The state (an empty one when the file does not exist yet)."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return empty_state()
        try:
            state = json.loads(text)
        except ValueError as exc:
            raise SlotStateCorrupt(
                f"{self.path} is not valid JSON ({exc}); it is only ever replaced whole, so "
                "it was edited by hand: restore it or run `edge-min update status` after fixing"
            ) from None
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise SlotStateCorrupt(
                f"{self.path}: format {state.get('format') if isinstance(state, dict) else '?'}"
                f" is not {FORMAT}; this edge-min reads format {FORMAT} only"
            )
        for s in SLOTS:
            state["slots"].setdefault(s, empty_slot())
        return state

    def save(self, state: dict[str, Any]) -> None:
        """Replace the state file with ``state``, durably."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{STATE_FILE}.{os.getpid()}.tmp"
        data = json.dumps(state, indent=1, sort_keys=True).encode()
        self.step("state.write")
        with open(tmp, "wb") as f:
            f.write(data[: len(data) // 2])
            self.step("state.half")
            f.write(data[len(data) // 2 :])
            f.flush()
            os.fsync(f.fileno())
        self.step("state.rename")
        os.replace(tmp, self.path)
        fsync_dir(self.root)
        self.step("state.saved")

    @contextmanager
    def locked(self, wait: float = _LOCK_WAIT) -> Iterator[dict[str, Any]]:
        """The state under the lock; what the block leaves in it is saved if it changed."""
        from edge_min.platform.locks import DataDirLock

        lock = DataDirLock(self.root / LOCK_FILE)
        deadline = time.monotonic() + wait
        while not lock.acquire():
            if time.monotonic() > deadline:
                raise SlotBusy(
                    f"{self.root / LOCK_FILE} is held by pid {lock.holder()} for more than "
                    f"{wait:.0f}s; wait for it or stop that process"
                )
            time.sleep(0.05)
        try:
            state = self.load()
            before = copy.deepcopy(state)
            yield state
            if state != before:
                self.save(state)
        finally:
            lock.release()


# -- slots on disk ---------------------------------------------------------------------------


def slot_dir(root: Path, slot: str) -> Path:
    """Where a slot's payload lives."""
    return Path(root) / SLOTS_DIR / slot


def slot_devices(root: Path) -> dict[str, Path]:
    """The block device of each image slot (``slot-devices.json``); SlotError if unknown."""
    path = Path(root) / DEVICES_FILE
    try:
        found = json.loads(path.read_text())
    except FileNotFoundError:
        raise SlotError(
            f"{path} does not exist: image slots live on a firmware image's partitions, "
            "which its boot (edge-min firmware boot) records; install a binary or a package "
            "on a gateway"
        ) from None
    except ValueError as exc:
        raise SlotStateCorrupt(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(found, dict) or not all(isinstance(found.get(s), str) for s in SLOTS):
        raise SlotStateCorrupt(f"{path}: needs a device path for each of the slots a and b")
    return {s: Path(found[s]) for s in SLOTS}


def write_slot_devices(root: Path, devices: dict[str, Path]) -> None:
    """Record which device is which slot (the firmware boot, at every start)."""
    from edge_min.update.trust import write_whole

    doc = {s: str(devices[s]) for s in SLOTS}
    write_whole(Path(root) / DEVICES_FILE, json.dumps(doc, sort_keys=True).encode())


def image_sha256(device: Path, length: int) -> str:
    """The sha256 of the first ``length`` bytes of ``device`` (an image slot's content)."""
    h, left = hashlib.sha256(), int(length)
    with open(device, "rb") as f:
        while left > 0:
            chunk = f.read(min(_CHUNK, left))
            if not chunk:
                raise SlotDigestMismatch(f"{device} ends {left} bytes before the image's end")
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()


def program(root: Path, slot: str) -> Path:
    """The program a slot runs (the binary, or a package's launcher)."""
    return slot_dir(root, slot) / PROGRAM


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _tree_files(top: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(top):
        # Bytecode the interpreter writes beside the sources is not part of the payload.
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        found += [Path(dirpath) / n for n in filenames]
    return sorted(found)


def tree_digest(top: Path) -> str:
    """One sha256 over every file of a folder (path, mode bit x, content), bytecode aside."""
    h = hashlib.sha256()
    for path in _tree_files(top):
        rel = path.relative_to(top).as_posix()
        x = "x" if os.access(path, os.X_OK) else "-"
        h.update(f"{rel}\0{x}\0{file_sha256(path)}\n".encode())
    return h.hexdigest()


def slot_digest(root: Path, slot: str, kind: str, length: int | None = None) -> str:
    """The digest a slot is checked against: its binary's sha256, its tree's, or (an image
    slot) the sha256 of its partition's first ``length`` bytes."""
    if kind == "binary":
        return file_sha256(program(root, slot))
    if kind == "image":
        if length is None:
            raise SlotStateCorrupt(f"image slot {slot} has no length recorded")
        return image_sha256(slot_devices(root)[slot], length)
    return tree_digest(slot_dir(root, slot))


def verify_slot(root: Path, state: dict[str, Any], slot: str) -> None:
    """Raise ``SlotDigestMismatch`` unless ``slot`` is bootable and its files match."""
    record = state["slots"][slot]
    if record["state"] not in BOOTABLE:
        raise SlotDigestMismatch(f"slot {slot} is {record['state']}, not bootable")
    try:
        found = slot_digest(root, slot, record["kind"], record.get("length"))
    except OSError as exc:
        raise SlotDigestMismatch(f"slot {slot} cannot be read: {exc}") from None
    if found != record["digest"]:
        raise SlotDigestMismatch(
            f"slot {slot} ({record['version']}) does not match its digest "
            f"({found[:16]}... is not {str(record['digest'])[:16]}...): changed after install"
        )


def fsync_tree(top: Path) -> None:
    """fsync every file and folder under ``top`` (and ``top`` itself)."""
    for dirpath, _dirs, filenames in os.walk(top):
        for name in filenames:
            fd = os.open(Path(dirpath) / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))
