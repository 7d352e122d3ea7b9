"""The five config files as frozen dataclasses, validated with errors that name file and key.

Files (spec: /shared/spec/configs; our extensions are marked *):

- ``edge-config.yaml`` -> ``EdgeConfig``: ``runtime``, ``sync``, ``storage`` (* ``synchronous``,
  ``backup_keep``, ``root``; ``path`` null = ``<data dir>/meta-agent-edge.db``), ``security``,
  ``monitoring``, * ``api`` (host, port, health_open, max_request_bytes) and * ``includes``
  (paths of the other three files, relative to edge-config.yaml's folder; unnamed ones are
  looked for beside it; absent ones take defaults).
- ``sync-config.yaml`` -> ``SyncConfig``; ``edge-monitoring.yaml`` -> ``MonitoringConfig``;
  ``edge-security.yaml`` -> ``SecurityConfig`` (* ``attestation.method: local``).
- ``edge-agent-config.yaml`` -> ``AgentConfig`` (* ``runtime.executor`` onnxruntime, command or
  python, ``command``, ``entry``, ``env``, ``needs_network``, ``provider_fallback``;
  * ``input.truncate``).

Units: sizes such as ``512MB`` become bytes (binary), ``max_bandwidth`` bytes per second,
durations seconds (numbers, or strings such as ``5m``), ``key_rotation_days`` days. Every
file is optional: ``load_config(None)`` gives the defaults. YAML is imported only when a
YAML file is read; ``.json`` files need nothing beyond the standard library.
"""

from __future__ import annotations

from edge_min.config.agent import (
    AgentConfig,
    AgentResources,
    AgentRuntime,
    InputSpec,
    ModelConfig,
    OutputSpec,
    load_agent_config,
    parse_agent_config,
)
from edge_min.config.defaults import default_files
from edge_min.config.loader import (
    FILE_NAMES,
    KINDS,
    EdgeConfig,
    check_file,
    detect_kind,
    load_config,
    parse_config,
)
from edge_min.config.monitoring import (
    AlertSpec,
    Condition,
    HealthCheckSpec,
    MetricsPolicy,
    MonitoringConfig,
    parse_condition,
)
from edge_min.config.runtime import (
    ApiConfig,
    MonitoringSettings,
    RuntimeConfig,
    SecuritySettings,
    StorageConfig,
    SyncSettings,
)
from edge_min.config.security import (
    AccessControlConfig,
    AttestationConfig,
    AuthenticationConfig,
    AuthorizationConfig,
    CommunicationSecurity,
    EncryptionConfig,
    Role,
    SecurityConfig,
    StorageEncryption,
    TamperDetectionConfig,
)
from edge_min.config.sync import EntitySync, NetworkPolicy, RetryPolicy, SyncConfig
from edge_min.errors import ConfigError

__all__ = [
    "FILE_NAMES",
    "KINDS",
    "AccessControlConfig",
    "AgentConfig",
    "AgentResources",
    "AgentRuntime",
    "AlertSpec",
    "ApiConfig",
    "AttestationConfig",
    "AuthenticationConfig",
    "AuthorizationConfig",
    "CommunicationSecurity",
    "Condition",
    "ConfigError",
    "EdgeConfig",
    "EncryptionConfig",
    "EntitySync",
    "HealthCheckSpec",
    "InputSpec",
    "MetricsPolicy",
    "ModelConfig",
    "MonitoringConfig",
    "MonitoringSettings",
    "NetworkPolicy",
    "OutputSpec",
    "RetryPolicy",
    "Role",
    "RuntimeConfig",
    "SecurityConfig",
    "SecuritySettings",
    "StorageConfig",
    "StorageEncryption",
    "SyncConfig",
    "SyncSettings",
    "TamperDetectionConfig",
    "check_file",
    "default_files",
    "detect_kind",
    "load_agent_config",
    "load_config",
    "parse_agent_config",
    "parse_condition",
    "parse_config",
]
