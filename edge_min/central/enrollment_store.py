"""The central store's enrollment tables: claim tokens, issued certificates, tags, configs,
device reports.

``EnrollmentSql`` is mixed into ``SqlCentralStore`` (``edge_min.central.store``) like
``AttestationSql``, so both backends share this SQL; each adds the DDL below to its schema
(``SQLITE_SCHEMA``, ``PG_SCHEMA``; additive ``CREATE ... IF NOT EXISTS``).

What is kept::

    enroll_tokens    one row per claim token, keyed by the token's sha256 (the token itself
                     is never stored): the device id it binds (or none), tags, the config
                     fragment and attestation policy it carries, expiry, and once used
                     when and by which device
    device_certs     every certificate central's CA issued: serial (lower-case hex), device,
                     validity, and ``revoked_at`` once the device is decommissioned or
                     re-enrolled
    device_tags      the tags a device was enrolled with (rollouts target them)
    device_configs   the edge-config fragment central holds for a device (may be empty)
    device_reports   the last report a device sent (``POST /api/devices/self/report``):
                     version, A/B slot, health, firing alerts, rollout state
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from edge_min.central.model import json_text, load_json
from edge_min.clock import iso
from edge_min.errors import EdgeError, NotFound

if TYPE_CHECKING:
    from edge_min.central.store import Tx

#: ``issue(device_id_bound_by_token) -> (device_id, cert_pem, serial_hex, not_after_iso)``:
#: signs the CSR inside the claiming transaction, so a refused claim issues nothing.
Issue = Callable[["str | None"], tuple[str, "str | None", "str | None", "str | None"]]

_TABLES = """\
CREATE TABLE IF NOT EXISTS enroll_tokens (
    token_hash TEXT PRIMARY KEY, device_id TEXT, tags {json} NOT NULL, config {json} NOT NULL,
    attestation_policy {json}, created_at TEXT NOT NULL, expires_at {real} NOT NULL,
    used_at {real}, used_by TEXT);
CREATE TABLE IF NOT EXISTS device_certs (
    serial TEXT PRIMARY KEY, device_id TEXT NOT NULL, issued_at TEXT NOT NULL,
    not_after TEXT NOT NULL, revoked_at TEXT);
CREATE INDEX IF NOT EXISTS device_certs_by_device ON device_certs (device_id);
CREATE TABLE IF NOT EXISTS device_tags (
    device_id TEXT NOT NULL, tag TEXT NOT NULL, PRIMARY KEY (device_id, tag));
