"""The central store's rollout tables: uploaded bundles, rollouts, each device's state in them.

``RolloutSql`` is mixed into ``SqlCentralStore`` (``edge_min.central.store``), so SQLite and
PostgreSQL share this SQL; each backend adds the DDL below to its schema (``SQLITE_SCHEMA``,
``PG_SCHEMA``; additive ``CREATE ... IF NOT EXISTS``, so an older central database gains
the tables on start). The HTTP side (validation, routes) is ``edge_min.central.rollouts``.

What is kept::

    update_bundles   the bundle bytes, content-addressed (id: the first 16 hex of their
                     sha256), so every central process on one database serves them and a
                     device resumes a download from any of them (ranges read with substr)
    rollouts         version, bundle, target, phases, abort threshold, rate limit, salt,
                     status (active, paused, halted, cancelled, completed) and current phase
    rollout_devices  the devices a rollout targets, fixed when it is made: each one's
                     cohort phase (from hash(salt, device id)), its state as it reports
                     it, the reason, the version it runs

Everything that decides (assign, record a state, advance, halt) runs in one transaction
holding the rollout's lock (the backend's ``_lock_entity`` on ``rollout/<id>``: SQLite's one
writer, PostgreSQL's advisory lock), so two central processes never both miss the report
that completes a phase.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from edge_min.central.model import json_text
from edge_min.clock import iso
from edge_min.errors import EdgeError, NotFound

if TYPE_CHECKING:
    from edge_min.central.store import Tx

#: What a device reports, in the order an update goes through them.
DEVICE_STATES = (
    "downloading",
    "downloaded",
    "installing",
    "installed",
    "committed",
    "failed",
    "rolled_back",
)
#: A device in one of these is done with the rollout: it is not assigned it again.
TERMINAL_STATES = ("committed", "failed", "rolled_back")
FAILED_STATES = ("failed", "rolled_back")
ROLLOUT_STATUSES = ("active", "paused", "halted", "cancelled", "completed")
#: Device statuses a rollout never targets.
RETIRED_STATUSES = ("decommissioned", "retired")
RATE_WINDOW = 60.0  # rate_limit is devices per minute

# target and phases are JSON in TEXT on both backends: JSONB would hand the target "all"
# back as a bare Python string, which cannot be told from JSON text still to parse.
_TABLES = """\
CREATE TABLE IF NOT EXISTS update_bundles (
    id TEXT PRIMARY KEY, sha256 TEXT NOT NULL, length {int} NOT NULL, version TEXT,
    created_at TEXT NOT NULL, data {blob} NOT NULL);
