"""The central store's attestation tables: nonces, device keys, policies, requests, results.

``AttestationSql`` is mixed into ``SqlCentralStore`` (``edge_min.central.store``), so both
backends share this SQL; each adds the DDL below to its schema (``SQLITE_SCHEMA``,
``PG_SCHEMA``; additive ``CREATE ... IF NOT EXISTS``, so an older central database gains
the tables on start).

What is kept::

    attestation_nonces    one row per challenge: single use (``used_at``), expires; used
                          and expired rows are kept a day so a replay is told apart from
                          an unknown nonce, then pruned
    attestation_keys      the device's public key, registered from its first quote (trust
                          on first use) or set when it is provisioned
    attestation_policies  the accepted values (``edge_min.security.quote.Policy``) and
                          where they came from: ``operator`` (provisioning or update) or
                          ``first_quote`` (the baseline adopted from the first quote)
    attestation_requests  central asks this device for a quote (cleared by a verdict)
    attestation_results   every verdict: pass, fail or refused, with the reason; the newest
                          ``KEEP_RESULTS`` per device
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edge_min.central.model import json_text, load_json
from edge_min.clock import iso
from edge_min.errors import NotFound

if TYPE_CHECKING:
    from edge_min.central.store import Tx
    from edge_min.security.quote import Policy

#: A verdict the caller computes from the device's policy (None: none yet):
#: (outcome "pass"/"fail", reason or None, a policy to adopt or None).
Judge = Callable[["Policy | None"], tuple[str, "str | None", "Policy | None"]]

KEEP_RESULTS = 200
#: Used and expired nonces are kept this long (seconds) to name a replay as such.
NONCE_MEMORY = 86400.0

_TABLES = """\
CREATE TABLE IF NOT EXISTS attestation_nonces (
    nonce TEXT PRIMARY KEY, device_id TEXT NOT NULL, issued_at {real} NOT NULL,
    expires_at {real} NOT NULL, used_at {real});
