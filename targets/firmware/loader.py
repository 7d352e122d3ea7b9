"""systemd-boot on the EFI system partition: one entry per slot, boot counting, blessing.

The image's ESP holds ``loader/loader.conf`` (``default edge-*``: a glob, since an entry's id
keeps its counter) and one Boot Loader Spec entry per slot, all with ``sort-key edge``; among
them systemd-boot boots the highest ``version`` whose tries are not used up::

    loader/entries/edge-a.conf         slot a, blessed: no counter, never counted
    loader/entries/edge-b+3.conf       slot b armed for a trial: 3 tries
    loader/entries/edge-b+2-1.conf     ... renamed by systemd-boot before its first try
    loader/entries/edge-b+0-3.conf     ... tries used up: sorted last, the other slot boots

The boot loader counts a try *before* it starts the kernel, so a kernel that panics or an
init that hangs is counted too (the runtime never gets to count it). At boot,
``LoaderBootCountPath`` (efivarfs) names the entry as renamed for this boot: its ``-N`` is
the try under way. Blessing (the runtime was healthy: ``bless``) renames the entry to its
name without a counter, as systemd's ``systemd-bless-boot`` does.

Every change writes a new file, fsyncs it and the folder, then removes the old name: a power
cut leaves the old entry or both (``_entries`` keeps the one with the higher version).
``Esp`` takes a ``writable`` context (remount the ESP read-write around a change; a folder in
tests needs none).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from edge_min.errors import EdgeError
from edge_min.store.files import fsync_dir

#: systemd-boot's vendor GUID for its variables (LoaderEntrySelected, LoaderBootCountPath...).
LOADER_GUID = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"
ENTRIES = Path("loader") / "entries"
TRIES = 3
_NAME = re.compile(r"^edge-(?P<slot>[ab])(?:\+(?P<left>\d+)(?:-(?P<done>\d+))?)?\.conf$")


class LoaderError(EdgeError):
    """The boot loader's entries cannot be read or changed."""

    code = "firmware_loader"


@dataclass(frozen=True)
class Entry:
    """One slot's loader entry as found on the ESP."""

    slot: str
    path: Path
    version: int
    left: int | None  # tries left (None: blessed, not counted)
    done: int  # tries used so far

    @property
    def counted(self) -> bool:
        """On trial: systemd-boot counts its boots."""
        return self.left is not None

    @property
    def exhausted(self) -> bool:
        """Its tries are used up: systemd-boot boots the other slot."""
        return self.left == 0


def parse_name(name: str) -> tuple[str, int | None, int] | None:
    """``edge-b+2-1.conf`` -> ("b", 2, 1); ``edge-a.conf`` -> ("a", None, 0); else None."""
    m = _NAME.match(name)
    if m is None:
        return None
    left = m.group("left")
    return m.group("slot"), None if left is None else int(left), int(m.group("done") or 0)


