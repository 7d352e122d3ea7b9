"""Putting the files together: ``load_config``, ``parse_config`` and ``check_file``.

edge-config.yaml names the other three files under ``includes:`` (paths relative to its own
folder). A file not named there is looked for beside edge-config.yaml (sync-config.yaml,
edge-monitoring.yaml, edge-security.yaml, or the same names ending .yml/.json); a file not
found takes its defaults. Errors from every file are collected into one ConfigError.

When edge-security.yaml is absent, its storage encryption, key rotation and attestation
switches follow edge-config.yaml's ``security:`` section; when both files set one of them,
they must agree.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from edge_min.config._read import read_data
from edge_min.config._validate import Reader, describe, show
from edge_min.config.agent import parse_agent_config
from edge_min.config.monitoring import MONITORING_KEYS, MonitoringConfig, parse_monitoring_config
from edge_min.config.runtime import (
    DAY,
    EDGE_KEYS,
    ApiConfig,
    MonitoringSettings,
    RuntimeConfig,
    SecuritySettings,
    StorageConfig,
    SyncSettings,
    UpdateConfig,
    parse_api,
    parse_includes,
    parse_monitoring_settings,
    parse_runtime,
    parse_security_settings,
    parse_storage,
    parse_sync_settings,
    parse_update,
)
from edge_min.config.security import SECURITY_KEYS, SecurityConfig, parse_security_config
from edge_min.config.sync import SYNC_KEYS, SyncConfig, parse_sync_config
from edge_min.errors import ConfigError

T = TypeVar("T")
DEFAULTS = "<defaults>"
KINDS = ("edge", "sync", "monitoring", "security", "agent")
FILE_NAMES = {
    "edge": "edge-config.yaml",
    "sync": "sync-config.yaml",
    "monitoring": "edge-monitoring.yaml",
    "security": "edge-security.yaml",
    "agent": "edge-agent-config.yaml",
}
_EXTENSIONS = (".yaml", ".yml", ".json")
_EDGE_SECTIONS = ("runtime", "sync", "storage", "security", "monitoring", "api", "update")


@dataclass(frozen=True)
class EdgeConfig:
    """Everything the runtime reads: edge-config.yaml's sections plus the three other files."""

    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    sync: SyncSettings = field(default_factory=SyncSettings)
    storage: StorageConfig = field(default_factory=StorageConfig)
    security: SecuritySettings = field(default_factory=SecuritySettings)
    monitoring: MonitoringSettings = field(default_factory=MonitoringSettings)
    api: ApiConfig = field(default_factory=ApiConfig)
    update: UpdateConfig = field(default_factory=UpdateConfig)
    sync_config: SyncConfig = field(default_factory=SyncConfig)
    monitoring_config: MonitoringConfig = field(default_factory=MonitoringConfig)
    security_config: SecurityConfig = field(default_factory=SecurityConfig)
    source: str | None = field(default=None, compare=False)
    files: dict[str, str] = field(default_factory=dict, compare=False)


def load_config(path: str | os.PathLike[str] | None = None) -> EdgeConfig:
    """Read edge-config.yaml at ``path`` (or a folder holding it) with its companion files.

    ``None`` gives the full defaults without touching the file system.
    """
    if path is None:
        return _assemble({}, None, None, look_beside=False)
    source = os.fspath(path)
    if os.path.isdir(source):
        found = _beside(source, "edge")
        if found is None:
            return _assemble({}, None, os.path.abspath(source), look_beside=True)
        source = found
    data, source = read_data(source)
    return _assemble(data, source, os.path.dirname(os.path.abspath(source)), look_beside=True)


def parse_config(data: Any, source: str = "<string>") -> EdgeConfig:
    """Validate edge-config data; named includes are read relative to the working directory."""
    return _assemble(data, source, None, look_beside=False)


def detect_kind(path: str | os.PathLike[str], data: Any = None) -> str | None:
    """Which of the five files this is: by file name, else by its top-level keys."""
    base = os.path.basename(os.fspath(path)).lower()
    stem, ext = os.path.splitext(base)
    if ext in _EXTENSIONS:
        for kind, name in FILE_NAMES.items():
            if stem == os.path.splitext(name)[0]:
                return kind
    if not isinstance(data, dict):
        return None
    keys = set(data)
    if keys & {"name", "resources", "model", "input", "output"}:
        return "agent"
    if keys & set(MONITORING_KEYS):
        return "monitoring"
    if keys & set(SECURITY_KEYS):
        return "security"
    sync = data.get("sync")
    if keys == {"sync"} and isinstance(sync, dict) and set(sync) & set(SYNC_KEYS):
        return "sync"
    if keys & set(EDGE_KEYS):
        return "edge"
    return None


