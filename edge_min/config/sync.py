"""sync-config.yaml: per-entity sync policy, schedule, retry and network limits.

The four syncable entities are the spec's tables: workflows, workflow_executions, agents,
agent_executions. An entity the file does not name keeps the spec's policy for it; an entity
missing from ``schedule`` is synced every ``sync.sync_interval`` of edge-config.yaml, and an
entity without its own ``conflict_resolution`` takes edge-config.yaml's
``sync.conflict_resolution`` when that file sets one (else the spec's policy for it).
``network.max_bandwidth`` is bytes per second (``1MB`` = 1,048,576 B/s); 0 means unlimited.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edge_min.config._validate import Reader, join
from edge_min.config.runtime import CONFLICT_RESOLUTIONS, MB

ENTITIES = ("workflows", "workflow_executions", "agents", "agent_executions")
PRIORITIES = ("high", "medium", "low")


@dataclass(frozen=True)
class EntitySync:
    """How one entity (table) is synced."""

    priority: str = "medium"
    conflict_resolution: str = "last_modified"
    batch_size: int = 100


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff for failed sync attempts."""

    max_attempts: int = 5
    initial_delay: float = 30.0
    max_delay: float = 3600.0
    backoff_factor: float = 2.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based), capped at max_delay."""
        raw = self.initial_delay * self.backoff_factor ** max(0, attempt - 1)
        return float(min(self.max_delay, raw))


@dataclass(frozen=True)
class NetworkPolicy:
    """Bandwidth cap (bytes per second, 0 = unlimited) and payload treatment."""

    max_bandwidth: int = 1 * MB
    compression: bool = True
    encryption: bool = True


def default_entities() -> dict[str, EntitySync]:
    """The spec's per-entity policies."""
    return {
        "workflows": EntitySync("high", "central_wins", 50),
        "workflow_executions": EntitySync("medium", "last_modified", 100),
        "agents": EntitySync("high", "central_wins", 20),
        "agent_executions": EntitySync("low", "last_modified", 200),
    }


def default_schedule() -> dict[str, float]:
    """The spec's per-entity sync periods, in seconds."""
    return {
        "workflows": 300.0,
        "workflow_executions": 600.0,
        "agents": 3600.0,
        "agent_executions": 1800.0,
    }


@dataclass(frozen=True)
class SyncConfig:
    """The whole of sync-config.yaml."""

    entities: dict[str, EntitySync] = field(default_factory=default_entities)
    schedule: dict[str, float] = field(default_factory=default_schedule)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    network: NetworkPolicy = field(default_factory=NetworkPolicy)


SYNC_FILE_KEYS = ("sync",)
SYNC_KEYS = ("entities", "schedule", "retry", "network")
_ENTITY_KEYS = ("priority", "conflict_resolution", "batch_size")
_RETRY_KEYS = ("max_attempts", "initial_delay", "max_delay", "backoff_factor")
_NETWORK_KEYS = ("max_bandwidth", "compression", "encryption")


def parse_sync_config(
    r: Reader,
    data: dict[str, Any],
    sync_interval: float | None = None,
    conflict_resolution: str | None = None,
) -> SyncConfig:
    """Read sync-config.yaml's data; ``sync_interval`` fills entities missing from schedule,
    and ``conflict_resolution`` (edge-config.yaml's ``sync.conflict_resolution``, when that
    file sets it) is the policy of every entity that does not set its own."""
    r.check_keys(data, "", SYNC_FILE_KEYS)
    top = r.section(data, "sync", "", SYNC_KEYS)
    return SyncConfig(
        entities=_entities(r, top, conflict_resolution),
        schedule=_schedule(r, top, sync_interval),
        retry=_retry(r, top),
        network=_network(r, top),
    )


def _entities(
    r: Reader, top: dict[str, Any], conflict_resolution: str | None
) -> dict[str, EntitySync]:
    path = "sync.entities"
    given = r.mapping(top.get("entities"), path)
    r.check_keys(given, path, ENTITIES)
    out = default_entities()
    if conflict_resolution is not None:
        out = {
            name: EntitySync(e.priority, conflict_resolution, e.batch_size)
            for name, e in out.items()
        }
    for name, raw in given.items():
        if name not in ENTITIES:
            continue
        p = join(path, name)
        d = r.mapping(raw, p)
        r.check_keys(d, p, _ENTITY_KEYS)
        dflt = out[name]
        out[name] = EntitySync(
            priority=r.enum(d, "priority", p, dflt.priority, PRIORITIES),
            conflict_resolution=r.enum(
                d, "conflict_resolution", p, dflt.conflict_resolution, CONFLICT_RESOLUTIONS
            ),
            batch_size=r.integer(d, "batch_size", p, dflt.batch_size, minimum=1),
        )
    return out


def _schedule(r: Reader, top: dict[str, Any], sync_interval: float | None) -> dict[str, float]:
    path = "sync.schedule"
    given = r.mapping(top.get("schedule"), path)
    r.check_keys(given, path, ENTITIES)
    if "schedule" in top and sync_interval is not None:
        out = {name: sync_interval for name in ENTITIES}
    else:
        out = default_schedule()
    for name, raw in given.items():
        if name in ENTITIES:
            seconds = r.seconds(join(path, name), raw)
            if seconds is not None:
                out[name] = seconds
    return out


def _retry(r: Reader, top: dict[str, Any]) -> RetryPolicy:
    p = "sync.retry"
    d = r.section(top, "retry", "sync", _RETRY_KEYS)
    dflt = RetryPolicy()
    policy = RetryPolicy(
        max_attempts=r.integer(d, "max_attempts", p, dflt.max_attempts, minimum=1),
        initial_delay=r.duration(d, "initial_delay", p, dflt.initial_delay, allow_zero=True),
        max_delay=r.duration(d, "max_delay", p, dflt.max_delay),
        backoff_factor=r.number(d, "backoff_factor", p, dflt.backoff_factor, minimum=1),
    )
    if policy.initial_delay > policy.max_delay:
        r.fail(
            join(p, "initial_delay"),
            f"must not exceed max_delay ({policy.max_delay:g} s), got {policy.initial_delay:g} s",
            policy.initial_delay,
        )
    return policy


def _network(r: Reader, top: dict[str, Any]) -> NetworkPolicy:
    p = "sync.network"
    d = r.section(top, "network", "sync", _NETWORK_KEYS)
    dflt = NetworkPolicy()
    return NetworkPolicy(
        max_bandwidth=r.size(d, "max_bandwidth", p, dflt.max_bandwidth),
        compression=r.boolean(d, "compression", p, dflt.compression),
        encryption=r.boolean(d, "encryption", p, dflt.encryption),
    )
