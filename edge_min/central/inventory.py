"""The fleet inventory: every device with what it last reported, filtered and paged.

Routes::

    GET  /api/devices                  {"devices": [...], "next": cursor or null}
         ?status=provisioned|active|retired  ?tag=T  ?version=V
         ?health=healthy|degraded|unhealthy|unknown  ?attestation=trusted|untrusted|unknown
         ?limit=N (1-500, default 100)  ?after=CURSOR (the ``next`` of the page before)
    POST /api/devices/self/report      the calling device's report (JSON): version, slot,
                                       health, alerts_firing (a count or a list of names),
                                       rollout (an object or null), storage (a browser
                                       tab's: backend, persisted, quota, usage); 202
    POST /api/devices/self/retire      the calling device says it crypto-erased itself:
                                       decommissioned as by DELETE /api/devices/{id}
                                       (its certificates revoked); 200

Each device is ``{"id", "status", "version", "slot", "last_seen", "health", "alerts_firing",
"attestation", "rollout", "tags", "reported_at", "storage"}``; ``storage`` is null unless
the device reported it (a tab: whether the browser granted persistent storage, without which
it may evict the device's data, and the origin's quota and usage). ``status`` is ``retired``
for a decommissioned device (its certificates revoked, refused at the handshake and at
sync); ``attestation`` is its trust (``edge_min.central.attestation.trust_of``); ``rollout``
is the device's place in its newest rollout (central's record, ``rollout_states_of``), else
what the device last reported; ``health`` is what the device reported, made worse by its
newest alerts (``health_of``); ``tags`` are those given at enrollment or provisioning.
Devices come in id order; the cursor is the last id of a page. A bad filter value or an
unknown query parameter is 400 ``bad_request`` naming it; so is a report field of the
wrong type or one central does not know.

The device sends its report at every sync cycle (``edge_min.lifecycle``), through the same
mutual TLS as sync: the report route sits under ``/api/devices/{id}``, so this part comes
before ``Devices`` in ``CENTRAL_PARTS``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from edge_min.central.part import CentralPart, int_param, json_object
from edge_min.routing import ApiError, Request, Response
from edge_min.subsystem import ApiRoute

DEFAULT_LIMIT = 100
MAX_LIMIT = 500
STATUSES = {"provisioned": "provisioned", "active": "active", "retired": "decommissioned"}
HEALTH = ("healthy", "degraded", "unhealthy", "unknown")
TRUST = ("trusted", "untrusted", "unknown")
_QUERY = ("status", "tag", "version", "health", "attestation", "limit", "after")
HEALTH_ALERTS = 20  # a device's newest alerts weigh on its health
_WORST = {"unknown": 0, "healthy": 1, "degraded": 2, "unhealthy": 3}


def health_of(row: dict[str, Any], alerts: Sequence[dict[str, Any]]) -> str:
    """The device's reported health, made worse by its newest alerts: a critical (or error)
    one makes it ``unhealthy``, any other ``degraded``; never reported, ``unknown`` unless
    an alert says more."""
    reported = row.get("health") or "unknown"
    severities = {str(a.get("severity") or "").lower() for a in alerts}
    if severities & {"critical", "error"}:
        from_alerts = "unhealthy"
    elif alerts:
        from_alerts = "degraded"
    else:
        return str(reported)
    return max((reported, from_alerts), key=lambda h: _WORST.get(h, 0))


_REPORT = {
    "version": (str,),
    "slot": (str,),
    "health": (str,),
    "alerts_firing": (int, list),
    "rollout": (dict,),
    "storage": (dict,),
}
#: A storage report's fields: name -> (types, may be null).
_STORAGE = {"backend": ((str,), False), "persisted": ((bool,), False),
            "quota": ((int,), True), "usage": ((int,), True)}  # fmt: skip


class Inventory(CentralPart):
    """``GET /api/devices`` and the devices' own reports."""

    name = "inventory"
    # The device's own report and retirement: by identity (its certificate), no token.
    device_paths = frozenset(
        {("POST", "/api/devices/self/report"), ("POST", "/api/devices/self/retire")}
    )

    def routes(self) -> Sequence[ApiRoute]:
        """The list and the report (a literal under Devices' ``{device_id}``)."""
        return (
            ApiRoute("GET", "/api/devices", "read", self.list_devices),
            ApiRoute("POST", "/api/devices/self/report", "write", self.report),
            ApiRoute("POST", "/api/devices/self/retire", "write", self.retire),
        )

    def list_devices(self, request: Request) -> dict[str, Any]:
        """One page of the inventory."""

        unknown = sorted(set(request.query) - set(_QUERY))
        if unknown:
            raise ApiError(
                400, "bad_request", f"unknown query parameter(s) {unknown}; use {', '.join(_QUERY)}"
            )
        q = request.query
        status = _choice(q, "status", tuple(STATUSES))
        health = _choice(q, "health", HEALTH)
        trust = _choice(q, "attestation", TRUST)
        limit = int_param(request, "limit", DEFAULT_LIMIT, minimum=1)
        if limit > MAX_LIMIT:
            raise ApiError(400, "bad_request", f"query parameter limit={limit} is over {MAX_LIMIT}")
        after = q.get("after") or None
        central = self.central
        page: list[dict[str, Any]] = []
        more = False
        # Health, attestation trust and the rollout state are computed, not stored: filter
        # on them (and on the tag and version, to keep one rule) page by page.
        while len(page) <= limit:
            rows = central.store.list_inventory(
                after=after,
                limit=limit + 1,
                status=STATUSES[status] if status else None,
            )
            states = central.store.rollout_states_of([row["id"] for row in rows])
            for row in rows:
                after = row["id"]
                self._complete(row, states.get(row["id"]))
                if (
                    (trust and row["attestation"]["trust"] != trust)
                    or (health and row["health"] != health)
                    or (q.get("tag") and q["tag"] not in row["tags"])
                    or (q.get("version") and row["version"] != q["version"])
                ):
                    continue
                page.append(row)
                if len(page) > limit:
                    break
            if len(rows) <= limit or len(page) > limit:
                break
        if len(page) > limit:
            page, more = page[:limit], True
        return {"devices": page, "next": page[-1]["id"] if more and page else None}

    def _complete(self, row: dict[str, Any], rollout: dict[str, Any] | None) -> None:
        """Fill a row's computed fields: attestation trust, health, status, rollout."""
        from edge_min.central.attestation import trust_of

        central = self.central
        verdict, why = trust_of(central, central.store.attestation_info(row["id"]))
        row["attestation"] = {"trust": verdict, "reason": why}
        if row["status"] == "decommissioned":
            row["status"] = "retired"
        row["health"] = health_of(row, central.store.list_alerts(row["id"], HEALTH_ALERTS))
        if rollout is not None:  # central's own record beats what the device last said
            row["rollout"] = rollout

    def report(self, request: Request) -> Response:
        """Keep the calling device's report of its version, slot, health and alerts."""
        device = self.central.device_of(request)
        body = json_object(request)
        unknown = sorted(set(body) - set(_REPORT))
        if unknown:
            raise ApiError(
                400, "bad_request", f"unknown report field(s) {unknown}; use {', '.join(_REPORT)}"
            )
        for name, kinds in _REPORT.items():
            value = body.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, kinds)):
                raise ApiError(
                    400,
                    "bad_request",
                    f"report field {name} {value!r} must be "
                    + " or ".join(k.__name__ for k in kinds),
                )
        if body.get("health") not in (None, *HEALTH):
            raise ApiError(
                400,
                "bad_request",
                f"report field health {body['health']!r}: use {', '.join(HEALTH)}",
            )
        if body.get("storage") is not None:
            _check_storage(body["storage"])
        firing = body.get("alerts_firing")
        body["alerts_firing"] = len(firing) if isinstance(firing, list) else int(firing or 0)
        self.central.store.save_report(device.id, body)
        return Response(202, {"device_id": device.id, "accepted": sorted(body)})

    def retire(self, request: Request) -> dict[str, Any]:
        """The calling device decommissioned itself: retire it and revoke its certificates."""
        device = self.central.device_of(request)
        store = self.central.store
        doc = store.record_device_action(device.id, "decommission", {"by": "device"}).to_dict()
        doc["revoked_serials"] = store.revoke_device_certs(device.id)
        return doc


