"""The provisioning seed: one image for many devices, each told who it is at first boot.

Like cloud-init's NoCloud seed, a seed is a small FAT drive (``firmware/make_seed.sh``
makes one; its volume label is ``EDGESEED``) or a ``seed/`` folder on the ESP. Its files::

    seed.json               {"format": 1, "device_id": "gw-0042",
                             "allow_insecure_http": false,   (a lab's plain-http central)
                             "enroll": {"central": "https://central:8765", "token": "emt_...",
                                        "ca_sha256": "3f2a..."}}          (enroll: optional)
    edge-config.yaml        any of the five config files (edge-, sync-, edge-monitoring-,
    sync-config.yaml ...    edge-security-, edge-agent-config.yaml); the others keep their
                            defaults
    update-root.json        optional: the update signing root to pin (docs/updates.md)
    api-token.key           optional: the local API's token key (raw, 32+ bytes), so the
                            provisioning side can issue tokens for this device
                            (`edge-min --data-dir D token issue`); the seed is then a secret

At every boot the seed, if one is attached, is compared with the one last applied (by the
sha256 of its files). A new seed is validated *whole* with the product's own config loader
before anything is replaced: a seed that does not validate changes nothing, its error (the
file, the field, the value and the fix) goes to the console and to
``<data>/logs/seed-error.txt``, and the device boots on the configuration it had (the
built-in defaults on a first boot), so its API stays reachable for a fix: attach a corrected
seed and reboot. A seed that validates replaces ``<data>/config`` (written beside it,
fsynced, renamed), and ``<data>/provision.json`` records what was applied.

Errors: ``SeedError`` (code ``firmware_seed``), always with the file and the fix.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_min.errors import EdgeError
from edge_min.store.files import fsync_dir

SEED_FILE = "seed.json"
ROOT_FILE = "update-root.json"
TOKEN_KEY_FILE = "api-token.key"
PROVISION_FILE = "provision.json"
ERROR_FILE = "seed-error.txt"
FORMAT = 1
_SEED_KEYS = {"format", "device_id", "enroll", "allow_insecure_http"}
_ENROLL_KEYS = {"central", "token", "ca_sha256", "allow_insecure_http"}


class SeedError(EdgeError):
    """A provisioning seed cannot be applied."""

    code = "firmware_seed"


@dataclass
class Seed:
    """A seed as read from its folder, not yet applied."""

    folder: Path
    digest: str
    device_id: str | None
    enroll: dict[str, Any] | None
    configs: dict[str, bytes] = field(default_factory=dict)
    root_json: bytes | None = None
    token_key: bytes | None = None
    allow_insecure_http: bool = False


def read_seed(folder: Path) -> Seed:
    """Read and check ``folder``'s seed.json and list its config files; SeedError if bad."""
    from edge_min.config.loader import FILE_NAMES

    folder = Path(folder)
    names = set(FILE_NAMES.values())
    h = hashlib.sha256()
    files: dict[str, bytes] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            data = path.read_bytes()
            files[path.name] = data
            h.update(f"{path.name}\0{len(data)}\0".encode() + data)
    meta_path = folder / SEED_FILE
    if SEED_FILE not in files:
        raise SeedError(
            f"{meta_path}: missing; a seed needs seed.json with at least "
            '{"format": 1}; make one with firmware/make_seed.sh'
        )
    try:
        meta = json.loads(files[SEED_FILE])
    except ValueError as exc:
        raise SeedError(f"{meta_path}: not valid JSON ({exc}); fix the file") from None
    if not isinstance(meta, dict):
        raise SeedError(f"{meta_path}: must be a JSON object, not {type(meta).__name__}")
    unknown = sorted(set(meta) - _SEED_KEYS)
    if unknown:
        raise SeedError(
            f"{meta_path}: unknown key {unknown[0]!r}; the keys are {', '.join(sorted(_SEED_KEYS))}"
        )
    if meta.get("format") != FORMAT:
        raise SeedError(f"{meta_path}: format is {meta.get('format')!r}; this image reads 1")
    device_id = meta.get("device_id")
    if device_id is not None and (not isinstance(device_id, str) or not device_id.strip()):
        raise SeedError(f"{meta_path}: device_id {device_id!r} must be a non-empty string")
    insecure = meta.get("allow_insecure_http", False)
    if not isinstance(insecure, bool):
        raise SeedError(f"{meta_path}: allow_insecure_http {insecure!r} must be true or false")
    enroll = meta.get("enroll")
    if enroll is not None:
        if not isinstance(enroll, dict) or not isinstance(enroll.get("central"), str):
            raise SeedError(
                f'{meta_path}: enroll must be {{"central": URL, "token": T, ...}}, not {enroll!r}'
            )
        bad = sorted(set(enroll) - _ENROLL_KEYS)
        if bad:
            raise SeedError(
                f"{meta_path}: enroll.{bad[0]} is not a key; the keys are "
                f"{', '.join(sorted(_ENROLL_KEYS))}"
            )
    others = sorted(set(files) - names - {SEED_FILE, ROOT_FILE, TOKEN_KEY_FILE})
    if others:
        raise SeedError(
            f"{folder / others[0]}: not a seed file; a seed holds seed.json, {ROOT_FILE}, "
            f"{TOKEN_KEY_FILE} and the config files {', '.join(sorted(names))}"
        )
    token_key = files.get(TOKEN_KEY_FILE)
    if token_key is not None and len(token_key) < 32:
        raise SeedError(
            f"{folder / TOKEN_KEY_FILE}: {len(token_key)} bytes; a token key is at least 32 "
            "(copy <data dir>/keys/api-token.key)"
        )
    return Seed(
        folder,
        h.hexdigest(),
        device_id,
        enroll,
        {n: d for n, d in files.items() if n in names},
        files.get(ROOT_FILE),
        token_key,
        insecure,
    )


