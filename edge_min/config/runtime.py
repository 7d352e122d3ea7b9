"""edge-config.yaml: the runtime's main file, one frozen dataclass per section.

Sections from the spec: ``runtime``, ``sync``, ``storage``, ``security``, ``monitoring``.
Our extensions: ``api`` (the local HTTP API), ``storage.synchronous``/``backup_keep``/``root``
and ``includes`` (where the other three files live). ``parse_runtime_sections`` reads them
all through one ``Reader`` so every error in the file is reported together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from edge_min.config._validate import Reader, join

MODES = ("edge",)
OFFLINE_MODES = ("auto", "always", "never")
CONFLICT_RESOLUTIONS = ("last_modified", "central_wins", "edge_wins", "merge", "manual")
STORAGE_TYPES = ("sqlite",)
SYNCHRONOUS_MODES = ("FULL", "NORMAL", "OFF")
DEFAULT_CENTRAL_URL = "http://127.0.0.1:8765"
DEFAULT_DB_NAME = "meta-agent-edge.db"
MB = 1024 * 1024
DAY = 86400.0


@dataclass(frozen=True)
class RuntimeConfig:
    """``runtime:``: how much work and memory the runtime may take."""

    mode: str = "edge"
    max_concurrent_workflows: int = 5
    max_memory_usage: int = 512 * MB
    max_storage_usage: int = 2048 * MB
    offline_mode: str = "auto"


@dataclass(frozen=True)
class SyncSettings:
    """``sync:`` in edge-config.yaml: where and how often to sync with central."""

    central_url: str = DEFAULT_CENTRAL_URL
    sync_interval: float = 300.0
    sync_on_connect: bool = True
    conflict_resolution: str = "last_modified"


@dataclass(frozen=True)
class StorageConfig:
    """``storage:``: the SQLite database, its durability and its backups."""

    type: str = "sqlite"
    path: str | None = None
    backup_interval: float = DAY
    synchronous: str = "FULL"
    backup_keep: int = 7
    root: str | None = None


@dataclass(frozen=True)
class SecuritySettings:
    """``security:`` in edge-config.yaml: the switches; edge-security.yaml has the detail."""

    encryption_enabled: bool = True
    key_rotation_interval: float = 30 * DAY
    # False by default: a source run has no verified boot chain. The signed gateway binary's
    # `edge-min init` writes true (edge_min/security/boot.py, docs/security.md).
    secure_boot: bool = False
    attestation_enabled: bool = True


@dataclass(frozen=True)
class MonitoringSettings:
    """``monitoring:`` in edge-config.yaml: collection switch, retention and check cadence."""

    metrics_collection: bool = True
    metrics_retention: float = 7 * DAY
    health_check_interval: float = 60.0
    resource_check_interval: float = 300.0


@dataclass(frozen=True)
class ApiConfig:
    """``api:`` (extension): the local HTTP API's address and limits."""

    host: str = "127.0.0.1"
    port: int = 8000
    health_open: bool = True
    max_request_bytes: int = 1 * MB
    # HTTPS with the certificate of edge-security.yaml's encryption.communication; a client
    # certificate, when presented, is verified and mapped to a role (certificate_roles).
    tls: bool = False


@dataclass(frozen=True)
class UpdateConfig:
    """``update:`` (extension): how a new version on trial in an A/B slot is judged."""

    # Health must have passed this long without a break before a trial slot is committed.
    commit_after: float = 60.0
    # A start of a trial slot that has not committed by then counts as a failed start.
    health_timeout: float = 300.0


@dataclass(frozen=True)
class Includes:
    """``includes:`` (extension): the other config files, as written (None: look beside)."""

    sync: str | None = None
    monitoring: str | None = None
    security: str | None = None


EDGE_KEYS = (
    "runtime",
    "sync",
    "storage",
    "security",
    "monitoring",
    "api",
    "update",
    "includes",
)
_RUNTIME_KEYS = (
    "mode",
    "max_concurrent_workflows",
    "max_memory_usage",
    "max_storage_usage",
    "offline_mode",
)
_SYNC_KEYS = ("central_url", "sync_interval", "sync_on_connect", "conflict_resolution")
_STORAGE_KEYS = ("type", "path", "backup_interval", "synchronous", "backup_keep", "root")
_SECURITY_KEYS = (
    "encryption_enabled",
    "key_rotation_interval",
    "secure_boot",
    "attestation_enabled",
)
_MONITORING_KEYS = (
    "metrics_collection",
    "metrics_retention",
    "health_check_interval",
    "resource_check_interval",
)
_API_KEYS = ("host", "port", "health_open", "max_request_bytes", "tls")
_UPDATE_KEYS = ("commit_after", "health_timeout")
_INCLUDE_KEYS = ("sync", "monitoring", "security")


