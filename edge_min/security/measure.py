"""Measurements for tamper detection: what each check reads, as ``item -> sha256 hex``.

Pure functions over paths and facts, so the tamper subsystem (``edge_min.security.tamper``)
decides when to measure and what a difference means:

- ``boot_integrity``: the program's files (``edge_min.security.manifest.Program``), compared
  with the digests its signed manifest holds.
- ``filesystem_integrity``: the config files the runtime loaded (edge-config.yaml and its
  includes) and each agent's model file and command script.
- ``hardware_integrity``: a fingerprint of ``Platform.hardware_facts()`` (machine-id, DMI
  product and serial, CPU model, MAC addresses); each fact is kept as its digest, so the
  database holds no serial number in clear.

A file that cannot be read measures as ``missing`` or ``unreadable``, never as absent:
deleting a measured file is a difference like any other.
"""

from __future__ import annotations

import hashlib
import os
import shlex
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from edge_min.security.manifest import sha256_file

CHECKS = ("boot_integrity", "filesystem_integrity", "hardware_integrity")
MISSING = "missing"
UNREADABLE = "unreadable"
Measurement = dict[str, str]
_SYSTEM_DIRS = ("/usr/", "/bin/", "/sbin/", "/lib/", "/lib64/")


def measure_files(paths: Iterable[str | Path]) -> Measurement:
    """Each path (made absolute) -> the sha256 of its bytes, ``missing`` or ``unreadable``."""
    out: Measurement = {}
    for raw in paths:
        path = Path(raw).absolute()
        try:
            out[str(path)] = sha256_file(path)
        except FileNotFoundError:
            out[str(path)] = MISSING
        except OSError:
            out[str(path)] = UNREADABLE
    return dict(sorted(out.items()))


def measure_program(files: Mapping[str, Path]) -> Measurement:
    """The program's files by their names relative to its root (as the manifest has them)."""
    out: Measurement = {}
    for name, path in files.items():
        try:
            out[name] = sha256_file(path)
        except FileNotFoundError:
            out[name] = MISSING
        except OSError:
            out[name] = UNREADABLE
    return out


def fingerprint(facts: Mapping[str, str]) -> Measurement:
    """Each hardware fact -> the sha256 of its value (the value itself is not kept)."""
    return {k: hashlib.sha256(str(v).encode()).hexdigest() for k, v in sorted(facts.items())}


def config_files(files: Mapping[str, str]) -> list[str]:
    """The files a config was read from (``EdgeConfig.files``), defaults left out."""
    return sorted({f for f in files.values() if f and not f.startswith("<") and os.path.isfile(f)})


def agent_files(config: Any) -> list[str]:
    """An agent's model file and the script files its command names (``AgentConfig``)."""
    out: list[str] = []
    base = os.path.dirname(os.path.abspath(config.source)) if _real(config.source) else None
    if config.model is not None and config.model.path:
        out.append(_resolve(config.model.path, base))
    command = config.runtime.command
    if command:
        words = shlex.split(command) if isinstance(command, str) else list(command)
        for word in words:  # the program and any argument that names a file: the script
            path = _resolve(word, base)
            # The OS's own programs (an interpreter) are its package manager's to change.
            if os.path.isfile(path) and not path.startswith(_SYSTEM_DIRS):
                out.append(path)
    return sorted(set(out))


def differences(baseline: Mapping[str, str], current: Mapping[str, str]) -> list[str]:
    """What changed between two measurements: ``changed``, ``missing``, ``added`` items."""
    out = []
    for item in sorted(set(baseline) | set(current)):
        was, now = baseline.get(item), current.get(item)
        if was == now:
            continue
        if was is None:
            out.append(f"added: {item}")
        elif now is None or now == MISSING:
            out.append(f"missing: {item}")
        else:
            out.append(f"changed: {item}")
    return out


def _real(source: str | None) -> bool:
    return bool(source) and not str(source).startswith("<")


def _resolve(path: str, base: str | None) -> str:
    p = Path(path).expanduser()
    if not p.is_absolute() and base is not None:
        p = Path(base) / p
    return str(p.absolute())
