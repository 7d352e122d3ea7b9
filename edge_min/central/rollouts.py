"""Staged rollouts on central: bundles to download, rollouts in phases, devices' reports.

Routes (JSON errors ``{"error": {"code", "message"}}``)::

    POST /api/bundles                   raw bundle bytes in (``?version=V`` if the bundle
                                        does not say); {"id", "sha256", "length", "version"}
    GET  /api/bundles/{id}              the bytes; ``Range: bytes=A-B`` answers 206, so a
                                        device resumes a cut download
    POST /api/rollouts                  {"version", "bundle", "devices": "all" | {"tag": T}
                                        | {"ids": [...]}, "phases": [5, 25, 100],
                                        "max_failure_percent", "min_devices", "rate_limit",
                                        "salt"}; 201 with the rollout
    GET  /api/rollouts                  the newest rollouts with their phase progress
    GET  /api/rollouts/{id}             one rollout: progress and every device's state
    POST /api/rollouts/{id}/pause | resume | cancel
    GET  /api/updates/assigned          the calling device's assignment, or 204
    POST /api/updates/state             {"rollout", "state", "reason", "version"}: a device
                                        reports a state change

A malformed rollout request is 400 ``bad_rollout`` naming the field; a state report 400
``bad_update_state``; an action the rollout's status forbids 409 ``rollout_conflict``.

How a rollout runs (``edge_min.central.rollout_store`` holds the tables): its devices are
fixed when it is made (all registered, those with a tag in ``details.tags``, or a list),
ranked by sha256(salt, device id) and cut into phases by the cumulative percentages (at
least one device in a phase whose share rounds up to one). Only devices of phases up to the
current one are assigned; a phase advances when all its devices are done (committed, or
failed below the threshold). When the failures in the current phase pass
``max_failure_percent`` of the devices that reported, once ``min_devices`` (or the whole
phase, if smaller) reported, the rollout halts: nothing more is assigned, and a device
asking mid-download is told nothing (it drops the download). A paused rollout assigns no
device that had not started; resume goes on; cancel ends it. ``rate_limit`` caps how many
devices get their assignment per minute. The same ``salt`` in two rollouts over the same
devices gives the same cohorts (sticky canaries).

``rollout_state_of(central, device_id)`` is the device's place in its newest rollout, for
the inventory's ``rollout`` field.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from typing import Any

from edge_min.central.part import Central, CentralPart, int_param, json_object
from edge_min.central.rollout_store import (
    DEVICE_STATES,
    RolloutConflict,
    RolloutRefused,
)
from edge_min.routing import ApiError, Request, Response
from edge_min.subsystem import ApiRoute

ROLLOUT_FIELDS = (
    "version",
    "bundle",
    "devices",
    "phases",
    "max_failure_percent",
    "min_devices",
    "rate_limit",
    "salt",
)
DEFAULTS: dict[str, Any] = {
    "phases": [100],
    "max_failure_percent": 0.0,
    "min_devices": 1,
    "rate_limit": None,
    "salt": None,
}
ROLLOUTS_SHOWN = 50
MAX_REASON = 2000
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~-]{0,99}$")


class Rollouts(CentralPart):
    """Bundles, rollouts and what devices are assigned and report."""

    name = "rollouts"
    # Devices call these by identity (no operator token): their assignment, their reports,
    # and the bundle download (a bundle is a signed, public artifact: its metadata is what
    # the device trusts, never the channel).
    device_paths = frozenset(
        {
            ("GET", "/api/updates/assigned"),
            ("POST", "/api/updates/state"),
            ("GET", "/api/bundles/{bundle_id}"),
        }
    )

    def routes(self) -> Sequence[ApiRoute]:
        """Operators upload and roll out (configure), steer (write), watch (read); devices
        ask for their assignment (read) and report (write)."""
        return (
            ApiRoute("POST", "/api/bundles", "configure", self.upload),
            ApiRoute("GET", "/api/bundles/{bundle_id}", "read", self.download),
            ApiRoute("POST", "/api/rollouts", "configure", self.create),
            ApiRoute("GET", "/api/rollouts", "read", self.list),
            ApiRoute("GET", "/api/rollouts/{rollout_id}", "read", self.show),
            ApiRoute("POST", "/api/rollouts/{rollout_id}/{action}", "write", self.act),
            ApiRoute("GET", "/api/updates/assigned", "read", self.assigned),
            ApiRoute("POST", "/api/updates/state", "write", self.report),
        )

    # Bundles ------------------------------------------------------------------------------

    def upload(self, request: Request) -> Response:
        """Store the body as a bundle; 201 with its id, sha256, length and version."""
        if not request.body:
            raise ApiError(400, "bad_bundle", "send the bundle's bytes as the request body")
        version = request.query.get("version") or bundle_version(request.body)
        if version is not None and not _VERSION.match(version):
            raise ApiError(
                400, "bad_bundle", f"version {version!r} must be 1-100 of A-Z a-z 0-9 . _ + ~ -"
            )
        info = self.central.store.put_bundle(request.body, version)
        return Response(201, {**info, "url": f"/api/bundles/{info['id']}"})

    def download(self, request: Request) -> Response:
        """The bundle's bytes, all (200) or the one range asked (206); 416 past its end."""
        store = self.central.store
        info = store.bundle_info(request.params["bundle_id"])  # NotFound: 404
        total = info["length"]
        headers = {"Accept-Ranges": "bytes", "ETag": f'"{info["sha256"]}"'}
        asked = byte_range(request.headers.get("range"), total)
        if asked is None:
            return Response(200, store.bundle_bytes(info["id"], 0, total), _OCTETS, headers)
        if isinstance(asked, str):  # "unsatisfiable"
            return Response(
                416,
                {
                    "error": {
                        "code": "range_not_satisfiable",
                        "message": f"the bundle has {total} bytes; ask for a range below that",
                    }
                },
                headers={**headers, "Content-Range": f"bytes */{total}"},
            )
        start, end = asked
        headers["Content-Range"] = f"bytes {start}-{end}/{total}"
        data = store.bundle_bytes(info["id"], start, end - start + 1)
        return Response(206, data, _OCTETS, headers)

    # Rollouts -----------------------------------------------------------------------------

    def create(self, request: Request) -> Response:
        """Validate and start a rollout; 201 with it (its devices and cohorts)."""
        spec = parse_rollout(json_object(request))
        try:
            doc = self.central.store.create_rollout(spec)
        except RolloutRefused as exc:
            raise ApiError(400, "bad_rollout", exc.message) from exc
        return Response(201, doc)

    def list(self, request: Request) -> dict[str, Any]:
        """The newest rollouts (``?limit=``), with phase progress."""
        limit = int_param(request, "limit", ROLLOUTS_SHOWN, minimum=1)
        return {"rollouts": self.central.store.list_rollouts(min(limit, 1000))}

    def show(self, request: Request) -> dict[str, Any]:
        """A rollout, its progress and every device's state."""
        return self.central.store.get_rollout(request.params["rollout_id"])

    def act(self, request: Request) -> dict[str, Any]:
        """Pause, resume or cancel a rollout."""
        action = request.params["action"]
        if action not in ("pause", "resume", "cancel"):
            raise ApiError(
                404, "not_found", f"no rollout action {action!r}; use pause, resume or cancel"
            )
        try:
            return self.central.store.rollout_action(request.params["rollout_id"], action)
        except RolloutConflict as exc:
            raise ApiError(409, exc.code, exc.message) from exc

    # The device side ----------------------------------------------------------------------

    def assigned(self, request: Request) -> Response:
        """The calling device's current assignment, or 204 when there is none."""
        device = self.central.device_of(request)
        assignment = self.central.store.assignment_for(device.id)
        if assignment is None:
            return Response(204, b"", _OCTETS)
        return Response(200, assignment)

    def report(self, request: Request) -> dict[str, Any]:
        """Record the calling device's state in a rollout; the rollout's status after it."""
        device = self.central.device_of(request)
        rollout, state, reason, version = parse_state(json_object(request))
        try:
            return self.central.store.report_state(device.id, rollout, state, reason, version)
        except RolloutRefused as exc:
            raise ApiError(409, "not_in_rollout", exc.message) from exc