CREATE TABLE IF NOT EXISTS attestation_keys (
    device_id TEXT PRIMARY KEY, public_key TEXT NOT NULL, registered_at TEXT NOT NULL,
    source TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS attestation_policies (
    device_id TEXT PRIMARY KEY, policy {json} NOT NULL, source TEXT NOT NULL,
    set_at TEXT NOT NULL, set_epoch {real} NOT NULL);
CREATE TABLE IF NOT EXISTS attestation_requests (
    device_id TEXT PRIMARY KEY, requested_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS attestation_results (
    seq {serial}, device_id TEXT NOT NULL, outcome TEXT NOT NULL, reason TEXT, nonce TEXT,
    at TEXT NOT NULL, at_epoch {real} NOT NULL, measurements {json} NOT NULL,
    boot {json} NOT NULL);
CREATE INDEX IF NOT EXISTS attestation_results_by_device ON attestation_results (device_id, seq)"""

SQLITE_SCHEMA = _TABLES.format(
    real="REAL", json="TEXT", serial="INTEGER PRIMARY KEY AUTOINCREMENT"
).split(";\n")
PG_SCHEMA = _TABLES.format(
    real="DOUBLE PRECISION", json="JSONB", serial="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"
).split(";\n")


class AttestationSql:
    """The attestation half of the central store (needs ``_run`` and ``clock``)."""

    clock: Any

    def _run(self, work: Callable[[Tx], Any], *, write: bool, retry_ambiguous: bool) -> Any:
        raise NotImplementedError

    def issue_nonce(self, device_id: str, nonce: str, ttl: float) -> float:
        """Record a challenge for ``device_id``; returns when it expires (epoch seconds)."""
        now = self.clock.time()

        def work(tx: Tx) -> None:
            tx.execute("DELETE FROM attestation_nonces WHERE expires_at < ?", [now - NONCE_MEMORY])
            tx.execute(
                "INSERT INTO attestation_nonces (nonce, device_id, issued_at, expires_at) "
                "VALUES (?, ?, ?, ?)",
                [nonce, device_id, now, now + ttl],
            )

        self._run(work, write=True, retry_ambiguous=False)
        return float(now + ttl)

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
        from edge_min.security.quote import parse_policy

        now = self.clock.time()

        def work(tx: Tx) -> dict[str, Any]:
            outcome, reason, adopt = "refused", _nonce_problem(tx, device_id, nonce, now), None
            if reason is None:
                outcome, reason = _key_problem(tx, device_id, public_key, signed, now)
            if outcome == "":
                rows = tx.query(
                    "SELECT policy FROM attestation_policies WHERE device_id = ?", [device_id]
                )
                policy = parse_policy(load_json(rows[0][0])) if rows else None
                outcome, reason, adopt = judge(policy)
            if adopt is not None:
                _put_policy(tx, device_id, adopt.to_dict(), "first_quote", now)
            if outcome != "refused":
                tx.execute("DELETE FROM attestation_requests WHERE device_id = ?", [device_id])
            tx.execute(
                "INSERT INTO attestation_results (device_id, outcome, reason, nonce, at, "
                "at_epoch, measurements, boot) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    device_id,
                    outcome,
                    reason,
                    nonce,
                    iso(now),
                    now,
                    json_text(measurements, "measurements"),
                    json_text(boot, "boot"),
                ],
            )
            tx.execute(
                "DELETE FROM attestation_results WHERE device_id = ? AND seq <= (SELECT seq "
                "FROM attestation_results WHERE device_id = ? ORDER BY seq DESC LIMIT 1 "
                "OFFSET ?)",
                [device_id, device_id, KEEP_RESULTS],
            )
            return {"outcome": outcome, "reason": reason, "at": iso(now), "at_epoch": now}

        result: dict[str, Any] = self._run(work, write=True, retry_ambiguous=False)
        return result

    def attestation_info(self, device_id: str, results: int = 0) -> dict[str, Any]:
        """Key, policy, pending request, the last pass/fail verdict and ``results`` newest."""

        def work(tx: Tx) -> dict[str, Any]:
            info: dict[str, Any] = {"key": None, "policy": None, "requested_at": None}
            rows = tx.query(
                "SELECT public_key, registered_at, source FROM attestation_keys "
                "WHERE device_id = ?",
                [device_id],
            )
            if rows:
                info["key"] = {"public_key": rows[0][0], "registered_at": rows[0][1]}
                info["key"]["source"] = rows[0][2]
            rows = tx.query(
                "SELECT policy, source, set_at, set_epoch FROM attestation_policies "
                "WHERE device_id = ?",
                [device_id],
            )
            if rows:
                info["policy"] = {
                    "values": load_json(rows[0][0]),
                    "source": rows[0][1],
                    "set_at": rows[0][2],
                    "set_epoch": float(rows[0][3]),
                }
            rows = tx.query(
                "SELECT requested_at FROM attestation_requests WHERE device_id = ?", [device_id]
            )
            info["requested_at"] = rows[0][0] if rows else None
            rows = tx.query(
                "SELECT outcome, reason, at, at_epoch FROM attestation_results WHERE "
                "device_id = ? AND outcome IN ('pass', 'fail') ORDER BY seq DESC LIMIT 1",
                [device_id],
            )
            info["verdict"] = _verdict(rows[0]) if rows else None
            if results:
                rows = tx.query(
                    "SELECT outcome, reason, at, at_epoch, nonce FROM attestation_results "
                    "WHERE device_id = ? ORDER BY seq DESC LIMIT ?",
                    [device_id, results],
                )
                info["results"] = [{**_verdict(r), "nonce": r[4]} for r in rows]
            return info

        info: dict[str, Any] = self._run(work, write=False, retry_ambiguous=True)
        return info

    def set_attestation(self, device_id: str, **fields: Any) -> None:
        """Set (or with None forget) a device's ``policy`` and/or ``public_key``."""
        now = self.clock.time()

        def work(tx: Tx) -> None:
            if not tx.query("SELECT 1 FROM devices WHERE id = ?", [device_id]):
                raise NotFound(f"no device {device_id!r}")
            if "policy" in fields:
                tx.execute("DELETE FROM attestation_policies WHERE device_id = ?", [device_id])
                if fields["policy"] is not None:
                    _put_policy(tx, device_id, fields["policy"], "operator", now)
                    # New accepted values: ask the device to show it meets them.
                    tx.execute(
                        "INSERT INTO attestation_requests (device_id, requested_at) "
                        "VALUES (?, ?) ON CONFLICT (device_id) DO UPDATE SET "
                        "requested_at = excluded.requested_at",
                        [device_id, iso(now)],
                    )
            if "public_key" in fields:
                tx.execute("DELETE FROM attestation_keys WHERE device_id = ?", [device_id])
                if fields["public_key"] is not None:
                    tx.execute(
                        "INSERT INTO attestation_keys (device_id, public_key, registered_at, "
                        "source) VALUES (?, ?, ?, 'operator')",
                        [device_id, fields["public_key"], iso(now)],
                    )

        self._run(work, write=True, retry_ambiguous=False)

    def request_attestation(self, device_id: str) -> str:
        """Ask ``device_id`` for a quote at its next poll; returns when it was asked."""
        at = iso(self.clock.time())

        def work(tx: Tx) -> None:
            if not tx.query("SELECT 1 FROM devices WHERE id = ?", [device_id]):
                raise NotFound(
                    f"no device {device_id!r}; register it with POST /api/devices/"
                    f"{device_id}/provision"
                )
            tx.execute(
                "INSERT INTO attestation_requests (device_id, requested_at) VALUES (?, ?) "
                "ON CONFLICT (device_id) DO UPDATE SET requested_at = excluded.requested_at",
                [device_id, at],
            )

        self._run(work, write=True, retry_ambiguous=True)
        return at


def _verdict(row: Any) -> dict[str, Any]:
    return {"outcome": row[0], "reason": row[1], "at": row[2], "at_epoch": float(row[3])}


def _nonce_problem(tx: Tx, device_id: str, nonce: str, now: float) -> str | None:
    """Use the nonce up; why it cannot be used, or None."""
    if tx.query(
        "UPDATE attestation_nonces SET used_at = ? WHERE nonce = ? AND device_id = ? "
        "AND used_at IS NULL AND expires_at >= ? RETURNING nonce",
        [now, nonce, device_id, now],
    ):
        return None
    rows = tx.query(
        "SELECT device_id, expires_at, used_at FROM attestation_nonces WHERE nonce = ?", [nonce]
    )
    if not rows or rows[0][0] != device_id:
        return "the nonce was not issued to this device (ask POST /api/attestation/challenge)"
    if rows[0][2] is not None:
        return f"replayed quote: its nonce was already used at {iso(float(rows[0][2]))}"
    return f"the nonce expired at {iso(float(rows[0][1]))}; ask for a fresh challenge"


def _key_problem(
    tx: Tx, device_id: str, public_key: str, signed: bool, now: float
) -> tuple[str, str | None]:
    """("", None) when the key is the device's (registering it on first use) and signed."""
    rows = tx.query(
        "SELECT public_key, registered_at FROM attestation_keys WHERE device_id = ?", [device_id]
    )
    if rows and rows[0][0] != public_key:
        return "fail", (
            f"the quote is signed with key {public_key[:16]}..., not the key registered for "
            f"this device at {rows[0][1]} ({rows[0][0][:16]}...); a re-installed device needs "
            f"its key reset: POST /api/devices/{device_id}/provision with attestation_key"
        )
    if not signed:
        return "fail", "the quote's signature does not verify"
    if not rows:
        tx.execute(
            "INSERT INTO attestation_keys (device_id, public_key, registered_at, source) "
            "VALUES (?, ?, ?, 'first_quote')",
            [device_id, public_key, iso(now)],
        )
    return "", None


def _put_policy(tx: Tx, device_id: str, policy: dict[str, Any], source: str, now: float) -> None:
    tx.execute(
        "INSERT INTO attestation_policies (device_id, policy, source, set_at, set_epoch) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (device_id) DO UPDATE SET policy = excluded.policy, "
        "source = excluded.source, set_at = excluded.set_at, set_epoch = excluded.set_epoch",
        [device_id, json_text(policy, "policy"), source, iso(now), now],
    )
