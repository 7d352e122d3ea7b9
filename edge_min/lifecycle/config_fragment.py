"""The edge-config fragment central holds for a device, written into its edge-config.yaml.

At enrollment central hands back the fragment an operator put in the claim token
(``POST /api/enroll/tokens`` with ``config``). ``apply_fragment(config, fragment)`` merges
it into the device's edge-config.yaml, key by key (a mapping merges, any other value
replaces: central's value wins), and only if the merged file loads: it is written beside
the original, loaded with ``load_config`` (includes and all), and renamed into place; the
file it replaced is kept as ``edge-config.yaml.pre-enroll``. A fragment that would not
load is refused with the loader's error (the file is not touched). A device whose
config is the embedded default (no edge-config.yaml) gets one made of the fragment in the
data directory's folder given by ``target``.

The comments of the rewritten file are not kept (the backup has them); the enroll command
re-measures the config files afterwards, so tamper detection does not report the change.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edge_min.errors import ConfigError, EdgeError

BACKUP_SUFFIX = ".pre-enroll"


class FragmentRefused(EdgeError):
    """Central's config fragment would make the device's edge-config.yaml invalid."""

    code = "config_fragment_refused"


def merged(base: Mapping[str, Any], fragment: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``fragment`` over it: mappings merge key by key, other values replace."""
    out = dict(base)
    for key, value in fragment.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def apply_fragment(config: Any, fragment: Mapping[str, Any], target: Path) -> Path | None:
    """Merge ``fragment`` into the device's edge-config.yaml (``target`` when there is
    none); the file written, or None for an empty fragment. ``FragmentRefused`` if the
    result does not load."""
    import yaml

    from edge_min.config import load_config

    if not fragment:
        return None
    source = (getattr(config, "files", None) or {}).get("runtime")  # edge-config.yaml's
    path = Path(source) if source and not str(source).startswith("<") else target
    base: Any = {}
    if path.is_file():
        base = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(base, dict):
            raise FragmentRefused(f"{path} is not a mapping; fix it before enrolling")
    text = yaml.safe_dump(merged(base, fragment), sort_keys=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.enroll.tmp")
    tmp.write_text(
        "# merged at enrollment with the fragment central holds for this device "
        f"(the previous file: {path.name}{BACKUP_SUFFIX})\n" + text,
        encoding="utf-8",
    )
    try:
        load_config(tmp)
    except ConfigError as exc:
        tmp.unlink()
        raise FragmentRefused(
            f"central's config fragment for this device does not load merged into {path}: "
            f"{exc}; fix the fragment on central (a new claim token) and enroll again"
        ) from None
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    if path.is_file():  # a copy: the file itself is only ever replaced whole
        shutil.copy2(path, path.with_name(path.name + BACKUP_SUFFIX))
    os.replace(tmp, path)
    return path
