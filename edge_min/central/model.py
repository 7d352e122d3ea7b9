"""What devices send and what central answers: batches, devices, and their validation.

Shared by the HTTP app and the stores. Every check raises an error naming the item, the
field, the bad value and what would be accepted: ``BadBatch`` for what a device sends (push
batches, alerts, metrics; nothing of a refused batch is applied), ``ProvisioningError`` for
what an operator asks of the device registry (nothing is changed). Both answer HTTP 400; the
tree of every error, with its code, is drawn in ``edge_min.errors``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from edge_min.errors import EdgeError

ENTITIES = ("workflows", "workflow_executions", "agents", "agent_executions")
DEVICE_STATUSES = ("provisioned", "active", "decommissioned")

_NODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")
_ID_MAX = 256


class BadBatch(EdgeError):
    """A push batch (or alert/metric) is malformed; nothing of it was applied."""

    code = "bad_batch"


class ProvisioningError(EdgeError):
    """A device registration, provisioning or operator action is wrong; nothing was changed."""

    code = "bad_provisioning"


class BatchIdReused(EdgeError):
    """A batch id already applied for another node or entity came again."""

    code = "batch_id_reused"


@dataclass(frozen=True)
class PushItem:
    """One edited row in a push batch."""

    id: str
    base_version: int | None
    hlc: str
    row: dict[str, Any]
    field_hlcs: dict[str, str]
    deleted: bool


@dataclass(frozen=True)
class PushBatch:
    """A validated push batch: all items of one entity from one node."""

    batch_id: str
    node: str
    entity: str
    items: list[PushItem]


@dataclass(frozen=True)
class Device:
    """A device in the registry; ``sync_key`` never leaves central through ``to_dict``."""

    id: str
    status: str
    ip_address: str | None = None
    ssh_user: str | None = None
    last_seen: str | None = None
    sync_key: bytes | None = None
    created_at: str | None = None
    provisioned_at: str | None = None
    last_action: str | None = None
    last_action_at: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The device as the API answers it."""
        return {
            "id": self.id,
            "status": self.status,
            "ip_address": self.ip_address,
            "ssh_user": self.ssh_user,
            "last_seen": self.last_seen,
            "created_at": self.created_at,
            "provisioned_at": self.provisioned_at,
            "last_action": self.last_action,
            "last_action_at": self.last_action_at,
            "encryption_key": self.sync_key is not None,
            "details": self.details,
        }


def check_node(node: Any, what: str = "node id", *, error: type[EdgeError] = BadBatch) -> str:
    """A device id: 1-128 of letters, digits and ``._:@-``, starting alphanumeric."""
    if not isinstance(node, str) or not _NODE_RE.match(node):
        raise error(
            f"{what} {node!r} is not valid; use 1-128 letters, digits, '.', '_', ':', '@' or '-'"
        )
    return node


def check_entity(entity: Any) -> str:
    """One of the synced entity types."""
    if entity not in ENTITIES:
        raise BadBatch(f"entity {entity!r} is not synced; use one of {', '.join(ENTITIES)}")
    return str(entity)


def json_text(value: Any, what: str, *, error: type[EdgeError] = BadBatch) -> str:
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise error(f"{what} is not JSON-representable: {exc}") from exc


def parse_push(header: dict[str, Any], items: Any, node: str) -> PushBatch:
    """Validate a decoded push frame into a PushBatch; BadBatch names the bad field and item."""
    if header.get("kind") != "push":
        raise BadBatch(f"frame kind {header.get('kind')!r} cannot be pushed; send kind 'push'")
    entity = check_entity(header.get("entity"))
    batch_id = header.get("batch")
    if not isinstance(batch_id, str) or not 0 < len(batch_id) <= _ID_MAX:
        raise BadBatch(f"header 'batch' {batch_id!r} must be a non-empty string of <= 256 chars")
    sender = header.get("node")
    if sender is not None and sender != node:
        raise BadBatch(f"frame node {sender!r} is not the requesting device {node!r}")
    if not isinstance(items, list):
        raise BadBatch(f"push payload must be a list of items, not {type(items).__name__}")
    if header.get("count") is not None and header["count"] != len(items):
        raise BadBatch(f"header 'count' {header['count']!r} but the payload has {len(items)} items")
    return PushBatch(batch_id, node, entity, [_parse_item(i, raw) for i, raw in enumerate(items)])


