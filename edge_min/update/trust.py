"""What a device trusts: its root, the metadata versions it has seen, the installed version.

Kept under the data directory in ``update/trust/``::

    root.json     the trusted root, exactly as signed (pinned at provisioning, replaced
                  only by a newer root that the old one signed)
    state.json    {"versions": {"timestamp": N, "snapshot": N, "targets": N},
                   "installed": {"version": "0.2.0", "sha256": "..."}}

Both are written to a temporary file, fsynced and renamed into place, and only by
``Trust.record`` after an install has committed: verifying an update writes nothing here.
A later bundle whose metadata versions are lower than these (a replay of old metadata), or
whose payload version is lower than the installed one, is refused (rollback protection);
the expiry of every role is checked against the device clock (freeze protection).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_min.update import metadata as md
from edge_min.update.errors import BadBundle, UpdateRefused

if TYPE_CHECKING:
    from edge_min.update.verify import VerifiedUpdate

__all__ = ["TRUST_DIR", "Trust", "trust_dir"]

#: Where the trust lives, relative to the data directory.
TRUST_DIR = Path("update") / "trust"


def trust_dir(data_dir: Path) -> Path:
    """The trust folder of the data directory ``data_dir``."""
    return data_dir / TRUST_DIR


def write_whole(path: Path, data: bytes) -> None:
    """``data`` at ``path``, whole or not at all: a temporary file, fsynced, renamed over,
    the folder fsynced (the update package's files: trust, install records)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    try:
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)  # the rename itself survives a power cut
    except OSError:
        pass
    finally:
        os.close(fd)


@dataclass
class Trust:
    """The trusted root and the versions seen, optionally backed by a folder."""

    root: md.Root
    versions: dict[str, int] = field(default_factory=dict)
    installed_version: str | None = None
    installed_sha256: str | None = None
    path: Path | None = None

    @classmethod
    def pin(cls, root_json: bytes, path: Path | None = None) -> Trust:
        """Trust ``root_json`` (it must be signed by its own root keys); saved in ``path``.

        This is trust on first use: pin the root.json of ``keys init`` at provisioning.
        A folder that already trusts a root is refused: a newer root comes in a bundle.
        """
        root = md.load_root(root_json, "root.json")
        if path is not None and (path / "root.json").exists():
            raise UpdateRefused(
                f"{path / 'root.json'}: this device already trusts a root (v"
                f"{cls.load(path).root.version}); a new root arrives in a bundle signed by the "
                "old one (`edge-min update keys rotate-root`), it is never pinned over it"
            )
        trust = cls(root, path=path)
        if path is not None:
            write_whole(path / "root.json", root.raw)
            trust._save_state()
        return trust

    @classmethod
    def load(cls, path: Path) -> Trust:
        """The trust kept in the folder ``path``; UpdateRefused if nothing is pinned there."""
        try:
            raw = (path / "root.json").read_bytes()
        except FileNotFoundError:
            raise UpdateRefused(
                f"{path / 'root.json'}: no trusted root: pin the root.json of your signing "
                "keys folder (`edge-min update verify BUNDLE --trust DIR/root.json`, or "
                "Trust.pin at provisioning)"
            ) from None
        root = md.load_root(raw, str(path / "root.json"))
        state: dict[str, Any] = {}
        if (path / "state.json").exists():
            try:
                state = json.loads((path / "state.json").read_text(encoding="utf-8"))
            except ValueError:
                raise BadBundle(
                    f"{path / 'state.json'}: not JSON: the trust state is damaged; restore it "
                    "from a backup (deleting it forgets the rollback protection)"
                ) from None
        installed = state.get("installed") or {}
        return cls(
            root,
            {k: int(v) for k, v in (state.get("versions") or {}).items()},
            installed.get("version"),
            installed.get("sha256"),
            path,
        )

    def seen(self, role: str) -> int:
        """The highest version of ``role``'s metadata this device has accepted (0: none)."""
        return self.versions.get(role, 0)

    def record(self, verified: VerifiedUpdate) -> None:
        """Remember an installed, committed update: its root, versions and payload version.

        From now on an update older than it, or metadata older than its, is refused.
        """
        if verified.root_json and verified.root_json != self.root.raw:
            self.root = md.Root.from_signed(
                json.loads(verified.root_json)["signed"], verified.root_json, "root.json"
            )
            if self.path is not None:
                write_whole(self.path / "root.json", verified.root_json)
        for role, version in verified.meta_versions.items():
            self.versions[role] = max(self.seen(role), version)
        self.installed_version = verified.version
        self.installed_sha256 = verified.sha256
        self._save_state()

    def _save_state(self) -> None:
        if self.path is None:
            return
        state: Mapping[str, Any] = {
            "versions": dict(sorted(self.versions.items())),
            "installed": {"version": self.installed_version, "sha256": self.installed_sha256},
        }
        write_whole(self.path / "state.json", json.dumps(state, indent=1).encode() + b"\n")