@dataclass(frozen=True)
class Outcome:
    """What provisioning did at this boot."""

    state: str  # "none" (no seed), "unchanged", "applied" or "refused"
    message: str
    seed: Seed | None = None


def provision(seed_dirs: list[Path], data: Path, now: float | None = None) -> Outcome:
    """Apply the first seed found in ``seed_dirs`` to the data partition at ``data``."""
    folder = next((Path(d) for d in seed_dirs if _has_files(Path(d))), None)
    logs = Path(data) / "logs"
    record_path = Path(data) / PROVISION_FILE
    if folder is None:
        return Outcome("none", "no seed attached")
    try:
        seed = read_seed(folder)
        last = _load(record_path)
        if last.get("seed") == seed.digest and last.get("state") == "applied":
            return Outcome("unchanged", f"seed {seed.digest[:12]} already applied", seed)
        _validate(seed, Path(data))
    except SeedError as exc:
        return _refused(record_path, logs, folder, str(exc), now)
    _install(seed, Path(data))
    _save(
        record_path,
        {
            "state": "applied",
            "seed": seed.digest,
            "device_id": seed.device_id,
            "allow_insecure_http": seed.allow_insecure_http,
            "files": sorted(seed.configs),
            "applied_at": time.time() if now is None else now,
        },
    )
    (logs / ERROR_FILE).unlink(missing_ok=True)
    return Outcome("applied", f"seed {seed.digest[:12]} applied from {folder}", seed)


def _has_files(folder: Path) -> bool:
    try:
        return any(p.is_file() for p in folder.iterdir())
    except OSError:
        return False


def _validate(seed: Seed, data: Path) -> None:
    """Load the seed's configs with the product's loader, in a staging folder."""
    from edge_min.config import load_config
    from edge_min.errors import ConfigError

    staging = data / "config.seed"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        for name, body in seed.configs.items():
            (staging / name).write_bytes(body)
        try:
            load_config(staging)
        except ConfigError as exc:
            raise SeedError(f"seed {seed.folder}: {exc}") from None
        if seed.root_json is not None:
            from edge_min.update import metadata as md

            try:
                md.load_root(seed.root_json, ROOT_FILE)
            except EdgeError as exc:
                raise SeedError(
                    f"{seed.folder / ROOT_FILE}: not an update root.json ({exc}); copy the "
                    "root.json of `edge-min update keys init`"
                ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _install(seed: Seed, data: Path) -> None:
    """Replace ``<data>/config`` with the seed's files: beside it, fsynced, renamed."""
    config, new, old = data / "config", data / "config.new", data / "config.old"
    for leftover in (new, old):
        shutil.rmtree(leftover, ignore_errors=True)
    new.mkdir(parents=True)
    for name, body in seed.configs.items():
        with open(new / name, "wb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
    fsync_dir(new)
    if config.exists():
        os.replace(config, old)
    os.replace(new, config)
    fsync_dir(data)
    shutil.rmtree(old, ignore_errors=True)
    if seed.token_key is not None:
        from edge_min.security.keyfile import replace_key_file
        from edge_min.security.tokens import key_path

        replace_key_file(key_path(data / "edge"), seed.token_key)
    if seed.root_json is not None:
        from edge_min.update.trust import Trust, trust_dir

        trust = trust_dir(data / "edge")
        if not (trust / "root.json").exists():  # pinned once; a newer root comes in a bundle
            Trust.pin(seed.root_json, trust)


_KEPT = ("seed", "device_id", "files", "allow_insecure_http")


def _refused(record: Path, logs: Path, folder: Path, message: str, now: float | None) -> Outcome:
    logs.mkdir(parents=True, exist_ok=True)
    text = (
        f"edge-min firmware: the seed in {folder} was NOT applied: {message}\n"
        "the device runs on the configuration it had; attach a corrected seed and reboot\n"
    )
    with open(logs / ERROR_FILE, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    previous = _load(record)
    _save(
        record,
        {
            **{k: v for k, v in previous.items() if k in _KEPT},
            "state": "refused" if previous.get("state") != "applied" else "applied",
            "refused": {"message": message, "at": time.time() if now is None else now},
        },
    )
    return Outcome("refused", message)


def _load(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _save(path: Path, doc: dict[str, Any]) -> None:
    from edge_min.update.trust import write_whole

    path.parent.mkdir(parents=True, exist_ok=True)
    write_whole(path, json.dumps(doc, sort_keys=True, indent=1).encode())