def _parse_item(index: int, raw: Any) -> PushItem:
    where = f"item {index}"
    if not isinstance(raw, dict):
        raise BadBatch(f"{where} must be a map, not {type(raw).__name__}")
    item_id = raw.get("id")
    if not isinstance(item_id, str) or not 0 < len(item_id) <= _ID_MAX:
        raise BadBatch(f"{where}: 'id' {item_id!r} must be a non-empty string of <= 256 chars")
    where = f"item {index} (id {item_id!r})"
    base = raw.get("base_version")
    if base is not None and (not isinstance(base, int) or isinstance(base, bool) or base < 1):
        raise BadBatch(f"{where}: 'base_version' {base!r} must be a positive integer or null")
    hlc = raw.get("hlc")
    if not isinstance(hlc, str) or not hlc:
        raise BadBatch(f"{where}: 'hlc' {hlc!r} must be a non-empty string")
    row = raw.get("row")
    if row is None:
        row = {}
    if not isinstance(row, dict):
        raise BadBatch(f"{where}: 'row' must be a map, not {type(row).__name__}")
    json_text(row, f"{where}: 'row'")
    field_hlcs = raw.get("field_hlcs") or {}
    if not isinstance(field_hlcs, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in field_hlcs.items()
    ):
        raise BadBatch(f"{where}: 'field_hlcs' must map column names to HLC strings")
    deleted = raw.get("deleted", False)
    if not isinstance(deleted, bool):
        raise BadBatch(f"{where}: 'deleted' {deleted!r} must be true or false")
    return PushItem(item_id, base, hlc, row, field_hlcs, deleted)


def load_json(value: Any) -> Any:
    """A JSON column's value (SQLite gives text, PostgreSQL jsonb gives parsed data)."""
    return json.loads(value) if isinstance(value, str | bytes) else value


def alert_row(node: str, index: int, alert: Any, now: str) -> list[Any]:
    if not isinstance(alert, dict):
        raise BadBatch(f"alert {index} must be a JSON object, not {type(alert).__name__}")
    name = alert.get("name") or alert.get("alert")
    if not isinstance(name, str) or not name:
        raise BadBatch(f"alert {index}: 'name' {name!r} must be a non-empty string")
    severity = alert.get("severity", "warning")
    if not isinstance(severity, str):
        raise BadBatch(f"alert {index}: 'severity' {severity!r} must be a string")
    message = alert.get("message")
    at = alert.get("at", now)
    return [
        node,
        name,
        severity,
        None if message is None else str(message),
        str(at),
        now,
        json_text(alert, f"alert {index}"),
    ]


def metric_row(node: str, index: int, sample: Any, now: str) -> list[Any]:
    if not isinstance(sample, dict):
        raise BadBatch(f"metric {index} must be a JSON object, not {type(sample).__name__}")
    name = sample.get("name")
    if not isinstance(name, str) or not name:
        raise BadBatch(f"metric {index}: 'name' {name!r} must be a non-empty string")
    value = sample.get("value")
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise BadBatch(f"metric {index} ({name}): 'value' {value!r} must be a number")
    labels = sample.get("labels") or {}
    if not isinstance(labels, dict):
        raise BadBatch(f"metric {index} ({name}): 'labels' must be a JSON object")
    at = sample.get("at", now)
    return [node, name, float(value), str(at), json_text(labels, f"metric {index}"), now]