def check_url(r: Reader, where: str, url: str) -> None:
    """Record an error unless ``url`` is an absolute http(s) URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        r.fail(where, f"expected an http:// or https:// URL, got {url!r}", url)


def parse_runtime(r: Reader, data: dict[str, Any]) -> RuntimeConfig:
    """The ``runtime:`` section."""
    d = r.section(data, "runtime", "", _RUNTIME_KEYS)
    p = "runtime"
    dflt = RuntimeConfig()
    return RuntimeConfig(
        mode=r.enum(d, "mode", p, dflt.mode, MODES),
        max_concurrent_workflows=r.integer(
            d, "max_concurrent_workflows", p, dflt.max_concurrent_workflows, minimum=1
        ),
        max_memory_usage=r.size(d, "max_memory_usage", p, dflt.max_memory_usage, minimum=1),
        max_storage_usage=r.size(d, "max_storage_usage", p, dflt.max_storage_usage, minimum=1),
        offline_mode=r.enum(d, "offline_mode", p, dflt.offline_mode, OFFLINE_MODES),
    )


def parse_sync_settings(r: Reader, data: dict[str, Any]) -> SyncSettings:
    """The ``sync:`` section of edge-config.yaml."""
    d = r.section(data, "sync", "", _SYNC_KEYS)
    p = "sync"
    dflt = SyncSettings()
    url = r.string(d, "central_url", p, dflt.central_url)
    if "central_url" in d:
        check_url(r, join(p, "central_url"), url)
    return SyncSettings(
        central_url=url,
        sync_interval=r.duration(d, "sync_interval", p, dflt.sync_interval),
        sync_on_connect=r.boolean(d, "sync_on_connect", p, dflt.sync_on_connect),
        conflict_resolution=r.enum(
            d, "conflict_resolution", p, dflt.conflict_resolution, CONFLICT_RESOLUTIONS
        ),
    )


def parse_storage(r: Reader, data: dict[str, Any]) -> StorageConfig:
    """The ``storage:`` section."""
    d = r.section(data, "storage", "", _STORAGE_KEYS)
    p = "storage"
    dflt = StorageConfig()
    synchronous = d.get("synchronous", dflt.synchronous)
    if synchronous is False:
        # YAML 1.1 reads an unquoted OFF as the boolean false.
        synchronous = "OFF"
    elif isinstance(synchronous, str) and synchronous.upper() in SYNCHRONOUS_MODES:
        synchronous = synchronous.upper()
    return StorageConfig(
        type=r.enum(d, "type", p, dflt.type, STORAGE_TYPES),
        path=r.file_path(d, "path", p),
        backup_interval=r.duration(d, "backup_interval", p, dflt.backup_interval, allow_zero=True),
        synchronous=r.choice(join(p, "synchronous"), synchronous, "FULL", SYNCHRONOUS_MODES),
        backup_keep=r.integer(d, "backup_keep", p, dflt.backup_keep, minimum=1),
        root=r.file_path(d, "root", p),
    )


def parse_security_settings(r: Reader, data: dict[str, Any]) -> SecuritySettings:
    """The ``security:`` section of edge-config.yaml."""
    d = r.section(data, "security", "", _SECURITY_KEYS)
    p = "security"
    dflt = SecuritySettings()
    return SecuritySettings(
        encryption_enabled=r.boolean(d, "encryption_enabled", p, dflt.encryption_enabled),
        key_rotation_interval=r.duration(d, "key_rotation_interval", p, dflt.key_rotation_interval),
        secure_boot=r.boolean(d, "secure_boot", p, dflt.secure_boot),
        attestation_enabled=r.boolean(d, "attestation_enabled", p, dflt.attestation_enabled),
    )


def parse_monitoring_settings(r: Reader, data: dict[str, Any]) -> MonitoringSettings:
    """The ``monitoring:`` section of edge-config.yaml."""
    d = r.section(data, "monitoring", "", _MONITORING_KEYS)
    p = "monitoring"
    dflt = MonitoringSettings()
    return MonitoringSettings(
        metrics_collection=r.boolean(d, "metrics_collection", p, dflt.metrics_collection),
        metrics_retention=r.duration(d, "metrics_retention", p, dflt.metrics_retention),
        health_check_interval=r.duration(d, "health_check_interval", p, dflt.health_check_interval),
        resource_check_interval=r.duration(
            d, "resource_check_interval", p, dflt.resource_check_interval
        ),
    )


def parse_api(r: Reader, data: dict[str, Any]) -> ApiConfig:
    """The ``api:`` section (extension)."""
    d = r.section(data, "api", "", _API_KEYS)
    p = "api"
    dflt = ApiConfig()
    return ApiConfig(
        host=r.string(d, "host", p, dflt.host),
        # Port 0 asks the OS for a free port, which tests and side-by-side runs rely on.
        port=r.integer(d, "port", p, dflt.port, minimum=0, maximum=65535),
        health_open=r.boolean(d, "health_open", p, dflt.health_open),
        max_request_bytes=r.size(d, "max_request_bytes", p, dflt.max_request_bytes, minimum=1),
        tls=r.boolean(d, "tls", p, dflt.tls),
    )


def parse_update(r: Reader, data: dict[str, Any]) -> UpdateConfig:
    """The ``update:`` section (extension): the A/B trial's commit and start timeouts."""
    d = r.section(data, "update", "", _UPDATE_KEYS)
    p = "update"
    dflt = UpdateConfig()
    commit_after = r.duration(d, "commit_after", p, dflt.commit_after)
    health_timeout = r.duration(d, "health_timeout", p, dflt.health_timeout)
    if health_timeout <= commit_after:
        r.fail(
            join(p, "health_timeout"),
            f"must be longer than update.commit_after ({commit_after:g}s), or no trial can "
            "ever commit; raise it",
            health_timeout,
        )
    return UpdateConfig(commit_after=commit_after, health_timeout=health_timeout)


def parse_includes(r: Reader, data: dict[str, Any]) -> Includes:
    """The ``includes:`` section (extension), paths resolved against the file's folder."""
    d = r.section(data, "includes", "", _INCLUDE_KEYS)
    return Includes(
        sync=r.file_path(d, "sync", "includes"),
        monitoring=r.file_path(d, "monitoring", "includes"),
        security=r.file_path(d, "security", "includes"),
    )