def check_file(path: str | os.PathLike[str]) -> list[str]:
    """Validate one config file of any of the five kinds; its error lines, [] when OK."""
    try:
        data, source = read_data(path)
    except ConfigError as exc:
        return _lines(exc)
    kind = detect_kind(source, data)
    if kind is None:
        names = ", ".join(FILE_NAMES.values())
        return [
            f"{source}: cannot tell which config file this is: name it one of {names}, "
            f"or give it the top-level keys of one of them"
        ]
    base = os.path.dirname(os.path.abspath(source))
    try:
        if kind == "edge":
            _assemble(data, source, base, look_beside=False, follow_includes=False)
        elif kind == "agent":
            parse_agent_config(data, source, base_dir=base)
        else:
            r = Reader(source, base)
            _parse_part(kind, r, _top(r, data, kind))
            r.raise_errors()
    except ConfigError as exc:
        return _lines(exc)
    return []


def _lines(exc: ConfigError) -> list[str]:
    return [e.message for e in (exc.errors or [exc])]


def _top(r: Reader, data: Any, kind: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        r.fail(
            "",
            f"the top level must be a mapping of {kind} sections, got {describe(data)}",
            data,
        )
        return {}
    return r.mapping(data, "")


def _parse_part(
    kind: str,
    r: Reader,
    data: dict[str, Any],
    sync_interval: float | None = None,
    health_check_interval: float = 60.0,
    conflict_resolution: str | None = None,
) -> Any:
    if kind == "sync":
        return parse_sync_config(r, data, sync_interval, conflict_resolution)
    if kind == "monitoring":
        return parse_monitoring_config(r, data, health_check_interval)
    return parse_security_config(r, data)


def _beside(folder: str, kind: str) -> str | None:
    stem = os.path.splitext(FILE_NAMES[kind])[0]
    for ext in _EXTENSIONS:
        candidate = os.path.join(folder, stem + ext)
        if os.path.isfile(candidate):
            return candidate
    return None


def _assemble(
    data: Any,
    source: str | None,
    base_dir: str | None,
    *,
    look_beside: bool,
    follow_includes: bool = True,
) -> EdgeConfig:
    r = Reader(source or DEFAULTS, base_dir)
    raw = _top(r, data, "edge-config")
    r.check_keys(raw, "", EDGE_KEYS)
    sections: dict[str, Any] = {
        "runtime": parse_runtime(r, raw),
        "sync": parse_sync_settings(r, raw),
        "storage": parse_storage(r, raw),
        "security": parse_security_settings(r, raw),
        "monitoring": parse_monitoring_settings(r, raw),
        "api": parse_api(r, raw),
        "update": parse_update(r, raw),
    }
    includes = parse_includes(r, raw)
    errors = list(r.errors)
    files = dict.fromkeys(_EDGE_SECTIONS, source or DEFAULTS)
    named = {"sync": includes.sync, "monitoring": includes.monitoring}
    named["security"] = includes.security
    parts: dict[str, Any] = {}
    raws: dict[str, dict[str, Any]] = {}
    for kind, include in named.items():
        where = None
        if include is not None and not os.path.isfile(include):
            errors.append(
                ConfigError(f"file not found: {include}", file=r.file, path=f"includes.{kind}")
            )
        elif include is not None:
            where = include
        elif look_beside and base_dir is not None:
            where = _beside(base_dir, kind)
        if not follow_includes:
            continue
        conflict = None  # edge-config's default policy, only when it sets one
        if _get(raw, "sync", "conflict_resolution") is not _ABSENT:
            conflict = sections["sync"].conflict_resolution
        part, raws[kind], file = _load_part(kind, where, sections, errors, conflict)
        parts[kind] = part
        files[f"{kind}_config"] = file
    if follow_includes:
        parts["security"] = _reconcile_security(
            (r.file, files["security_config"]),
            raw,
            sections["security"],
            (parts["security"], raws["security"]),
            errors,
        )
        sections["api"] = _reconcile_api_tls(
            (r.file, files["security_config"]), raw, sections["api"], parts["security"], errors
        )
    if errors:
        raise ConfigError.collect(errors)
    if not follow_includes:
        return EdgeConfig(source=source, files=files, **sections)
    return EdgeConfig(
        sync_config=parts["sync"],
        monitoring_config=parts["monitoring"],
        security_config=parts["security"],
        source=source,
        files=files,
        **sections,
    )


def _load_part(
    kind: str,
    where: str | None,
    sections: dict[str, Any],
    errors: list[ConfigError],
    conflict_resolution: str | None = None,
) -> tuple[Any, dict[str, Any], str]:
    """One companion file parsed (or its defaults), its raw data and where it came from."""
    data: Any = {}
    source = DEFAULTS
    if where is not None:
        try:
            data, source = read_data(where)
        except ConfigError as exc:
            errors.extend(exc.errors or [exc])
            data = {}
    r = Reader(source, os.path.dirname(os.path.abspath(where)) if where else None)
    top = _top(r, data, kind)
    part = _parse_part(
        kind,
        r,
        top,
        sync_interval=sections["sync"].sync_interval,
        health_check_interval=sections["monitoring"].health_check_interval,
        conflict_resolution=conflict_resolution,
    )
    errors.extend(r.errors)
    return part, top, source


def _get(data: Any, *keys: str) -> Any:
    """``data[k1][k2]...`` or a sentinel ``_ABSENT`` when any level is missing."""
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return _ABSENT
        data = data[key]
    return data


_ABSENT = object()


def _reconcile_security(
    names: tuple[str, str],
    edge_raw: dict[str, Any],
    settings: SecuritySettings,
    found: tuple[SecurityConfig, dict[str, Any]],
    errors: list[ConfigError],
) -> SecurityConfig:
    """Make edge-security.yaml's switches follow edge-config.yaml's, or check that they agree."""
    edge_file, detail_file = names
    detail, detail_raw = found
    days = max(1, round(settings.key_rotation_interval / DAY))
    pairs: list[tuple[str, tuple[str, ...], object, object, Callable[[Any], Any]]] = [
        (
            "encryption_enabled",
            ("encryption", "storage", "enabled"),
            settings.encryption_enabled,
            detail.encryption.storage.enabled,
            lambda v: dataclasses.replace(
                detail.encryption,
                storage=dataclasses.replace(detail.encryption.storage, enabled=v),
            ),
        ),
        (
            "key_rotation_interval",
            ("encryption", "storage", "key_rotation_days"),
            days,
            detail.encryption.storage.key_rotation_days,
            lambda v: dataclasses.replace(
                detail.encryption,
                storage=dataclasses.replace(detail.encryption.storage, key_rotation_days=v),
            ),
        ),
        (
            "attestation_enabled",
            ("attestation", "enabled"),
            settings.attestation_enabled,
            detail.attestation.enabled,
            lambda v: dataclasses.replace(detail.attestation, enabled=v),
        ),
    ]
    updates: dict[str, Any] = {}
    for key, detail_keys, edge_value, detail_value, rebuild in pairs:
        in_edge = _get(edge_raw, "security", key) is not _ABSENT
        in_detail = _get(detail_raw, *detail_keys) is not _ABSENT
        if in_edge and in_detail:
            exact = key != "key_rotation_interval" or settings.key_rotation_interval == days * DAY
            if edge_value != detail_value or not exact:
                shown = show(_get(edge_raw, "security", key))
                errors.append(
                    ConfigError(
                        f"is {shown} but {detail_file} sets {'.'.join(detail_keys)}: "
                        f"{show(detail_value)}; make them agree or remove one",
                        file=edge_file,
                        path=f"security.{key}",
                    )
                )
        elif in_edge:
            section = detail_keys[0]
            if section == "encryption":
                detail = dataclasses.replace(detail, encryption=rebuild(edge_value))
            else:
                updates[section] = rebuild(edge_value)
    return dataclasses.replace(detail, **updates) if updates else detail


def _reconcile_api_tls(
    names: tuple[str, str],
    edge_raw: dict[str, Any],
    api: ApiConfig,
    security: SecurityConfig,
    errors: list[ConfigError],
) -> ApiConfig:
    """``api.tls`` unset follows the authentication method: certificates need TLS.

    A client certificate can only be presented over TLS, so ``method: certificate`` serves
    the API over TLS unless ``api.tls`` says otherwise, and then it is an error: with plain
    HTTP and certificates only, nobody could call the API at all.
    """
    edge_file, security_file = names
    method = security.access_control.authentication.method
    if _get(edge_raw, "api", "tls") is _ABSENT:
        return dataclasses.replace(api, tls=method == "certificate")
    if method == "certificate" and not api.tls:
        errors.append(
            ConfigError(
                f"is false but {security_file} sets access_control.authentication.method: "
                "certificate, and client certificates need TLS; set api.tls: true, or "
                "method: token (bearer tokens) or any (either)",
                file=edge_file,
                path="api.tls",
            )
        )
    return api