def _check_storage(storage: dict[str, Any]) -> None:
    """A storage report has exactly ``_STORAGE``'s fields, each of its type."""
    unknown = sorted(set(storage) - set(_STORAGE))
    missing = sorted(set(_STORAGE) - set(storage))
    if unknown or missing:
        raise ApiError(
            400,
            "bad_request",
            f"report field storage: unknown {unknown}, missing {missing}; "
            f"use {', '.join(_STORAGE)}",
        )
    for name, (kinds, nullable) in _STORAGE.items():
        value = storage[name]
        if value is None and nullable:
            continue
        wrong_bool = isinstance(value, bool) and bool not in kinds
        if wrong_bool or not isinstance(value, kinds) or (isinstance(value, int) and value < 0):
            raise ApiError(
                400,
                "bad_request",
                f"report field storage.{name} {value!r} must be "
                + " or ".join(k.__name__ for k in kinds)
                + (" (at least 0)" if int in kinds else "")
                + (" or null" if nullable else ""),
            )


def _choice(query: dict[str, str], name: str, allowed: tuple[str, ...]) -> str | None:
    value = query.get(name)
    if not value:
        return None
    if value not in allowed:
        raise ApiError(
            400, "bad_request", f"query parameter {name}={value!r}: use one of {', '.join(allowed)}"
        )
    return value