_OCTETS = "application/octet-stream"


def rollout_state_of(central: Central, device_id: str) -> dict[str, Any] | None:
    """The device's place in its newest rollout: rollout, version, rollout_status, phase,
    state, reason, running_version, updated_at; None if no rollout ever targeted it."""
    return central.store.rollout_state_of(device_id)


def bundle_version(data: bytes) -> str | None:
    """The version a bundle's header names (unverified: for the listing), or None."""
    from edge_min.update.bundle import peek_version

    return peek_version(data)


def byte_range(header: str | None, total: int) -> tuple[int, int] | str | None:
    """(first, last) byte of a ``Range: bytes=A-B`` (or ``A-``, ``-N``); None to send all
    (no header, or one this server does not read, such as several ranges);
    ``"unsatisfiable"`` when it starts past the end."""
    if not header:
        return None
    m = _RANGE.match(header.strip())
    if m is None or (not m.group(1) and not m.group(2)):
        return None  # RFC 9110: a Range header the server does not understand is ignored
    if not m.group(1):  # the last N bytes
        n = int(m.group(2))
        if n == 0 or total == 0:
            return "unsatisfiable"
        return max(0, total - n), total - 1
    start = int(m.group(1))
    end = int(m.group(2)) if m.group(2) else total - 1
    if start >= total:
        return "unsatisfiable"
    if end < start:
        return None
    return start, min(end, total - 1)