CREATE TABLE IF NOT EXISTS rollouts (
    seq {serial}, id TEXT NOT NULL UNIQUE, version TEXT NOT NULL, bundle_id TEXT NOT NULL,
    target TEXT NOT NULL, phases TEXT NOT NULL, max_failure_percent {real} NOT NULL,
    min_devices {int} NOT NULL, rate_limit {int}, salt TEXT NOT NULL, status TEXT NOT NULL,
    phase {int} NOT NULL, reason TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rollout_devices (
    rollout_id TEXT NOT NULL, device_id TEXT NOT NULL, phase {int} NOT NULL,
    cohort_rank {int} NOT NULL, state TEXT NOT NULL, reason TEXT, running_version TEXT,
    assigned_epoch {real}, updated_at TEXT NOT NULL, PRIMARY KEY (rollout_id, device_id));
CREATE INDEX IF NOT EXISTS rollout_devices_by_device ON rollout_devices (device_id)"""

SQLITE_SCHEMA = _TABLES.format(
    int="INTEGER", blob="BLOB", real="REAL", serial="INTEGER PRIMARY KEY AUTOINCREMENT"
).split(";\n")
PG_SCHEMA = _TABLES.format(
    int="BIGINT",
    blob="BYTEA",
    real="DOUBLE PRECISION",
    serial="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
).split(";\n")

_ROLLOUT_COLUMNS = (
    "id, version, bundle_id, target, phases, max_failure_percent, min_devices, rate_limit, "
    "salt, status, phase, reason, created_at, updated_at"
)


class RolloutConflict(EdgeError):
    """A rollout cannot do that in its status (resume a cancelled one, ...)."""

    code = "rollout_conflict"


class RolloutRefused(EdgeError):
    """A rollout request names devices or a bundle that are not there; names the field."""

    code = "bad_rollout"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def cohorts(salt: str, device_ids: Iterable[str], phases: Sequence[float]) -> dict[str, int]:
    """Each device's phase index: devices ranked by sha256(salt, id); phase i holds ranks
    below ceil(phases[i]% of them). The same salt and devices give the same cohorts."""
    ids = sorted(set(device_ids), key=lambda d: hashlib.sha256(f"{salt}\0{d}".encode()).digest())
    ends = [math.ceil(p * len(ids) / 100 - 1e-9) for p in phases]
    out: dict[str, int] = {}
    phase = 0
    for rank, device_id in enumerate(ids):
        while rank >= ends[phase]:
            phase += 1
        out[device_id] = phase
    return out


def _rollout(row: Sequence[Any]) -> dict[str, Any]:
    return {
        "id": row[0],
        "version": row[1],
        "bundle": row[2],
        "devices": json.loads(row[3]),
        "phases": json.loads(row[4]),
        "max_failure_percent": float(row[5]),
        "min_devices": int(row[6]),
        "rate_limit": None if row[7] is None else int(row[7]),
        "salt": row[8],
        "status": row[9],
        "phase": int(row[10]) + 1,  # phases count from 1 on the wire
        "reason": row[11],
        "created_at": row[12],
        "updated_at": row[13],
    }


class RolloutSql:
    """The rollout half of the central store (needs ``_run``, ``_lock_entity``, ``clock``)."""

    clock: Any

    def _run(self, work: Callable[[Tx], Any], *, write: bool, retry_ambiguous: bool) -> Any:
        raise NotImplementedError

    def _lock_entity(self, tx: Tx, entity: str) -> None:
        raise NotImplementedError

    # Bundles ------------------------------------------------------------------------------

    def put_bundle(self, data: bytes, version: str | None) -> dict[str, Any]:
        """Store a bundle (the same bytes again are the same bundle); its info."""
        digest = hashlib.sha256(data).hexdigest()
        bundle_id = digest[:16]
        now = iso(self.clock.time())

        def work(tx: Tx) -> dict[str, Any]:
            tx.execute(
                "INSERT INTO update_bundles (id, sha256, length, version, created_at, data) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                [bundle_id, digest, len(data), version, now, data],
            )
            if version is not None:
                tx.execute(
                    "UPDATE update_bundles SET version = ? WHERE id = ? AND version IS NULL",
                    [version, bundle_id],
                )
            return _bundle_info(tx, bundle_id)

        result: dict[str, Any] = self._run(work, write=True, retry_ambiguous=True)
        return result

    def bundle_info(self, bundle_id: str) -> dict[str, Any]:
        """id, sha256, length, version and created_at of a bundle; NotFound."""
        info: dict[str, Any] = self._run(
            lambda tx: _bundle_info(tx, bundle_id), write=False, retry_ambiguous=True
        )
        return info

    def bundle_bytes(self, bundle_id: str, start: int, length: int) -> bytes:
        """``length`` bytes of a bundle from offset ``start``."""

        def work(tx: Tx) -> bytes:
            rows = tx.query(
                "SELECT substr(data, ?, ?) FROM update_bundles WHERE id = ?",
                [start + 1, length, bundle_id],
            )
            if not rows:
                raise NotFound(f"no bundle {bundle_id!r}; upload it with POST /api/bundles")
            return bytes(rows[0][0])

        data: bytes = self._run(work, write=False, retry_ambiguous=True)
        return data

    # Rollouts -----------------------------------------------------------------------------

    def create_rollout(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Make a rollout from a validated request; its devices and cohorts fixed now.

        ``spec``: version, bundle, devices ("all" | {"tag"} | {"ids"}), phases (percent),
        max_failure_percent, min_devices, rate_limit, salt (None: a random one).
        RolloutRefused names the field when the bundle or devices are not there.
        """
        rollout_id = "r-" + secrets.token_hex(6)
        salt = spec.get("salt") or secrets.token_hex(8)
        now = iso(self.clock.time())

        def work(tx: Tx) -> dict[str, Any]:
            bundle = _bundle_info(tx, spec["bundle"], field="bundle")
            if bundle["version"] is not None and bundle["version"] != spec["version"]:
                raise RolloutRefused(
                    "version",
                    f"{spec['version']!r} is not the version of bundle {bundle['id']} "
                    f"({bundle['version']!r}); send the bundle's version",
                )
            members = _targeted(tx, spec["devices"])
            self._lock_entity(tx, f"rollout/{rollout_id}")
            tx.execute(
                f"INSERT INTO rollouts ({_ROLLOUT_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'active', 0, NULL, ?, ?)",
                [
                    rollout_id,
                    spec["version"],
                    bundle["id"],
                    json_text(spec["devices"], "devices"),
                    json_text(list(spec["phases"]), "phases"),
                    float(spec["max_failure_percent"]),
                    int(spec["min_devices"]),
                    spec.get("rate_limit"),
                    salt,
                    now,
                    now,
                ],
            )
            phase_of = cohorts(salt, members, spec["phases"])
            for rank, device_id in enumerate(sorted(phase_of, key=lambda d: (phase_of[d], d))):
                tx.execute(
                    "INSERT INTO rollout_devices (rollout_id, device_id, phase, cohort_rank, "
                    "state, updated_at) VALUES (?, ?, ?, ?, 'pending', ?)",
                    [rollout_id, device_id, phase_of[device_id], rank, now],
                )
            _evaluate(tx, rollout_id, now)  # an empty first phase is done already
            return _with_devices(tx, rollout_id)

        result: dict[str, Any] = self._run(work, write=True, retry_ambiguous=False)
        return result

    def list_rollouts(self, limit: int) -> list[dict[str, Any]]:
        """The newest rollouts, each with its phase progress (no device list)."""

        def work(tx: Tx) -> list[dict[str, Any]]:
            rows = tx.query(
                f"SELECT {_ROLLOUT_COLUMNS} FROM rollouts ORDER BY seq DESC LIMIT ?", [limit]
            )
            out = []
            for row in rows:
                doc = _rollout(row)
                doc["progress"] = _progress(tx, doc)
                out.append(doc)
            return out

        result: list[dict[str, Any]] = self._run(work, write=False, retry_ambiguous=True)
        return result

    def get_rollout(self, rollout_id: str) -> dict[str, Any]:
        """A rollout with its phase progress and every device's state; NotFound."""
        result: dict[str, Any] = self._run(
            lambda tx: _with_devices(tx, rollout_id), write=False, retry_ambiguous=True
        )
        return result

    def rollout_action(self, rollout_id: str, action: str) -> dict[str, Any]:
        """``pause``, ``resume`` or ``cancel``; RolloutConflict if the status forbids it."""
        allowed = {
            "pause": ("active",),
            "resume": ("paused",),
            "cancel": ("active", "paused", "halted"),
        }
        to = {"pause": "paused", "resume": "active", "cancel": "cancelled"}[action]
        now = iso(self.clock.time())

        def work(tx: Tx) -> dict[str, Any]:
            self._lock_entity(tx, f"rollout/{rollout_id}")
            status = _status(tx, rollout_id)
            if status == to:
                return _with_devices(tx, rollout_id)  # asked twice: already so
            if status not in allowed[action]:
                hint = (
                    "; a halted rollout stays halted: cancel it and make a new one"
                    if status == "halted"
                    else ""
                )
                raise RolloutConflict(f"rollout {rollout_id} is {status}; it cannot {action}{hint}")
            tx.execute(
                "UPDATE rollouts SET status = ?, updated_at = ?, "
                "reason = CASE WHEN ? = 'cancelled' THEN 'cancelled by an operator' "
                "ELSE reason END WHERE id = ?",
                [to, now, to, rollout_id],
            )
            if to == "active":
                _evaluate(tx, rollout_id, now)  # a phase may have finished while paused
            return _with_devices(tx, rollout_id)

        result: dict[str, Any] = self._run(work, write=True, retry_ambiguous=False)
        return result

    # The device side ----------------------------------------------------------------------

    def assignment_for(self, device_id: str) -> dict[str, Any] | None:
        """The update ``device_id`` should install now, or None (recorded as assigned).

        The newest active or paused rollout that has released the device (its cohort phase
        reached) and that it has not finished; a paused rollout only for a device that had
        started, and a new device only within the rollout's rate limit.
        """
        now = self.clock.time()

        def work(tx: Tx) -> dict[str, Any] | None:
            rows = tx.query(
                "SELECT r.id FROM rollout_devices d JOIN rollouts r ON r.id = d.rollout_id "
                "WHERE d.device_id = ? AND r.status IN ('active', 'paused') "
                "AND d.state NOT IN ('committed', 'failed', 'rolled_back') AND d.phase <= r.phase "
                "ORDER BY r.seq DESC LIMIT 1",
                [device_id],
            )
            if not rows:
                return None
            rollout_id = rows[0][0]
            self._lock_entity(tx, f"rollout/{rollout_id}")
            rows = tx.query(
                "SELECT r.status, r.phase, r.rate_limit, d.phase, d.state, r.version, "
                "r.bundle_id FROM rollout_devices d JOIN rollouts r ON r.id = d.rollout_id "
                "WHERE r.id = ? AND d.device_id = ?",
                [rollout_id, device_id],
            )
            status, phase, rate, cohort, state, version, bundle_id = rows[0]
            if status not in ("active", "paused") or cohort > phase or state in TERMINAL_STATES:
                return None  # changed before the lock was ours
            if state == "pending":
                if status == "paused":
                    return None
                if rate is not None:
                    recent = tx.query(
                        "SELECT COUNT(*) FROM rollout_devices WHERE rollout_id = ? "
                        "AND assigned_epoch > ?",
                        [rollout_id, now - RATE_WINDOW],
                    )[0][0]
                    if int(recent) >= int(rate):
                        return None
                tx.execute(
                    "UPDATE rollout_devices SET state = 'assigned', assigned_epoch = ?, "
                    "updated_at = ? WHERE rollout_id = ? AND device_id = ?",
                    [now, iso(now), rollout_id, device_id],
                )
            bundle = _bundle_info(tx, bundle_id)
            return {
                "rollout": rollout_id,
                "version": version,
                "bundle": bundle_id,
                "bundle_url": f"/api/bundles/{bundle_id}",
                "sha256": bundle["sha256"],
                "length": bundle["length"],
            }

        result: dict[str, Any] | None = self._run(work, write=True, retry_ambiguous=True)
        return result

    def report_state(
        self,
        device_id: str,
        rollout_id: str,
        state: str,
        reason: str | None,
        running_version: str | None,
    ) -> dict[str, Any]:
        """Record a device's state in a rollout, then advance or halt it; the rollout's
        ``{"rollout", "status", "phase"}``. NotFound for an unknown rollout, RolloutRefused
        for a device it does not target."""
        now = iso(self.clock.time())

        def work(tx: Tx) -> dict[str, Any]:
            self._lock_entity(tx, f"rollout/{rollout_id}")
            _status(tx, rollout_id)  # NotFound
            changed = tx.execute(
                "UPDATE rollout_devices SET state = ?, reason = ?, "
                "running_version = COALESCE(?, running_version), updated_at = ? "
                "WHERE rollout_id = ? AND device_id = ?",
                [state, reason, running_version, now, rollout_id, device_id],
            )
            if not changed:
                raise RolloutRefused(
                    "rollout", f"rollout {rollout_id} does not target device {device_id!r}"
                )
            _evaluate(tx, rollout_id, now)
            rows = tx.query("SELECT status, phase FROM rollouts WHERE id = ?", [rollout_id])
            return {"rollout": rollout_id, "status": rows[0][0], "phase": int(rows[0][1]) + 1}

        result: dict[str, Any] = self._run(work, write=True, retry_ambiguous=True)
        return result

    def rollout_state_of(self, device_id: str) -> dict[str, Any] | None:
        """The device's place in its newest rollout (for the inventory), or None."""
        return self.rollout_states_of([device_id]).get(device_id)

    def rollout_states_of(self, device_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """``rollout_state_of`` for many devices in one read (devices in none are absent)."""
        unique = sorted(set(device_ids))

        def work(tx: Tx) -> dict[str, dict[str, Any]]:
            out: dict[str, dict[str, Any]] = {}
            for start in range(0, len(unique), 500):  # under SQLite's parameter limit
                chunk = unique[start : start + 500]
                marks = ", ".join("?" for _ in chunk)
                rows = tx.query(
                    "SELECT d.device_id, r.id, r.version, r.status, d.phase, d.state, d.reason, "
                    "d.running_version, d.updated_at FROM rollout_devices d JOIN rollouts r "
                    f"ON r.id = d.rollout_id WHERE d.device_id IN ({marks}) ORDER BY r.seq",
                    chunk,
                )
                for row in rows:  # oldest first: the newest rollout's row stays
                    out[row[0]] = _device_state(row[1:])
            return out

        result: dict[str, dict[str, Any]] = self._run(work, write=False, retry_ambiguous=True)
        return result


# --- inside a transaction -------------------------------------------------------------------


def _bundle_info(tx: Tx, bundle_id: str, *, field: str | None = None) -> dict[str, Any]:
    rows = tx.query(
        "SELECT id, sha256, length, version, created_at FROM update_bundles WHERE id = ?",
        [bundle_id],
    )
    if not rows:
        if field is not None:
            raise RolloutRefused(
                field, f"{bundle_id!r} is not an uploaded bundle; upload it with POST /api/bundles"
            )
        raise NotFound(f"no bundle {bundle_id!r}; upload it with POST /api/bundles")
    r = rows[0]
    return {"id": r[0], "sha256": r[1], "length": int(r[2]), "version": r[3], "created_at": r[4]}


def _targeted(tx: Tx, devices: Any) -> list[str]:
    """The registry's devices a rollout's ``devices`` names; RolloutRefused if none."""
    rows = tx.query("SELECT id, status FROM devices")
    live = {r[0] for r in rows}
    retired = {r[0] for r in rows if r[1] in RETIRED_STATUSES}
    if isinstance(devices, dict) and "ids" in devices:
        ids = list(dict.fromkeys(devices["ids"]))
        unknown = [d for d in ids if d not in live]
        if unknown:
            raise RolloutRefused(
                "devices.ids",
                f"unknown device(s) {unknown}; they must be registered (enrolled or "
                "provisioned) first",
            )
        gone = [d for d in ids if d in retired]
        if gone:
            raise RolloutRefused("devices.ids", f"device(s) {gone} are decommissioned")
        return ids
    chosen = [d for d in live if d not in retired]
    if isinstance(devices, dict):
        tagged = {
            r[0]
            for r in tx.query("SELECT device_id FROM device_tags WHERE tag = ?", [devices["tag"]])
        }
        chosen = [d for d in chosen if d in tagged]
        if not chosen:
            raise RolloutRefused("devices.tag", f"no registered device has tag {devices['tag']!r}")
    if not chosen:
        raise RolloutRefused("devices", "no device is registered yet; there is nothing to update")
    return chosen


def _status(tx: Tx, rollout_id: str) -> str:
    rows = tx.query("SELECT status FROM rollouts WHERE id = ?", [rollout_id])
    if not rows:
        raise NotFound(f"no rollout {rollout_id!r}; GET /api/rollouts lists them")
    return str(rows[0][0])


def _counts(tx: Tx, rollout_id: str) -> dict[int, dict[str, int]]:
    """Devices per cohort phase and state."""
    out: dict[int, dict[str, int]] = {}
    for phase, state, n in tx.query(
        "SELECT phase, state, COUNT(*) FROM rollout_devices WHERE rollout_id = ? "
        "GROUP BY phase, state",
        [rollout_id],
    ):
        out.setdefault(int(phase), {})[state] = int(n)
    return out


def _evaluate(tx: Tx, rollout_id: str, now: str) -> None:
    """Halt the rollout when its current phase passes the failure threshold; else advance
    past every phase whose devices are all done (completed after the last)."""
    rows = tx.query(
        "SELECT status, phase, phases, max_failure_percent, min_devices FROM rollouts WHERE id = ?",
        [rollout_id],
    )
    status, phase, phases, threshold, min_devices = rows[0]
    if status not in ("active", "paused"):
        return
    phases = json.loads(phases)
    counts = _counts(tx, rollout_id)
    phase = int(phase)
    while True:
        states = counts.get(phase, {})
        total = sum(states.values())
        done = sum(states.get(s, 0) for s in TERMINAL_STATES)
        failed = sum(states.get(s, 0) for s in FAILED_STATES)
        # A phase smaller than min_devices judges once all of it reported: a one-device
        # canary must still stop a bad version.
        if total and done >= min(int(min_devices), total) and failed * 100 > threshold * done:
            reason = (
                f"phase {phase + 1} ({phases[phase]:g}%): {failed} of {done} devices that "
                f"reported failed ({failed * 100 / done:.0f}% > max_failure_percent "
                f"{float(threshold):g})"
            )
            tx.execute(
                "UPDATE rollouts SET status = 'halted', phase = ?, reason = ?, updated_at = ? "
                "WHERE id = ?",
                [phase, reason, now, rollout_id],
            )
            return
        if done < total or status != "active":
            break
        if phase == len(phases) - 1:
            tx.execute(
                "UPDATE rollouts SET status = 'completed', phase = ?, updated_at = ? WHERE id = ?",
                [phase, now, rollout_id],
            )
            return
        phase += 1
    tx.execute(
        "UPDATE rollouts SET phase = ?, updated_at = ? WHERE id = ? AND phase <> ?",
        [phase, now, rollout_id, phase],
    )


def _progress(tx: Tx, doc: dict[str, Any]) -> list[dict[str, Any]]:
    counts = _counts(tx, doc["id"])
    out = []
    for i, percent in enumerate(doc["phases"]):
        states = counts.get(i, {})
        total = sum(states.values())
        committed = states.get("committed", 0)
        failed = sum(states.get(s, 0) for s in FAILED_STATES)
        pending = states.get("pending", 0)
        out.append(
            {"phase": i + 1, "percent": percent, "devices": total, "pending": pending}
            | {"in_progress": total - committed - failed - pending, "committed": committed}
            | {"failed": failed, "states": dict(sorted(states.items()))}
        )
    return out


def _device_state(row: Sequence[Any]) -> dict[str, Any]:
    keys = ("rollout", "version", "rollout_status", "phase", "state", "reason", "running_version")
    doc = dict(zip((*keys, "updated_at"), row, strict=True))
    doc["phase"] = int(doc["phase"]) + 1
    return doc


def _with_devices(tx: Tx, rollout_id: str) -> dict[str, Any]:
    rows = tx.query(f"SELECT {_ROLLOUT_COLUMNS} FROM rollouts WHERE id = ?", [rollout_id])
    if not rows:
        raise NotFound(f"no rollout {rollout_id!r}; GET /api/rollouts lists them")
    doc = _rollout(rows[0])
    doc["progress"] = _progress(tx, doc)
    keys = ("id", "phase", "state", "reason", "running_version", "updated_at")
    doc["device_states"] = [
        {**dict(zip(keys, r, strict=True)), "phase": int(r[1]) + 1}
        for r in tx.query(
            "SELECT device_id, phase, state, reason, running_version, updated_at "
            "FROM rollout_devices WHERE rollout_id = ? ORDER BY cohort_rank",
            [rollout_id],
        )
    ]
    return doc
