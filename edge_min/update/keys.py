"""The signing keys folder: one key file per role, the root history, the version counter.

``edge-min update keys init DIR`` makes::

    DIR/root.key  targets.key  snapshot.key  timestamp.key   private keys, 0600: one hex
                                                             Ed25519 seed per line
    DIR/root.json                                            the current root (pin this on
                                                             devices: `--trust`, Trust.pin)
    DIR/roots/1.root.json ...                                every root ever signed, which a
                                                             bundle carries so a device on an
                                                             old root can follow the chain
    DIR/versions.json                                        the last metadata versions used,
                                                             so each bundle's are higher

Keep DIR offline (the root key above all); the device needs only root.json. A rotation
(``keys rotate-root``) makes new root keys (and, with ``--all``, new keys for every role),
signs root N+1 with the old root keys and the new ones, and moves the old key files to
``DIR/retired/``.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_min.security import ed25519
from edge_min.update import metadata as md
from edge_min.update.errors import SigningKeysError

__all__ = ["KeysDir", "init_keys", "rotate_root"]

#: How long a root lives unless told otherwise: a year (renewed by rotate-root).
ROOT_LIFETIME = 365 * 86400.0


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    tmp.replace(path)


@dataclass
class KeysDir:
    """A signing keys folder, read: each role's private keys, the root chain, the counter."""

    path: Path
    seeds: dict[str, list[bytes]]
    roots: list[bytes]  # 1.root.json ... N.root.json, exactly as signed

    @classmethod
    def load(cls, path: Path) -> KeysDir:
        """The folder at ``path``; SigningKeysError naming the missing file and the fix."""
        seeds: dict[str, list[bytes]] = {}
        for role in md.ROLES:
            f = path / f"{role}.key"
            try:
                lines = f.read_text(encoding="ascii").split()
                seeds[role] = [bytes.fromhex(line) for line in lines]
            except FileNotFoundError:
                raise SigningKeysError(
                    f"{f}: no such key file: make the folder with `edge-min update keys init "
                    f"{path}`"
                ) from None
            except (ValueError, UnicodeDecodeError):
                raise SigningKeysError(f"{f}: not hex Ed25519 seeds, one a line") from None
            if not seeds[role] or any(len(s) != ed25519.SEED_BYTES for s in seeds[role]):
                raise SigningKeysError(f"{f}: each line must be a 32-byte seed in hex")
        roots: list[bytes] = []
        while (p := path / "roots" / f"{len(roots) + 1}.root.json").exists():
            roots.append(p.read_bytes())
        if not roots:
            raise SigningKeysError(f"{path / 'roots'}: no 1.root.json: not a keys folder")
        return cls(path, seeds, roots)

    @property
    def root(self) -> md.Root:
        """The current (newest) root."""
        return md.Root.from_signed(
            json.loads(self.roots[-1])["signed"], self.roots[-1], f"{len(self.roots)}.root.json"
        )

    def check_matches_root(self) -> None:
        """SigningKeysError if the key files are not the keys the current root names."""
        root = self.root
        for role, seeds in self.seeds.items():
            ids = {md.key_id(ed25519.public_key(s)) for s in seeds}
            if len(ids & set(root.roles[role].keys)) < root.roles[role].threshold:
                raise SigningKeysError(
                    f"{self.path / (role + '.key')}: these keys are not the {role} keys of "
                    f"root v{root.version}: the folder was edited by hand"
                )

    def next_versions(self) -> dict[str, int]:
        """The next version of targets, snapshot and timestamp, recorded as used."""
        f = self.path / "versions.json"
        used: dict[str, int] = json.loads(f.read_text()) if f.exists() else {}
        # Never below the wall-clock second: two copies of DIR signing the same day still
        # go forward, and a lost versions.json does not restart at 1.
        floor = int(time.time())
        out = {r: max(used.get(r, 0) + 1, floor) for r in ("targets", "snapshot", "timestamp")}
        _write_public(f, json.dumps(out, sort_keys=True).encode())
        return out


def _new_seeds(n: int) -> list[bytes]:
    return [secrets.token_bytes(ed25519.SEED_BYTES) for _ in range(n)]


def root_signed(
    version: int,
    expires: float,
    seeds: Mapping[str, Sequence[bytes]],
    thresholds: Mapping[str, int],
) -> dict[str, Any]:
    """The signed part of a root naming ``seeds``' public keys per role."""
    keys: dict[str, Any] = {}
    roles: dict[str, Any] = {}
    for role in md.ROLES:
        ids = []
        for seed in seeds[role]:
            public = ed25519.public_key(seed)
            keys[md.key_id(public)] = md.key_object(public)
            ids.append(md.key_id(public))
        roles[role] = {"keyids": sorted(ids), "threshold": thresholds.get(role, 1)}
    return {
        "_type": "root",
        "spec_version": md.SPEC_VERSION,
        "version": version,
        "expires": md.format_expires(expires),
        "consistent_snapshot": False,
        "keys": keys,
        "roles": roles,
    }


def init_keys(
    path: Path,
    *,
    now: float,
    root_keys: int = 1,
    root_threshold: int = 1,
    lifetime: float = ROOT_LIFETIME,
) -> KeysDir:
    """Make a new keys folder at ``path`` (refused if it holds keys already)."""
    if root_threshold < 1 or root_threshold > root_keys:
        raise SigningKeysError(
            f"--root-threshold {root_threshold} must be between 1 and --root-keys {root_keys}"
        )
    if any((path / f"{r}.key").exists() for r in md.ROLES) or (path / "roots").exists():
        raise SigningKeysError(
            f"{path}: already holds signing keys; keys are never overwritten (rotate the root "
            f"with `edge-min update keys rotate-root {path}`, or choose an empty folder)"
        )
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    (path / "roots").mkdir(mode=0o755)
    seeds = {r: _new_seeds(root_keys if r == "root" else 1) for r in md.ROLES}
    root = md.sign(root_signed(1, now + lifetime, seeds, {"root": root_threshold}), seeds["root"])
    for role, role_seeds in seeds.items():
        _write_private(path / f"{role}.key", "".join(s.hex() + "\n" for s in role_seeds))
    _write_public(path / "roots" / "1.root.json", root)
    _write_public(path / "root.json", root)
    return KeysDir.load(path)


def rotate_root(
    path: Path, *, now: float, all_roles: bool = False, lifetime: float = ROOT_LIFETIME
) -> KeysDir:
    """Sign root N+1 with new root keys (and new keys for every role with ``all_roles``).

    The new root is signed by the old root's keys and the new ones, so a device trusting
    root N accepts it; the old key files move to ``DIR/retired/``.
    """
    keys = KeysDir.load(path)
    old = keys.root
    renewed = {
        r: _new_seeds(len(s)) if (r == "root" or all_roles) else s for r, s in keys.seeds.items()
    }
    thresholds = {r: old.roles[r].threshold for r in md.ROLES}
    signed = root_signed(old.version + 1, now + lifetime, renewed, thresholds)
    raw = md.sign(signed, [*keys.seeds["root"], *renewed["root"]])
    retired = path / "retired"
    retired.mkdir(exist_ok=True, mode=0o700)
    _write_public(path / "roots" / f"{old.version + 1}.root.json", raw)
    for role in md.ROLES:
        if renewed[role] is keys.seeds[role]:
            continue
        (path / f"{role}.key").replace(retired / f"{role}.v{old.version}.key")
        _write_private(path / f"{role}.key", "".join(s.hex() + "\n" for s in renewed[role]))
    _write_public(path / "root.json", raw)
    return KeysDir.load(path)
