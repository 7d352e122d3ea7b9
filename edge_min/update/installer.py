"""Install a verified payload into the inactive slot, switch to it, commit or fall back.

``Installer(root, clock)`` is the API the other parts of the update subsystem call:

- ``install(verified) -> slot``: writes the payload (already verified: a bundle's
  ``VerifiedUpdate``, or ``local_payload(path, version)``) into the slot that is not active,
  re-reads what it wrote and checks it against the payload's sha256, and only then records
  the slot ``installed``. The active slot is never touched.
- ``switch()``: puts the installed slot on trial (``trying``, try counter 0). The
  supervisor (``edge_min.update.supervisor``) starts it next, counting each start.
- ``commit()``: the trial passed (the runtime was healthy for ``update.commit_after``):
  the slot becomes the active one; the previous version stays in the other slot.
- ``rollback(reason)``: during a trial, gives the trial up (the slot is marked ``bad``, the
  reason kept for central); otherwise goes back to the good version in the other slot.
  ``give_up(slot, reason)`` ends the trial of that slot only (a waiter's timeout: a trial
  that committed meanwhile is left alone).
- ``state()``, ``pending_report()`` / ``mark_reported()`` (what the rollout part sends at sync).

The supervisor side: ``begin_start(db)`` picks the slot to start and counts the try before
the start (durably), ``failed_start``, ``ready_db``; the runtime side: ``opened``,
``unhealthy``. Every state change goes through ``StateFile.locked``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from edge_min.store.files import fsync_dir
from edge_min.update.slots import (
    BOOTABLE,
    MAX_TRIES,
    PROGRAM,
    SLOTS,
    SQUASHFS_MAGIC,
    BadPayload,
    NoPreviousVersion,
    SlotBusy,
    SlotDigestMismatch,
    StateFile,
    Step,
    empty_slot,
    file_sha256,
    fsync_tree,
    image_sha256,
    no_step,
    other,
    slot_devices,
    slot_digest,
    slot_dir,
)

if TYPE_CHECKING:
    from edge_min.clock import Clock

KINDS = ("binary", "package", "image")
_CHUNK = 64 * 1024
INSTALL_LOCK = "install.lock"


class Payload(Protocol):
    """What ``install`` needs of a verified update (``VerifiedUpdate`` has these)."""

    @property
    def version(self) -> str: ...
    @property
    def payload(self) -> Path: ...
    @property
    def sha256(self) -> str: ...
    @property
    def length(self) -> int: ...
    @property
    def kind(self) -> str: ...


@dataclass(frozen=True)
class LocalPayload:
    """A payload file taken as it is (``update install-payload``; tests)."""

    version: str
    payload: Path
    sha256: str
    length: int
    kind: str


def local_payload(path: Path, version: str, kind: str | None = None) -> LocalPayload:
    """A ``Payload`` for a file: its digest and length, its kind guessed from its content."""
    path = Path(path)
    if not path.is_file():
        raise BadPayload(f"payload {path}: no such file; pass the gateway binary or a package")
    if kind is None:
        with open(path, "rb") as f:
            squashfs = f.read(4) == SQUASHFS_MAGIC  # a firmware slot's root file system
        kind = "image" if squashfs else "package" if tarfile.is_tarfile(path) else "binary"
    if kind not in KINDS:
        raise BadPayload(f"payload kind {kind!r} is not one of {', '.join(KINDS)}")
    return LocalPayload(version, path, file_sha256(path), path.stat().st_size, kind)


def _extract(archive: tarfile.TarFile, member: tarfile.TarInfo, dest: Path) -> None:
    """One member into ``dest`` with tarfile's "data" filter, or (Python before 3.11.4,
    Debian 12's 3.11.2) the same rules checked here: regular files, folders and links
    inside ``dest`` only, no absolute or ``..`` names, no devices, no set-id bits."""
    if hasattr(tarfile, "data_filter"):
        archive.extract(member, dest, filter="data")
        return
    name = member.name
    target = (dest / name).resolve()
    root = dest.resolve()
    bad = (
        name.startswith("/")
        or ".." in Path(name).parts
        or (target != root and root not in target.parents)
        or not (member.isfile() or member.isdir() or member.issym() or member.islnk())
    )
    if member.issym() or member.islnk():
        linked = (target.parent / member.linkname).resolve()
        bad = bad or member.linkname.startswith("/") or root not in linked.parents
    if bad:
        raise BadPayload(f"package member {name!r} would land outside the slot or is not a file")
    member.mode &= 0o755
    archive.extract(member, dest, set_attrs=True)


def schema_version(db: Path) -> int | None:
    """The highest migration recorded in the database at ``db`` (None: no database yet)."""
    from edge_min.store.sqlite import applied_schema_version

    return applied_schema_version(db)


class Installer:
    """The A/B slots under ``root`` and their state file."""

    def __init__(self, root: Path, clock: Clock, step: Step = no_step) -> None:
        self.root = Path(root)
        self.clock = clock
        self.step = step
        self.file = StateFile(self.root, step)

    def state(self) -> dict[str, Any]:
        """The state file's content."""
        return self.file.load()

    # -- install --------------------------------------------------------------------------

    def install(self, verified: Payload) -> str:
        """Write ``verified`` into the inactive slot and verify it there; the slot's name."""
        from edge_min.platform.locks import DataDirLock

        if verified.kind not in KINDS:
            raise BadPayload(f"payload kind {verified.kind!r} is not one of {', '.join(KINDS)}")
        lock = DataDirLock(self.root / INSTALL_LOCK)
        if not lock.acquire():
            raise SlotBusy(f"another install (pid {lock.holder()}) is writing a slot; wait for it")
        try:
            with self.file.locked() as st:
                if st["trying"] is not None:
                    raise SlotBusy(
                        f"slot {st['trying']['slot']} is on trial; wait until it commits or "
                        "falls back (edge-min update status), or give it up: edge-min update "
                        "rollback"
                    )
                target = other(st["active"]) if st["active"] else SLOTS[0]
                st["slots"][target] = {**empty_slot(), "state": "installing"}
            digest = self._write(target, verified)
            with self.file.locked() as st:
                st["slots"][target] = {
                    "state": "installed",
                    "version": verified.version,
                    "sha256": verified.sha256,
                    "length": verified.length,
                    "kind": verified.kind,
                    "digest": digest,
                    "installed_at": self.clock.time(),
                }
            return target
        finally:
            lock.release()

    def _write(self, target: str, verified: Payload) -> str:
        if verified.kind == "image":
            return self._write_image(target, verified)
        final = slot_dir(self.root, target)
        new, old = final.with_name(f"{target}.new"), final.with_name(f"{target}.old")
        for leftover in (new, old):  # of an install a power cut interrupted
            shutil.rmtree(leftover, ignore_errors=True)
        new.mkdir(parents=True)
        self.step("slot.begin")
        if verified.kind == "binary":
            self._write_binary(new, verified)
        else:
            self._write_package(new, verified)
        fsync_tree(new)
        self.step("slot.written")
        if final.exists():
            os.replace(final, old)
            self.step("slot.moved_old")
        os.replace(new, final)
        fsync_dir(final.parent)
        self.step("slot.renamed")
        shutil.rmtree(old, ignore_errors=True)
        # What is on disk now, read back: the digest the supervisor checks before each start.
        digest = slot_digest(self.root, target, verified.kind)
        if verified.kind == "binary" and digest != verified.sha256:
            raise SlotDigestMismatch(
                f"slot {target} reads back as {digest[:16]}..., not the payload's "
                f"{verified.sha256[:16]}...: the disk did not keep what was written"
            )
        self.step("slot.verified")
        return digest

    def _copy(self, verified: Payload, dst: BinaryIO) -> None:
        """The payload into ``dst`` in chunks (a step each), checked against what was
        verified as it is read."""
        h, size = hashlib.sha256(), 0
        with open(verified.payload, "rb") as src:
            while chunk := src.read(_CHUNK):
                h.update(chunk)
                size += len(chunk)
                dst.write(chunk)
                self.step("slot.chunk")
        self._check_read(verified, h.hexdigest(), size)

    def _write_binary(self, new: Path, verified: Payload) -> None:
        with open(new / PROGRAM, "wb") as dst:
            self._copy(verified, dst)
        os.chmod(new / PROGRAM, 0o755)

    def _write_image(self, target: str, verified: Payload) -> str:
        """Write the image raw into the slot's partition, flush it, and read it back."""
        device = slot_devices(self.root)[target]
        self.step("slot.begin")
        # r+b: no truncation, a partition has a fixed size (a file standing in for one in
        # tests is taken at its size too)
        with open(device, "r+b") as dst:
            capacity = dst.seek(0, os.SEEK_END)
            if verified.length > capacity:
                raise BadPayload(
                    f"image {verified.payload} is {verified.length} bytes, larger than slot "
                    f"{target}'s partition {device} ({capacity} bytes); build a smaller image "
                    "or re-partition the device"
                )
            dst.seek(0)
            self._copy(verified, dst)
            dst.flush()
            os.fsync(dst.fileno())
            # The written pages are clean now: drop them, so the read below comes from the
            # disk (what the next boot mounts), not from the page cache.
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(dst.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        self.step("slot.written")
        digest = image_sha256(device, verified.length)
        if digest != verified.sha256:
            raise SlotDigestMismatch(
                f"slot {target} ({device}) reads back as {digest[:16]}..., not the image's "
                f"{verified.sha256[:16]}...: the disk did not keep what was written"
            )
        self.step("slot.verified")
        return digest

    def _check_read(self, verified: Payload, sha: str, size: int) -> None:
        if sha != verified.sha256 or size != verified.length:
            raise BadPayload(
                f"payload {verified.payload} changed after it was verified: {size} bytes with "
                f"sha256 {sha[:16]}..., verified as {verified.length} bytes with "
                f"{verified.sha256[:16]}...; verify the bundle again"
            )

    def _write_package(self, new: Path, verified: Payload) -> None:
        sha = file_sha256(verified.payload)
        self._check_read(verified, sha, Path(verified.payload).stat().st_size)
        with tarfile.open(verified.payload) as archive:
            for member in archive:
                _extract(archive, member, new)
                self.step("slot.member")
        sums = new / "SHA256SUMS"
        if not sums.is_file() or not (new / PROGRAM).is_file():
            raise BadPayload(
                f"payload {verified.payload} is not a meta-agent-edge package (no SHA256SUMS "
                "or edge-min in it); build one with infra/scripts/build_edge_package.sh"
            )
        wheels = []
        for line in sums.read_text().splitlines():
            want, _, name = line.partition("  ")
            name = name.lstrip("*")
            if file_sha256(new / name) != want:
                raise BadPayload(f"package {verified.payload}: {name} fails its SHA256SUMS")
            if name.startswith("lib/wheels/") and name.endswith(".whl"):
                wheels.append(name)
        if wheels:  # a from-source package: its wheels unpacked, as setup.sh does
            lib = new / "lib" / "python"
            for name in wheels:
                with zipfile.ZipFile(new / name) as wheel:
                    wheel.extractall(lib)
                self.step("slot.wheel")
            (new / "lib" / "python.path").write_text(sys.executable + "\n")

    # -- switch, commit, roll back -----------------------------------------------------------

    def switch(self) -> str:
        """Put the installed slot on trial; its name."""
        with self.file.locked() as st:
            if st["trying"] is not None:
                raise SlotBusy(f"slot {st['trying']['slot']} is on trial already")
            ready = [s for s in SLOTS if st["slots"][s]["state"] == "installed"]
            if not ready:
                raise BadPayload("no installed slot to switch to; install a payload first")
            slot = ready[0]
            st["trying"] = {
                "slot": slot,
                "tries": 0,
                "opened": 0,
                "backup_done": False,
                "unhealthy": None,
                "last_reason": None,
                "since": self.clock.time(),
            }
            return slot

    def commit(self, slot: str | None = None, schema: int | None = None) -> str:
        """The slot on trial (``slot``, when named, must be it) becomes the active one."""
        with self.file.locked() as st:
            trying = st["trying"]
            if trying is None or (slot is not None and trying["slot"] != slot):
                raise SlotBusy(f"slot {slot or '?'} is not on trial; nothing to commit")
            slot = str(trying["slot"])
            record = st["slots"][slot]
            record["state"] = "good"
            record["committed_at"] = self.clock.time()
            if schema is not None:
                record["schema"] = schema
            st["active"] = slot
            st["trying"] = None
            return slot

    def rollback(self, reason: str) -> str:
        """Give up a trial (recording ``reason``), else go back to the other good slot."""
        with self.file.locked() as st:
            if st["trying"] is not None:
                return self._fall_back(st, reason)
            active = st["active"]
            if active is None or st["slots"][other(active)]["state"] != "good":
                prev = st["slots"][other(active)] if active else None
                raise NoPreviousVersion(
                    "no previous version to roll back to: the other slot is "
                    f"{prev['state'] if prev else 'empty'} (only a committed version is kept)"
                )
            target = other(active)
            st["active"] = target
            st["report"] = self._report(st, "rollback", active, reason, target)
            return target

    def give_up(self, slot: str, reason: str) -> bool:
        """Give the trial of ``slot`` up (recording ``reason``) if it is still under way;
        False when it already ended (committed or fell back), and then nothing changes."""
        with self.file.locked() as st:
            trying = st["trying"]
            if trying is None or trying["slot"] != slot:
                return False
            self._fall_back(st, reason)
            return True

    def _report(
        self, st: dict[str, Any], kind: str, slot: str, reason: str, to: str | None
    ) -> dict[str, Any]:
        return {
            "kind": kind,
            "slot": slot,
            "version": st["slots"][slot]["version"],
            "to_slot": to,
            "to_version": st["slots"][to]["version"] if to else None,
            "reason": reason,
            "at": self.clock.time(),
            "reported": False,
        }

    def _fall_back(self, st: dict[str, Any], reason: str) -> str:
        slot = st["trying"]["slot"]
        st["slots"][slot]["state"] = "bad"
        st["trying"] = None
        st["report"] = self._report(st, "fallback", slot, reason, st["active"])
        return str(st["active"])

    def pending_report(self) -> dict[str, Any] | None:
        """The last fallback or rollback, until central was told of it (``mark_reported``)."""
        report = self.state().get("report")
        return dict(report) if report and not report.get("reported") else None

    def mark_reported(self) -> None:
        """Central has the pending report."""
        with self.file.locked() as st:
            if st.get("report"):
                st["report"]["reported"] = True

    # -- the supervisor's side ----------------------------------------------------------------

    def begin_start(self, db: Path | None = None) -> tuple[str | None, int]:
        """The slot to start now and its try number (0: a committed slot, not a trial).

        A trial's try is counted here, before the start, so a start that never returns
        (a crash, a power cut) counts too; after ``MAX_TRIES`` the trial is given up. Before
        the first try the database is backed up for the active slot (``db``).
        """
        with self.file.locked() as st:
            trying = st["trying"]
            if trying is not None:
                slot = trying["slot"]
                if st["slots"][slot]["state"] not in BOOTABLE:
                    self._fall_back(st, f"slot {slot} is not bootable")
                elif trying["tries"] >= MAX_TRIES:
                    last = trying.get("last_reason") or "it never became healthy"
                    self._fall_back(st, f"{MAX_TRIES} failed starts; the last: {last}")
                else:
                    if not trying["backup_done"]:
                        self._backup_db(st, db)
                        trying["backup_done"] = True
                    trying["tries"] += 1
                    trying["unhealthy"] = None
                    return slot, int(trying["tries"])
            return st["active"], 0

    def _backup_db(self, st: dict[str, Any], db: Path | None) -> None:
        active = st["active"]
        if db is None or active is None or not Path(db).exists():
            return
        from edge_min.store.backup import integrity_check
        from edge_min.store.sqlite import online_backup

        dest = pre_update_backup(db, active)
        tmp = dest.with_name(f".{dest.name}.tmp")
        dest.parent.mkdir(parents=True, exist_ok=True)
        self.step("db.backup")
        online_backup(db, tmp)
        problems = integrity_check(tmp)
        if problems:
            tmp.unlink(missing_ok=True)
            raise SlotDigestMismatch(f"the pre-update backup failed integrity_check: {problems[0]}")
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
        record = st["slots"][active]
        record["db_backup"] = str(dest)
        record["schema"] = schema_version(db)

    # -- a firmware image's side: the boot loader counts the tries (targets/firmware) -------

    def adopt(self, slot: str, record: dict[str, Any]) -> None:
        """Record ``slot`` as holding ``record`` (a factory image's slots, found at first boot);
        the first one adopted good becomes the active slot."""
        with self.file.locked() as st:
            st["slots"][slot] = {**empty_slot(), **record}
            if st["active"] is None and record.get("state") == "good":
                st["active"] = slot

    def prepare_trial(self, db: Path | None) -> None:
        """Before the reboot into a trial: the database backed up for the active slot, once."""
        with self.file.locked() as st:
            trying = st["trying"]
            if trying is not None and not trying["backup_done"]:
                self._backup_db(st, db)
                trying["backup_done"] = True

    def boot_try(self, slot: str, tries: int) -> None:
        """The boot loader started try ``tries`` of the trial slot (it counted it itself)."""
        with self.file.locked() as st:
            trying = st["trying"]
            if trying and trying["slot"] == slot:
                trying["tries"] = tries
                trying["unhealthy"] = None

    def failed_start(self, slot: str, tries: int, reason: str) -> None:
        """The try ``tries`` of the trial slot ended without a commit, because of ``reason``."""
        with self.file.locked() as st:
            trying = st["trying"]
            if trying and trying["slot"] == slot and trying["tries"] == tries:
                trying["last_reason"] = reason

    def ready_db(self, slot: str, db: Path) -> bool:
        """Before ``slot`` starts: put back its pre-update backup if the database has moved to
        a schema it cannot read (a newer version migrated it). True if restored."""
        record = self.state()["slots"][slot]
        known, backup = record.get("schema"), record.get("db_backup")
        now = schema_version(db)
        if known is None or now is None or now <= known or not backup or not Path(backup).exists():
            return False
        from edge_min.store.backup import restore

        self.step("db.restore")
        restore(backup, db)
        return True

    # -- the runtime's side --------------------------------------------------------------------

    def opened(self, slot: str, tries: int) -> None:
        """The runtime of ``slot`` (try ``tries``) has opened."""
        with self.file.locked() as st:
            trying = st["trying"]
            if trying and trying["slot"] == slot and trying["tries"] == tries:
                trying["opened"] = int(trying.get("opened", 0)) + 1

    def unhealthy(self, slot: str, tries: int, reason: str) -> None:
        """The runtime of the trial slot failed its health checks: the supervisor stops it."""
        with self.file.locked() as st:
            trying = st["trying"]
            if trying and trying["slot"] == slot and trying["tries"] == tries:
                trying["unhealthy"] = reason
                trying["last_reason"] = reason


def pre_update_backup(db: Path, slot: str) -> Path:
    """Where the database is kept, as slot ``slot`` left it, before another version runs."""
    return Path(db).parent / "backups" / f"pre-update-{slot}.db"