CREATE TABLE IF NOT EXISTS device_configs (
    device_id TEXT PRIMARY KEY, config {json} NOT NULL, set_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS device_reports (
    device_id TEXT PRIMARY KEY, version TEXT, slot TEXT, health TEXT,
    alerts_firing INTEGER NOT NULL, rollout {json}, reported_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS device_storage (
    device_id TEXT PRIMARY KEY, storage {json} NOT NULL, reported_at TEXT NOT NULL)"""

SQLITE_SCHEMA = _TABLES.format(real="REAL", json="TEXT").split(";\n")
PG_SCHEMA = _TABLES.format(real="DOUBLE PRECISION", json="JSONB").split(";\n")

#: Columns of one inventory row, in the order ``list_inventory`` selects them.
INVENTORY_COLUMNS = (
    "id",
    "status",
    "last_seen",
    "version",
    "slot",
    "health",
    "alerts_firing",
    "rollout",
    "reported_at",
    "storage",
)


class EnrollmentRefused(EdgeError):
    """A claim token cannot be used: unknown, used, expired, or bound to another device.

    The instance's ``code`` says which (``enroll_token_unknown``, ``enroll_token_used``,
    ``enroll_token_expired``, ``enroll_device_mismatch``; for a factory certificate
    ``enroll_already_enrolled``, ``enroll_device_retired``); central answers it with 403.
    """

    code = "enroll_refused"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def serial_hex(serial: int | str) -> str:
    """A certificate serial as central stores it: lower-case hex, no leading zeros."""
    value = serial if isinstance(serial, int) else int(serial, 16)
    return format(value, "x")


class EnrollmentSql:
    """The enrollment half of the central store (needs ``_run`` and ``clock``)."""

    clock: Any

    def _run(self, work: Callable[[Tx], Any], *, write: bool, retry_ambiguous: bool) -> Any:
        raise NotImplementedError

    # Tokens ------------------------------------------------------------------------------

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
        now = self.clock.time()
        policy = None if attestation_policy is None else json_text(attestation_policy, "policy")
        params = [
            token_hash,
            device_id,
            json_text(sorted(set(tags)), "tags"),
            json_text(config or {}, "config"),
            policy,
            iso(now),
            now + ttl,
        ]

        def work(tx: Tx) -> None:
            tx.execute(
                "INSERT INTO enroll_tokens (token_hash, device_id, tags, config, "
                "attestation_policy, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                params,
            )

        self._run(work, write=True, retry_ambiguous=False)
        return float(now + ttl)

    def enroll(
        self,
        token_hash: str | None,
        issue: Issue,
        *,
        sync_key: bytes,
        attestation_key: str | None,
        factory_device: str | None = None,
    ) -> dict[str, Any]:
        """Use the token up, sign (``issue``), register the device, its certificate, key, tags,
        config and attestation key and policy: one transaction. ``EnrollmentRefused`` if the
        token cannot be used (nothing is written then).

        Without a token (``token_hash`` None) the caller vouches for ``factory_device`` (a
        factory certificate): it enrolls with no tags, config or policy, and only while it
        holds no valid certificate (``enroll_already_enrolled``: an operator's DELETE or a
        token re-enrolls it), so a replayed request cannot take a device's place."""
        now = self.clock.time()

        def claim(tx: Tx) -> tuple[Any, ...]:
            if token_hash is None:
                live = tx.query(
                    "SELECT serial FROM device_certs WHERE device_id = ? AND revoked_at IS NULL",
                    [factory_device],
                )
                if live:
                    raise EnrollmentRefused(
                        "enroll_already_enrolled",
                        f"device {factory_device!r} is enrolled (certificate serial "
                        f"{live[0][0]}); a factory certificate enrolls a device once: "
                        "re-enroll it with a claim token",
                    )
                retired = tx.query(
                    "SELECT 1 FROM devices WHERE id = ? AND status = 'decommissioned'",
                    [factory_device],
                )
                if retired:
                    raise EnrollmentRefused(
                        "enroll_device_retired",
                        f"device {factory_device!r} was decommissioned; its factory "
                        "certificate no longer enrolls it (an operator's claim token does)",
                    )
                return factory_device, "[]", "{}", None, None
            rows = tx.query(
                "SELECT device_id, tags, config, attestation_policy, expires_at, used_at, "
                "used_by FROM enroll_tokens WHERE token_hash = ?",
                [token_hash],
            )
            if not rows:
                raise EnrollmentRefused(
                    "enroll_token_unknown",
                    "the claim token is not one this central issued (check it was copied "
                    "whole; make one with `edge-min central enroll-token`)",
                )
            bound, tags, config, policy, expires_at, used_at, used_by = rows[0]
            if used_at is not None:
                raise EnrollmentRefused(
                    "enroll_token_used",
                    f"the claim token was already used at {iso(float(used_at))} by device "
                    f"{used_by!r}; a token works once: make a new one",
                )
            if float(expires_at) < now:
                raise EnrollmentRefused(
                    "enroll_token_expired",
                    f"the claim token expired at {iso(float(expires_at))}; make a new one "
                    "(edge-min central enroll-token --ttl ...)",
                )
            return bound, tags, config, policy, token_hash

        def work(tx: Tx) -> dict[str, Any]:
            bound, tags, config, policy, used = claim(tx)
            device_id, cert_pem, serial, not_after = issue(bound)
            if used is not None:
                tx.execute(
                    "UPDATE enroll_tokens SET used_at = ?, used_by = ? WHERE token_hash = ?",
                    [now, device_id, used],
                )
            at = iso(now)
            tx.execute(
                "INSERT INTO devices (id, status, sync_key, created_at, provisioned_at, "
                "last_action, last_action_at, details) VALUES (?, 'provisioned', ?, ?, ?, "
                "'enroll', ?, '{}') ON CONFLICT (id) DO UPDATE SET status = 'provisioned', "
                "sync_key = excluded.sync_key, provisioned_at = excluded.provisioned_at, "
                "last_action = 'enroll', last_action_at = excluded.last_action_at",
                [device_id, sync_key.hex(), at, at, at],
            )
            # One device, one valid certificate: a re-enrolled device's old ones stop working.
            tx.execute(
                "UPDATE device_certs SET revoked_at = ? WHERE device_id = ? AND revoked_at IS NULL",
                [at, device_id],
            )
            if serial is not None:  # a key-only enrollment has no certificate
                tx.execute(
                    "INSERT INTO device_certs (serial, device_id, issued_at, not_after) "
                    "VALUES (?, ?, ?, ?)",
                    [serial, device_id, at, not_after],
                )
            tx.execute("DELETE FROM device_tags WHERE device_id = ?", [device_id])
            tag_list = list(load_json(tags))
            for tag in tag_list:
                tx.execute(
                    "INSERT INTO device_tags (device_id, tag) VALUES (?, ?)", [device_id, tag]
                )
            tx.execute(
                "INSERT INTO device_configs (device_id, config, set_at) VALUES (?, ?, ?) "
                "ON CONFLICT (device_id) DO UPDATE SET config = excluded.config, "
                "set_at = excluded.set_at",
                [device_id, json_text(load_json(config), "config"), at],
            )
            if attestation_key is not None:
                tx.execute(
                    "INSERT INTO attestation_keys (device_id, public_key, registered_at, source) "
                    "VALUES (?, ?, ?, 'enrollment') ON CONFLICT (device_id) DO UPDATE SET "
                    "public_key = excluded.public_key, registered_at = excluded.registered_at, "
                    "source = excluded.source",
                    [device_id, attestation_key, at],
                )
            policy_doc = load_json(policy) if policy is not None else None
            if policy_doc is not None:
                tx.execute(
                    "INSERT INTO attestation_policies (device_id, policy, source, set_at, "
                    "set_epoch) VALUES (?, ?, 'operator', ?, ?) ON CONFLICT (device_id) DO "
                    "UPDATE SET policy = excluded.policy, source = excluded.source, "
                    "set_at = excluded.set_at, set_epoch = excluded.set_epoch",
                    [device_id, json_text(policy_doc, "policy"), at, now],
                )
            tx.execute(
                "INSERT INTO device_events (device_id, action, details, at) VALUES (?, ?, ?, ?)",
                [device_id, "enroll", json_text({"serial": serial, "tags": tag_list}, "d"), at],
            )
            return {
                "device_id": device_id,
                "certificate": cert_pem,
                "serial": serial,
                "not_after": not_after,
                "tags": tag_list,
                "config": load_json(config),
                "attestation_policy": policy_doc,
            }

        result: dict[str, Any] = self._run(work, write=True, retry_ambiguous=False)
        return result

    # Certificates ------------------------------------------------------------------------

    def revoke_device_certs(self, device_id: str) -> list[str]:
        """Revoke every certificate issued to ``device_id``; the serials newly revoked."""
        at = iso(self.clock.time())

        def work(tx: Tx) -> list[str]:
            rows = tx.query(
                "UPDATE device_certs SET revoked_at = ? WHERE device_id = ? AND revoked_at "
                "IS NULL RETURNING serial",
                [at, device_id],
            )
            return sorted(str(r[0]) for r in rows)

        revoked: list[str] = self._run(work, write=True, retry_ambiguous=True)
        return revoked

    def certificate_revoked(self, serial: str) -> bool:
        """Whether central revoked the certificate with this serial (lower-case hex)."""

        def work(tx: Tx) -> bool:
            rows = tx.query(
                "SELECT 1 FROM device_certs WHERE serial = ? AND revoked_at IS NOT NULL", [serial]
            )
            return bool(rows)

        revoked: bool = self._run(work, write=False, retry_ambiguous=True)
        return revoked

    # Reports, tags, configs, inventory -----------------------------------------------------

    def save_report(self, device_id: str, report: dict[str, Any]) -> None:
        """Keep the device's newest report (version, slot, health, alerts_firing, rollout;
        ``storage`` in its own table, kept from the last report that had it)."""
        at = iso(self.clock.time())
        rollout = report.get("rollout")
        storage = report.get("storage")
        params = [
            device_id,
            report.get("version"),
            report.get("slot"),
            report.get("health"),
            int(report.get("alerts_firing") or 0),
            None if rollout is None else json_text(rollout, "rollout"),
            at,
        ]

        def work(tx: Tx) -> None:
            tx.execute(
                "INSERT INTO device_reports (device_id, version, slot, health, alerts_firing, "
                "rollout, reported_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device_id) DO "
                "UPDATE SET version = excluded.version, slot = excluded.slot, "
                "health = excluded.health, alerts_firing = excluded.alerts_firing, "
                "rollout = excluded.rollout, reported_at = excluded.reported_at",
                params,
            )
            if storage is not None:
                tx.execute(
                    "INSERT INTO device_storage (device_id, storage, reported_at) "
                    "VALUES (?, ?, ?) ON CONFLICT (device_id) DO UPDATE SET "
                    "storage = excluded.storage, reported_at = excluded.reported_at",
                    [device_id, json_text(storage, "storage"), at],
                )

        self._run(work, write=True, retry_ambiguous=True)

    def device_tags(self, device_id: str) -> list[str]:
        """The tags of a device (sorted)."""
        rows = self._run(
            lambda tx: tx.query(
                "SELECT tag FROM device_tags WHERE device_id = ? ORDER BY tag", [device_id]
            ),
            write=False,
            retry_ambiguous=True,
        )
        return [str(r[0]) for r in rows]

    def device_config(self, device_id: str) -> dict[str, Any]:
        """The edge-config fragment central holds for a device ({} when none)."""
        rows = self._run(
            lambda tx: tx.query(
                "SELECT config FROM device_configs WHERE device_id = ?", [device_id]
            ),
            write=False,
            retry_ambiguous=True,
        )
        return dict(load_json(rows[0][0])) if rows else {}

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
        where, params = ["1 = 1"], []
        if after:
            where.append("d.id > ?")
            params.append(after)
        if status:
            where.append("d.status = ?")
            params.append(status)
        if tag:
            where.append(
                "EXISTS (SELECT 1 FROM device_tags t WHERE t.device_id = d.id AND t.tag = ?)"
            )
            params.append(tag)
        if version:
            where.append("r.version = ?")
            params.append(version)
        if health == "unknown":
            where.append("r.health IS NULL")
        elif health:
            where.append("r.health = ?")
            params.append(health)
        sql = (
            "SELECT d.id, d.status, d.last_seen, r.version, r.slot, r.health, "
            "COALESCE(r.alerts_firing, 0), r.rollout, r.reported_at, s.storage FROM devices d "
            "LEFT JOIN device_reports r ON r.device_id = d.id "
            "LEFT JOIN device_storage s ON s.device_id = d.id "
            f"WHERE {' AND '.join(where)} ORDER BY d.id LIMIT ?"
        )

        def work(tx: Tx) -> list[dict[str, Any]]:
            out = []
            for row in tx.query(sql, [*params, limit]):
                doc = dict(zip(INVENTORY_COLUMNS, row, strict=True))
                doc["alerts_firing"] = int(doc["alerts_firing"])
                doc["rollout"] = load_json(doc["rollout"]) if doc["rollout"] is not None else None
                doc["storage"] = load_json(doc["storage"]) if doc["storage"] is not None else None
                doc["tags"] = [
                    str(t[0])
                    for t in tx.query(
                        "SELECT tag FROM device_tags WHERE device_id = ? ORDER BY tag", [doc["id"]]
                    )
                ]
                out.append(doc)
            return out

        found: list[dict[str, Any]] = self._run(work, write=False, retry_ambiguous=True)
        return found

    def require_device(self, device_id: str) -> None:
        """NotFound unless central knows ``device_id``."""
        rows = self._run(
            lambda tx: tx.query("SELECT 1 FROM devices WHERE id = ?", [device_id]),
            write=False,
            retry_ambiguous=True,
        )
        if not rows:
            raise NotFound(f"no device {device_id!r}")