class Esp:
    """The loader entries under an ESP's mount point (``/efi`` on the image)."""

    def __init__(
        self,
        root: Path,
        writable: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext,
    ) -> None:
        self.root = Path(root)
        self.dir = self.root / ENTRIES
        self.writable = writable

    def entries(self) -> dict[str, Entry]:
        """The entry of each slot (the higher version where a cut change left two)."""
        found: dict[str, Entry] = {}
        try:
            names = sorted(os.listdir(self.dir))
        except FileNotFoundError:
            raise LoaderError(
                f"{self.dir} does not exist: not the ESP of an edge_min image "
                "(make firmware writes loader/entries/edge-a.conf and edge-b.conf)"
            ) from None
        for name in names:
            parsed = parse_name(name)
            if parsed is None:
                continue
            slot, left, done = parsed
            path = self.dir / name
            entry = Entry(slot, path, _version(path), left, done)
            if slot not in found or entry.version > found[slot].version:
                found[slot] = entry
        return found

    def arm(self, slot: str, tries: int = TRIES) -> Entry:
        """Put ``slot`` first with ``tries`` counted boots (a trial)."""
        return self._rewrite(slot, f"edge-{slot}+{tries}.conf", top=True)

    def bless(self, slot: str) -> Entry:
        """``slot`` passed: its entry loses its counter (never counted again)."""
        return self._rewrite(slot, f"edge-{slot}.conf", top=False)

    def prefer(self, slot: str) -> Entry:
        """``slot``, blessed, boots from now on (a rollback to a good version)."""
        return self._rewrite(slot, f"edge-{slot}.conf", top=True)

    def _rewrite(self, slot: str, name: str, *, top: bool) -> Entry:
        entries = self.entries()
        old = entries.get(slot)
        if old is None:
            raise LoaderError(f"the ESP has no loader entry for slot {slot} under {self.dir}")
        others = [e.version for s, e in entries.items() if s != slot]
        version = max([*others, 0]) + 1 if top else old.version
        before = old.path.read_text()
        text = _with_version(before, version)
        new = self.dir / name
        with self.writable():
            if new != old.path or text != before:
                tmp = self.dir / f".{name}.tmp"
                _write_synced(tmp, text)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(new)  # vfat's rename does not replace
                os.rename(tmp, new)
                if new != old.path:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(old.path)
                fsync_dir(self.dir)
        parsed = parse_name(name)
        assert parsed is not None
        return Entry(slot, new, version, parsed[1], parsed[2])


def _version(path: Path) -> int:
    for line in path.read_text(errors="replace").splitlines():
        key, _, value = line.strip().partition(" ")
        if key == "version":
            try:
                return int(value.strip())
            except ValueError:
                break
    raise LoaderError(f"{path} has no integer `version` line; make firmware writes one")


def _with_version(text: str, version: int) -> str:
    lines = [
        f"version {version}" if line.strip().startswith("version ") else line
        for line in text.splitlines()
    ]
    return "\n".join(lines) + "\n"


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


# -- what the boot loader told this boot (efivarfs) -----------------------------------------


def read_loader_var(efivars: Path, name: str) -> str | None:
    """A systemd-boot string variable (UTF-16LE after 4 attribute bytes), or None."""
    try:
        raw = (Path(efivars) / f"{name}-{LOADER_GUID}").read_bytes()
    except OSError:
        return None
    return raw[4:].decode("utf-16-le", errors="replace").rstrip("\0") or None


@dataclass(frozen=True)
class BootedEntry:
    """What systemd-boot started this boot from."""

    slot: str | None  # from the kernel command line (edge.slot=)
    selected: str | None  # LoaderEntrySelected
    count_path: str | None  # LoaderBootCountPath: the entry as renamed for this boot

    @property
    def try_number(self) -> int | None:
        """The counted try under way (1 on the first boot of a trial), None if not counted."""
        if not self.count_path:
            return None
        parsed = parse_name(self.count_path.replace("\\", "/").rsplit("/", 1)[-1])
        if parsed is None or parsed[1] is None:
            return None
        return parsed[2]


def booted(cmdline: Path, efivars: Path) -> BootedEntry:
    """The slot this kernel was booted for and what the loader says of the entry."""
    slot = None
    try:
        for arg in Path(cmdline).read_text().split():
            if arg.startswith("edge.slot="):
                slot = arg.partition("=")[2]
    except OSError:
        pass
    return BootedEntry(
        slot if slot in ("a", "b") else None,
        read_loader_var(efivars, "LoaderEntrySelected"),
        read_loader_var(efivars, "LoaderBootCountPath"),
    )


@contextlib.contextmanager
def remounted(mount_point: Path, run: Callable[[list[str]], object]) -> Iterator[None]:
    """The ESP read-write for the block, then read-only again (``run`` runs mount(8))."""
    run(["mount", "-o", "remount,rw", str(mount_point)])
    try:
        yield
    finally:
        os.sync()
        run(["mount", "-o", "remount,ro", str(mount_point)])
