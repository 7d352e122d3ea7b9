"""The central store port: versioned records, applied batches, devices, alerts and metrics.

Two backends share the SQL below through ``SqlCentralStore``: ``SqliteCentralStore``
(``edge_min.central.sqlite_store``, the embedded default) and ``PgCentralStore``
(``edge_min.central.pg_store``, several central processes on one PostgreSQL). A backend
supplies connections, transactions, retries, its DDL and two hooks: ``_lock_entity`` and
``_allocate_versions``.

Why a puller never skips a record: a puller reads ``version > V`` and moves its cursor to
the greatest version it saw. If a transaction could commit version 10 *after* another
committed version 11 of the same entity, a puller that had already seen 11 would never see
10. So every push transaction of an entity holds that entity's write lock from before it
reads the applied-batch table until it commits (SQLite: ``BEGIN IMMEDIATE``, one writer for
the whole file; PostgreSQL: ``pg_advisory_xact_lock`` keyed by entity), and allocates its
versions under that lock from one global, non-caching counter. Commits of one entity are
then serial and each one's versions are all greater than every version committed before
it, so any snapshot a puller reads is a prefix of the entity's version order. Versions stay
unique across entities because the counter is global; gaps (a rolled-back push) are harmless.

SQL here is written with ``?`` placeholders; the PostgreSQL backend rewrites them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from edge_min.central.attestation_store import AttestationSql, Judge
from edge_min.central.enrollment_store import EnrollmentSql, Issue
from edge_min.central.model import (
    DEVICE_STATUSES,
    ENTITIES,
    BadBatch,
    BatchIdReused,
    Device,
    ProvisioningError,
    PushBatch,
    PushItem,
    alert_row,
    check_entity,
    check_node,
    json_text,
    load_json,
    metric_row,
    parse_push,
)
from edge_min.central.rollout_store import RolloutSql
from edge_min.clock import Clock, SystemClock, iso
from edge_min.errors import ConfigError, NotFound

T = TypeVar("T")

DEVICE_ACTIONS = ("provision", "update", "restart", "decommission")
MAX_PULL_LIMIT = 10_000
SCHEMA_VERSION = 1

_RECORD_COLUMNS = 'id, version, hlc, origin, "row", field_hlcs, deleted'
_DEVICE_COLUMNS = (
    "id, status, ip_address, ssh_user, last_seen, sync_key, created_at, provisioned_at, "
    "last_action, last_action_at, details"
)


class Tx(Protocol):
    """What the shared SQL needs from one open transaction."""

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a statement and return all its rows."""
        ...

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement and return its row count."""
        ...


class CentralStore(Protocol):
    """The port the central HTTP app talks to."""

    kind: str

    def push(self, batch: PushBatch) -> list[dict[str, Any]]:
        """Apply a batch by compare-and-set in one transaction; replays return the stored result."""
        ...

    def pull(self, entity: str, after: int, limit: int) -> list[dict[str, Any]]:
        """Records of ``entity`` with version > ``after``, in version order."""
        ...

    def touch_device(self, node: str, ip: str | None, *, register: bool) -> Device | None:
        """Record a device's contact; create it (active) if ``register``; None if unknown."""
        ...

    def get_device(self, device_id: str) -> Device:
        """The device, or NotFound."""
        ...

    def provision_device(self, device_id: str, **fields: Any) -> Device:
        """Register or re-provision a device (ip_address, ssh_user, sync_key, details)."""
        ...

    def record_device_action(self, device_id: str, action: str, details: dict[str, Any]) -> Device:
        """Log an operator action (update, restart, decommission) on a known device."""
        ...

    def add_alerts(self, node: str, alerts: list[dict[str, Any]]) -> int:
        """Store alerts sent by ``node``; returns how many."""
        ...

    def add_metrics(self, node: str, samples: list[dict[str, Any]]) -> int:
        """Store metric samples sent by ``node``; returns how many."""
        ...

    def list_alerts(self, node: str | None, limit: int) -> list[dict[str, Any]]:
        """The newest alerts, optionally of one node."""
        ...

    def list_metrics(self, node: str | None, limit: int) -> list[dict[str, Any]]:
        """The newest metric samples, optionally of one node."""
        ...

    def ping(self) -> None:
        """Raise if the database cannot be reached."""
        ...

    def close(self) -> None:
        """Close every connection."""
        ...

    # Attestation (edge_min.central.attestation_store) -----------------------------------------

    def issue_nonce(self, device_id: str, nonce: str, ttl: float) -> float:
        """Record a challenge for ``device_id``; returns when it expires (epoch seconds)."""
        ...

    def attest(
        self,
        device_id: str,
        nonce: str,
        public_key: str,
        signed: bool,
        judge: Judge,
        *,
        measurements: dict[str, Any],
        boot: dict[str, Any],
    ) -> dict[str, Any]:
        """Consume the nonce, check the key, judge, record: one transaction; the result row."""
        ...

    def attestation_info(self, device_id: str, results: int = 0) -> dict[str, Any]:
        """Key, policy, pending request, the last pass/fail verdict and ``results`` newest."""
        ...

    def set_attestation(self, device_id: str, **fields: Any) -> None:
        """Set (or with None forget) a device's ``policy`` and/or ``public_key``."""
        ...

    def request_attestation(self, device_id: str) -> str:
        """Ask ``device_id`` for a quote at its next poll; returns when it was asked."""
        ...

    # Rollouts (edge_min.central.rollout_store) ------------------------------------------------

    def put_bundle(self, data: bytes, version: str | None) -> dict[str, Any]:
        """Store a bundle (content-addressed); its id, sha256, length, version."""
        ...

    def bundle_info(self, bundle_id: str) -> dict[str, Any]:
        """A bundle's id, sha256, length, version; NotFound."""
        ...

    def bundle_bytes(self, bundle_id: str, start: int, length: int) -> bytes:
        """``length`` bytes of a bundle from ``start``."""
        ...

    def create_rollout(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Make a rollout from a validated request (RolloutRefused names a missing thing)."""
        ...

    def list_rollouts(self, limit: int) -> list[dict[str, Any]]:
        """The newest rollouts with their phase progress."""
        ...

    def get_rollout(self, rollout_id: str) -> dict[str, Any]:
        """A rollout with progress and every device's state; NotFound."""
        ...

    def rollout_action(self, rollout_id: str, action: str) -> dict[str, Any]:
        """Pause, resume or cancel; RolloutConflict when its status forbids it."""
        ...

    def assignment_for(self, device_id: str) -> dict[str, Any] | None:
        """The update the device should install now, or None."""
        ...

    def report_state(
        self,
        device_id: str,
        rollout_id: str,
        state: str,
        reason: str | None,
        running_version: str | None,
    ) -> dict[str, Any]:
        """Record a device's state, then advance or halt the rollout."""
        ...

    def rollout_state_of(self, device_id: str) -> dict[str, Any] | None:
        """The device's place in its newest rollout, or None."""
        ...

    def rollout_states_of(self, device_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """``rollout_state_of`` for many devices at once."""

    # Enrollment and inventory (edge_min.central.enrollment_store) ------------------------------

    def create_enroll_token(
        self,
        token_hash: str,
        *,
        ttl: float,
        device_id: str | None = None,
        tags: Sequence[str] = (),
        config: dict[str, Any] | None = None,
        attestation_policy: dict[str, Any] | None = None,
    ) -> float:
        """Record a claim token by its hash; returns when it expires (epoch seconds)."""
        ...

    def enroll(
        self,
        token_hash: str | None,
        issue: Issue,
        *,
        sync_key: bytes,
        attestation_key: str | None,
        factory_device: str | None = None,
    ) -> dict[str, Any]:
        """Use the token up (or vouch for ``factory_device``), sign, register the device and
        what it brings: one transaction."""
        ...

    def revoke_device_certs(self, device_id: str) -> list[str]:
        """Revoke every certificate issued to ``device_id``; the serials newly revoked."""
        ...

    def certificate_revoked(self, serial: str) -> bool:
        """Whether central revoked the certificate with this serial (lower-case hex)."""
        ...

    def save_report(self, device_id: str, report: dict[str, Any]) -> None:
        """Keep the device's newest report (version, slot, health, alerts_firing, rollout)."""
        ...

    def device_tags(self, device_id: str) -> list[str]:
        """The tags of a device (sorted)."""
        ...

    def device_config(self, device_id: str) -> dict[str, Any]:
        """The edge-config fragment central holds for a device ({} when none)."""
        ...

    def list_inventory(
        self,
        *,
        after: str | None,
        limit: int,
        status: str | None = None,
        tag: str | None = None,
        version: str | None = None,
        health: str | None = None,
    ) -> list[dict[str, Any]]:
        """Devices in id order after ``after``, filtered, each with its report and tags."""
        ...


def record_dict(row: Sequence[Any]) -> dict[str, Any]:
    """A ``records`` row (in ``_RECORD_COLUMNS`` order) as the wire shape."""
    return {
        "id": row[0],
        "version": int(row[1]),
        "hlc": row[2],
        "origin": row[3],
        "row": load_json(row[4]),
        "field_hlcs": load_json(row[5]),
        "deleted": bool(row[6]),
    }


def _device(row: Sequence[Any]) -> Device:
    key = row[5]
    return Device(
        id=row[0],
        status=row[1],
        ip_address=row[2],
        ssh_user=row[3],
        last_seen=row[4],
        sync_key=bytes.fromhex(key) if key else None,
        created_at=row[6],
        provisioned_at=row[7],
        last_action=row[8],
        last_action_at=row[9],
        details=load_json(row[10]) if row[10] is not None else {},
    )


# --- the shared SQL ----------------------------------------------------------------------------


class SqlCentralStore(AttestationSql, EnrollmentSql, RolloutSql):
    """The central store on any SQL backend that provides ``_transaction`` and two hooks."""

    kind = "sql"

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or SystemClock()

    # Backend hooks ---------------------------------------------------------------------------

    def _run(self, work: Callable[[Tx], T], *, write: bool, retry_ambiguous: bool) -> T:
        """Run ``work`` in one transaction, retrying transient failures.

        ``retry_ambiguous`` allows a retry when the connection broke around COMMIT (the
        work may have been applied): only for idempotent work.
        """
        raise NotImplementedError

    def _lock_entity(self, tx: Tx, entity: str) -> None:
        """Hold ``entity``'s push lock until this transaction ends."""
        raise NotImplementedError

    def _allocate_versions(self, tx: Tx, n: int) -> list[int]:
        """``n`` new increasing versions from the global counter."""
        raise NotImplementedError

    def _now(self) -> str:
        return iso(self.clock.time())

    # Records ---------------------------------------------------------------------------------

    def push(self, batch: PushBatch) -> list[dict[str, Any]]:
        """Apply a batch by compare-and-set in one transaction; replays return the stored result."""
        return self._run(lambda tx: self._push(tx, batch), write=True, retry_ambiguous=True)

    def _push(self, tx: Tx, batch: PushBatch) -> list[dict[str, Any]]:
        self._lock_entity(tx, batch.entity)
        done = tx.query(
            "SELECT node, entity, result FROM applied_batches WHERE batch_id = ?", [batch.batch_id]
        )
        if done:
            node, entity, result = done[0]
            if (node, entity) != (batch.node, batch.entity):
                raise BatchIdReused(
                    f"batch id {batch.batch_id!r} was applied for node {node!r}, entity "
                    f"{entity!r}; it cannot be reused by {batch.node!r} for {batch.entity!r}"
                )
            return list(load_json(result))
        current = self._current(tx, batch.entity, [item.id for item in batch.items])
        accepted: list[bool] = []
        seen = {key: rec["version"] for key, rec in current.items()}
        for item in batch.items:
            ok = seen.get(item.id) == item.base_version
            accepted.append(ok)
            if ok:
                # The edge cannot know the version this write will get, so a later item of
                # the same batch for this id is always a conflict (against this write).
                seen[item.id] = -1
        versions = iter(self._allocate_versions(tx, sum(accepted)))
        now = self._now()
        results: list[dict[str, Any]] = []
        for item, ok in zip(batch.items, accepted, strict=True):
            if not ok:
                results.append(
                    {"id": item.id, "status": "conflict", "current": current.get(item.id)}
                )
                continue
            version = next(versions)
            tx.execute(
                'INSERT INTO records (entity, id, version, hlc, origin, "row", field_hlcs, '
                "deleted, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (entity, id) DO UPDATE SET version = excluded.version, "
                'hlc = excluded.hlc, origin = excluded.origin, "row" = excluded."row", '
                "field_hlcs = excluded.field_hlcs, deleted = excluded.deleted, "
                "updated_at = excluded.updated_at",
                [
                    batch.entity,
                    item.id,
                    version,
                    item.hlc,
                    batch.node,
                    json_text(item.row, "row"),
                    json_text(item.field_hlcs, "field_hlcs"),
                    item.deleted,
                    now,
                ],
            )
            current[item.id] = {
                "id": item.id,
                "version": version,
                "hlc": item.hlc,
                "origin": batch.node,
                "row": item.row,
                "field_hlcs": item.field_hlcs,
                "deleted": item.deleted,
            }
            results.append({"id": item.id, "status": "accepted", "version": version})
        tx.execute(
            "INSERT INTO applied_batches (batch_id, node, entity, result, applied_at) "
            "VALUES (?, ?, ?, ?, ?)",
            [batch.batch_id, batch.node, batch.entity, json_text(results, "result"), now],
        )
        return results

    def _current(self, tx: Tx, entity: str, ids: list[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        unique = sorted(set(ids))
        for start in range(0, len(unique), 500):  # stay under SQLite's parameter limit
            chunk = unique[start : start + 500]
            marks = ", ".join("?" for _ in chunk)
            for row in tx.query(
                f"SELECT {_RECORD_COLUMNS} FROM records WHERE entity = ? AND id IN ({marks})",
                [entity, *chunk],
            ):
                found[row[0]] = record_dict(row)
        return found

    def pull(self, entity: str, after: int, limit: int) -> list[dict[str, Any]]:
        """Records of ``entity`` with version > ``after``, in version order."""
        check_entity(entity)
        limit = max(1, min(int(limit), MAX_PULL_LIMIT))

        def work(tx: Tx) -> list[dict[str, Any]]:
            rows = tx.query(
                f"SELECT {_RECORD_COLUMNS} FROM records WHERE entity = ? AND version > ? "
                "ORDER BY version LIMIT ?",
                [entity, int(after), limit],
            )
            return [record_dict(r) for r in rows]

        return self._run(work, write=False, retry_ambiguous=True)

    # Devices ---------------------------------------------------------------------------------

    def touch_device(self, node: str, ip: str | None, *, register: bool) -> Device | None:
        """Record a device's contact; create it (active) if ``register``; None if unknown."""
        now = self._now()

        def work(tx: Tx) -> Device | None:
            rows = tx.query(
                "UPDATE devices SET last_seen = ?, ip_address = COALESCE(?, ip_address), "
                "status = CASE WHEN status = 'provisioned' THEN 'active' ELSE status END "
                f"WHERE id = ? RETURNING {_DEVICE_COLUMNS}",
                [now, ip, node],
            )
            if rows:
                return _device(rows[0])
            if not register:
                return None
            rows = tx.query(
                "INSERT INTO devices (id, status, ip_address, last_seen, created_at) "
                "VALUES (?, 'active', ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                f"last_seen = excluded.last_seen RETURNING {_DEVICE_COLUMNS}",
                [node, ip, now, now],
            )
            return _device(rows[0])

        return self._run(work, write=True, retry_ambiguous=True)

    def get_device(self, device_id: str) -> Device:
        """The device, or NotFound."""

        def work(tx: Tx) -> Device:
            rows = tx.query(f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE id = ?", [device_id])
            if not rows:
                raise NotFound(
                    f"no device {device_id!r}; register it with POST /api/devices/"
                    f"{device_id}/provision"
                )
            return _device(rows[0])

        return self._run(work, write=False, retry_ambiguous=True)

    # Minimal list for the fleet page: merge with the inventory helper's filtered version.
    def provision_device(self, device_id: str, **fields: Any) -> Device:
        """Register or re-provision a device (ip_address, ssh_user, sync_key, details)."""
        check_node(device_id, "device id", error=ProvisioningError)
        unknown = set(fields) - {"ip_address", "ssh_user", "sync_key", "details"}
        if unknown:
            raise ProvisioningError(
                f"unknown provisioning field(s) {sorted(unknown)}; "
                "use ip_address, ssh_user, sync_key, details"
            )
        key = fields.get("sync_key")
        if key is not None and (not isinstance(key, bytes) or len(key) != 32):
            raise ProvisioningError("sync_key must be 32 bytes (64 hex digits)")
        details = fields.get("details")
        details_text = None
        tags: list[str] | None = None
        if details is not None:
            details_text = json_text(details, "details", error=ProvisioningError)
            if isinstance(details, dict) and "tags" in details:
                tags = details["tags"]
                if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                    raise ProvisioningError(
                        f'details.tags {tags!r} must be a list of strings, e.g. ["hall-a"]'
                    )
        now = self._now()

        def work(tx: Tx) -> Device:
            rows = tx.query(
                "INSERT INTO devices (id, status, ip_address, ssh_user, sync_key, created_at, "
                "provisioned_at, last_action, last_action_at, details) "
                "VALUES (?, 'provisioned', ?, ?, ?, ?, ?, 'provision', ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET "
                "status = CASE WHEN devices.last_seen IS NULL OR devices.status = "
                "'decommissioned' THEN 'provisioned' ELSE devices.status END, "
                "ip_address = COALESCE(excluded.ip_address, devices.ip_address), "
                "ssh_user = COALESCE(excluded.ssh_user, devices.ssh_user), "
                "sync_key = COALESCE(excluded.sync_key, devices.sync_key), "
                "provisioned_at = excluded.provisioned_at, last_action = 'provision', "
                "last_action_at = excluded.last_action_at, "
                "details = COALESCE(excluded.details, devices.details) "
                f"RETURNING {_DEVICE_COLUMNS}",
                [
                    device_id,
                    fields.get("ip_address"),
                    fields.get("ssh_user"),
                    key.hex() if key else None,
                    now,
                    now,
                    now,
                    details_text,
                ],
            )
            self._log_event(
                tx,
                device_id,
                "provision",
                {k: v for k, v in fields.items() if k != "sync_key"},
                now,
            )
            if tags is not None:  # the tags rollouts target and the inventory shows
                tx.execute("DELETE FROM device_tags WHERE device_id = ?", [device_id])
                for tag in dict.fromkeys(tags):
                    tx.execute(
                        "INSERT INTO device_tags (device_id, tag) VALUES (?, ?)", [device_id, tag]
                    )
            return _device(rows[0])

        return self._run(work, write=True, retry_ambiguous=False)

    def record_device_action(self, device_id: str, action: str, details: dict[str, Any]) -> Device:
        """Log an operator action (update, restart, decommission) on a known device."""
        if action not in DEVICE_ACTIONS:
            raise ProvisioningError(
                f"unknown device action {action!r}; use one of {DEVICE_ACTIONS}"
            )
        now = self._now()

        def work(tx: Tx) -> Device:
            # Decommissioning also forgets the sync key: a retired device's key must not work.
            rows = tx.query(
                "UPDATE devices SET last_action = ?, last_action_at = ?, "
                "status = CASE WHEN ? = 'decommission' THEN 'decommissioned' ELSE status END, "
                "sync_key = CASE WHEN ? = 'decommission' THEN NULL ELSE sync_key END "
                f"WHERE id = ? RETURNING {_DEVICE_COLUMNS}",
                [action, now, action, action, device_id],
            )
            if not rows:
                raise NotFound(
                    f"no device {device_id!r}; register it with POST /api/devices/"
                    f"{device_id}/provision"
                )
            self._log_event(tx, device_id, action, details, now)
            return _device(rows[0])

        return self._run(work, write=True, retry_ambiguous=False)

    def _log_event(self, tx: Tx, device_id: str, action: str, details: Any, now: str) -> None:
        tx.execute(
            "INSERT INTO device_events (device_id, action, details, at) VALUES (?, ?, ?, ?)",
            [device_id, action, json_text(details or {}, "details", error=ProvisioningError), now],
        )

    # Alerts and metrics -----------------------------------------------------------------------

    def add_alerts(self, node: str, alerts: list[dict[str, Any]]) -> int:
        """Store alerts sent by ``node``; returns how many."""
        now = self._now()
        return self._insert_rows(
            "INSERT INTO alerts (node, name, severity, message, at, received_at, details) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [alert_row(node, i, a, now) for i, a in enumerate(alerts)],
        )

    def add_metrics(self, node: str, samples: list[dict[str, Any]]) -> int:
        """Store metric samples sent by ``node``; returns how many."""
        now = self._now()
        return self._insert_rows(
            "INSERT INTO metrics (node, name, value, at, labels, received_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [metric_row(node, i, s, now) for i, s in enumerate(samples)],
        )

    def _insert_rows(self, sql: str, rows: list[Any]) -> int:
        def work(tx: Tx) -> int:
            for row in rows:
                tx.execute(sql, row)
            return len(rows)

        return self._run(work, write=True, retry_ambiguous=False)

    def list_alerts(self, node: str | None, limit: int) -> list[dict[str, Any]]:
        """The newest alerts, optionally of one node."""
        cols = ("seq", "node", "name", "severity", "message", "at", "received_at", "details")
        return self._newest("alerts", cols, node, limit)

    def list_metrics(self, node: str | None, limit: int) -> list[dict[str, Any]]:
        """The newest metric samples, optionally of one node."""
        cols = ("seq", "node", "name", "value", "at", "labels", "received_at")
        return self._newest("metrics", cols, node, limit)

    def _newest(
        self, table: str, cols: tuple[str, ...], node: str | None, limit: int
    ) -> list[dict[str, Any]]:
        where = "WHERE node = ? " if node else ""
        params: list[Any] = [node] if node else []
        sql = f"SELECT {', '.join(cols)} FROM {table} {where}ORDER BY seq DESC LIMIT ?"

        def work(tx: Tx) -> list[dict[str, Any]]:
            rows = tx.query(sql, [*params, max(1, min(limit, MAX_PULL_LIMIT))])
            out = [dict(zip(cols, r, strict=True)) for r in rows]
            for d in out:
                for key in ("details", "labels"):
                    if key in d and d[key] is not None:
                        d[key] = load_json(d[key])
            return out

        return self._run(work, write=False, retry_ambiguous=True)

    def ping(self) -> None:
        """Raise if the database cannot be reached."""
        self._run(lambda tx: tx.query("SELECT 1"), write=False, retry_ambiguous=True)


# --- opening ---------------------------------------------------------------------------------


def open_central_store(db_url: str, clock: Clock | None = None) -> CentralStore:
    """Open the store a URL names: ``sqlite:///path`` (or a bare path) or ``postgresql://...``."""
    if db_url.startswith(("postgresql://", "postgres://")):
        from edge_min.central.pg_store import PgCentralStore

        return PgCentralStore(db_url, clock=clock)
    if db_url.startswith("sqlite:"):
        path = db_url.removeprefix("sqlite:").removeprefix("//")
        # sqlite:///rel.db is relative, sqlite:////abs/x.db absolute (SQLAlchemy's convention).
        path = path[1:] if path.startswith("/") else path
        if not path:
            raise ConfigError("the sqlite URL names no file", path="--db", value=db_url)
    elif "://" in db_url:
        raise ConfigError(
            "unsupported database URL scheme; use sqlite:///PATH or postgresql://USER@HOST/DB",
            path="--db",
            value=db_url,
        )
    else:
        path = db_url
    from edge_min.central.sqlite_store import SqliteCentralStore

    return SqliteCentralStore(path, clock=clock)


__all__ = [
    "DEVICE_STATUSES",
    "ENTITIES",
    "BadBatch",
    "BatchIdReused",
    "CentralStore",
    "Device",
    "ProvisioningError",
    "PushBatch",
    "PushItem",
    "SqlCentralStore",
    "check_entity",
    "check_node",
    "open_central_store",
    "parse_push",
    "record_dict",
]