def _bad(field: str, value: Any, fix: str) -> ApiError:
    return ApiError(400, "bad_rollout", f"rollout field {field} = {value!r}: {fix}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_rollout(body: dict[str, Any]) -> dict[str, Any]:
    """A rollout request, every field checked; 400 ``bad_rollout`` naming the field."""
    unknown = sorted(set(body) - set(ROLLOUT_FIELDS))
    if unknown:
        raise ApiError(
            400,
            "bad_rollout",
            f"unknown rollout field(s) {unknown}; use {', '.join(ROLLOUT_FIELDS)}",
        )
    for name in ("version", "bundle", "devices"):
        if name not in body:
            raise ApiError(400, "bad_rollout", f"rollout field {name} is required")
    spec = {**DEFAULTS, **{k: v for k, v in body.items() if v is not None or k == "rate_limit"}}
    version = spec["version"]
    if not isinstance(version, str) or not _VERSION.match(version):
        raise _bad("version", version, "a version string of 1-100 of A-Z a-z 0-9 . _ + ~ -")
    if not isinstance(spec["bundle"], str) or not spec["bundle"]:
        raise _bad("bundle", spec["bundle"], "the id POST /api/bundles answered")
    spec["devices"] = _parse_devices(spec["devices"])
    phases = spec["phases"]
    if (
        not isinstance(phases, list)
        or not phases
        or not all(_is_number(p) and 0 < p <= 100 for p in phases)
    ):
        raise _bad("phases", phases, "a list of percentages in (0, 100], such as [5, 25, 100]")
    if any(b <= a for a, b in itertools.pairwise(phases)):
        raise _bad("phases", phases, "each phase must reach more devices than the one before")
    if phases[-1] != 100:
        raise _bad("phases", phases, "the last phase must be 100 (every targeted device)")
    threshold = spec["max_failure_percent"]
    if not _is_number(threshold) or not 0 <= threshold <= 100:
        raise _bad("max_failure_percent", threshold, "a percentage from 0 to 100")
    for name in ("min_devices", "rate_limit"):
        value = spec[name]
        if name == "rate_limit" and value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            what = "devices per minute" if name == "rate_limit" else "devices"
            raise _bad(name, value, f"a whole number of {what}, at least 1")
    salt = spec["salt"]
    if salt is not None and (not isinstance(salt, str) or not 1 <= len(salt) <= 200):
        raise _bad("salt", salt, "a string of 1-200 characters (omit it for a random one)")
    return spec


def _parse_devices(devices: Any) -> Any:
    if devices == "all":
        return "all"
    if isinstance(devices, dict) and set(devices) == {"tag"}:
        tag = devices["tag"]
        if not isinstance(tag, str) or not tag:
            raise _bad("devices.tag", tag, "a non-empty tag")
        return {"tag": tag}
    if isinstance(devices, dict) and set(devices) == {"ids"}:
        ids = devices["ids"]
        if not isinstance(ids, list) or not ids or not all(isinstance(d, str) and d for d in ids):
            raise _bad("devices.ids", ids, "a non-empty list of device ids")
        return {"ids": ids}
    raise _bad("devices", devices, 'use "all", {"tag": "T"} or {"ids": ["dev-1", ...]}')


def parse_state(body: dict[str, Any]) -> tuple[str, str, str | None, str | None]:
    """(rollout, state, reason, version) of a device's report; 400 ``bad_update_state``."""
    unknown = sorted(set(body) - {"rollout", "state", "reason", "version"})
    if unknown:
        raise ApiError(
            400,
            "bad_update_state",
            f"unknown field(s) {unknown}; send rollout, state, reason, version",
        )
    rollout = body.get("rollout")
    if not isinstance(rollout, str) or not rollout:
        raise ApiError(
            400,
            "bad_update_state",
            f"rollout {rollout!r} must be the id GET /api/updates/assigned gave",
        )
    state = body.get("state")
    if state not in DEVICE_STATES:
        raise ApiError(
            400, "bad_update_state", f"state {state!r} must be one of {', '.join(DEVICE_STATES)}"
        )
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise ApiError(400, "bad_update_state", f"reason {reason!r} must be a string or null")
    version = body.get("version")
    if version is not None and not isinstance(version, str):
        raise ApiError(400, "bad_update_state", f"version {version!r} must be a string or null")
    return rollout, str(state), None if reason is None else reason[:MAX_REASON], version
